"""``sparsify-tui compare PROFILE_A PROFILE_B``: two perf profiles layer by layer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparsify_tui.commands.common import emit_json, print_table
from sparsify_tui.errors import ProfileError, UsageError


def load_perf_profile(spec: str) -> tuple[dict, str]:
    """A perf profile from a JSON file, or ``PROJECT_DIR:PROFILE_ID`` (id or name) / a project dir (latest)."""
    from sparsify_tui.profiles.perf import validate_perf_document

    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".onnx":
            raise UsageError(f"{path} is an ONNX model, not a profile: compare takes two perf profile JSON files "
                             f"or PROJECT_DIR:PROFILE_ID (measure one with 'sparsify-tui profile perf')")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ProfileError(f"{path} is not a readable JSON profile ({exc})") from None
        return validate_perf_document(doc, str(path)), str(path)
    project_dir, _, pid = spec.rpartition(":")
    if not project_dir or not Path(project_dir).expanduser().is_dir():
        if path.is_dir():
            project_dir, pid = spec, ""
        else:
            raise UsageError(f"{spec}: no such profile file (give a JSON file or PROJECT_DIR:PROFILE_ID)")
    from sparsify_tui.project import Project

    project = Project.open(Path(project_dir).expanduser(), readonly=True)
    try:
        perf = project.profiles_of("perf")
        if not pid:
            if not perf:
                raise ProfileError(f"project {project_dir} has no perf profile")
            entry = perf[-1]
        else:
            matches = [e for e in perf if e.id == pid] or [e for e in perf if e.name == pid]
            if not matches:
                ids = ", ".join(e.id if e.name in ("", e.id) else f"{e.id} ({e.name})" for e in perf) or "none"
                raise ProfileError(f"project {project_dir} has no perf profile {pid!r} (perf profiles: {ids})")
            entry = matches[-1]
        doc = project.load_profile(entry)
        return validate_perf_document(doc, f"profile {entry.id} of {project_dir}"), f"{project_dir}:{entry.id}"
    finally:
        project.close()


def _f(x, fmt="{:.3f}") -> str:
    return "" if x is None else fmt.format(x)


def run(args: argparse.Namespace) -> int:
    from sparsify_tui.profiles.compare import compare_profiles

    a, name_a = load_perf_profile(args.profile_a)
    b, name_b = load_perf_profile(args.profile_b)
    result = compare_profiles(a, b)
    result["a"]["source"] = name_a
    result["b"]["source"] = name_b
    if args.json:
        emit_json(result)
        return 0
    for tag, src, p in (("A", name_a, a), ("B", name_b, b)):
        print(f"{tag}: {src}  engine {p.get('engine')} {p.get('engine_version') or ''}, batch {p.get('batch_size')}, "
              f"cores {p.get('cores')}{', approximated' if p.get('approximated') else ''}")
    print()
    rows = [[r["id"][:60], r["op_type"] if not r["engine_internal"] else "engine-internal", _f(r["a_ms"]),
             _f(r["b_ms"]), _f(r["diff_ms"], "{:+.3f}"), _f(r["ratio"], "{:.2f}x")] for r in result["layers"]]
    print_table(["Layer", "Op", "A ms", "B ms", "B-A ms", "B/A"], rows, right=(2, 3, 4, 5))
    t = result["totals"]
    print()
    print_table(
        ["Total", "A ms", "B ms", "B-A ms", "B/A"],
        [["baseline", _f(t["a_ms"]), _f(t["b_ms"]), _f(t["diff_ms"], "{:+.3f}"), _f(t["ratio"], "{:.2f}x")]]
        + [[f"sparsity {k}", _f(v["a_ms"]), _f(v["b_ms"]), _f(v["diff_ms"], "{:+.3f}"), _f(v["ratio"], "{:.2f}x")]
           for k, v in t["by_level"].items() if k != result["level_0_key"]],
        right=(1, 2, 3, 4),
    )
    return 0
