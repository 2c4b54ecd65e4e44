"""How much of the measured cores' time other processes took while a block was timed.

A timing is only as good as the cores it ran on: on a shared benchmark server
another job that takes one of the engine's cores stalls its threads (DeepSparse
measured 10x slower levels that way) and nothing in the times themselves says
so. This module measures it, per timed block, from the kernel's accounting:

* ``/proc/stat`` per CPU: the busy time (user, nice, system, irq, softirq and
  steal -- time a hypervisor gave to another guest is interference too) and the
  total time of the CPUs the block is pinned to (its affinity mask);
* ``/proc/<pid>/stat`` of the engine's own process (utime + stime of all its
  threads, living and exited) and, with ``tree=True``, of its descendants
  (living ones, and the waited-for ones' cutime + cstime). The worker runs the
  engines as threads, so it measures without ``tree``.

``others = busy(cpus) - own``. The engine runs ``engine_cores`` threads on the
``n`` CPUs of its mask; other work on the ``n - engine_cores`` CPUs it does not
need is no interference, so::

    interference = max(0, others - (n - engine_cores) * T) / (engine_cores * T)

with ``T`` the block's time per CPU (0..1; with ``engine_cores == n`` it is
simply the share of the CPUs' time that other processes used).

The kernel counts CPU time in clock ticks (``os.sysconf("SC_CLK_TCK")``, 100 per
second on Linux), so a window shorter than :data:`MIN_WINDOW_S` is widened
backwards when a :class:`Sampler` can (the share of a 5 ms block is noise).
Outside Linux (no ``/proc/stat``) every share is ``None``: unknown, not zero.

Use:

* :func:`block` -- ``with block() as b: ...timed...``; then ``b.share``;
* :class:`Sampler` -- a background thread taking snapshots (the engines release
  the GIL while they run), for a call that compiles first and times after:
  ``sampler.share(t_end - timed_s, t_end)`` measures only its timed part;
* :func:`remeasure` -- run a block again (bounded) while its share is above the
  threshold, keep the quietest attempt;
* :func:`wait_idle` -- ``--wait-idle SECONDS``: wait until the cores are quiet.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

THRESHOLD = 0.10  # a block whose cores other processes used more than this share of is re-measured/flagged
MAX_REMEASURE = 1  # re-measures of a busy block (so at most 2 attempts)
MIN_WINDOW_S = 0.2  # shorter windows are widened (clock-tick resolution)
IDLE_SAMPLE_S = 0.5  # wait_idle looks at windows this long

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system irq softirq steal (guest is inside user/nice)
_ALL_FIELDS = (0, 1, 2, 3, 4, 5, 6, 7)  # ... + idle iowait


def clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return 100


def available() -> bool:
    return os.path.exists("/proc/stat")


def measured_cpus(pid: int = 0) -> list[int]:
    """The CPUs a process may run on (its affinity mask): the cores its timings use."""
    try:
        return sorted(os.sched_getaffinity(pid))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def read_cpu_ticks(cpus: list[int] | None = None) -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over ``cpus`` (all CPUs when None) from /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            lines = f.read().decode("ascii", "replace").splitlines()
    except OSError:
        return None
    want = None if cpus is None else {int(c) for c in cpus}
    busy = total = 0
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, _, rest = line.partition(" ")
        try:
            cpu = int(name[3:])
        except ValueError:
            continue
        if want is not None and cpu not in want:
            continue
        vals = [int(x) for x in rest.split()]
        vals += [0] * (8 - len(vals))
        busy += sum(vals[i] for i in _BUSY_FIELDS)
        total += sum(vals[i] for i in _ALL_FIELDS)
    return busy, total


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces
    return raw[raw.rfind(")") + 2:].split()


def process_ticks(pid: int, *, children: bool = True) -> int:
    """utime + stime of ``pid`` (all its threads) [+ cutime + cstime of its waited-for children]."""
    f = _stat_fields(pid)
    if f is None:
        return 0
    # after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    n = int(f[11]) + int(f[12])
    if children:
        n += int(f[13]) + int(f[14])
    return n


def descendants(pid: int) -> list[int]:
    """Living descendants of ``pid`` (by scanning /proc: a few ms on a busy machine)."""
    parent: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f is not None:
            parent[int(name)] = int(f[1])
    out: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def tree_ticks(pid: int, tree: bool = False) -> int:
    """CPU ticks of ``pid``'s threads; with ``tree`` also of its descendants (living and waited-for)."""
    n = process_ticks(pid, children=tree)
    if tree:
        n += sum(process_ticks(c) for c in descendants(pid))
    return n


@dataclass
class Snapshot:
    t: float  # time.perf_counter()
    busy: int
    total: int
    own: int


def snapshot(cpus: list[int], pid: int, tree: bool = False) -> Snapshot | None:
    t = time.perf_counter()
    cpu = read_cpu_ticks(cpus)
    if cpu is None:
        return None
    own = tree_ticks(pid, tree)
    return Snapshot((t + time.perf_counter()) / 2, cpu[0], cpu[1], own)


@dataclass
class Share:
    """The result for one window."""

    interference: float | None  # 0..1, None when unknown
    other_cpu_s: float = 0.0
    own_cpu_s: float = 0.0
    window_s: float = 0.0
    cpus: list[int] = field(default_factory=list)
    engine_cores: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"interference": None if self.interference is None else round(self.interference, 4),
                "other_cpu_s": round(self.other_cpu_s, 3), "own_cpu_s": round(self.own_cpu_s, 3),
                "window_s": round(self.window_s, 3), "cpus": list(self.cpus), "engine_cores": self.engine_cores}


def share_between(a: Snapshot | None, b: Snapshot | None, cpus: list[int], engine_cores: int | None = None) -> Share:
    """Interference between two snapshots (see the module docstring for the formula)."""
    n = max(1, len(cpus))
    k = n if not engine_cores else max(1, min(int(engine_cores), n))
    if a is None or b is None or b.total - a.total < n:
        return Share(None, cpus=list(cpus), engine_cores=k, window_s=0.0 if a is None or b is None else b.t - a.t)
    hz = clock_ticks()
    total = b.total - a.total
    busy = b.busy - a.busy
    own = b.own - a.own
    others = max(0, busy - own)
    per_cpu = total / n
    excess = max(0.0, others - (n - k) * per_cpu)
    share = min(1.0, excess / (k * per_cpu))
    return Share(share, other_cpu_s=others / hz, own_cpu_s=own / hz, window_s=b.t - a.t, cpus=list(cpus),
                 engine_cores=k)


class Block:
    """``with block(...) as b``: snapshots at entry and exit; ``b.share`` afterwards."""

    def __init__(self, cpus: list[int] | None = None, pid: int | None = None, engine_cores: int | None = None,
                 tree: bool = False) -> None:
        self.cpus = list(cpus) if cpus is not None else measured_cpus()
        self.pid = os.getpid() if pid is None else int(pid)
        self.engine_cores = engine_cores
        self.tree = tree
        self.start: Snapshot | None = None
        self.share: Share = Share(None, cpus=self.cpus)

    def __enter__(self):
        self.start = snapshot(self.cpus, self.pid, self.tree)
        return self

    def __exit__(self, *exc) -> None:
        end = snapshot(self.cpus, self.pid, self.tree)
        self.share = share_between(self.start, end, self.cpus, self.engine_cores)


def block(cpus: list[int] | None = None, pid: int | None = None, engine_cores: int | None = None,
          tree: bool = False) -> Block:
    return Block(cpus, pid, engine_cores, tree)


class Sampler:
    """Snapshots every ``interval_s`` in a background thread; :meth:`share` of any past window.

    Use it around an engine call that compiles first and times its runs at the
    end: ``sampler.share(t_end - timed_s, t_end)``. The thread is part of the
    measured process (its few reads count as own time).
    """

    def __init__(self, cpus: list[int] | None = None, pid: int | None = None, engine_cores: int | None = None,
                 interval_s: float = 0.05, keep_s: float = 600.0) -> None:
        self.cpus = list(cpus) if cpus is not None else measured_cpus()
        self.pid = os.getpid() if pid is None else int(pid)
        self.engine_cores = engine_cores
        self.interval_s = interval_s
        self.keep_s = keep_s
        self._snaps: list[Snapshot] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _take(self) -> None:
        s = snapshot(self.cpus, self.pid)
        if s is None:
            return
        with self._lock:
            self._snaps.append(s)
            while self._snaps and s.t - self._snaps[0].t > self.keep_s:
                self._snaps.pop(0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()

    def start(self) -> Sampler:
        if available() and self._thread is None:
            self._take()
            self._thread = threading.Thread(target=self._loop, name="interference-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def share(self, t0: float, t1: float | None = None) -> Share:
        """Interference over ``[t0, t1]`` (perf_counter times; ``t1`` None = now), widened to MIN_WINDOW_S."""
        if not available():
            return Share(None, cpus=self.cpus)
        if t1 is None:
            self._take()
            t1 = time.perf_counter()
        with self._lock:
            snaps = list(self._snaps)
        if not snaps or snaps[-1].t < t1:
            self._take()  # (t1 is in the past: a snapshot now closes the window, a little late at worst)
            with self._lock:
                snaps = list(self._snaps)
        t0 = min(t0, t1 - MIN_WINDOW_S)
        before = [s for s in snaps if s.t <= t0]
        a = before[-1] if before else snaps[0]
        after = [s for s in snaps if s.t >= t1 - self.interval_s / 2 and s is not a]
        b = after[0] if after else snaps[-1]
        # a window shorter than a clock tick per CPU cannot be resolved: unknown (None), not 0
        return share_between(a, b, self.cpus, self.engine_cores)


def above(share: float | None, threshold: float = THRESHOLD) -> bool:
    return share is not None and share > threshold


def remeasure(measure: Callable[[], tuple[Any, float | None]], *, threshold: float = THRESHOLD,
              retries: int = MAX_REMEASURE, on_retry: Callable[[int, float], Any] | None = None
              ) -> tuple[Any, float | None, int]:
    """Run ``measure()`` -> (result, share); while the share is above ``threshold``, again (at most
    ``retries`` more times). Returns (the quietest attempt's result, its share, attempts made)."""
    best, best_share = measure()
    attempts = 1
    while above(best_share, threshold) and attempts <= retries:
        if on_retry is not None:
            on_retry(attempts, float(best_share))
        res, share = measure()
        attempts += 1
        if share is None or best_share is None or share < best_share:
            best, best_share = res, share
    return best, best_share, attempts


def wait_idle(seconds: float, *, cpus: list[int] | None = None, threshold: float = THRESHOLD,
              sample_s: float = IDLE_SAMPLE_S, on_wait: Callable[[float, float], Any] | None = None,
              cancel: threading.Event | None = None) -> dict[str, Any]:
    """Wait (at most ``seconds``) until other processes use at most ``threshold`` of ``cpus``' time
    over a ``sample_s`` window. This process is expected to be idle meanwhile.

    Returns ``{"idle": bool, "waited_s": float, "interference": last share or None}``;
    ``on_wait(waited_s, share)`` after each busy window (for progress).
    """
    cpus = list(cpus) if cpus is not None else measured_cpus()
    t0 = time.perf_counter()
    share: float | None = None
    if not available():
        return {"idle": True, "waited_s": 0.0, "interference": None}
    while True:
        with block(cpus) as b:
            if cancel is not None:
                cancel.wait(sample_s)
            else:
                time.sleep(sample_s)
        if cancel is not None and cancel.is_set():
            break
        share = b.share.interference
        waited = time.perf_counter() - t0
        if share is not None and share <= threshold:
            return {"idle": True, "waited_s": round(waited, 3), "interference": share}
        if waited >= seconds:
            break
        if on_wait is not None:
            on_wait(waited, float(share or 0.0))
    return {"idle": False, "waited_s": round(time.perf_counter() - t0, 3), "interference": share}


def busy_warning(what: str, share: float, attempts: int) -> str:
    """The sentence stored with a measurement whose cores stayed busy."""
    again = "" if attempts <= 1 else (f" (measured {attempts} times, this was the quietest)")
    return (f"{what} was measured while other processes used {share:.0%} of the measured cores' time{again}: "
            f"its time is probably too high; measure again on a quiet machine (--wait-idle SECONDS)")


@contextlib.contextmanager
def pinned(cpus: list[int]) -> Iterator[None]:
    """Temporarily restrict this process to ``cpus`` (child processes started inside inherit it)."""
    old = measured_cpus()
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(old))


__all__ = [
    "MAX_REMEASURE",
    "THRESHOLD",
    "Block",
    "Sampler",
    "Share",
    "available",
    "block",
    "busy_warning",
    "measured_cpus",
    "pinned",
    "remeasure",
    "wait_idle",
]
