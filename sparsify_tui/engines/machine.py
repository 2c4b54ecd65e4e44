"""What this machine offers: cores, CPU model, instruction sets, installed engines.

Read from ``/proc/cpuinfo`` and ``os.sched_getaffinity`` (Linux); engines are
found with ``importlib.metadata`` without importing them (importing deepsparse
takes seconds). ``machine_info()`` is cached for the life of the process.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from typing import Any

# /proc/cpuinfo flag -> our ISA name (order = display order)
_X86_FLAGS = [
    ("avx2", "avx2"),
    ("avx512f", "avx512"),
    ("avx512_vnni", "avx512_vnni"),
    ("avx512_bf16", "avx512_bf16"),
    ("avx_vnni", "avx_vnni"),
    ("amx_tile", "amx"),
]
_ARM_FLAGS = [("asimd", "neon"), ("neon", "neon"), ("sve", "sve"), ("sve2", "sve2"), ("i8mm", "i8mm"),
              ("asimddp", "dotprod")]

# CPU flags that give bf16 arithmetic (what OpenVINO's bf16 precision needs): x86 AVX-512 BF16 or AMX-BF16;
# ARM: the BF16 extension ("bf16" in /proc/cpuinfo features)
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# fp16 arithmetic OpenVINO's fp16 precision runs on: x86 AMX-FP16; ARM half-precision SIMD
_FP16_FLAGS = ("amx_fp16", "asimdhp", "fphp")


def _read_cpuinfo(path: str = "/proc/cpuinfo") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, flags and physical core count from /proc/cpuinfo text."""
    model = ""
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    logical = 0
    phys_id = core_id = None
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if ":" in line:
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
        if not fields:
            continue
        if "processor" in fields:
            logical += 1
        if not model:
            model = fields.get("model name") or fields.get("cpu model") or fields.get("hardware") or ""
        fl = fields.get("flags") or fields.get("features")
        if fl:
            flags.update(fl.split())
        phys_id = fields.get("physical id")
        core_id = fields.get("core id")
        if phys_id is not None and core_id is not None:
            cores.add((phys_id, core_id))
    if not model and "CPU implementer" in text:
        model = "ARM CPU"
    return {"cpu_model": model, "flags": flags, "physical_cores": len(cores) or None, "logical_cores": logical or None}


def isa_from_flags(flags: set[str], machine: str | None = None) -> list[str]:
    machine = (machine or platform.machine()).lower()
    out: list[str] = []
    table = _ARM_FLAGS if machine.startswith(("arm", "aarch")) else _X86_FLAGS
    for flag, name in table:
        if flag in flags and name not in out:
            out.append(name)
    if "avx512_vnni" in out or "avx_vnni" in out:
        out.append("vnni")
    if machine.startswith(("aarch64", "arm64")) and "neon" not in out:
        out.insert(0, "neon")  # Advanced SIMD is mandatory on AArch64 (Linux says aarch64, macOS arm64)
    return out


def _dist_info_versions() -> dict[str, str]:
    """``{normalized distribution name: version}`` from the ``*.dist-info`` folders on sys.path.

    Listing the folders takes a millisecond; importing ``importlib.metadata``
    costs 20 to 70 ms here, a large part of ``sparsify-tui info``'s start-up.
    """
    import sys

    found: dict[str, str] = {}
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        try:
            names = os.listdir(entry)
        except OSError:
            continue
        for n in names:
            if n.endswith(".dist-info") and "-" in n:
                dist, _, version = n[: -len(".dist-info")].rpartition("-")
                key = dist.lower().replace("_", "-").replace(".", "-")
                found.setdefault(key, version)
    return found


def _version(dist_names: tuple[str, ...], scanned: dict[str, str] | None = None) -> str | None:
    if scanned:
        for name in dist_names:
            if name in scanned:
                return scanned[name]
        import importlib.util

        try:
            if importlib.util.find_spec(dist_names[0]) is None:
                return None  # not importable: not installed
        except (ImportError, ValueError):
            return None
    from importlib import metadata

    for name in dist_names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        except Exception:  # pragma: no cover - a broken install
            continue
    return None


def engine_versions() -> dict[str, str | None]:
    """``{engine: version or None}`` for every engine of the registry."""
    from sparsify_tui.engines import registry

    return registry.engine_versions()


def installed_engines() -> list[str]:
    """Engines installed here, best first (the order ``auto`` prefers, :mod:`sparsify_tui.engines.registry`)."""
    from sparsify_tui.engines import registry

    v = machine_info()["engines"]
    return [e for e in registry.installed_engines() if v.get(e)]


def has_bf16(flags: set[str]) -> bool:
    """Whether the CPU computes in bf16 (AVX-512 BF16 / AMX-BF16 on x86, the BF16 extension on ARM)."""
    return any(f in flags for f in _BF16_FLAGS)


def has_fp16(flags: set[str]) -> bool:
    """Whether the CPU computes in fp16 (AMX-FP16 on x86, half-precision SIMD on ARM)."""
    return any(f in flags for f in _FP16_FLAGS)


def capability_line(machine: dict[str, Any]) -> str:
    """``AMX: yes, bf16: yes`` for a machine summary (``unknown`` when the summary predates the key)."""
    isa = machine.get("isa") or []
    bf16 = machine.get("bf16")
    if bf16 is None and isa:
        bf16 = "avx512_bf16" in isa or "amx" in isa
    amx = "yes" if "amx" in isa else "no" if isa else "unknown"
    return f"AMX: {amx}, bf16: {'unknown' if bf16 is None else 'yes' if bf16 else 'no'}"


def fingerprint_of(cpu_model: str, isa: list[str], physical: Any, logical: Any, usable: Any) -> str:
    key = f"{cpu_model}|{','.join(sorted(isa))}|{physical}|{logical}|{usable}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """``physical_cores``, ``logical_cores``, ``usable_cores``, ``cpu_model``, ``isa``, ``engines``,
    ``arch``, ``bf16`` (the CPU computes in bf16: AVX-512 BF16 or AMX on x86, the BF16 extension on ARM;
    AMX shows as ``amx`` in ``isa``), ``fingerprint`` (short stable hash of the CPU model, ISA and core
    counts)."""
    info = parse_cpuinfo(_read_cpuinfo())
    logical = info["logical_cores"] or os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        usable = logical
    physical = info["physical_cores"] or logical
    arch = platform.machine()
    isa = isa_from_flags(info["flags"], arch)
    model = info["cpu_model"] or platform.processor() or arch or "unknown CPU"
    return {
        "cpu_model": model,
        "arch": arch,
        "physical_cores": int(physical),
        "logical_cores": int(logical),
        "usable_cores": int(usable),
        "isa": isa,
        "bf16": has_bf16(info["flags"]),
        "fp16": has_fp16(info["flags"]),
        "engines": engine_versions(),
        "fingerprint": fingerprint_of(model, isa, physical, logical, usable),
    }


def machine_summary() -> dict[str, Any]:
    """:func:`machine_info`, or a minimal summary when it fails (it must never break a measurement)."""
    try:
        return machine_info()
    except Exception:  # noqa: BLE001 - machine info must never break a profile
        import platform

        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            cores = os.cpu_count() or 1
        return {"cpu_model": platform.processor() or platform.machine(), "usable_cores": cores,
                "isa": [], "fingerprint": None}


def loadavg() -> float | None:
    """The 1-minute load average, or None where the system has none."""
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover
        return None
