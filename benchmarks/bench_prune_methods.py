"""Magnitude, Wanda and SparseGPT one-shot pruning on the corpus: output change and time (issue 18).

usage: python benchmarks/bench_prune_methods.py [--models yolov8n,mobilenetv3,wakeword,minilm]
           [--levels 0.5,0.7,0.85] [--samples 32] [--eval 8] [--resnet50-dir /tmp/r50] [--no-resnet50]

For each model and uniform per-layer plan it prunes with each method (calibration samples),
and prints the output change (``metrics``/``sensitivity.output_change``: KL for logits and
probabilities, normalized squared error otherwise) on separate evaluation samples, and the
time taken. Then it builds the ResNet-50-sized model (``scripts/build_resnet50.py``) and times SparseGPT with 32 calibration samples at 0.7, reporting the
peak resident memory of that child process.

The corpus has no data sets, so the inputs are synthetic but shaped like real ones: images are
1/f ("pink") noise, whose power spectrum follows natural images' (not uniform noise), and MiniLM
gets sentences of token ids drawn from a Zipf law over ids 1000..20000 (word frequencies of text
follow Zipf's law) between [CLS] (101) and [SEP] (102), with a full attention mask.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = {
    "yolov8n": "nudenet-3.4.2_yolov8n-320.onnx",
    "mobilenetv3": "rapidocr-1.4.4_ppocr-cls-mobilenetv3.onnx",
    "wakeword": "openwakeword-0.4.0_speech-embedding-cnn.onnx",
    "minilm": "vital-0.2.1_paraphrase-minilm-l3-v2.onnx",
}


def pink(rng, shape) -> np.ndarray:
    """1/f noise images (N, C, H, W) or, for a channels-last shape, transposed to it."""
    *lead, h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx ** 2 + fy ** 2)
    f[0, 0] = 1.0
    spec = (rng.standard_normal((*lead, h, w // 2 + 1)) + 1j * rng.standard_normal((*lead, h, w // 2 + 1))) / f
    img = np.fft.irfft2(spec, s=(h, w))
    img = (img - img.mean(axis=(-2, -1), keepdims=True)) / (img.std(axis=(-2, -1), keepdims=True) + 1e-12)
    return (0.5 * img).astype(np.float32)


def sentences(rng, length: int) -> dict:
    ids = np.clip(1000 + rng.zipf(1.3, size=(1, length)), 1000, 19999).astype(np.int64)
    ids[0, 0], ids[0, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones((1, length), dtype=np.int64)}


def make_samples(model_path: str, n: int, seed: int) -> list[dict]:
    """``n`` realistic-looking samples for a corpus model (see the module doc)."""
    import onnx

    m = onnx.load(model_path, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(seed)
    out = []
    hints = {}
    hint_file = Path(model_path).parent / "inputs.json"
    if hint_file.exists():  # the corpus's shapes for dynamic dimensions
        hints = json.loads(hint_file.read_text()).get(Path(model_path).name, {})
    specs = [(vi.name, list(hints[vi.name]["shape"]) if vi.name in hints else
              [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim])
             for vi in m.graph.input if vi.name not in inits]
    for _ in range(n):
        if any(name == "input_ids" for name, _ in specs):
            length = next(s for name, s in specs if name == "input_ids")[1]
            out.append(sentences(rng, max(8, length if length > 1 else 128)))
            continue
        s = {}
        for name, shape in specs:
            shape = [1] + shape[1:]
            if shape[-1] in (1, 3) and len(shape) == 4:  # channels last
                s[name] = np.ascontiguousarray(pink(rng, [1, shape[3], shape[1], shape[2]]).transpose(0, 2, 3, 1))
            else:
                s[name] = pink(rng, shape)
        out.append(s)
    return out


def outputs(model, samples):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    src = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return [sess.run(None, {k: v for k, v in s.items() if k in names}) for s in samples]


def change(dense, pruned) -> float:
    """The output change of ``pruned`` against ``dense`` (lists of per-sample outputs), the tool's one metric."""
    from sparsify_tui.metrics import compare_outputs, plan_outputs

    return float(compare_outputs(dense, pruned, plan_outputs(dense)).value)


def run_table(names, levels, n_cal, n_eval) -> list[dict]:
    from sparsify_tui.analysis import analyze
    from sparsify_tui.optim.calibrated import prune_model_calibrated

    root = Path(os.environ.get("SPARSIFY_TEST_MODELS", Path.home() / ".cache" / "sparsify-tui" / "models"))
    rows = []
    for key in names:
        path = str(root / MODELS[key])
        graph = analyze(path)
        samples = make_samples(path, n_cal + n_eval, seed=0)
        cal, ev = samples[:n_cal], samples[n_cal:]
        dense = outputs(path, ev)
        for s in levels:
            plan = {lay.id: s for lay in graph.prunable_layers}
            for method in ("magnitude", "wanda", "sparsegpt"):
                t = time.perf_counter()
                model, _info = prune_model_calibrated(path, plan, graph=graph, method=method, samples=cal)
                secs = time.perf_counter() - t
                row = {"model": key, "sparsity": s, "method": method, "output_change": change(dense, outputs(model, ev)),
                       "seconds": round(secs, 2)}
                rows.append(row)
                print(f"{key:12s} {s:5.2f} {method:10s} output change {row['output_change']:10.4g}  {secs:7.1f} s",
                      flush=True)
    return rows


def resnet50(outdir: str, n_cal: int) -> dict:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "resnet50.onnx").exists():
        from sparsify_tui.analysis.demo import build_resnet50_model

        build_resnet50_model(out / "resnet50.onnx")
    code = (
        "import json,resource,time,sys;"
        "from benchmarks.bench_prune_methods import make_samples;"
        "from sparsify_tui.analysis import analyze;"
        "from sparsify_tui.optim.calibrated import prune_model_calibrated;"
        f"p={str(out / 'resnet50.onnx')!r};g=analyze(p);cal=make_samples(p,{n_cal},0);"
        "t=time.perf_counter();"
        "prune_model_calibrated(p,{l.id:0.7 for l in g.prunable_layers},graph=g,method='sparsegpt',samples=cal,"
        "on_progress=lambda e: print(e['label'],file=sys.stderr,flush=True));"
        "u=resource.getrusage(resource.RUSAGE_SELF);"
        "print(json.dumps({'seconds':time.perf_counter()-t,'cpu_seconds':u.ru_utime+u.ru_stime,"
        "'peak_rss_mb':u.ru_maxrss/1024}))"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env,
                       cwd=str(Path(__file__).resolve().parents[1]))
    if p.returncode:
        raise SystemExit(f"the ResNet-50 run failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="yolov8n,mobilenetv3,wakeword,minilm")
    ap.add_argument("--levels", default="0.5,0.7,0.85")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--eval", type=int, default=8)
    ap.add_argument("--resnet50-dir", default="/tmp/bench-prune-r50")
    ap.add_argument("--no-resnet50", action="store_true")
    ap.add_argument("--no-table", action="store_true")
    a = ap.parse_args()
    print(f"cores: {len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.1f}")
    if not a.no_table:
        rows = run_table([m for m in a.models.split(",") if m], [float(x) for x in a.levels.split(",")],
                         a.samples, a.eval)
        print()
        print(f"{'model':12s} {'sparsity':>8s} " + " ".join(f"{m:>22s}" for m in ("magnitude", "wanda", "sparsegpt")))
        keys = sorted({(r["model"], r["sparsity"]) for r in rows}, key=lambda k: (a.models.split(",").index(k[0]), k[1]))
        for mk, s in keys:
            cells = []
            for m in ("magnitude", "wanda", "sparsegpt"):
                r = next(x for x in rows if x["model"] == mk and x["sparsity"] == s and x["method"] == m)
                cells.append(f"{r['output_change']:10.4g} {r['seconds']:7.1f} s")
            print(f"{mk:12s} {s:8.2f} " + " ".join(f"{c:>22s}" for c in cells))
    if not a.no_resnet50:
        r = resnet50(a.resnet50_dir, 32)
        print(f"\nResNet-50-sized model, sparsegpt at 0.7 with 32 calibration samples: {r['seconds']:.1f} s wall, "
              f"{r['cpu_seconds']:.1f} s CPU (all threads), peak RSS {r['peak_rss_mb']:.0f} MB; load average "
              f"{os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} cores")


if __name__ == "__main__":
    main()
