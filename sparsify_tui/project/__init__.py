"""A sparsify-tui project: one directory the user comes back to for weeks.

Layout::

    PROJECT_DIR/
      project.toml          the project (hand-editable TOML, see below)
      project.toml.bak      the previous version of project.toml (kept by every save)
      project.lock          write lock: pid, host and start time of the process holding it
      model.onnx            the model, copied in (absent with --link)
      profiles/<id>.json    each profile's full results (JSON, written atomically)
      optimizations/<slug>.json   each optimization (JSON, written atomically)

``project.toml``::

    schema_version = 1

    [project]
    name = "resnet"
    description = ""
    created = "2026-11-28T16:15:00+00:00"     # ISO 8601, UTC
    modified = "2026-11-28T16:20:00+00:00"

    [model]
    file = "model.onnx"        # relative to the project, or an absolute path (--link)
    sha256 = "..."
    size = 102400              # bytes; with mtime_ns a cache key for the sha256:
    mtime_ns = 1764346500000000000   # the model is re-hashed only when one of them changes

    [model.input_shapes]
    input = [1, 3, 224, 224]

    [[profiles]]
    id = "perf-1"              # unique in the project; the file is profiles/<id>.json
    kind = "perf"              # perf | loss | quant
    name = "baseline"
    engine = "deepsparse"
    engine_version = "1.8.0"
    created = "..."
    file = "profiles/perf-1.json"
    key = "..."                # see profile_key()
    model_sha256 = "..."       # the model the profile was measured on (stale when it differs)
    [profiles.settings]        # the settings that produced it (batch_size, levels, ...)
    [profiles.machine]         # cpu_model, isa, cores, fingerprint

    [[optimizations]]
    name = "default"
    file = "optimizations/default.json"

Keys and sections this module does not know are kept as they are on save, so
a newer program's (or a user's) additions survive an older program's save.

**None values.** TOML cannot hold ``None``. Profile ``settings`` and
``machine`` tables are stored with ``None`` values removed recursively (a
``None`` dict value is dropped, a ``None`` list item is dropped) and
:meth:`Project.profile_key` applies the same rule before hashing, so a key
computed from the original settings equals the key of the stored ones.

**Optimizations** are stored as JSON files (``optimizations/<slug>.json``)
referenced from ``[[optimizations]]`` by ``name`` and ``file``: JSON keeps
``None``, nested lists and the exact content the optimizer wrote, with no
lossy conversion. ``Project.optimizations`` is the list of those dicts, in
order; :meth:`Project.set_optimization` adds or replaces one by
``opt["name"]`` and saves; :meth:`Project.remove_optimization` removes one.
A hand-written ``[[optimizations]]`` table without ``file`` is read as the
optimization itself (inline form); it is written back as a JSON file on the
next save. An optimization file that cannot be read is reported in
:meth:`Project.problems` and its ``[[optimizations]]`` entry is preserved.

**Saving** is atomic (``fsutil``: temporary file, fsync, rename, fsync of the
directory) and keeps the previous ``project.toml`` as ``project.toml.bak``. A
profile is written to its JSON file first, then ``project.toml`` is saved: a
crash in between leaves an unreferenced file, never a reference to a missing or
torn one.

Since the optimization file is written before the ``project.toml`` that lists
it, a crash between the two can leave the *file* one save newer than
``project.toml``; its ``[[optimizations]]`` row only holds name and file, so
the project is still consistent.

``project.toml`` changed behind the program's back while it was open (a
hand edit) is not silently overwritten: the next save keeps that version as
``project.toml.outside-edit`` and adds a notice. :meth:`Project.changed_on_disk`
tells a read-only viewer that another process saved; :meth:`Project.reload`
reads it again.

:meth:`Project.create` builds a new project under a hidden staging directory
next to the target and renames it into place at the end, so an interrupted
``sparsify-tui new`` leaves no half-made project.

**Errors.** A corrupt ``project.toml`` raises :class:`ProjectError` naming the
line and column and the command that restores the backup (or saying the
backup is damaged too); a wrong value type raises :class:`ProjectError`
naming the key. A corrupt or missing profile file never stops
:meth:`Project.open`: :meth:`Project.load_profile` raises :class:`ProfileError`
for that profile only, and :meth:`Project.profile_problems` lists them. A
failed write (read-only directory, full disk, file size limit) raises
:class:`ProjectError` and leaves the previous content intact.

**Locking.** :meth:`Project.open` takes an exclusive ``fcntl.flock`` on
``project.lock`` (and writes the pid, host and time into it for messages). The
kernel releases a flock when its process dies, so a lock left by a dead (even
SIGKILLed) process is taken over at once. A second writer gets
``readonly=True`` and a notice naming the holder; ``save()`` on a read-only
project raises :class:`ReadOnlyProjectError`.

**Staleness.** Every profile records the sha256 of the model it was measured
on. When the model file changes on disk the project notices on open
(``model_changed``; the model is re-hashed only when its size or mtime
changed), and :meth:`Project.is_stale` is True for the profiles measured on the
old model. Stale profiles are shown, never deleted. A missing model file
opens the project with a notice (``model_missing``); a ``schema_version``
newer than :data:`SCHEMA_VERSION` opens it read-only with a notice.

**Recent projects.** :func:`recent_projects` / :func:`remember_project` keep
the newest 30 project directories in ``paths.recent_projects_file()`` (JSON,
atomic); ``create`` and ``open`` remember the project.

**The package.** :class:`Project` (``project.py``) composes the parts, each readable on its own:
``store.py`` (the directory, ``project.toml`` read and written atomically with its backup, the
outside-edit check), ``lock.py`` (:class:`ProjectLock`), ``catalogue.py`` (profile entries, keys,
files, staleness), ``optimizations.py`` (the optimization files), ``model.py`` (model checks, the
``[model]`` table), ``create.py`` (``Project.create`` in steps), ``recent.py`` (recent projects) and
``common.py`` (constants, JSON and TOML helpers). Import from ``sparsify_tui.project``.
"""

from __future__ import annotations

from sparsify_tui.project.catalogue import ProfileEntry, ProfileCatalogue, machine_summary
from sparsify_tui.project.common import (
    BACKUP_FILE, KINDS, LOCK_FILE, MODEL_FILE, OPTIMIZATIONS_DIR, PROFILE_SCHEMA_VERSION, PROFILES_DIR,
    PROJECT_FILE, RECENT_MAX, SCHEMA_VERSION, canonical_json, clean_text, drop_none, dump_toml, dumps_json,
    now_iso, slugify,
)
from sparsify_tui.project.lock import ProjectLock
from sparsify_tui.project.model import external_data_files
from sparsify_tui.project.optimizations import OptimizationSet
from sparsify_tui.project.project import Project
from sparsify_tui.project.recent import forget_project, is_project_dir, recent_projects, remember_project
from sparsify_tui.project.store import ProjectStore

__all__ = [
    "Project", "ProfileEntry", "ProjectLock", "SCHEMA_VERSION", "KINDS", "slugify", "drop_none",
    "machine_summary", "recent_projects", "remember_project", "forget_project", "is_project_dir", "now_iso",
    "ProjectStore", "ProfileCatalogue", "OptimizationSet", "PROFILE_SCHEMA_VERSION", "PROJECT_FILE",
    "BACKUP_FILE", "LOCK_FILE", "MODEL_FILE", "PROFILES_DIR", "OPTIMIZATIONS_DIR", "RECENT_MAX",
    "canonical_json", "clean_text", "dump_toml", "dumps_json", "external_data_files",
]
