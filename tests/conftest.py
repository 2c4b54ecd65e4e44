"""Shared fixtures.

The real models come from ``scripts/get_models.sh DIR``; ``.ci/run`` fetches
them into a cache and exports ``SPARSIFY_TEST_MODELS``. A test that needs them
uses the ``corpus`` fixture: it skips when the corpus is absent on a
developer's machine, and FAILS when ``CI`` is set (CI must never skip them).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import pytest

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

# The app's own files (recent projects, demo, scratch projects, caches) go to a private place for the
# whole run, set before any fixture: session-scoped fixtures (a project made once for many tests, a Ray
# cluster whose workers open projects) run before the function-scoped autouse fixture below, and child
# processes, tmux panes and Ray workers inherit this environment.
_SESSION_HOME = tempfile.mkdtemp(prefix="sparsify-tui-tests-home-")
os.environ["SPARSIFY_TUI_HOME"] = _SESSION_HOME
atexit.register(shutil.rmtree, _SESSION_HOME, True)


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test interrupts: SIGINT back to its default.

    A runner started with SIGINT ignored (``nohup``, a background job of a
    non-interactive shell, some CI agents) passes the ignored disposition on
    through exec, and Python then installs no KeyboardInterrupt handler.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# The one way a test interrupts a child: start it with ``interruptible_popen`` (SIGINT back to its default in
# the child, whatever the runner's disposition) and send Ctrl+C with ``send_sigint``, which refuses a child
# started any other way. ``tests/test_isolation.py`` checks statically that no test sends SIGINT otherwise.
_INTERRUPTIBLE: weakref.WeakSet[subprocess.Popen] = weakref.WeakSet()


def interruptible_popen(args, *, preexec_fn=None, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` for a child a test will interrupt (or that interrupts itself) with SIGINT."""

    def pre() -> None:
        default_sigint()
        if preexec_fn is not None:
            preexec_fn()

    proc = subprocess.Popen(args, preexec_fn=pre, **kwargs)
    _INTERRUPTIBLE.add(proc)
    return proc


def send_sigint(proc: subprocess.Popen, *, group: bool = False) -> None:
    """Ctrl+C to a child from ``interruptible_popen``; ``group=True`` sends it to the child's process group, as
    a terminal does to its foreground job (the child needs ``start_new_session=True``)."""
    assert proc in _INTERRUPTIBLE, "start a child you interrupt with tests.conftest.interruptible_popen"
    if group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)


def interrupt_cli_when(args: list[str], marker: str, *, env: dict, wait_s: float = 300) -> tuple[int, str]:
    """Run ``sparsify-tui ARGS`` as a child, press Ctrl+C once ``marker`` shows on its stderr (asserted to show
    within ``wait_s``), and return (exit status, whole stderr)."""
    import threading
    import time

    code = "import sys\nfrom sparsify_tui.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = interruptible_popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    end = time.monotonic() + wait_s
    while marker not in "".join(chunks) and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.1)
    assert marker in "".join(chunks), "".join(chunks)[-2000:]
    send_sigint(proc)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    return proc.returncode, "".join(chunks)

REPO = Path(__file__).resolve().parent.parent

# Tests that must not run beside another test: they time an engine or read the machine's load (a ratio or an
# interference share measured while another test takes a core is another figure), run DeepSparse (it stalls
# when another process takes one of its cores), start a Ray cluster or drive the real app with its profiles.
# They get the ``timing`` marker; ``-n 2 -m "not timing"`` runs the rest in parallel while working (HACKING.md).
TIMING_PATHS = (
    "tests/engines/",
    "tests/profiles/test_perf_profile.py",
    "tests/profiles/test_perf_quality.py",
    "tests/profiles/test_perf_cli.py",
    "tests/profiles/test_perf_channels.py",
    "tests/profiles/test_auto_fallback.py",
    "tests/profiles/test_quant.py",
    "tests/optim/test_validate.py",
    "tests/deploy/",
    "tests/cluster/",
    "tests/analysis/test_deepsparse_flops.py",
    "tests/reliability/test_engine_faults.py",
    "tests/reliability/test_tui.py",
    "tests/tui/test_overview.py",
    "tests/tui/test_e2e_tmux.py",
    "tests/tui/test_e2e_tmux_plan.py",
)

# Tests in those files that neither time an engine, read the load, run DeepSparse nor start Ray: they drive the
# app on approximated profiles (or an engine name that does not exist) and wait on its state, not on a clock
# (they run in the parallel half beside a neighbour). ``test_odd_projects_in_every_screen_at_80x24`` stays: it
# reads a notification after a fixed pause, which a loaded neighbour can delay.
PARALLEL_OK = (
    "tests/reliability/test_tui.py::test_optimizer_rejects_",
    "tests/reliability/test_tui.py::test_profile_dialog_rejects_letters_and_starts_nothing",
    "tests/reliability/test_tui.py::test_resize_to_40x10_and_back",
    "tests/reliability/test_tui.py::test_project_locked_by_another_writer_opens_read_only_in_the_tui",
    "tests/tui/test_overview.py::test_overview_totals_and_profiles",
    "tests/tui/test_overview.py::test_stale_profile_is_shown",
    "tests/tui/test_overview.py::test_failed_profile_shows_reason_and_app_survives",
)

# Tests over about 10 s on an idle 2-core machine that carry no ``slow`` marker in their file: the marker is
# added here (``-m "not slow"`` leaves them out, and ``-n 2`` starts them first).
SLOW_TESTS = (
    "tests/optim/test_validate_reasons.py::",
    "tests/optim/test_validate_profile.py::test_validation_uses_the_optimizers_profile_and_reports_cores",
    "tests/optim/test_prune_methods.py::test_loss_profile_measures_with_the_pruning_method",
    "tests/optim/test_prune_methods.py::test_data_is_split_and_overlap_is_refused",
    "tests/optim/test_prune_methods.py::test_validate_json_reports_the_method_and_magnitude_at_the_same_plan",
    "tests/optim/test_prune_methods.py::test_ctrl_c_leaves_no_partial_output",
    "tests/tui/test_compare_sweep.py::test_pickers_offer_sweep_profiles_grouped_by_server_batch_and_cores",
    "tests/tui/test_daily_screens.py::test_quick_look_shows_in_recents_by_its_model_name",
    "tests/tui/test_optimizer.py::test_invalid_typed_values_show_error_and_save_nothing",
    "tests/tui/test_deploy_screen.py::",
)


def _parallel(config) -> bool:
    """True in a run split over xdist workers (``-n 2``), in the controller and in each worker."""
    return bool(os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None))


def pytest_configure(config):
    # Two workers on two cores: one BLAS thread each. OpenBLAS's default (a thread per core) in each of two
    # workers puts four spinning threads on two cores, and SparseGPT's many small solves and products then run
    # 2-5x slower than on one thread. Set before the workers start (they and their children inherit it); the
    # serial ``-m timing`` run keeps the default.
    if _parallel(config) and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("deepsparse") or (item.nodeid.startswith(TIMING_PATHS)
                                                       and not item.nodeid.startswith(PARALLEL_OK)):
            item.add_marker(pytest.mark.timing)
        if item.nodeid.startswith(SLOW_TESTS) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
    if _parallel(config):
        # the ``slow`` tests first (stable sort, the same order in every worker): with ``--dist worksteal``
        # (pyproject addopts) the other worker takes the short tests meanwhile, and no minute-long test starts
        # last while its neighbour has nothing left to do
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)

CORPUS_NAMES = {
    "resnet50": "onnx-1.23.2_light-resnet50_constw.onnx",
    "mobilenetv3": "rapidocr-1.4.4_ppocr-cls-mobilenetv3.onnx",
    "yolov8n": "nudenet-3.4.2_yolov8n-320.onnx",
    "crnn": "ddddocr-1.6.1_crnn-lstm-ocr.onnx",
    "resnet50nhwc": "opennsfw-0.0.6_resnet50thin-nhwc.onnx",
    "minilm": "vital-0.2.1_paraphrase-minilm-l3-v2.onnx",
    "wakeword": "openwakeword-0.4.0_speech-embedding-cnn.onnx",
}


def _corpus_dir() -> Path | None:
    env = os.environ.get("SPARSIFY_TEST_MODELS")
    candidates = [Path(env)] if env else []
    candidates += [REPO / ".cache" / "models", REPO.parent / "cache" / "models"]
    for c in candidates:
        if (c / "inputs.json").exists():
            return c
    return None


class Corpus:
    """The fetched real models: ``corpus.path("resnet50")``, ``corpus.input_shapes(...)``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hints = json.loads((root / "inputs.json").read_text())

    def path(self, key: str) -> Path:
        p = self.root / CORPUS_NAMES.get(key, key)
        if not p.exists():
            pytest.fail(f"corpus model {p} is missing")
        return p

    def all(self) -> list[str]:
        return list(CORPUS_NAMES)

    def hint(self, key: str) -> dict:
        return self.hints.get(CORPUS_NAMES.get(key, key), {})

    def input_shapes(self, key: str) -> dict[str, list[int]]:
        return {name: list(h["shape"]) for name, h in self.hint(key).items()}

    def input_shape_args(self, key: str) -> list[str]:
        out = []
        for name, shape in self.input_shapes(key).items():
            out += ["--input-shape", f"{name}={','.join(map(str, shape))}"]
        return out


def corpus_changes(root: Path) -> list[str]:
    """The corpus files whose sha256 no longer matches ``SHA256SUMS`` (DeepSparse 1.8, handed a model and
    input shapes, rewrites the file in place: a test or tool that forgets the private copy changes the corpus
    for every later run)."""
    sums = root / "SHA256SUMS"
    if not sums.exists():
        return []
    changed = []
    for line in sums.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        f = root / name
        if name and (not f.exists() or hashlib.sha256(f.read_bytes()).hexdigest() != digest):
            changed.append(name)
    return changed


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    root = _corpus_dir()
    if root is None:
        if os.environ.get("CI"):
            pytest.fail("the model corpus is missing: .ci/run must fetch it and set SPARSIFY_TEST_MODELS")
        pytest.skip("model corpus not fetched (run scripts/get_models.sh DIR and set SPARSIFY_TEST_MODELS=DIR)")
    changed = corpus_changes(root)
    if changed:
        pytest.fail(f"the corpus in {root} was modified ({', '.join(changed)}): fetch it again with "
                    f"scripts/get_models.sh {root}")
    return Corpus(root)


_CORPUS_AT_START: dict[Path, list[str]] = {}


def pytest_sessionstart(session):
    root = _corpus_dir()
    if root is not None and not hasattr(session.config, "workerinput"):  # once, in the process that reports
        _CORPUS_AT_START[root] = corpus_changes(root)


def pytest_sessionfinish(session, exitstatus):
    """A run that modified the corpus fails, naming the files (the next runs would test other models)."""
    for root, before in _CORPUS_AT_START.items():
        changed = [n for n in corpus_changes(root) if n not in before]
        if changed:
            session.config.get_terminal_writer().line(
                f"error: this run modified the corpus in {root}: {', '.join(changed)}", red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def deepsparse_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("deepsparse") is not None
    except Exception:  # pragma: no cover
        return False


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Point the app's data/cache/config directories at a temporary place."""
    base = tmp_path_factory.getbasetemp() / "userdirs"
    monkeypatch.setenv("SPARSIFY_TUI_HOME", str(base))
    yield
