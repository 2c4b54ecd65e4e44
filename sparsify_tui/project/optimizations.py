"""A project's optimizations: ``optimizations/<slug>.json`` files listed by ``[[optimizations]]``.

JSON keeps ``None``, nested lists and exactly what the optimizer wrote. ``items`` is the list of the
optimization dicts in order; each gets a file named after a slug of its name (unique in the project)
the first time it is saved. A hand-written ``[[optimizations]]`` table without ``file`` is read as the
optimization itself (inline form) and written back as a file on the next save. A file that cannot be
read is reported in ``problems`` and its row is kept as it is.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from sparsify_tui.errors import ProjectError
from sparsify_tui.project.common import OPTIMIZATIONS_DIR, bad_type, dumps_json, slugify
from sparsify_tui.project.store import ProjectStore


class OptimizationSet:
    """The optimizations of one project and the files that hold them."""

    def __init__(self, store: ProjectStore) -> None:
        self._store = store
        self.items: list[dict[str, Any]] = []
        self.files: dict[str, str] = {}  # optimization name -> file (relative)
        self.written: dict[str, str] = {}  # file -> JSON text last written/read
        self.bad_rows: list[dict[str, Any]] = []  # unreadable [[optimizations]] rows, kept
        self.row_extra: dict[str, dict[str, Any]] = {}  # unknown keys of [[optimizations]] rows, kept
        self.problems: dict[str, str] = {}  # "optimization:<name>" -> why its file cannot be read

    def names(self) -> list[str]:
        return [str(o.get("name", "")) for o in self.items]

    def get(self, name: str) -> dict[str, Any] | None:
        for opt in self.items:
            if opt.get("name") == name:
                return opt
        return None

    def put(self, opt: dict[str, Any]) -> list[dict[str, Any]]:
        """Add or replace (position kept) the optimization named ``opt["name"]``; returns the old list."""
        if not isinstance(opt, dict):
            raise ProjectError(f"an optimization must be a dict, got {type(opt).__name__}")
        name = opt.get("name")
        if not isinstance(name, str) or not name:
            raise ProjectError("an optimization needs a non-empty 'name' to be stored in the project")
        old = list(self.items)
        new = copy.deepcopy(opt)
        for i, o in enumerate(self.items):
            if o.get("name") == name:
                self.items[i] = new
                break
        else:
            self.items.append(new)
        return old

    def remove(self, name: str) -> list[dict[str, Any]]:
        """Drop the optimization named ``name`` (ProjectError if there is none); returns the old list."""
        if self.get(name) is None:
            raise ProjectError(f"project {self._store.dir} has no optimization {name!r}")
        old = list(self.items)
        self.items = [o for o in self.items if o.get("name") != name]
        return old

    # ------------------------------------------------------------ project.toml rows
    def read_rows(self, rows: Any, path: Path) -> None:
        """Take the ``[[optimizations]]`` tables of project.toml ``path`` and read their files."""
        if not isinstance(rows, list):
            raise bad_type(path, "optimizations", "an array of tables ([[optimizations]])", rows)
        self.items, self.files, self.written, self.bad_rows, self.row_extra, self.problems = [], {}, {}, [], {}, {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise bad_type(path, f"optimizations[{i}]", "a table", row)
            if "file" not in row:  # inline form: the table is the optimization
                self.items.append(copy.deepcopy(row))
                continue
            f = row["file"]
            oname = row.get("name", "")
            if not isinstance(f, str) or not isinstance(oname, str) or "\0" in f:
                raise ProjectError(f"{path}: optimizations[{i}] must have a string name and a file path "
                                   f"(got name {oname!r}, file {f!r})")
            self._read_file(row, f, oname)

    def _read_file(self, row: dict[str, Any], f: str, oname: str) -> None:
        fpath = self._store.dir / f
        try:
            text = fpath.read_text(encoding="utf-8")
            opt = json.loads(text)
            if not isinstance(opt, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.problems[f"optimization:{oname}"] = f"optimization {oname!r}: cannot read {fpath}: {reason}"
            self.bad_rows.append(dict(row))
            return
        if oname and opt.get("name") != oname:
            opt.setdefault("name", oname)
        self.items.append(opt)
        self.files[str(opt.get("name", oname))] = f
        self.written[f] = text
        extra = {k: v for k, v in row.items() if k not in ("name", "file")}
        if extra:
            self.row_extra[str(opt.get("name", oname))] = extra

    def rows(self) -> list[dict[str, Any]]:
        """The ``[[optimizations]]`` rows to save (call :meth:`assign_files` first)."""
        out = []
        for opt in self.items:
            oname = str(opt.get("name", ""))
            row = {"name": oname, "file": self.files[oname]}
            for k, v in self.row_extra.get(oname, {}).items():
                row.setdefault(k, v)
            out.append(row)
        out.extend(self.bad_rows)
        return out

    # ------------------------------------------------------------ files
    def assign_files(self) -> None:
        """Give every optimization without one a file name (unique names required); forget removed ones."""
        used = set(self.files.values())
        names = set()
        for opt in self.items:
            oname = opt.get("name")
            if not isinstance(oname, str) or not oname:
                raise ProjectError(f"an optimization in {self._store.dir} has no name: every optimization "
                                   "needs a 'name'")
            if oname in names:
                raise ProjectError(f"two optimizations in {self._store.dir} are named {oname!r}: names must be "
                                   "unique")
            names.add(oname)
            if oname in self.files:
                continue
            base = slugify(oname, "optimization")
            f = f"{OPTIMIZATIONS_DIR}/{base}.json"
            if f in used or (self._store.dir / f).exists():
                digest = hashlib.sha256(oname.encode("utf-8", "surrogatepass")).hexdigest()[:8]
                f = f"{OPTIMIZATIONS_DIR}/{base}-{digest}.json"
            n = 2
            while f in used:
                f = f"{OPTIMIZATIONS_DIR}/{base}-{n}.json"
                n += 1
            self.files[oname] = f
            used.add(f)
        for oname in list(self.files):
            if oname not in names:
                del self.files[oname]

    def write_files(self) -> None:
        """Write each optimization whose JSON changed since it was last written or read (atomically)."""
        for opt in self.items:
            f = self.files[str(opt["name"])]
            try:
                otext = dumps_json(opt)
            except (TypeError, ValueError) as exc:
                raise ProjectError(f"cannot store optimization {opt['name']!r}: {exc}") from None
            if self.written.get(f) != otext:
                self._store.write(self._store.dir / f, otext)
                self.written[f] = otext

    def remove_unreferenced(self) -> None:
        """Delete the files of optimizations no longer listed (after project.toml was saved)."""
        keep = set(self.files.values()) | {str(r.get("file")) for r in self.bad_rows}
        for f in list(self.written):
            if f not in keep:
                self.written.pop(f, None)
                self._store.remove_owned(f, OPTIMIZATIONS_DIR)
