"""Population state files: one format for ``pop.save`` / ``Population.load`` and for
populations kept on a memory-mapped file (``Population(..., storage=PATH)``,
``Population.open``, ``pop.flush``).

File layout
-----------
::

    offset 0      superblock (64 bytes, in a 4 KiB page of its own)
    4096 ...      per-agent arrays, each at a 4 KiB-aligned offset, C order,
                  native little-endian, (capacity, ...) rows
    meta_off      metadata record: a :func:`fa_core.blobformat.frame` (magic
                  "FM", CRC-32) holding the layout and the population's small
                  state (plain values, never pickle)

The superblock holds the magic ``b"FAPOPST1"``, the format version, flag bits,
the model's 20-byte content key (:meth:`GenerativeModel.content_key`, the key
hibernation records), a generation counter, where the metadata record is and
its CRC-32, and a CRC-32 of the superblock itself. The metadata gives every
array's name, dtype, shape, offset and CRC-32, the row capacity, the number of
agents and the rest of the state: options (``gamma`` and ``alpha`` are per-agent
arrays; ``inference_params``, ``action_selection``, learning rates, ...), the
seed sequence and the count of stream draws, and the learned Dirichlet counts
(:class:`fa_core.population_learning.LearnedParams`; their values are derived
again on opening). The array list is whatever :meth:`Population._array_specs`
registers, so a row array added there is stored without a change here.

Durability and crash safety
---------------------------
* ``pop.save(PATH)`` writes a complete file to ``PATH.tmp-<pid>``, fsyncs it,
  renames it over ``PATH`` and fsyncs the directory: a crash leaves the old
  file (or none) and possibly a stray temporary file, never a partial ``PATH``.
* A storage-backed population writes its arrays in place. *The last durable
  state is the state at the last* ``flush()``. Before the first write after a
  flush (a step, ``set``, ``add``, ...) the superblock's DIRTY flag is set and
  fsynced; ``flush()`` msyncs the arrays, computes their CRC-32s, writes the
  metadata, fsyncs, and only then writes the superblock without the flag (the
  commit record) and fsyncs again. A file whose flag is set was changed after
  its last flush, possibly part-way through a step, and the state of the last
  flush is no longer on disk: :func:`open_population` refuses it with
  :class:`~fa_core.errors.UnflushedStateError`. A process killed while the
  file was clean leaves exactly the last flushed state. (A run that must
  survive a kill in the middle of a step keeps a second copy: ``save()`` to
  another path every so often.) Torn or flipped bytes in the superblock, the
  metadata or any array fail a CRC-32 and raise
  :class:`~fa_core.errors.CorruptStateError` (the alignment padding between
  arrays is never read); a shorter or longer file fails the length checks.
  Values are then checked as :meth:`Population.wake` checks them (CRC-32
  detects accidents, not tampering; the value checks keep a crafted file from
  driving a kernel out of bounds).
* Growth (``add`` beyond capacity) maps new arrays at the end of the file and
  copies the rows; the old regions are reused by later growth. Learned counts
  live in RAM between flushes and are written into the metadata at each flush.

Resident memory
---------------
A storage-backed population is stepped in row chunks of about
:data:`CHUNK_BYTES` of state (whole SIMD blocks, so the results are those of
one kernel call), and its constructor fills its rows the same way; after each
chunk its pages are dropped from the process's resident set
(``madvise(MADV_DONTNEED)``: the data stays in the page cache and the file, and
the kernel writes dirty pages back and evicts them under memory pressure). So
the resident set stays near one chunk plus the model whatever the number of
agents. ``flush()`` and ``open`` read every array once (CRC-32s; on opening
also the value checks), chunk by chunk in the same way. Learned counts are
the exception: they are kept in RAM.

Little-endian machines only; files move between them (dtypes are recorded).
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib

import numpy as np

from fa_core.blobformat import Reader, dump_value, frame, load_value, unframe
from fa_core.errors import (CorruptStateError, LayoutMismatchError, ModelMismatchError,
                            UnflushedStateError)

__all__ = ["open_population", "load_population", "save_population", "StateFile"]

MAGIC = b"FAPOPST1"
VERSION = 1
F_DIRTY = 1
_KNOWN_FLAGS = F_DIRTY
# magic, version, flags, model key, generation, metadata offset / length / CRC-32
_SUPER = struct.Struct("<8sHH20sQQQI")
_CRC = struct.Struct("<I")
SUPER_SIZE = _SUPER.size + _CRC.size
ALIGN = 4096
DATA_START = ALIGN
_META_MAGIC, _META_VERSION = b"FM", 1
_CHUNK = 1 << 26  # bytes per CRC / check pass chunk
#: bytes of state per kernel call when stepping a storage-backed population (its resident set)
CHUNK_BYTES = 1 << 28
_WHAT = "population state file"


def _align(x: int) -> int:
    return -(-x // ALIGN) * ALIGN


def _fail(path, msg):
    raise CorruptStateError(f"corrupt or truncated {_WHAT} {os.fspath(path)!r}: {msg}")


def _pack_super(key: bytes, flags: int, generation: int, meta_off: int, meta_len: int,
                meta_crc: int) -> bytes:
    head = _SUPER.pack(MAGIC, VERSION, flags, key, generation, meta_off, meta_len, meta_crc)
    return head + _CRC.pack(zlib.crc32(head))


def read_super(path, raw: bytes) -> dict:
    """The superblock's fields, or CorruptStateError naming the failed check."""
    if len(raw) < SUPER_SIZE:
        _fail(path, f"{len(raw)} bytes, shorter than its {SUPER_SIZE}-byte superblock")
    magic, version, flags, key, gen, meta_off, meta_len, meta_crc = _SUPER.unpack_from(raw)
    if magic != MAGIC:
        _fail(path, f"it starts with {magic!r}, not {MAGIC!r} (not an fa_core {_WHAT})")
    (crc,) = _CRC.unpack_from(raw, _SUPER.size)
    if zlib.crc32(raw[:_SUPER.size]) != crc:
        _fail(path, "superblock checksum mismatch (CRC-32)")
    if version != VERSION:
        _fail(path, f"format version {version}; this fa_core reads version {VERSION} only")
    if flags & ~_KNOWN_FLAGS:
        _fail(path, f"unknown superblock flag bits {flags & ~_KNOWN_FLAGS:#x}")
    return {"flags": flags, "key": bytes(key), "generation": gen, "meta_off": meta_off,
            "meta_len": meta_len, "meta_crc": meta_crc}


def _crc_of(mm, nbytes: int, drop: bool) -> int:
    """CRC-32 of the first ``nbytes`` of mapping ``mm``, chunk by chunk (pages dropped
    from the resident set after each chunk when ``drop``)."""
    crc = 0
    view = memoryview(mm)
    for lo in range(0, nbytes, _CHUNK):
        hi = min(nbytes, lo + _CHUNK)
        crc = zlib.crc32(view[lo:hi], crc)
        if drop:
            _dontneed(mm, lo, hi - lo)
    view.release()
    return crc


def _dontneed(mm, off: int, length: int) -> None:
    """Drop pages of a shared file mapping from this process's resident set (the data
    stays in the page cache and the file)."""
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED") and length > 0:
        mm.madvise(mmap.MADV_DONTNEED, off - off % mmap.PAGESIZE,
                   length + off % mmap.PAGESIZE)


def _fsync_dir(path) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _record(name, arr, off, crc) -> dict:
    return {"name": name, "dtype": arr.dtype.str, "shape": tuple(int(s) for s in arr.shape),
            "offset": off, "crc": crc}


# ---------------------------------------------------------------------------
# A memory-mapped state file
# ---------------------------------------------------------------------------


class StateFile:
    """The file behind a storage-backed :class:`~fa_core.Population` (one per population).

    Holds the open file, one ``mmap`` per array (handed to the kernels as plain
    ndarray views), the free regions left by growth, and the DIRTY flag logic
    of the module docstring. Populations call :meth:`array` (from ``_alloc``),
    :meth:`will_write` (before writing rows) and :meth:`flush`.
    """

    def __init__(self, path, fd: int, key: bytes, generation: int = 0):
        self.path = os.fspath(path)
        self.fd = fd
        self.key = key
        self.generation = generation
        self.clean = False
        self.maps: dict[str, tuple] = {}   # name -> (mmap or None, offset, ndarray)
        self.free: list[list[int]] = []     # [offset, size] of reusable regions, sorted
        self.end = DATA_START               # end of the array region
        self.adopting: dict[str, tuple] | None = None  # open: name -> (mmap, off, array)
        self._retired: list[tuple] = []     # regions whose rows are copied next

    # -- creating --------------------------------------------------------------------

    @classmethod
    def create(cls, path, key: bytes) -> StateFile:
        """A new, empty state file at ``path`` (FileExistsError if there is one)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise FileExistsError(f"{os.fspath(path)!r} exists: Population.open(path, model) "
                                  "resumes it; delete it to start afresh") from None
        store = cls(path, fd, key)
        os.ftruncate(fd, DATA_START)
        store._write_super(F_DIRTY, 0, 0, 0)  # no commit record yet: refuses to open
        return store

    def _write_super(self, flags, meta_off, meta_len, meta_crc) -> None:
        os.pwrite(self.fd, _pack_super(self.key, flags, self.generation, meta_off, meta_len,
                                       meta_crc), 0)
        os.fsync(self.fd)
        self._meta = (meta_off, meta_len, meta_crc)

    # -- arrays ----------------------------------------------------------------------

    def array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A zeroed ``shape`` array of ``dtype`` mapped from the file (or, while opening,
        the file's array ``name``, which must have exactly that shape and dtype)."""
        dtype = np.dtype(dtype)
        if self.adopting is not None:
            got = self.adopting.pop(name, None)
            if got is None:
                raise LayoutMismatchError(
                    f"{self.path!r} holds no array {name!r}, which this population needs "
                    f"(shape {shape}, {dtype}): it was written with other options or by "
                    "another fa_core version")
            arr = got[2]
            if arr.shape != tuple(shape) or arr.dtype != dtype:
                raise LayoutMismatchError(
                    f"{self.path!r}: array {name!r} is {arr.dtype} {arr.shape} in the file "
                    f"but {dtype} {tuple(shape)} for this model and options")
            self.maps[name] = got
            return arr
        self.will_write()
        self._release_retired()
        old = self.maps.pop(name, None)
        if old is not None:  # freed once its rows have been copied (next call / flush)
            self._retired.append(old)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes == 0:
            arr = np.zeros(shape, dtype)
            self.maps[name] = (None, 0, arr)
            return arr
        size = _align(nbytes)
        off = self._take_free(size)
        fresh = off is None
        if fresh:
            off = self.end
            self.end += size
            os.ftruncate(self.fd, self.end)  # zero-filled, sparse: no page touched
        mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                       offset=off)
        arr = np.frombuffer(mm, dtype, nbytes // dtype.itemsize).reshape(shape)
        if not fresh:
            arr[...] = 0
        self.maps[name] = (mm, off, arr)
        return arr

    def _take_free(self, size: int):
        for i, (off, sz) in enumerate(self.free):
            if sz >= size:
                if sz == size:
                    del self.free[i]
                else:
                    self.free[i] = [off + size, sz - size]
                return off
        return None

    def _release_retired(self) -> None:
        for mm, off, _ in self._retired:
            if mm is None:
                continue
            self.free.append([off, len(mm)])
        self._retired = []
        self.free.sort()
        merged: list[list[int]] = []
        for off, sz in self.free:
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1][1] += sz
            else:
                merged.append([off, sz])
        self.free = merged

    def will_write(self) -> None:
        """Before the first write after a flush: set the DIRTY flag, durably."""
        if self.clean:
            self.clean = False
            self._write_super(F_DIRTY, *self._meta)

    def spans(self, n: int) -> list[tuple[int, int]]:
        """Row chunks of about ``CHUNK_BYTES`` of state for the kernels, each a multiple
        of 64 rows (whole SIMD blocks, so the results are those of one call)."""
        row = sum(arr.strides[0] for mm, _, arr in self.maps.values()
                  if mm is not None and arr.ndim) or 1
        step = max(64, CHUNK_BYTES // row // 64 * 64)
        return [(lo, min(n, lo + step)) for lo in range(0, n, step)] or [(0, 0)]

    def release_rows(self, lo: int, hi: int) -> None:
        """Drop rows ``lo:hi`` of every array from the resident set (after their chunk)."""
        for mm, _, arr in self.maps.values():
            if mm is not None and arr.ndim and hi > lo:
                row = arr.strides[0]
                _dontneed(mm, lo * row, (hi - lo) * row)

    def release_pages(self) -> None:
        """Drop every array's pages from this process's resident set (they stay cached)."""
        for mm, _, _ in self.maps.values():
            if mm is not None:
                _dontneed(mm, 0, len(mm))

    # -- committing ------------------------------------------------------------------

    def flush(self, meta_state: dict, capacity: int, n: int) -> None:
        """Make the arrays and ``meta_state`` durable; the commit record goes last."""
        self.will_write()
        self._release_retired()
        records = []
        for name, (mm, off, arr) in self.maps.items():
            crc = 0
            if mm is not None:
                mm.flush()
                crc = _crc_of(mm, arr.nbytes, drop=True)
            records.append(_record(name, arr, off, crc))
        layout = {"capacity": capacity, "n": n, "arrays": records}
        body = bytearray()
        dump_value(body, {"layout": layout, "state": meta_state}, "population state")
        blob = frame(_META_MAGIC, _META_VERSION, 0, self.key, bytes(body), False)
        meta_off = _align(self.end)
        os.ftruncate(self.fd, meta_off + len(blob))
        os.pwrite(self.fd, blob, meta_off)
        os.fsync(self.fd)
        self.generation += 1
        self._write_super(0, meta_off, len(blob), zlib.crc32(blob))
        self.clean = True

    def __del__(self):
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            self.fd = -1
            os.close(fd)

    def close(self) -> None:
        """Unmap what can be unmapped and close the file (without flushing)."""
        mms = [t[0] for t in list(self.maps.values()) + self._retired if t[0] is not None]
        self.maps, self._retired = {}, []  # drop our views first: they pin the mappings
        for mm in mms:
            try:
                mm.close()
            except BufferError:  # views still alive elsewhere: the mapping goes with them
                pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ---------------------------------------------------------------------------
# Reading a file: superblock, metadata, arrays
# ---------------------------------------------------------------------------


def _read_head(path, fd: int, model):
    """Superblock and metadata of an open file, checked; returns (super, layout, state)."""
    size = os.fstat(fd).st_size
    raw = os.pread(fd, SUPER_SIZE, 0)
    sb = read_super(path, raw)
    key = model.content_key()
    if sb["flags"] & F_DIRTY:
        if sb["meta_len"] == 0:
            raise UnflushedStateError(
                f"{os.fspath(path)!r} was never flushed: the process that created it ended "
                "before its first flush() completed; there is no durable state to open")
        raise UnflushedStateError(
            f"{os.fspath(path)!r} was written after its last flush() (generation "
            f"{sb['generation']}) and not flushed again: the process was killed or ended "
            "without pop.flush(), so its rows may mix two states and the flushed state is "
            "gone; refusing to open it")
    if sb["key"] != key:
        raise ModelMismatchError(
            f"{os.fspath(path)!r} holds a population of another model (content key "
            f"{sb['key'].hex()[:12]}..., this model's is {key.hex()[:12]}...)")
    off, n_meta = sb["meta_off"], sb["meta_len"]
    if off < DATA_START or off + n_meta != size:
        _fail(path, f"{size} bytes, but its superblock puts the metadata at {off}..{off + n_meta}")
    blob = os.pread(fd, n_meta, off)
    if len(blob) != n_meta or zlib.crc32(blob) != sb["meta_crc"]:
        _fail(path, "metadata checksum mismatch (CRC-32)")
    _, mkey, body = unframe(blob, _META_MAGIC, _META_VERSION, 0, f"{_WHAT} metadata")
    if mkey != key:
        _fail(path, "the metadata names another model than the superblock")
    r = Reader(body, f"{_WHAT} metadata")
    meta = load_value(r)
    r.done()
    if type(meta) is not dict or set(meta) != {"layout", "state"}:
        _fail(path, "its metadata is not a layout and a state")
    layout, state = meta["layout"], meta["state"]
    _check_layout(path, layout, off)
    if type(state) is not dict:
        _fail(path, "its state is not a mapping")
    return sb, layout, state


def _check_layout(path, layout, meta_off) -> None:
    if type(layout) is not dict or set(layout) != {"capacity", "n", "arrays"}:
        _fail(path, "its layout is not capacity, n and arrays")
    cap, n = layout["capacity"], layout["n"]
    if type(cap) is not int or type(n) is not int or not 0 <= n <= cap:
        _fail(path, f"its layout holds {n!r} agents in a capacity of {cap!r}")
    seen, spans = set(), []
    for rec in layout["arrays"]:
        if type(rec) is not dict or set(rec) != {"name", "dtype", "shape", "offset", "crc"}:
            _fail(path, "an array record without name, dtype, shape, offset and crc")
        name = rec["name"]
        if type(name) is not str or name in seen:
            _fail(path, f"array name {name!r} twice or not a string")
        seen.add(name)
        try:
            dt = np.dtype(rec["dtype"])
        except TypeError:
            _fail(path, f"array {name!r} has dtype {rec['dtype']!r}")
        shape = rec["shape"]
        if dt.kind not in "biuf" or dt.byteorder == ">" or type(shape) is not tuple or \
                not shape or any(type(s) is not int or s < 0 for s in shape) or shape[0] != cap:
            _fail(path, f"array {name!r}: {rec['dtype']} {shape!r} is not a numeric array of "
                        f"{cap} rows")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        off = rec["offset"]
        if nbytes and (type(off) is not int or off < DATA_START or off % ALIGN or
                       off + nbytes > meta_off):
            _fail(path, f"array {name!r} at offset {off!r} ({nbytes} bytes) lies outside the "
                        f"data region {DATA_START}..{meta_off}")
        if nbytes:
            spans.append((off, off + nbytes, name))
    spans.sort()
    for (_, a1, na), (b0, _, nb) in zip(spans, spans[1:]):
        if b0 < a1:
            _fail(path, f"arrays {na!r} and {nb!r} overlap")


def _map_arrays(path, fd, layout, verify: bool, writable: bool) -> dict:
    """name -> (mmap or None, offset, ndarray view) for every array of ``layout``;
    CRC-32s checked when ``verify``."""
    out = {}
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    for rec in layout["arrays"]:
        dt, shape = np.dtype(rec["dtype"]), rec["shape"]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if nbytes == 0:
            out[rec["name"]] = (None, 0, np.zeros(shape, dt))
            if verify and rec["crc"] != 0:
                _fail(path, f"array {rec['name']!r} checksum mismatch (CRC-32)")
            continue
        mm = mmap.mmap(fd, _align(nbytes), mmap.MAP_SHARED, prot, offset=rec["offset"])
        if verify and _crc_of(mm, nbytes, drop=True) != rec["crc"]:
            mm.close()
            _fail(path, f"array {rec['name']!r} checksum mismatch (CRC-32): its data changed "
                        "after the last flush()")
        arr = np.frombuffer(mm, dt, nbytes // dt.itemsize).reshape(shape)
        out[rec["name"]] = (mm, rec["offset"], arr)
    return out


def _split_state(pop_cls, arrays: dict, n: int, state: dict):
    """The restore state (small state plus the rows of the arrays ``Population._restore``
    knows) and the extra registered arrays it does not."""
    from fa_core.population import _HIST
    known = set(pop_cls._ARRAYS + pop_cls._OPTIONAL + _HIST)
    full = dict(state)
    for name in known:
        full.setdefault(name, None)
    extras = {}
    for name, arr in arrays.items():
        if name in known:
            full[name] = arr[:n]
        else:
            extras[name] = arr
    return full, extras


def _check_values(pop_cls, model, full: dict, n: int, path, maps=None) -> None:
    """The checks a restore makes (check_population_state), over row chunks so a
    population larger than RAM is read once, with its pages dropped as it goes."""
    from fa_core.population import _HIST, check_population_state
    from fa_core.population_learning import check_learned_state, learn_indices
    what = f"{_WHAT} {os.fspath(path)!r}"
    names = [k for k in pop_cls._ARRAYS + pop_cls._OPTIONAL + _HIST if full.get(k) is not None]
    row_bytes = sum(full[k][:1].nbytes for k in names) or 1
    step = max(1, _CHUNK // row_bytes)
    for lo in range(0, max(n, 1), step):
        hi = min(n, lo + step)
        part = dict(full, _n=hi - lo, learned=None)
        for k in names:
            part[k] = full[k][lo:hi]
        check_population_state(part, model, what)
        for mm, _, arr in (maps or {}).values():  # this chunk's pages leave the resident set
            if mm is not None and arr.ndim and hi > lo:
                _dontneed(mm, lo * arr.strides[0], (hi - lo) * arr.strides[0])
    try:
        mods = learn_indices(full.get("modalities_to_learn", "all"), model.num_modalities,
                             "modalities_to_learn")
        facs = learn_indices(full.get("factors_to_learn", "all"), model.num_factors,
                             "factors_to_learn")
    except (TypeError, ValueError) as exc:
        raise CorruptStateError(f"corrupt or truncated {what}: {exc}") from None
    check_learned_state(full.get("learned"), model, n, mods, facs, what)


def _pages_dropped(maps: dict) -> None:
    for mm, _, _ in maps.values():
        if mm is not None:
            _dontneed(mm, 0, len(mm))


def _check_registry(pop, names, path) -> None:
    want = set(pop._array_specs())
    have = set(names)
    if want != have:
        raise LayoutMismatchError(
            f"{os.fspath(path)!r} holds arrays {sorted(have - want)} this population does "
            f"not have and lacks {sorted(want - have)}: written with other options or by "
            "another fa_core version")


def open_population(cls, path, model, verify: bool = True):
    """The storage-backed population in ``path`` (see ``Population.open``)."""
    from fa_core.model import GenerativeModel
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model must be a GenerativeModel, got {type(model).__name__}")
    fd = os.open(path, os.O_RDWR)
    store = None
    try:
        sb, layout, state = _read_head(path, fd, model)
        maps = _map_arrays(path, fd, layout, verify, writable=True)
        n, cap = layout["n"], layout["capacity"]
        arrays = {k: v[2] for k, v in maps.items()}
        full, extras = _split_state(cls, arrays, n, state)
        full["_n"] = n
        full["model"] = model
        if verify:
            _check_values(cls, model, full, n, path, maps)
            _pages_dropped(maps)
        for name in full:  # the whole mapped arrays: _restore adopts them, copying nothing
            if name in maps and maps[name][2].ndim:
                full[name] = maps[name][2]
        store = StateFile(path, fd, model.content_key(), sb["generation"])
        store.end = max([DATA_START] + [off + len(mm) for mm, off, _ in maps.values()
                                        if mm is not None])
        store._meta = (sb["meta_off"], sb["meta_len"], sb["meta_crc"])
        store.adopting = dict(maps)
        pop = cls.__new__(cls)
        pop.__dict__["_store"] = store
        pop._restore(full, capacity=cap)  # _alloc adopts every registered array, extras too
        _check_registry(pop, list(maps), path)
        if store.adopting:
            raise LayoutMismatchError(f"{os.fspath(path)!r} holds arrays "
                                      f"{sorted(store.adopting)} this population does not have")
        store.adopting = None
        store._rebuild_free()
        store.clean = True
    except BaseException:
        if store is not None:
            store.fd = -1  # closed here, not again by its finaliser
        os.close(fd)
        raise
    return pop


def _rebuild_free_impl(store) -> None:
    spans = sorted((off, len(mm)) for mm, off, _ in store.maps.values() if mm is not None)
    free, at = [], DATA_START
    for off, sz in spans:
        if off > at:
            free.append([at, off - at])
        at = max(at, off + sz)
    store.free = free


StateFile._rebuild_free = _rebuild_free_impl


# ---------------------------------------------------------------------------
# save / load (the in-RAM case)
# ---------------------------------------------------------------------------


def save_population(pop, path) -> None:
    """Write ``pop`` to ``path`` atomically (temporary file, fsync, rename, fsync of the
    directory); see ``Population.save``."""
    path = os.fspath(path)
    with pop._lock:
        d = pop.__dict__
        n = d["_n"]
        meta_state = pop._small_state()
        key = pop.model.content_key()
        arrays = [(name, d["_" + name][:n]) for name in pop._array_specs()]
        tmp = f"{path}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            records, at = [], DATA_START
            for name, arr in arrays:
                arr = np.ascontiguousarray(arr)
                crc = 0
                if arr.nbytes:
                    view = memoryview(arr.reshape(-1).view(np.uint8))
                    for lo in range(0, arr.nbytes, _CHUNK):
                        chunk = view[lo:lo + _CHUNK]
                        crc = zlib.crc32(chunk, crc)
                        os.pwrite(fd, chunk, at + lo)
                records.append(_record(name, arr, at if arr.nbytes else 0, crc))
                at = _align(at + arr.nbytes)
            layout = {"capacity": n, "n": n, "arrays": records}
            body = bytearray()
            dump_value(body, {"layout": layout, "state": meta_state}, "population state")
            blob = frame(_META_MAGIC, _META_VERSION, 0, key, bytes(body), False)
            os.pwrite(fd, blob, at)
            os.ftruncate(fd, at + len(blob))
            os.pwrite(fd, _pack_super(key, 0, 1, at, len(blob), zlib.crc32(blob)), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path)


def load_population(cls, path, model):
    """An in-RAM population read from ``path`` (see ``Population.load``)."""
    from fa_core.model import GenerativeModel
    from fa_core.population import check_population_state
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"model must be a GenerativeModel, got {type(model).__name__}")
    fd = os.open(path, os.O_RDONLY)
    try:
        _, layout, state = _read_head(path, fd, model)
        maps = _map_arrays(path, fd, layout, True, writable=False)
        n = layout["n"]
        arrays = {k: np.array(v[2][:n]) for k, v in maps.items()}  # copies into RAM
        del maps  # the mappings close with their last views
    finally:
        os.close(fd)
    full, extras = _split_state(cls, arrays, n, state)
    full["_n"] = n
    full["model"] = model
    check_population_state(full, model, f"{_WHAT} {os.fspath(path)!r}")
    pop = cls.__new__(cls)
    pop._restore(full)
    for name, arr in extras.items():
        pop.__dict__["_" + name][:n] = arr
    _check_registry(pop, list(arrays), path)
    return pop
