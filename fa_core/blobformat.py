"""Checked byte formats for hibernated agents and populations; no pickle.

Two layers:

* :func:`frame` / :func:`unframe`: a blob is a 36-byte header and a payload.
  The header holds two magic bytes, a format version, flags, the model's
  20-byte content key, the payload's stored and raw lengths and a CRC-32
  (``zlib.crc32``) over the header's first 32 bytes and the payload. The
  payload is raw deflate when flag bit 0 is set. :func:`unframe` checks every
  field before anything is decoded: appended bytes, truncation and flipped bits
  are refused with :class:`~fa_core.errors.CorruptStateError`.
* :func:`dump_value` / :func:`load_value`: a typed, tag-length-value encoding
  of plain data (None, bool, int, float, str, bytes, list, tuple, dict, numpy
  arrays and scalars of numeric dtypes, object arrays of those, numpy random
  generators and seed sequences, and :class:`Record` for the few fa_core
  classes their owners rebuild). Decoding builds only these types, so bytes
  from elsewhere never run code; every count and shape is checked against the
  bytes that remain.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from fa_core.errors import CorruptStateError

__all__ = ["Reader", "Record", "frame", "unframe", "dump_value", "load_value", "F_ZLIB"]

_HEAD = struct.Struct("<2sBB20sII")  # magic, version, flags, key, payload bytes, raw bytes
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEAD.size + _CRC.size
F_ZLIB = 1
# raw deflate (no zlib header: the frame has its own checksum); level 6 is within a
# few bytes of 9 on beliefs and about twice as fast
_ZLIB_LEVEL = 6


def frame(magic: bytes, version: int, flags: int, key: bytes, body, compress: bool) -> bytes:
    """Header and ``body`` (deflated when ``compress`` and that makes it smaller)."""
    raw_len = len(body)
    if compress:
        packed = zlib.compress(body, _ZLIB_LEVEL, -15)
        if len(packed) < raw_len:
            body, flags = packed, flags | F_ZLIB
    head = _HEAD.pack(magic, version, flags, key, len(body), raw_len)
    return b"".join((head, _CRC.pack(zlib.crc32(body, zlib.crc32(head))), body))


def unframe(blob, magic: bytes, version: int, known_flags: int, what: str, verify: bool = True):
    """Check ``blob``'s header, length and checksum; returns ``(flags, key, payload)``.

    The payload is inflated if it was deflated (to exactly the raw length the
    header gives). With ``verify=False`` only the header and the length are
    checked and the payload returned is None. Raises :class:`CorruptStateError` naming
    ``what`` and the check that failed, and TypeError if ``blob`` is not bytes-like.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, got {type(blob).__name__}")
    view = memoryview(blob)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    n = len(view)

    def fail(msg):
        raise CorruptStateError(f"corrupt or truncated {what}: {msg}")

    if n < HEADER_SIZE:
        fail(f"{n} bytes, shorter than its {HEADER_SIZE}-byte header")
    got_magic, got_version, flags, key, stored, raw_len = _HEAD.unpack_from(view)
    if got_magic != magic:
        fail(f"it starts with {bytes(got_magic)!r}, not {magic!r} (not an fa_core {what})")
    if got_version != version:
        fail(f"format version {got_version}; this fa_core reads version {version} only "
             "(hibernate it again with this version)")
    if flags & ~known_flags:
        fail(f"unknown flag bits {flags & ~known_flags:#x}")
    if n != HEADER_SIZE + stored:
        fail(f"{n} bytes, but its header gives {HEADER_SIZE + stored}")
    if not verify:
        return flags, bytes(key), None
    (crc,) = _CRC.unpack_from(view, _HEAD.size)
    body = view[HEADER_SIZE:]
    if zlib.crc32(body, zlib.crc32(view[:_HEAD.size])) != crc:
        fail("checksum mismatch (CRC-32 over header and payload)")
    if flags & F_ZLIB:
        inflater = zlib.decompressobj(-15)
        try:
            raw = inflater.decompress(body, raw_len + 1)
        except zlib.error as exc:
            fail(f"payload does not inflate ({exc})")
        if len(raw) != raw_len or not inflater.eof or inflater.unused_data:
            fail(f"payload inflates to {len(raw)} bytes, its header gives {raw_len}")
        body = memoryview(raw)
    elif stored != raw_len:
        fail(f"stored and raw lengths differ ({stored} != {raw_len}) without compression")
    return flags, bytes(key), body


class Reader:
    """Sequential reads from a payload; every read past its end is a CorruptStateError.

    ``copy=False``: arrays that :func:`load_value` decodes are read-only views of
    the payload (for a caller that copies them anyway).
    """

    __slots__ = ("buf", "pos", "what", "copy")

    def __init__(self, buf, what: str, pos: int = 0, copy: bool = True):
        self.buf, self.pos, self.what, self.copy = buf, pos, what, copy

    def fail(self, msg: str):
        raise CorruptStateError(f"corrupt or truncated {self.what}: {msg}")

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.left:
            self.fail(f"needs {n} bytes at offset {self.pos}, {self.left} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def byte(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return self.unpack(_CRC)[0]

    def array(self, dtype, count: int, copy: bool = True) -> np.ndarray:
        """``count`` items of ``dtype`` (a writable copy unless ``copy=False``)."""
        dtype = np.dtype(dtype)
        out = np.frombuffer(self.take(count * dtype.itemsize), dtype, count)
        return out.copy() if copy else out

    def done(self) -> None:
        if self.left:
            self.fail(f"{self.left} bytes left over after its last field")


# ---------------------------------------------------------------------------
# Plain values
# ---------------------------------------------------------------------------


class Record:
    """A named state dict, for the fa_core classes whose owners rebuild them
    (the decoder builds no object of its own from a record)."""

    __slots__ = ("name", "state")

    def __init__(self, name: str, state):
        self.name, self.state = name, state

    def __eq__(self, other):
        return type(other) is Record and (self.name, self.state) == (other.name, other.state)

    def __repr__(self) -> str:
        return f"Record({self.name!r}, ...)"


_DTYPES = [np.dtype(t).newbyteorder("<") for t in (
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
    np.float16, np.float32, np.float64, np.complex64, np.complex128)]
_DTYPE_CODE = {d: i for i, d in enumerate(_DTYPES)}
_BIT_GENERATORS = {name: getattr(np.random, name)
                   for name in ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")}
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")
_MAX_DEPTH = 32
_MAX_NDIM = 32


def _dtype_code(dtype: np.dtype, where: str) -> int:
    code = _DTYPE_CODE.get(dtype.newbyteorder("<"))
    if code is None:
        raise TypeError(f"{where}: numpy dtype {dtype} cannot be stored (numbers and bools only)")
    return code


def _dump_shape(out: bytearray, shape) -> None:
    out.append(len(shape))
    for n in shape:
        out += _U64.pack(n)


def encode_state(value, what: str) -> bytearray:
    """``value``'s plain encoding; TypeError saying to pickle ``what`` (an "agent",
    a "population") when it holds something the format cannot."""
    out = bytearray()
    try:
        dump_value(out, value, what)
    except TypeError as exc:
        raise TypeError(f"cannot hibernate this {what}: {exc}; pickle it instead "
                        "(for trusted data only)") from None
    return out


def dump_value(out: bytearray, value, where: str = "value", depth: int = 0) -> None:
    """Append ``value``'s plain encoding to ``out``; TypeError for anything it cannot hold."""
    if depth > _MAX_DEPTH:
        raise TypeError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    t = type(value)
    if value is None:
        out += b"N"
    elif t is bool:
        out += b"T" if value else b"F"
    elif t is int:
        if -(1 << 63) <= value < (1 << 63):
            out += b"i" + _I64.pack(value)
        else:
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            out += b"I" + _CRC.pack(len(raw)) + raw
    elif t is float:
        out += b"f" + _F64.pack(value)
    elif t is str:
        raw = value.encode("utf-8", "surrogatepass")
        out += b"s" + _CRC.pack(len(raw)) + raw
    elif t is bytes:
        out += b"b" + _CRC.pack(len(value)) + value
    elif t is list or t is tuple:
        out += (b"l" if t is list else b"t") + _CRC.pack(len(value))
        for i, v in enumerate(value):
            dump_value(out, v, f"{where}[{i}]", depth + 1)
    elif t is dict:
        out += b"d" + _CRC.pack(len(value))
        for k, v in value.items():
            dump_value(out, k, f"{where} key {k!r}", depth + 1)
            dump_value(out, v, f"{where}[{k!r}]", depth + 1)
    elif t is np.ndarray:
        if value.dtype == object:
            out += b"o"
            _dump_shape(out, value.shape)
            for i, v in enumerate(value.reshape(-1)):
                dump_value(out, v, f"{where}.flat[{i}]", depth + 1)
        else:
            out += b"a" + bytes([_dtype_code(value.dtype, where)])
            _dump_shape(out, value.shape)
            raw = np.ascontiguousarray(value, value.dtype.newbyteorder("<")).reshape(-1)
            out += memoryview(raw.view(np.uint8))
    elif isinstance(value, np.generic) and t.__module__ == "numpy":
        out += b"g" + bytes([_dtype_code(value.dtype, where)])
        out += np.asarray(value, value.dtype.newbyteorder("<")).tobytes()
    elif t is np.random.Generator:
        bg = value.bit_generator
        name = type(bg).__name__
        if _BIT_GENERATORS.get(name) is not type(bg):
            raise TypeError(f"{where}: a Generator over {name} cannot be stored "
                            f"(only {sorted(_BIT_GENERATORS)})")
        out += b"R"
        dump_value(out, bg.state, where, depth + 1)
    elif t is np.random.SeedSequence:
        out += b"Q"
        dump_value(out, {"entropy": value.entropy, "spawn_key": tuple(value.spawn_key),
                         "pool_size": value.pool_size,
                         "n_children_spawned": value.n_children_spawned}, where, depth + 1)
    elif t is Record:
        out += b"r"
        dump_value(out, value.name, where, depth + 1)
        dump_value(out, value.state, where, depth + 1)
    else:
        raise TypeError(f"{where}: a {t.__module__}.{t.__qualname__} cannot be stored (plain "
                        "values, numeric numpy arrays, numpy random generators only)")


def _load_shape(r: Reader) -> tuple[int, ...]:
    ndim = r.byte()
    if ndim > _MAX_NDIM:
        r.fail(f"array of {ndim} dimensions")
    return tuple(r.unpack(_U64)[0] for _ in range(ndim))


def _count(r: Reader, n: int, min_size: int = 1) -> int:
    if n * min_size > r.left:
        r.fail(f"a container of {n} items in {r.left} remaining bytes")
    return n


def load_value(r: Reader, depth: int = 0):
    """Decode one value that :func:`dump_value` wrote (CorruptStateError if malformed)."""
    if depth > _MAX_DEPTH:
        r.fail(f"values nested deeper than {_MAX_DEPTH} levels")
    tag = bytes(r.take(1))
    if tag == b"N":
        return None
    if tag == b"T":
        return True
    if tag == b"F":
        return False
    if tag == b"i":
        return r.unpack(_I64)[0]
    if tag == b"I":
        return int.from_bytes(r.take(r.u32()), "little", signed=True)
    if tag == b"f":
        return r.unpack(_F64)[0]
    if tag == b"s":
        try:
            return str(r.take(r.u32()), "utf-8", "surrogatepass")
        except UnicodeDecodeError:
            r.fail("a string that is not UTF-8")
    if tag == b"b":
        return bytes(r.take(r.u32()))
    if tag in (b"l", b"t"):
        items = [load_value(r, depth + 1) for _ in range(_count(r, r.u32()))]
        return items if tag == b"l" else tuple(items)
    if tag == b"d":
        out = {}
        for _ in range(_count(r, r.u32(), 2)):
            k = load_value(r, depth + 1)
            if type(k) not in (str, int, bool, float, bytes, tuple) or k is None:
                r.fail(f"a dict key of type {type(k).__name__}")
            out[k] = load_value(r, depth + 1)
        return out
    if tag == b"a":
        code = r.byte()
        if code >= len(_DTYPES):
            r.fail(f"unknown dtype code {code}")
        shape = _load_shape(r)
        dtype = _DTYPES[code]
        arr = r.array(dtype, _count(r, math.prod(shape), dtype.itemsize), r.copy).reshape(shape)
        return arr.astype(dtype.newbyteorder("="), copy=False)
    if tag == b"o":
        shape = _load_shape(r)
        arr = np.empty(_count(r, math.prod(shape)), dtype=object)
        for i in range(arr.size):
            arr[i] = load_value(r, depth + 1)
        return arr.reshape(shape)
    if tag == b"g":
        code = r.byte()
        if code >= len(_DTYPES):
            r.fail(f"unknown dtype code {code}")
        dtype = _DTYPES[code]
        return r.array(dtype, 1)[0].astype(dtype.newbyteorder("="))
    if tag == b"R":
        return _load_generator(r, load_value(r, depth + 1))
    if tag == b"Q":
        return _load_seed_sequence(r, load_value(r, depth + 1))
    if tag == b"r":
        name = load_value(r, depth + 1)
        if type(name) is not str:
            r.fail("a record without a name")
        return Record(name, load_value(r, depth + 1))
    r.fail(f"unknown value tag {tag!r} at offset {r.pos - 1}")


def _load_generator(r: Reader, state) -> np.random.Generator:
    name = state.get("bit_generator") if type(state) is dict else None
    cls = _BIT_GENERATORS.get(name) if type(name) is str else None
    if cls is None:
        r.fail(f"a random generator state for {name!r} (known: {sorted(_BIT_GENERATORS)})")
    bg = cls()
    try:
        bg.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        r.fail(f"a {name} state numpy refuses ({exc})")
    return np.random.Generator(bg)


def _load_seed_sequence(r: Reader, fields) -> np.random.SeedSequence:
    keys = {"entropy", "spawn_key", "pool_size", "n_children_spawned"}
    if type(fields) is not dict or set(fields) != keys:
        r.fail("a SeedSequence record without its four fields")
    pool = fields["pool_size"]
    if type(pool) is not int or not 4 <= pool <= 1024:
        r.fail(f"SeedSequence pool_size {pool!r} (4..1024)")
    try:
        return np.random.SeedSequence(fields["entropy"], spawn_key=fields["spawn_key"],
                                      pool_size=pool,
                                      n_children_spawned=fields["n_children_spawned"])
    except (TypeError, ValueError, OverflowError) as exc:
        r.fail(f"a SeedSequence numpy refuses ({exc})")
