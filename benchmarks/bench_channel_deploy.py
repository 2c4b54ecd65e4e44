"""A channel plan in the deployment search of the ResNet-50-sized model (issue 26's first must-hold).

usage: python benchmarks/bench_channel_deploy.py [--model PATH] [--flops-reduction 0.55] [--round-to 32]
                                                 [--channel-method reconstruct] [--engines onnxruntime,openvino]
                                                 [--precisions fp32,int8] [--repeats 7] [--dir DIR]

In a scratch project (``--dir``, default a temporary directory) of the model (linked, never copied into or
written beside), ``sparsify-tui prune --structure channels --flops-reduction R --round-to N --save-as chan``
stores a channel plan as an optimization; ``sparsify-tui deploy --json --force`` then times every engine x
precision x {dense, chan} in one child process, interleaved round by round. Printed: the table, and from
that one run

* the channel plan's ``flops_reduction`` (the pruned file's FLOPs against the dense file's);
* ONNX Runtime fp32: chan against dense (the row's speedup: the median over rounds of dense block / chan block);
* OpenVINO INT8: chan INT8 against dense INT8, the median over rounds of the two rows' block ratio;
* whether the fastest row within the default budget, and the raw fastest, is a structured (channel) one.

Issue 26 requires flops_reduction >= 0.55, >= 1.8x on ONNX Runtime fp32, >= 1.35x on OpenVINO INT8, and a
structured fastest row. The model defaults to the corpus's ``onnx-1.23.2_light-resnet50_constw.onnx``
(``$SPARSIFY_TEST_MODELS``), else ``scripts/build_resnet50.py``'s, built into the scratch directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS_NAME = "onnx-1.23.2_light-resnet50_constw.onnx"
NEED = {"flops_reduction": 0.55, "ort_fp32": 1.8, "ov_int8": 1.35}


def _cli(*args, env: dict, timeout: float = 7200) -> subprocess.CompletedProcess:
    code = "import sys\nfrom sparsify_tui.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _model(given: str | None, tmp: Path, env: dict) -> Path:
    if given:
        return Path(given)
    corpus = Path(os.environ.get("SPARSIFY_TEST_MODELS", "")) / CORPUS_NAME
    if corpus.exists():
        return corpus
    out = tmp / "resnet50.onnx"
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_resnet50.py"), str(out)], check=True, env=env)
    return out


def block_ratio(a: dict, b: dict) -> float | None:
    """The median over rounds of row ``a``'s block time over row ``b``'s (both timed in every round)."""
    ra, rb = a.get("block_ms") or [], b.get("block_ms") or []
    ratios = [x / y for x, y in zip(ra, rb) if y]
    return statistics.median(ratios) if ratios else None


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--flops-reduction", default="0.55")
    ap.add_argument("--round-to", default="32")
    ap.add_argument("--channel-method", default="reconstruct", choices=["l2", "reconstruct"])
    ap.add_argument("--engines", default="onnxruntime,openvino")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--repeats", default="7")
    ap.add_argument("--dir", default=None, help="scratch directory (kept); default a temporary one")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO), NM_DISABLE_ANALYTICS="1")
    with tempfile.TemporaryDirectory(prefix="bench-channel-deploy-") as t:
        tmp = Path(args.dir) if args.dir else Path(t)
        tmp.mkdir(parents=True, exist_ok=True)
        env.setdefault("SPARSIFY_TUI_HOME", str(tmp / "home"))
        model = _model(args.model, tmp, env)
        pdir = tmp / "proj"
        if not (pdir / "project.toml").exists():
            res = _cli("new", model, "--dir", pdir, "--link", env=env)
            if res.returncode:
                print(res.stderr.strip().splitlines()[-1:])
                return 1
        t0 = time.perf_counter()
        res = _cli("prune", pdir, "-o", tmp / "chan.onnx", "--structure", "channels", "--flops-reduction",
                   args.flops_reduction, "--round-to", args.round_to, "--save-as", "chan", "--json", env=env)
        if res.returncode:
            print("prune failed:", res.stderr.strip().splitlines()[-1:])
            return 1
        pruned = json.loads(res.stdout)
        print(f"channel plan: {pruned['removed_channels']} channels removed from {pruned['pruned_groups']} of "
              f"{pruned['prunable_groups']} prunable groups (of {pruned['groups']}), round to {pruned['round_to']}, "
              f"flops_reduction {pruned['flops_reduction']:.3f} ({time.perf_counter() - t0:.0f} s)")
        before = _load()
        t0 = time.perf_counter()
        res = _cli("deploy", pdir, "--json", "--force", "--engines", args.engines, "--precisions", args.precisions,
                   "--repeats", args.repeats, "--channel-method", args.channel_method, env=env)
        if res.returncode:
            print("deploy failed:", res.stderr.strip().splitlines()[-3:])
            return 1
        doc = json.loads(res.stdout)
        print(f"deploy: {time.perf_counter() - t0:.0f} s, {doc['rounds']} interleaved rounds, {doc['cores']} cores, "
              f"{before} before, {_load()} after; CPU {(doc.get('machine') or {}).get('cpu_model')}")
        return report(doc)


def report(doc: dict) -> int:
    rows = {r["id"]: r for r in doc["rows"]}
    print(f"{'row':40s} {'ms':>8s} {'speedup':>8s} {'change':>10s}  structure  flops_reduction")
    for r in sorted(doc["rows"], key=lambda r: -(r.get("speedup") or 0)):
        fr = r.get("flops_reduction")
        print(f"{r['id']:40s} {r['median_ms']:8.2f} {r['speedup']:7.2f}x {r['output_change']:10.3g}  "
              f"{str(r.get('structure') or 'dense'):10s} {'' if fr is None else f'{fr:.3f}'}")
    for s in doc.get("skipped") or []:
        print(f"skipped {s['id']}: {s['reason']}")
    chan = rows.get("onnxruntime/fp32/chan")
    fr = (chan or {}).get("flops_reduction")
    ort = chan["speedup"] if chan else None
    ov_d, ov_c = rows.get("openvino/int8/dense"), rows.get("openvino/int8/chan")
    ov = block_ratio(ov_d, ov_c) if ov_d and ov_c else None
    best = doc.get("best") or {}
    raw = max(doc["rows"], key=lambda r: r.get("speedup") or 0)
    checks = [
        ("flops_reduction", fr, NEED["flops_reduction"], ""),
        ("ONNX Runtime fp32 chan / dense", ort, NEED["ort_fp32"], "x"),
        ("OpenVINO INT8 chan / OpenVINO INT8 dense", ov, NEED["ov_int8"], "x"),
    ]
    ok = True
    for what, v, need, unit in checks:
        held = v is not None and v >= need
        ok &= held
        print(f"{what}: {'n/a' if v is None else f'{v:.3f}{unit}'} (need >= {need}{unit}): "
              f"{'held' if held else 'NOT held'}")
    structured = best.get("structure") == "channels"
    ok &= structured
    print(f"fastest row within the budget ({(doc.get('budget') or {}).get('name')}): {best.get('id')} "
          f"({best.get('speedup', 0):.2f}x): {'structured' if structured else 'NOT structured'}")
    print(f"raw fastest row: {raw['id']} ({raw['speedup']:.2f}x): "
          f"{'structured' if raw.get('structure') == 'channels' else 'not structured'}")
    print("all held" if ok else "NOT all held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
