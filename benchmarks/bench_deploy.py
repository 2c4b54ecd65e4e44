"""The deployment search's whole table for the corpus models and the ResNet-50-sized model.

usage: python benchmarks/bench_deploy.py [--corpus DIR] [--only KEY ...] [--no-corpus] [--no-resnet50]
                                         [--sparsity 0.9] [--repeats 7] [--builder SCRIPT]

For each model it makes a scratch project in a temporary directory (the
corpus input shapes from ``inputs.json``), one optimization at ``--sparsity``
(``sparsify-tui optimize``: approximated profiles), runs ``sparsify-tui deploy
--json --max-output-change 0.01`` (every engine x precision x sparsity this machine runs, interleaved in
one child process) and prints the table, fastest first, with the skipped rows.

Issue 17 requires, on the ResNet-50-sized model (``scripts/build_resnet50.py``, built into the
temporary directory): OpenVINO INT8 and bf16 rows, and a configuration at least 3.5x faster than ONNX Runtime fp32 dense,
measured in one run. The last lines say whether that held.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = {
    "resnet50": "onnx-1.23.2_light-resnet50_constw.onnx",
    "mobilenetv3": "rapidocr-1.4.4_ppocr-cls-mobilenetv3.onnx",
    "yolov8n": "nudenet-3.4.2_yolov8n-320.onnx",
    "crnn": "ddddocr-1.6.1_crnn-lstm-ocr.onnx",
    "resnet50nhwc": "opennsfw-0.0.6_resnet50thin-nhwc.onnx",
    "minilm": "vital-0.2.1_paraphrase-minilm-l3-v2.onnx",
    "wakeword": "openwakeword-0.4.0_speech-embedding-cnn.onnx",
}
TARGET = 3.5


def _cli(*args: str, env: dict, timeout: float = 3600) -> subprocess.CompletedProcess:
    code = "import sys\nfrom sparsify_tui.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _builder(given: str | None) -> Path | None:
    cands = [Path(given)] if given else [REPO / "scripts" / "build_resnet50.py"]
    return next((c for c in cands if c.exists()), None)


def deploy(name: str, model: Path, shapes: dict, tmp: Path, env: dict, sparsity: float, repeats: int,
           budget: float) -> dict | None:
    pdir = tmp / f"proj-{name}"
    shape_args = [a for k, v in shapes.items() for a in ("--input-shape", f"{k}={','.join(map(str, v))}")]
    res = _cli("new", model, "--dir", pdir, "--link", *shape_args, env=env)
    if res.returncode:
        print(f"{name}: new failed: {res.stderr.strip().splitlines()[-1:]}")
        return None
    res = _cli("optimize", pdir, "--sparsity", str(sparsity), env=env)
    if res.returncode:
        print(f"{name}: optimize failed: {res.stderr.strip().splitlines()[-1:]}")
        return None
    t = time.perf_counter()
    res = _cli("deploy", pdir, "--json", "--repeats", str(repeats), "--max-output-change", str(budget), env=env)
    wall = time.perf_counter() - t
    if res.returncode:
        print(f"{name}: deploy failed: {res.stderr.strip().splitlines()[-1:]}")
        return None
    doc = json.loads(res.stdout)
    doc["_wall_s"] = wall
    return doc


def print_table(name: str, doc: dict) -> None:
    ref = doc["reference"]
    print(f"\n== {name}: reference onnxruntime fp32 dense {ref['median_ms']:.2f} ms, batch {doc['batch_size']}, "
          f"{doc['cores']} cores, {doc['rounds']} rounds, {doc['_wall_s']:.0f} s")
    print(f"{'engine':<12} {'prec':<5} {'sparsity':<9} {'ms':>8} {'spread':>15} {'speedup':>8} "
          f"{'out change':>10} {'top-1':>6} {'MB':>6} pareto")
    for r in sorted(doc["rows"], key=lambda r: -(r["speedup"] or 0)):
        sp = r["spread_ms"]
        t1 = "-" if r.get("top1_agreement") is None else f"{r['top1_agreement']:.0%}"
        print(f"{r['engine']:<12} {r['precision']:<5} {(r['optimization'] and 'pruned') or 'dense':<9} "
              f"{r['median_ms']:>8.2f} {sp[0]:>7.2f}-{sp[1]:<7.2f} {r['speedup']:>7.2f}x "
              f"{r['output_change']:>10.3g} {t1:>6} {r['file_bytes'] / 1e6:>6.1f} {'yes' if r['pareto'] else ''}")
    reasons: dict[str, list[str]] = {}
    for s in doc["skipped"]:
        reasons.setdefault(s["reason"], []).append(f"{s['engine']} {s['precision']}")
    for why, which in reasons.items():
        print(f"  skipped {', '.join(sorted(set(which)))}: {why}")
    top = max(doc["rows"], key=lambda r: r["speedup"] or 0)
    print(f"  fastest: {top['engine']} {top['precision']} {top['optimization'] or 'dense'} {top['speedup']:.2f}x "
          f"(output change {top['output_change']:.3g})")
    if doc.get("best"):
        b = doc["best"]
        print(f"  fastest within the budget ({doc['budget']['name']}): {b['engine']} {b['precision']} "
              f"{b['optimization'] or 'dense'} {b['speedup']:.2f}x (output change {b['output_change']:.3g})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=os.environ.get("SPARSIFY_TEST_MODELS"))
    ap.add_argument("--only", action="append", default=[], help="corpus key (repeatable)")
    ap.add_argument("--no-corpus", action="store_true")
    ap.add_argument("--no-resnet50", action="store_true", help="skip the ResNet-50-sized model")
    ap.add_argument("--builder", default=None, help="a script writing the model: BUILDER OUT.onnx "
                    "(default scripts/build_resnet50.py)")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--max-output-change", type=float, default=0.01, help="budget of the 'within' line")
    args = ap.parse_args()
    env = dict(os.environ, NM_DISABLE_ANALYTICS="1")
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as d:
        tmp = Path(d)
        env["SPARSIFY_TUI_HOME"] = str(tmp / "home")
        try:
            with open("/proc/loadavg") as f:
                print(f"load average before: {f.read().split()[:3]}")
        except OSError:
            pass
        if not args.no_resnet50:
            builder = _builder(args.builder)
            if builder is None:
                print("error: build_resnet50.py not found (--builder PATH)")
                return 2
            subprocess.run([sys.executable, str(builder), str(tmp / "resnet50.onnx")], check=True,
                           stdout=subprocess.DEVNULL, env=dict(env, PYTHONPATH=str(REPO)))
            doc = deploy("resnet50-sized", tmp / "resnet50.onnx", {}, tmp, env, args.sparsity, args.repeats,
                         args.max_output_change)
            if doc is None:
                ok = False
            else:
                print_table("resnet50-sized (build_resnet50.py)", doc)
                ids = {r["id"] for r in doc["rows"]}
                have = {"openvino/int8/dense", "openvino/bf16/dense"} <= ids
                top = (doc.get("best") or {}).get("speedup") or 0.0
                print(f"  issue 17: OpenVINO INT8 and bf16 rows {'present' if have else 'MISSING'}; fastest within "
                      f"the budget {top:.2f}x ORT fp32 dense (target >= {TARGET}x): {'met' if top >= TARGET else 'NOT met'}")
                ok = ok and have and top >= TARGET
        if not args.no_corpus and args.corpus:
            root = Path(args.corpus)
            hints = json.loads((root / "inputs.json").read_text()) if (root / "inputs.json").exists() else {}
            for key, fname in CORPUS.items():
                if args.only and key not in args.only:
                    continue
                shapes = {n: h["shape"] for n, h in (hints.get(fname) or {}).items()}
                doc = deploy(key, root / fname, shapes, tmp, env, args.sparsity, args.repeats,
                         args.max_output_change)
                if doc is not None:
                    print_table(key, doc)
        try:
            with open("/proc/loadavg") as f:
                print(f"\nload average after: {f.read().split()[:3]}")
        except OSError:
            pass
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
