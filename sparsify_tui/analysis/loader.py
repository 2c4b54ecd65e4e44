"""Reading an ONNX file fast: a weight-free *skeleton* plus the locations of the weights.

``onnx.load`` copies a 100 MB model twice (file bytes, then the parsed proto)
and ``onnx.shape_inference`` serializes it again. We never need the weight
bytes to understand a model's structure, so :func:`load_skeleton` walks the
protobuf wire format of the file (memory-mapped, no copy), rebuilds the model
without the ``raw_data`` of large main-graph initializers and parses only that
small skeleton. The dropped payloads are remembered as :class:`RawRef`
(file, offset, length) so their zeros can be counted with
``np.frombuffer`` on the mapping and :func:`read_raw` can read one tensor
later without loading the rest.

Every problem with the user's file becomes a :class:`~sparsify_tui.errors.ModelError`
with one sentence naming the file.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparsify_tui.errors import ModelError
from sparsify_tui.onnxkit.modelio import check_model_file

# raw_data payloads larger than this are left in the file (shape tensors, axes
# and other small constants that shape inference reads stay in the skeleton)
STRIP_BYTES = 1024

# TensorProto.DataType -> numpy dtype name
ONNX_DTYPES: dict[int, str] = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "object", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    14: "complex64", 15: "complex128", 16: "bfloat16",
    17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
    21: "uint4", 22: "int4",
}
FLOAT_TYPES = {1, 10, 11, 16, 17, 18, 19, 20}

_MAGIC = [
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", None),  # too weak alone; checked below
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
    (b"RIFF", "a RIFF (WAV/WebP/AVI) file"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"{", "a JSON/text file"),
    (b"<", "an XML/HTML file"),
]


@dataclass
class RawRef:
    """Where a tensor's bytes live: ``file`` (absolute), byte ``offset`` and ``length``."""

    file: str
    offset: int
    length: int
    external: bool = False
    stamp: tuple = ()  # (inode, size, mtime_ns) of the file when analysed


def file_stamp(st: os.stat_result) -> tuple:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class Skeleton:
    model: Any  # onnx.ModelProto without the large raw_data payloads
    raw: dict[str, RawRef] = field(default_factory=dict)  # main-graph initializer name -> bytes location
    path: str = ""
    file_size: int = 0
    buffer: Any = None  # the mmap (or bytes) the offsets refer to; closed by close()
    stamp: tuple = ()  # (inode, size, mtime_ns) of the file when read

    def close(self) -> None:
        buf = self.buffer
        self.buffer = None
        if isinstance(buf, mmap.mmap):
            try:
                buf.close()
            except BufferError:  # a view is still alive; the GC will close it
                pass


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Truncated()
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt("varint too long")


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf, pos: int, end: int):
    """Yield (field_number, wire_type, start_of_field, value_start, value_end_or_int)."""
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos, end)
        fnum, wt = key >> 3, key & 7
        if fnum == 0:
            raise _Corrupt("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos, end)
            yield fnum, wt, start, pos, val
        elif wt in (1, 2, 5):  # 64-bit, length-delimited, 32-bit
            if wt == 2:
                ln, pos = _varint(buf, pos, end)
            else:
                ln = 8 if wt == 1 else 4
            vstart = pos
            pos += ln
            if pos > end:
                raise _Truncated()
            yield fnum, wt, start, vstart, pos
        else:
            raise _Corrupt(f"wire type {wt}")
    if pos != end:
        raise _Truncated()


def _strip_tensor(buf, vstart: int, vend: int, base_file: str, raw: dict[str, RawRef],
                  stamp: tuple = ()) -> bytes | None:
    """A TensorProto's bytes without a large raw_data field (None: keep as is)."""
    name = None
    raw_span = None
    for fnum, wt, start, a, b in _fields(buf, vstart, vend):
        if fnum == 8 and wt == 2:
            name = bytes(buf[a:b]).decode("utf-8", "replace")
        elif fnum == 9 and wt == 2 and b - a > STRIP_BYTES:
            raw_span = (start, a, b)
    if raw_span is None or name is None:
        return None
    start, a, b = raw_span
    raw[name] = RawRef(base_file, a, b - a, stamp=stamp)
    return bytes(buf[vstart:start]) + bytes(buf[b:vend])


def _strip_graph(buf, vstart: int, vend: int, base_file: str, raw: dict[str, RawRef], stamp: tuple = ()) -> bytes:
    parts: list[bytes] = []
    copy_from = vstart
    for fnum, wt, start, a, b in _fields(buf, vstart, vend):
        if fnum == 5 and wt == 2:  # initializer
            stripped = _strip_tensor(buf, a, b, base_file, raw, stamp)
            if stripped is not None:
                parts.append(bytes(buf[copy_from:start]))
                parts.append(b"\x2a" + _enc_varint(len(stripped)) + stripped)  # field 5, wire type 2
                copy_from = b
    parts.append(bytes(buf[copy_from:vend]))
    return b"".join(parts)


def _strip_model(buf, size: int, base_file: str, raw: dict[str, RawRef], stamp: tuple = ()) -> bytes:
    parts: list[bytes] = []
    copy_from = 0
    seen_graph = False
    for fnum, wt, start, a, b in _fields(buf, 0, size):
        if fnum == 7 and wt == 2:  # graph
            seen_graph = True
            g = _strip_graph(buf, a, b, base_file, raw, stamp)
            parts.append(bytes(buf[copy_from:start]))
            parts.append(b"\x3a" + _enc_varint(len(g)) + g)  # field 7, wire type 2
            copy_from = b
    if not seen_graph:
        raise _Corrupt("no graph")
    parts.append(bytes(buf[copy_from:size]))
    return b"".join(parts)


def _describe_magic(head: bytes) -> str | None:
    for magic, what in _MAGIC:
        if what and head.startswith(magic):
            return what
    if head[:2] == b"BM" and len(head) >= 14:
        return "a BMP image"
    return None


def load_skeleton(source: Any) -> Skeleton:
    """Parse ``source`` (a path, a ModelProto or serialized bytes) into a :class:`Skeleton`."""
    import onnx

    if isinstance(source, onnx.ModelProto):
        data = source.SerializeToString()
        return _from_buffer(data, len(data), "<in-memory model>", "", None)
    if isinstance(source, (bytes, bytearray)):
        return _from_buffer(source, len(source), "<in-memory model>", "", None)

    path = Path(source).expanduser()
    label = str(source)
    check_model_file(path, label)
    try:
        f = open(path, "rb")
    except PermissionError:
        raise ModelError(f"{label} cannot be read: permission denied") from None
    except OSError as exc:
        raise ModelError(f"{label} cannot be read: {exc.strerror or exc}") from None
    with f:
        st = os.fstat(f.fileno())
        size = st.st_size
        if size == 0:
            raise ModelError(f"{label} is empty (0 bytes), not an ONNX model")
        try:
            buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # e.g. a pipe or a special file
            buf = f.read()
            size = len(buf)
    return _from_buffer(buf, size, label, str(path.resolve()), path, file_stamp(st))


def _from_buffer(buf, size: int, label: str, abs_path: str, path: Path | None, stamp: tuple = ()) -> Skeleton:
    import onnx

    what = _describe_magic(bytes(buf[:16]))
    if what:
        _close(buf)
        raise ModelError(f"{label} is {what}, not an ONNX model")
    raw: dict[str, RawRef] = {}
    try:
        skel_bytes = _strip_model(buf, size, abs_path, raw, stamp)
    except _Truncated:
        _close(buf)
        raise ModelError(f"{label} is truncated or corrupt: its data ends in the middle of a record") from None
    except (_Corrupt, IndexError):
        _close(buf)
        raise ModelError(f"{label} is not an ONNX model (its bytes are not a valid ONNX protobuf)") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(skel_bytes)
    except Exception:  # google.protobuf.message.DecodeError and friends
        _close(buf)
        raise ModelError(f"{label} is not an ONNX model (its bytes are not a valid ONNX protobuf)") from None
    if model.ir_version <= 0 or (len(model.graph.node) == 0 and len(model.graph.input) == 0):
        _close(buf)
        raise ModelError(f"{label} is not an ONNX model (no IR version or no graph)")
    skel = Skeleton(model=model, raw=raw, path=abs_path, file_size=size, buffer=buf, stamp=stamp)
    if path is not None:
        _attach_external(skel, label, path)
    else:
        for t in model.graph.initializer:
            if t.data_location == 1:
                _close(buf)
                raise ModelError(f"{label} stores weights in external data files, which need the model's path")
    return skel


def _close(buf) -> None:
    if isinstance(buf, mmap.mmap):
        buf.close()


def _attach_external(skel: Skeleton, label: str, path: Path) -> None:
    """Check every external-data file exists and record where each tensor lives."""
    base = path.resolve().parent
    for t in skel.model.graph.initializer:
        if t.data_location != 1:  # TensorProto.EXTERNAL
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location")
        if not loc:
            raise ModelError(f"{label}: initializer {t.name!r} uses external data without a location")
        ext = (base / loc)
        if not ext.is_file():
            raise ModelError(f"{label} needs its external data file {loc!r}, which is missing next to it")
        try:
            offset = int(info.get("offset", 0))
            ext_st = ext.stat()
            ext_size = ext_st.st_size
            length = int(info["length"]) if "length" in info else ext_size - offset
        except ValueError:
            raise ModelError(f"{label}: initializer {t.name!r} has a malformed external-data offset or length") from None
        if offset < 0 or length < 0 or offset + length > ext_size:
            raise ModelError(
                f"{label}: external data file {loc!r} is too short for initializer {t.name!r} (truncated?)"
            )
        skel.raw[t.name] = RawRef(str(ext), offset, length, external=True, stamp=file_stamp(ext_st))


# ---------------------------------------------------------------- reading tensors
_CHUNK = 1 << 18


def count_zeros(arr: np.ndarray) -> int:
    """Elements exactly equal to 0 (-0.0 included), in cache-sized chunks, without copying ``arr``.

    ``np.count_nonzero`` on float32 runs about 4x slower than comparing a chunk
    with 0 into a reused bool buffer and counting that.
    """
    flat = arr.reshape(-1)
    n = flat.size
    if n <= _CHUNK:
        return int(np.count_nonzero(flat == 0))
    buf = np.empty(_CHUNK, dtype=bool)
    zeros = 0
    for i in range(0, n, _CHUNK):
        c = flat[i:i + _CHUNK]
        b = buf[:c.size]
        np.equal(c, 0, out=b)
        zeros += int(np.count_nonzero(b))
    return zeros


def numpy_dtype(data_type: int):
    name = ONNX_DTYPES.get(data_type)
    if name is None or name in ("object", "bfloat16") or name.startswith("float8") or name in ("uint4", "int4"):
        return None
    return np.dtype(name)


def raw_view(skel: Skeleton, name: str, data_type: int) -> np.ndarray | None:
    """A zero-copy flat view of a stripped initializer in the mapped file (None if unavailable)."""
    ref = skel.raw.get(name)
    dt = numpy_dtype(data_type)
    if ref is None or dt is None or ref.length % dt.itemsize:
        return None
    if ref.external:
        try:
            with open(ref.file, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            return np.frombuffer(mm, dtype=dt, count=ref.length // dt.itemsize, offset=ref.offset)
        except (OSError, ValueError):
            return None
    if skel.buffer is None:
        return None
    return np.frombuffer(skel.buffer, dtype=dt, count=ref.length // dt.itemsize, offset=ref.offset)


def read_raw(ref: RawRef, data_type: int, dims: list[int]) -> np.ndarray:
    """Read one tensor's bytes from its file into a new writable array."""
    dt = numpy_dtype(data_type)
    if dt is None:
        raise ModelError(f"{ref.file}: tensor data type {ONNX_DTYPES.get(data_type, data_type)} cannot be read")
    arr = np.empty(ref.length // dt.itemsize, dtype=dt)
    try:
        with open(ref.file, "rb") as f:
            if ref.stamp and file_stamp(os.fstat(f.fileno())) != ref.stamp:
                raise ModelError(f"{ref.file} changed since it was analysed; analyse it again")
            f.seek(ref.offset)
            n = f.readinto(memoryview(arr).cast("B"))
    except OSError as exc:
        raise ModelError(f"{ref.file} cannot be read: {exc.strerror or exc}") from None
    if n != ref.length:
        raise ModelError(f"{ref.file} changed or was truncated since it was analysed")
    if dt.byteorder == ">" or (dt.byteorder == "=" and not np.little_endian):  # pragma: no cover
        arr = arr.byteswap()
    return arr.reshape([int(d) for d in dims]) if int(np.prod(dims, dtype=np.int64)) == arr.size else arr


def bounded_output_names(source: Any) -> set[str]:
    """Names of the model's outputs bounded in [0, 1] by construction (a Sigmoid or Softmax output, possibly
    through reshapes: :func:`sparsify_tui.onnxkit.graphs.bounded_outputs`), read from the weight-free skeleton
    of ``source`` (a path or a ModelProto); an empty set when the file cannot be read (the values decide)."""
    from sparsify_tui.onnxkit.graphs import bounded_outputs

    try:
        return bounded_outputs(load_skeleton(source).model)
    except Exception:  # noqa: BLE001 - a hint only: the output's values still decide
        return set()
