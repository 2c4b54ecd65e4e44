"""Command line entry point: ``sparsify-tui``.

The subcommands are thin: each parses its flags here and calls one function in
``sparsify_tui.commands.<name>``, which calls the core packages. The TUI is
imported only when the app is opened, so headless commands start fast and
never load Textual.

A user error (``SparsifyError``) ends in one line ``error: ...`` on stderr and
exit status 2; Ctrl+C ends in ``error: interrupted`` and status 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from sparsify_tui import __version__
from sparsify_tui.errors import SparsifyError, UsageError

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ``error: ...`` line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _add_input_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D1,D2,...",
        help="shape of a model input, e.g. input=1,3,224,224 or state=2,N,128 (repeatable): a number is fed as "
             "stated; N marks the dimension that takes --batch-size (else the model's batch dimension takes it "
             "where it is left open or 1); NAME= is a 0-d input",
    )


def _engines_text(with_auto: bool = True) -> str:
    """``auto, deepsparse, onnxruntime or openvino``: the engines of the registry, for ``--engine`` helps."""
    from sparsify_tui.engines.registry import engine_choices, engine_names

    c = engine_choices() if with_auto else engine_names()
    return f"{', '.join(c[:-1])} or {c[-1]}" if len(c) > 1 else c[0]


def _add_precision(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--precision", default=None, metavar="P",
                   help=f"fp32, bf16, fp16 or int8{what}: bf16/fp16 with --engine openvino where the CPU has them; "
                        "int8 runs a quantized (QDQ) model as is (default fp32)")


def _add_measure_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-value", action="append", default=[], metavar="NAME=VALUE",
                   help="fill a model input with this value instead of random data, e.g. sr=16000 (repeatable)")
    p.add_argument("--wait-idle", default=None, metavar="SECONDS",
                   help="first wait up to SECONDS for other processes to leave the cores alone")


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sparsify-tui",
        description=(
            "Profile ONNX models layer by layer and plan their sparsification. "
            "Without a subcommand, opens the terminal app."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sparsify-tui {__version__}")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo project")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    # one function per subcommand, in the order `--help` lists them
    _add_open(sub)
    _add_new(sub)
    _add_info(sub)
    _add_profile(sub)
    _add_optimize(sub)
    _add_export(sub)
    _add_prune(sub)
    _add_benchmark(sub)
    from sparsify_tui.commands import deploy as deploy_cmd

    deploy_cmd.add_parser(sub)  # the deploy command keeps its flags beside its code
    _add_compare(sub)
    _add_cluster(sub)
    _add_sweep(sub)

    return parser


def _add_open(sub) -> None:
    p = sub.add_parser("open", help="open the app on a project directory")
    p.add_argument("project", help="project directory")


def _add_new(sub) -> None:
    p = sub.add_parser("new", help="create a project from an ONNX model")
    p.add_argument("model", help="ONNX file")
    p.add_argument("--name", help="project name (default: the model's file name)")
    p.add_argument("--description", default="", help="free text")
    p.add_argument("--dir", help="directory to create the project in (default: ./<name>)")
    p.add_argument("--link", action="store_true", help="reference the model instead of copying it")
    _add_input_shape(p)
    _add_json(p)


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="analyse a model: totals, layers, this machine")
    p.add_argument("target", help="ONNX file or project directory")
    p.add_argument("--all", action="store_true",
                   help="list every layer (constant producers included), not only the first 200 compute layers")
    _add_input_shape(p)
    _add_json(p)


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="measure a performance, loss or quantization profile")
    psub = p.add_subparsers(dest="kind", parser_class=_Parser, metavar="KIND")
    psub.required = True
    _add_profile_perf(psub)
    _add_profile_loss(psub)
    _add_profile_quant(psub)


def _add_profile_perf(psub) -> None:
    pp = psub.add_parser("perf", help="per-layer timings and performance sensitivity")
    pp.add_argument("target", help="ONNX file or project directory")
    pp.add_argument("--engine", default="auto", help=f"{_engines_text()} (default auto)")
    _add_precision(pp)
    pp.add_argument("--batch-size", default="1", help="batch size (default 1)")
    pp.add_argument("--cores", default=None, help="cores to use (default: all physical cores)")
    pp.add_argument("--levels", default=None, help="sparsity levels, e.g. 0,0.4,0.6,0.9")
    pp.add_argument("--iterations", default="10", help="timed iterations per level (default 10)")
    pp.add_argument("--warmup", default="5", help="warm-up iterations per level (default 5)")
    pp.add_argument("--repeats", default="3", help="repeats of the baseline for the spread (default 3)")
    pp.add_argument("--data", default=None, help=".npz with arrays named like the inputs")
    pp.add_argument("--name", default=None, help="profile name in the project")
    pp.add_argument("--force", action="store_true", help="measure again even if cached")
    pp.add_argument("--timeout", default="600", help="time limit per level in seconds (default 600)")
    pp.add_argument("--import", dest="import_file", default=None,
                    help="import a profile JSON measured elsewhere into the project")
    pp.add_argument("--structure", default=None,
                    help="what pruning removes: unstructured (default: weights) or channels (a channel "
                         "perf profile: each channel group's time with a fraction of its channels removed)")
    pp.add_argument("--fractions", default=None,
                    help="--structure channels: fractions of each group's channels removed (default 0.25,0.5,0.75)")
    pp.add_argument("--combinations", default=None,
                    help="--structure channels: variants measured per fraction, each pruning several groups "
                         "(default: groups + 1, at most 12)")
    _add_input_shape(pp)
    _add_measure_flags(pp)
    _add_json(pp)


def _add_profile_loss(psub) -> None:
    pl = psub.add_parser("loss", help="per-layer loss sensitivity to pruning")
    pl.add_argument("target", help="ONNX file or project directory")
    pl.add_argument("--method", default="approx", help="approx (weight magnitude) or one-shot (measured)")
    pl.add_argument("--data", default=None, help=".npz file or directory of .npz/.npy samples")
    pl.add_argument("--samples", default="4", help="number of samples for one-shot (default 4)")
    pl.add_argument("--prune-method", default="magnitude",
                    help="how one-shot prunes each layer: magnitude (default), wanda or sparsegpt")
    pl.add_argument("--levels", default=None, help="sparsity levels")
    pl.add_argument("--eval-sparsity", default="0.9", help="sparsity at which sensitivity is reported")
    pl.add_argument("--structure", default=None,
                    help="unstructured (default: single weights per layer) or channels (one-shot: each channel "
                         "group's output change with a fraction of its channels removed)")
    pl.add_argument("--fractions", default=None,
                    help="--structure channels: fractions of each group's channels removed (default 0.25,0.5,0.75)")
    pl.add_argument("--name", default=None, help="profile name in the project")
    pl.add_argument("--force", action="store_true", help="measure again even if cached")
    _add_input_shape(pl)
    _add_json(pl)


def _add_profile_quant(psub) -> None:
    pq = psub.add_parser("quant", help="per-layer INT8 quantization sensitivity")
    pq.add_argument("target", help="ONNX file or project directory")
    pq.add_argument("--data", default=None, help=".npz file or directory of .npz/.npy samples")
    pq.add_argument("--samples", default="4", help="number of samples (default 4)")
    pq.add_argument("--name", default=None, help="profile name in the project")
    pq.add_argument("--force", action="store_true", help="measure again even if cached")
    _add_input_shape(pq)
    _add_json(pq)


def _add_optimize(sub) -> None:
    p = sub.add_parser("optimize", help="create or update an optimization and print its estimates")
    p.add_argument("project", help="project directory")
    p.add_argument("--name", default=None, help="optimization name (default: the first, or 'default')")
    p.add_argument("--sparsity", default=None, help="target sparsity of prunable params (default 0.85); with "
                                                    "--structure channels: the share of channels removed (default 0.3)")
    p.add_argument("--balance", default=None,
                   help="0 = optimize for performance, 1 = for recovery (default 0.5)")
    p.add_argument("--epochs", default=None, help="training epochs (default 100)")
    p.add_argument("--min-sparsity", default=None, help="filter: layers below this get no pruning")
    p.add_argument("--min-speedup", default=None, help="filter: layers below this speedup get no pruning")
    p.add_argument("--min-recovery", default=None, help="filter: layers below this recovery get no pruning")
    p.add_argument("--max-sparsity", default=None, help="per-layer cap (default 0.95)")
    edges = p.add_mutually_exclusive_group()
    edges.add_argument("--prune-edges", dest="protect_edges", action="store_false", default=None,
                       help="plan the stem, the output heads and tiny layers like the others "
                            "(by default they are left dense, with the reason shown)")
    edges.add_argument("--protect-edges", dest="protect_edges", action="store_true", default=None,
                       help="leave the stem, the output heads and tiny layers dense (the default)")
    p.add_argument("--tiny-params", default=None, metavar="N",
                   help="with edge protection, layers with fewer than N weights stay dense (default 1024, 0 = none)")
    p.add_argument("--override", action="append", default=[], metavar="LAYER=S",
                   help="fix a layer's sparsity, 0.8 or 80%% (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="LAYER",
                   help="leave a layer dense (repeatable)")
    p.add_argument("--quantize", action="store_true", help="add INT8 quantization-aware training")
    p.add_argument("--copy", default=None, metavar="NEW_NAME", help="copy the optimization as a new version")
    p.add_argument("--structure", default=None,
                   help="unstructured (single weights per layer; the default for a new optimization) or channels "
                        "(a fraction of channels removed per channel group; --sparsity is then the share of the "
                        "prunable groups' channels removed, default 0.3)")
    p.add_argument("--flops-reduction", default=None,
                   help="with --structure channels: plan the share of channels that removes this share of the FLOPs")
    p.add_argument("--round-to", default=None, metavar="N",
                   help="with --structure channels: keep each group's channels at a multiple of N (default: the "
                        "channel perf profile's engine and precision default)")
    _add_optimize_budget(p)
    _add_json(p)


def _add_optimize_budget(p) -> None:
    """``optimize --max-output-change X``: the fastest measured plan within an output-change budget."""
    g = p.add_argument_group("budget (closed loop: build, measure, back off)")
    g.add_argument("--max-output-change", default=None, metavar="X",
                   help="plan per layer sparsity and precision (INT8/fp32) so that the built model's measured "
                        "output change on held-out samples is at most X; stores the fastest measured plan within it")
    if "--engine" not in p._option_string_actions:
        g.add_argument("--engine", default="auto", help="with --max-output-change: the engine to plan for")
    if "--precision" not in p._option_string_actions:
        g.add_argument("--precision", default=None, help="with --max-output-change: fp32 or int8 (mixed precision)")
    if "--structure" not in p._option_string_actions:
        g.add_argument("--structure", default="unstructured", help="with --max-output-change: unstructured")
    g.add_argument("--max-minutes", default=None, metavar="M",
                   help="with --max-output-change: stop the loop after M minutes (default 10)")
    g.add_argument("--data", default=None, help="with --max-output-change: samples (.npz) to calibrate and hold out")
    g.add_argument("--cores", default=None, help="with --max-output-change: cores to measure with")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a SparseML recipe and a code sample (or import a recipe)")
    p.add_argument("project", help="project directory")
    p.add_argument("--optimization", default=None, help="optimization name (default: the first)")
    p.add_argument("--recipe", default=None, help="write the recipe YAML here (default: stdout)")
    p.add_argument("--framework", default="pytorch", help="pytorch, keras or tensorflow")
    p.add_argument("--code", default=None, help="write the code sample here")
    p.add_argument("--code-type", default="integration", help="integration or training")
    p.add_argument("--name-map", default=None, help="JSON or CSV mapping ONNX weight names to framework names")
    p.add_argument("--import", dest="import_recipe", default=None, metavar="RECIPE",
                   help="import a recipe into the optimization instead of exporting")
    p.add_argument("--onnx", default=None, metavar="PATH",
                   help="a channel optimization (optimize --structure channels): write its pruned model here")
    _add_json(p)


def _add_prune(sub) -> None:
    p = sub.add_parser("prune", help="one-shot prune the model to an optimization's sparsities")
    p.add_argument("project", help="project directory")
    p.add_argument("-o", "--output", required=True, help="pruned ONNX file to write")
    p.add_argument("--optimization", default=None, help="optimization name (default: the first)")
    p.add_argument("--validate", action="store_true", help="benchmark dense against pruned and store it")
    p.add_argument("--engine", default="auto", help=f"engine for --validate: {_engines_text()}")
    _add_precision(p, " for --validate")
    p.add_argument("--iterations", default="20", help="timed iterations for --validate")
    p.add_argument("--method", default=None,
                   help="magnitude (smallest weights, the default), wanda (|w| x input norm) or sparsegpt "
                        "(reconstructs each layer's outputs on calibration data); with --structure channels: "
                        "l2 (smallest filter norms, the default) or reconstruct (channels ranked on calibration "
                        "data, then each layer reading them refit to its dense outputs)")
    p.add_argument("--structure", default="unstructured",
                   help="unstructured (single weights, the optimization's plan; the default) or channels "
                        "(whole channels removed: a smaller model every engine runs faster)")
    p.add_argument("--flops-reduction", default=None,
                   help="with --structure channels: the share of the model's FLOPs to remove (default 0.3)")
    p.add_argument("--channel-fraction", default=None,
                   help="with --structure channels: remove this fraction of every prunable group's channels "
                        "instead of aiming at a FLOPs reduction")
    p.add_argument("--round-to", default=None,
                   help="with --structure channels: keep each group's channels at a multiple of N (default: "
                        "8 on ONNX Runtime fp32, 32 on OpenVINO, 16 otherwise; 1 = no rounding)")
    p.add_argument("--save-as", default=None, metavar="NAME",
                   help="with --structure channels: also store the plan as the project's optimization NAME "
                        "(the deployment search then measures it on every engine and precision)")
    p.add_argument("--data", default=None, help="calibration samples (.npz, .npy or a directory of them)")
    p.add_argument("--samples", default="32", help="calibration samples to use (default 32)")
    p.add_argument("--eval-data", default=None,
                   help="evaluation samples for --validate (default: the last quarter of --data)")
    p.add_argument("--sequential", action="store_true",
                   help="capture each layer's inputs on the model with the earlier layers already pruned")
    p.add_argument("--cores", default=None,
                   help="cores for --validate (default: those of the optimizer's perf profile, else all)")
    p.add_argument("--input-value", action="append", default=[], metavar="NAME=VALUE",
                   help="for --validate: fill a model input with this value instead of random data, e.g. "
                        "sr=16000 (repeatable)")
    p.add_argument("--metric", default=None, metavar="MODULE:FUNCTION",
                   help="for --validate: your metric of the pruned model's outputs against the dense model's "
                        "(e.g. mymetrics:top1 or metrics.py:top1; labels from a 'labels' array in the samples)")
    p.add_argument("--max-drop", default=None, metavar="D",
                   help="for --validate with --metric: pass when the metric drops by at most D (its units)")
    _add_json(p)


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="latency and throughput of models, side by side")
    p.add_argument("models", nargs="+", help="ONNX files or project directories (a project's model uses its stored input shapes)")
    p.add_argument("--engine", default="auto", help=_engines_text())
    _add_precision(p)
    p.add_argument("--batch-size", default="1", help="batch sizes, e.g. 1,16")
    p.add_argument("--cores", default=None, help="core counts, e.g. 1,2")
    p.add_argument("--iterations", default="20", help="timed iterations (default 20)")
    p.add_argument("--warmup", default="5", help="warm-up iterations (default 5)")
    p.add_argument("--repeats", default="3", help="repeats (default 3)")
    _add_input_shape(p)
    _add_measure_flags(p)
    _add_json(p)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="compare two performance profiles layer by layer")
    p.add_argument("profile_a", help="profile JSON file (or PROJECT_DIR:PROFILE_ID)")
    p.add_argument("profile_b", help="profile JSON file (or PROJECT_DIR:PROFILE_ID)")
    _add_json(p)


def _add_cluster(sub) -> None:
    p = sub.add_parser("cluster", help="Ray cluster of benchmark servers")
    csub = p.add_subparsers(dest="cluster_command", parser_class=_Parser, metavar="ACTION")
    csub.required = True
    pc = csub.add_parser("status", help="list the servers in the cluster")
    pc.add_argument("--address", default=None, help="Ray head address HOST:PORT")
    _add_json(pc)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="profile a project on many servers of a Ray cluster")
    p.add_argument("project", help="project directory")
    p.add_argument("--address", default=None, help="Ray head address HOST:PORT (default: local)")
    p.add_argument("--servers", default="all", help="all, or server names separated by commas")
    p.add_argument("--batch-sizes", default="1", help="e.g. 1,16,64")
    p.add_argument("--cores", default=None, help="e.g. 1,2,4")
    from sparsify_tui.engines.registry import REFERENCE

    p.add_argument("--engines", default=REFERENCE, help=f"{_engines_text(False)}, separated by commas")
    p.add_argument("--precision", default=None, metavar="P",
                   help="precision of the openvino jobs: fp32, bf16, fp16 or int8 (default fp32)")
    p.add_argument("--kind", default="perf", help="perf, loss or quant")
    p.add_argument("--levels", default=None, help="sparsity levels, e.g. 0,0.4,0.6,0.9")
    p.add_argument("--iterations", default="10", help="timed iterations per level (default 10)")
    p.add_argument("--warmup", default="5", help="warm-up iterations per level (default 5)")
    p.add_argument("--repeats", default="3", help="repeats of the baseline for the spread (default 3)")
    _add_json(p)


# command -> (module of sparsify_tui.commands, its function); imported only when the command runs
_HANDLERS: dict[str, tuple[str, str]] = {
    "open": ("app", "run"),
    "new": ("project", "run_new"),
    "info": ("info", "run"),
    "profile": ("profile", "run"),
    "optimize": ("optimize", "run_optimize"),
    "export": ("optimize", "run_export"),
    "prune": ("prune", "run_prune"),
    "benchmark": ("prune", "run_benchmark"),
    "compare": ("profile", "run_compare"),
    "cluster": ("cluster", "run"),
    "sweep": ("cluster", "run"),
    "deploy": ("deploy", "run"),
}


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd is not None and cmd not in _HANDLERS:
        raise UsageError(f"unknown command {cmd!r}")
    import importlib

    module, func = _HANDLERS[cmd] if cmd is not None else _HANDLERS["open"]  # no command: the app
    return getattr(importlib.import_module(f"sparsify_tui.commands.{module}"), func)(args)


COMMANDS = tuple(_HANDLERS)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse argv; a first positional that is not a subcommand is a model to open."""
    positionals = [a for a in argv if not a.startswith("-")]
    if positionals and positionals[0] not in COMMANDS:
        model = positionals[0]
        if not os.path.exists(model) and not model.lower().endswith(".onnx"):
            import difflib

            close = difflib.get_close_matches(model, COMMANDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (commands: {', '.join(COMMANDS)})"
            raise UsageError(f"unknown command or missing file {model!r}{hint}")
        rest = list(argv)
        rest.remove(model)
        args = parser.parse_args(rest)
        if args.command is not None:  # pragma: no cover - defensive
            raise UsageError(f"unexpected argument {model!r}")
        args.model = model
        return args
    args = parser.parse_args(argv)
    args.model = getattr(args, "model", None) if args.command else None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, list(sys.argv[1:] if argv is None else argv))
        return _dispatch(args)
    except SparsifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; saved work is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into `head`): not an error worth a traceback
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
