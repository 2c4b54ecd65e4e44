"""The engine registry: one description per inference engine, the only list of engines.

Every list of engines, precisions and capabilities elsewhere (the CLI's
``--engine`` choices, the app's dialogs, the deployment search's rows and skips,
sweeps, the machine summary, what ``auto`` becomes) is derived from the
:class:`EngineSpec` values registered here. Adding an engine is one backend
module in ``sparsify_tui/engines/`` (its ``Timed`` class,
:mod:`sparsify_tui.engines.timed`) plus one :func:`register` call below, or a
module elsewhere that registers itself, named in ``$SPARSIFY_TUI_ENGINE_MODULES``
(HACKING.md, "Add an engine").

Nothing here imports an engine: the backend module (and with it deepsparse or
openvino, which take seconds to import) is imported on the first call that
runs the engine. Installed checks and versions read the distributions'
metadata (:mod:`sparsify_tui.engines.machine`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from sparsify_tui.errors import EngineUnavailableError, UsageError

AUTO = "auto"
PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # every precision any engine runs, in display order
_ALIASES = {"f32": "fp32", "float32": "fp32", "f16": "fp16", "float16": "fp16", "bfloat16": "bf16", "i8": "int8"}
# a precision that needs CPU support -> (machine_info() key that says the CPU has it, what it needs)
_CPU_PRECISIONS = {"bf16": ("bf16", "AVX-512 BF16 or AMX"),
                   "fp16": ("fp16", "AMX-FP16 or an ARM CPU with fp16 arithmetic")}


@dataclass(frozen=True)
class EngineSpec:
    """What sparsify-tui knows about one engine.

    ``precisions_known``: the precisions the engine can run at all; those in ``_CPU_PRECISIONS`` only
    where this CPU has them (:meth:`precisions`). ``precision_hint``: the engine compiles the model at a
    chosen precision (OpenVINO's inference precision hint); without it the engine runs what the file
    holds (fp32, or int8 for a QDQ file) and a profile records no precision. ``sparse_speedup``: sparse
    weights run faster (so a perf profile measures each sparsity level; otherwise the levels are
    approximated from FLOPs). ``instrumented``: the engine has a per-layer profile (:meth:`layer_profile`);
    an engine without one only times whole models. ``auto_rank``: the order ``auto`` tries installed
    engines in (lower first; None: ``auto`` never picks it). ``channel_round_to``: the multiple a channel
    group's remaining channels are rounded to by default, by precision (``"*"``: any other), where its
    kernels run fastest per FLOP (README, "Channel pruning"). ``approximated_note``: what a perf profile
    says when the engine's sparsity levels are approximated from FLOPs (default: it does not run sparse
    weights faster). ``min_cpus``: the CPUs the worker keeps in its affinity mask however few ``--cores``
    ask for (DeepSparse stalls with fewer than 2).

    ``module`` is the backend: it defines ``Timed``, a :class:`sparsify_tui.engines.timed.TimedModel`
    subclass (how the engine prepares, compiles, times, profiles and runs a model), and ``DEPLOY_SNIPPET``.
    """

    name: str
    label: str
    module: str
    distributions: tuple[str, ...]
    install_hint: str
    precisions_known: tuple[str, ...] = ("fp32", "int8")
    precision_hint: bool = False
    sparse_speedup: bool = False
    instrumented: bool = True
    auto_rank: int | None = None
    channel_round_to: tuple[tuple[str, int], ...] = (("*", 16),)
    approximated_note: str = ""
    min_cpus: int = 1

    def approximation_note(self) -> str:
        """The perf profile's note for an engine whose sparsity levels are approximated from FLOPs."""
        return self.approximated_note or (f"{self.name} does not run sparse weights faster: the times at each "
                                          "sparsity level are approximated from FLOPs")

    def round_to(self, precision: str | None) -> int:
        """The default ``--round-to`` of a channel plan run at ``precision`` on this engine."""
        table = dict(self.channel_round_to)
        return table.get((precision or "fp32").lower(), table.get("*", 16))

    # ------------------------------------------------------------ installed, version
    def backend(self):
        """The backend module (imported now; raises EngineUnavailableError when the engine is missing)."""
        if not self.available():
            raise EngineUnavailableError(self.install_hint)
        return importlib.import_module(self.module)

    def available(self) -> bool:
        """Installed here (found on the path, not imported)."""
        import importlib.util

        try:
            return importlib.util.find_spec(self.import_name) is not None
        except (ImportError, ValueError):  # pragma: no cover - a broken install
            return False

    @property
    def import_name(self) -> str:
        return self.distributions[0].replace("-", "_")

    def version(self) -> str | None:
        """The installed distribution's version, or None (read from metadata, without importing it)."""
        from sparsify_tui.engines.machine import _dist_info_versions, _version

        return _version(self.distributions, _dist_info_versions())

    def deploy_snippet(self) -> str:
        """The backend's ``DEPLOY_SNIPPET``: a script that runs an exported model (``str.format`` template)."""
        return importlib.import_module(self.module).DEPLOY_SNIPPET

    # ------------------------------------------------------------ precisions
    def precisions(self, machine: dict | None = None) -> tuple[str, ...]:
        """The precisions this engine runs on this CPU (``machine``: a machine summary; default this one)."""
        if machine is None:
            from sparsify_tui.engines.machine import machine_summary

            machine = machine_summary()
        return tuple(p for p in self.precisions_known
                     if p not in _CPU_PRECISIONS or machine.get(_CPU_PRECISIONS[p][0]))

    # ------------------------------------------------------------ running (through the backend's Timed)
    def timed_class(self):
        """The backend's :class:`~sparsify_tui.engines.timed.TimedModel` subclass (imports the backend)."""
        return self.backend().Timed

    def _precision(self, precision: str | None) -> str | None:
        return (precision or "fp32") if self.precision_hint else None

    def timed(self, path: str, inputs: dict[str, Any], *, names: list[str] | None = None, batch_size: int = 1,
              cores: int | None = None, precision: str | None = None):
        """A :class:`~sparsify_tui.engines.timed.TimedModel` of ``path`` as it is (already :meth:`prepared`)."""
        return self.timed_class()(self, path, inputs, names=names, batch_size=batch_size, cores=cores,
                                  precision=self._precision(precision))

    @contextlib.contextmanager
    def timed_model(self, path: str, inputs: dict[str, Any], *, names: list[str] | None = None,
                    batch_size: int = 1, cores: int | None = None, precision: str | None = None,
                    fix_shapes: bool = False) -> Iterator[Any]:
        """Context manager: a :class:`~sparsify_tui.engines.timed.TimedModel` of ``path`` prepared for this
        engine (a temporary copy where the engine needs one, removed at the end). ``fix_shapes``: ``prepare``
        gets the inputs' shapes to write into its copy, so repeated compiles need not rewrite it (DeepSparse)."""
        cls = self.timed_class()
        names = list(names or inputs)
        shapes = {n: list(inputs[n].shape) for n in names} if fix_shapes else None
        with cls.prepare(str(path), shapes) as (p, note):
            yield cls(self, p, inputs, names=names, batch_size=batch_size, cores=cores,
                      precision=self._precision(precision), note=note, shapes_fixed=shapes is not None)

    def prepared(self, path: str, input_shapes: dict[str, list[int]] | None = None):
        """Context manager: ``(path the engine reads, note or None)``: the backend's ``Timed.prepare``
        (DeepSparse rewrites files its bundled ONNX reader cannot read), else the file as is."""
        return self.timed_class().prepare(str(path), input_shapes)

    def benchmark(self, path: str, inputs: dict[str, Any], *, names: list[str] | None = None,
                  batch_size: int = 1, cores: int | None = None, iterations: int = 20, warmup: int = 5,
                  repeats: int = 3, heartbeat: Callable[[str], Any] | None = None,
                  precision: str | None = None) -> dict[str, Any]:
        """Compile ``path`` once and time ``repeats`` blocks of ``iterations`` runs (ms per batch).

        Returns ``repeat_ms``, ``iteration_ms``, ``compile_s``, ``precision`` (what it ran at), ``windows``, and
        where the engine says so ``inference_precision`` and ``note`` (how the file was adapted to the engine).
        """
        with self.timed_model(path, inputs, names=names, batch_size=batch_size, cores=cores,
                              precision=precision) as tm:
            res = tm.benchmark(iterations=iterations, warmup=warmup, repeats=repeats, heartbeat=heartbeat)
        if tm.note:
            res["note"] = tm.note
        res.setdefault("precision", precision or "fp32")
        return res

    def runner(self, path: str, inputs: dict[str, Any], *, names: list[str] | None = None, batch_size: int = 1,
               cores: int | None = None, precision: str | None = None, tmp: str | None = None) -> Callable[..., Any]:
        """A compiled model of ``path`` (already :meth:`prepared`): ``run()`` runs one inference of ``inputs``,
        ``run(feed)`` of other arrays; ``tmp``: a directory that outlives the runner (for engines that write
        files)."""
        return self.timed(path, inputs, names=names, batch_size=batch_size, cores=cores,
                          precision=precision).runner(tmp)

    def layer_profile(self, path: str, info, inputs: dict[str, Any], *, names: list[str] | None = None,
                      batch_size: int = 1, cores: int | None = None, iterations: int = 10, warmup: int = 5,
                      repeats: int = 1, heartbeat: Callable[[str], Any] | None = None,
                      precision: str | None = None, level: float | None = None) -> dict[str, Any]:
        """Per-layer times of the model (``layer_ms``: layer id -> ms, ``internal``, ``repeats``, ``windows``)
        with the engine's profiler; ``level``: a sparsity the engine imposes (only an engine with
        ``sparse_speedup``; others profile the file as it is)."""
        if not self.instrumented:
            raise UsageError(f"{self.name} has no per-layer profile")
        with self.timed_model(path, inputs, names=names, batch_size=batch_size, cores=cores,
                              precision=precision) as tm:
            return tm.profile(info, iterations=iterations, warmup=warmup, repeats=repeats, heartbeat=heartbeat,
                              level=level)


_REGISTRY: dict[str, EngineSpec] = {}


def register(spec: EngineSpec) -> EngineSpec:
    """Add an engine (after those registered before it, in display order); ValueError for a name taken."""
    if spec.name in _REGISTRY or spec.name == AUTO or spec.name != spec.name.strip().lower() or "," in spec.name:
        raise ValueError(f"engine {spec.name!r} is already registered or is not a lower-case name")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove an engine registered by an extra module (tests); the built-in engines stay."""
    if name in _BUILTIN:
        raise ValueError(f"engine {name!r} is built in")
    _REGISTRY.pop(name, None)


# ---------------------------------------------------------------- the engines (display order)
register(EngineSpec(
    name="deepsparse", label="DeepSparse", module="sparsify_tui.engines.deepsparse_engine",
    distributions=("deepsparse", "deepsparse-nightly", "deepsparse-ent"),
    install_hint="deepsparse is not installed; pip install 'sparsify-tui[deepsparse]'",
    sparse_speedup=True, auto_rank=0, min_cpus=2))
register(EngineSpec(
    name="onnxruntime", label="ONNX Runtime", module="sparsify_tui.engines.ort",
    distributions=("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "ort-nightly"),
    install_hint="onnxruntime is not installed; pip install onnxruntime",
    auto_rank=1, channel_round_to=(("fp32", 8), ("*", 16))))
register(EngineSpec(
    name="openvino", label="OpenVINO", module="sparsify_tui.engines.openvino_engine",
    distributions=("openvino", "openvino-nightly"),
    install_hint="openvino is not installed; pip install 'sparsify-tui[openvino]' (Python 3.10 or newer)",
    precisions_known=("fp32", "bf16", "fp16", "int8"), precision_hint=True, channel_round_to=(("*", 32),),
    approximated_note=("openvino does not run unstructured sparse weights faster: the times at each sparsity "
                       "level are approximated from FLOPs")))
_BUILTIN = frozenset(_REGISTRY)

# the engine every other one is compared with and falls back to (a dependency of sparsify-tui itself)
REFERENCE = "onnxruntime"


# ---------------------------------------------------------------- lookups
def engine_names() -> tuple[str, ...]:
    """Every registered engine, in display order."""
    return tuple(_REGISTRY)


def engine_choices() -> tuple[str, ...]:
    """What ``--engine`` accepts: ``auto`` and every engine."""
    return (AUTO, *_REGISTRY)


def engines() -> tuple[EngineSpec, ...]:
    return tuple(_REGISTRY.values())


def get_engine(name: str) -> EngineSpec:
    """The spec of ``name`` (case and spaces ignored); UsageError listing the engines otherwise."""
    key = str(name or "").strip().lower()
    if key not in _REGISTRY:
        raise UsageError(f"--engine must be one of {', '.join(engine_choices())}, got {key!r}")
    return _REGISTRY[key]


def installed_engines() -> list[str]:
    """The engines installed here, in the order ``auto`` prefers them, then the others in display order."""
    ranked = sorted(_REGISTRY.values(), key=lambda s: (s.auto_rank is None, s.auto_rank or 0))
    return [s.name for s in ranked if s.available()]


def preferred_engine() -> str:
    """The engine ``auto`` picks first when it is installed (the lowest ``auto_rank``)."""
    ranked = sorted((s for s in _REGISTRY.values() if s.auto_rank is not None), key=lambda s: s.auto_rank)
    return ranked[0].name if ranked else REFERENCE


def engine_versions() -> dict[str, str | None]:
    """``{engine: installed version or None}`` for every engine (one scan of the installed distributions)."""
    from sparsify_tui.engines.machine import _dist_info_versions, _version

    scanned = _dist_info_versions()
    return {s.name: _version(s.distributions, scanned) for s in _REGISTRY.values()}


def check_engine(engine: str | None) -> str:
    """``engine`` (or ``auto``) checked: UsageError for an unknown name, EngineUnavailableError with the
    install hint for one that is not installed."""
    key = (engine or AUTO).strip().lower()
    if key == AUTO:
        return AUTO
    spec = get_engine(key)
    if not spec.available():
        raise EngineUnavailableError(spec.install_hint)
    return key


def resolve_auto(requested: str | None) -> tuple[str, str]:
    """(engine, reason) for ``--engine requested``: the one resolution of ``auto``.

    A named engine is checked (:func:`check_engine`); ``auto`` becomes the best-ranked installed engine
    (DeepSparse, else ONNX Runtime), the reason saying which better ones are missing.
    """
    key = check_engine(requested)
    if key != AUTO:
        return key, f"requested with --engine {key}"
    ranked = sorted((s for s in _REGISTRY.values() if s.auto_rank is not None), key=lambda s: s.auto_rank)
    missing = []
    for s in ranked:
        if s.available():
            if missing:
                return s.name, f"{', '.join(missing)} not installed"
            return s.name, f"{s.name} installed and compiled the model"
        missing.append(s.name)
    return REFERENCE, f"{', '.join(missing)} not installed"


def normalize_precision(precision: str | None) -> str:
    """``fp32`` (default), ``bf16``, ``fp16`` or ``int8``; UsageError otherwise."""
    p = (precision or "fp32").strip().lower()
    p = _ALIASES.get(p, p)
    if p not in PRECISIONS:
        raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return p


def precision_problem(engine: str, precision: str | None, machine: dict | None = None) -> str | None:
    """Why ``engine`` (or ``auto``) cannot run ``precision`` on this CPU, or None: the one message."""
    p = normalize_precision(precision)
    specs = [s for s in _REGISTRY.values() if s.auto_rank is not None] if engine == AUTO else [get_engine(engine)]
    if all(p in s.precisions_known for s in specs):
        spec = specs[0]
        if p in _CPU_PRECISIONS and p not in spec.precisions(machine):
            offered = ", ".join(spec.precisions(machine))
            return (f"this CPU cannot run {p} with {spec.name}: it needs {_CPU_PRECISIONS[p][1]} "
                    f"({spec.name} offers here: {offered})")
        return None
    who = " and ".join(s.name for s in specs)
    can = " or ".join(f"--engine {s.name}" for s in _REGISTRY.values() if p in s.precisions_known)
    return f"--precision {p} needs {can} ({who} run{'' if len(specs) > 1 else 's'} fp32 on the CPU here)"


def check_precision(engine: str, precision: str | None, machine: dict | None = None) -> str | None:
    """The precision to run ``engine`` at: None (the engine runs what the file holds, fp32) or a checked
    name; UsageError when the engine never runs it, EngineUnavailableError when this CPU lacks it."""
    if precision is None or str(precision).strip() == "":
        return "fp32" if engine != AUTO and get_engine(engine).precision_hint else None
    p = normalize_precision(str(precision))
    problem = precision_problem(engine, p, machine)
    if problem:
        raise (EngineUnavailableError if problem.startswith("this CPU") else UsageError)(problem)
    if engine != AUTO and get_engine(engine).precision_hint:
        return p
    return None if p == "fp32" else p


# ---------------------------------------------------------------- engines registered by other modules
ENGINE_MODULES_ENV = "SPARSIFY_TUI_ENGINE_MODULES"
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_engine_modules(value: str | None = None) -> list[str]:
    """Import the modules named in ``$SPARSIFY_TUI_ENGINE_MODULES`` (dotted names on the Python path,
    separated by commas); each registers its engine with :func:`register` when imported. Run once when this
    module is imported, so the CLI and every worker child (which inherits the environment) see the same
    engines. Only dotted module names are accepted (no file paths); a module that cannot be imported is
    skipped with one warning line on stderr. Returns those warnings."""
    raw = os.environ.get(ENGINE_MODULES_ENV, "") if value is None else value
    problems = []
    for name in (n.strip() for n in raw.split(",")):
        if not name:
            continue
        if not _MODULE_NAME.match(name):
            problems.append(f"{ENGINE_MODULES_ENV}: {name!r} is not a module name: skipped")
            continue
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - an extra engine must not break the built-in ones
            problems.append(f"{ENGINE_MODULES_ENV}: {name} could not be imported: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}: skipped")
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    return problems


load_engine_modules()
