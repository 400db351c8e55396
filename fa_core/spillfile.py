"""The file an :class:`~fa_core.pool.AgentPool` spills hibernated agents to.

Two files side by side:

* the *commit file* (the path the caller names): 48 bytes, replaced whole by
  write-then-rename on every commit. It names the data file's generation and
  holds the committed length of the data file, its record count and the CRC-32
  of its committed bytes, all under its own CRC-32.
* the *data file* ``<path>.<generation>.data``: a 16-byte header (magic,
  generation) and append-only records. A record is a 12-byte head (kind,
  metadata length, blob length), its metadata (the agent id and class name as
  :func:`fa_core.blobformat.dump_value` plain values), the hibernated agent's
  blob (itself checksummed, :mod:`fa_core.blobformat`) and a CRC-32 over all
  of it. A ``put`` record holds an agent; a ``delete`` record removes one.

Opening checks the commit file, then every committed record (lengths, CRC,
metadata) and the CRC of the whole committed region: a corrupt or truncated
file raises :class:`~fa_core.errors.CorruptStateError` and nothing is built.
Bytes past the committed length were written after the last commit by a
process that died: they are dropped, so a reopened file holds exactly the
last committed state. Compaction writes the live records to the next
generation's data file, makes it durable, then commits (renames) the commit
file onto it: a crash at any point leaves the old or the new generation whole.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Hashable
from typing import NamedTuple

from fa_core.blobformat import Reader, dump_value, load_value
from fa_core.errors import CorruptStateError

__all__ = ["SpillFile", "Entry"]

_COMMIT = struct.Struct("<8sIQQQI")  # magic, version, generation, data length, records, data crc
_CRC = struct.Struct("<I")
_COMMIT_SIZE = _COMMIT.size + _CRC.size
_DATA_HEAD = struct.Struct("<8sQ")  # magic, generation
_REC = struct.Struct("<B3xII")  # kind, metadata bytes, blob bytes
_COMMIT_MAGIC, _DATA_MAGIC, _VERSION = b"FAPOOLC\0", b"FAPOOLD\0", 1
PUT, DELETE = 1, 2
_INT_META = struct.Struct("<6sqc")  # dump_value of (int, None): tuple of 2, "i" + int64, "N"
_INT_META_HEAD = b"t\x02\x00\x00\x00i"
_BLOB_HEAD = struct.Struct("<2sBB20sII")  # fa_core.blobformat's frame header
_BLOB_HEADER = _BLOB_HEAD.size + 4  # and its CRC-32
_WHAT = "AgentPool spill file"


class Entry(NamedTuple):
    """Where one agent's latest ``put`` record is (all offsets in the data file)."""

    rec_off: int
    rec_len: int
    blob_off: int
    blob_len: int
    cls_name: str | None
    key: bytes  # the model's content key (from the blob's header)


def _fail(path, msg: str):
    raise CorruptStateError(f"corrupt or truncated {_WHAT} {os.fspath(path)!r}: {msg}")


def _read_all(fd: int, n: int) -> bytes:
    parts, off = [], 0
    while off < n:
        part = os.pread(fd, min(n - off, 1 << 30), off)
        if not part:
            break
        parts.append(part)
        off += len(part)
    return b"".join(parts)


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpillFile:
    """Append-only records of hibernated agents with an atomically renamed commit file.

    ``entries`` maps each agent id on disk to its :class:`Entry`. Writes go to
    the end of the data file; :meth:`commit` makes them durable.

    Parameters
    ----------
    path : str or os.PathLike
        The commit file; created (empty) if it does not exist.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.entries: dict[Hashable, Entry] = {}
        self.discarded = 0  # uncommitted bytes dropped when opening
        self._keys: dict[bytes, bytes] = {}  # one bytes object per model key
        self._fd = -1
        if os.path.exists(self.path):
            self._open_existing()
        else:
            self._create()
        self._remove_orphans()

    # -- files ---------------------------------------------------------------------

    def _data_path(self, gen: int) -> str:
        return f"{self.path}.{gen}.data"

    def _new_data(self, gen: int) -> int:
        fd = os.open(self._data_path(gen), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, _DATA_HEAD.pack(_DATA_MAGIC, gen))
        return fd

    def _create(self) -> None:
        self.gen, self.n_records = 0, 0
        self._fd = self._new_data(0)
        self.end = self._live = _DATA_HEAD.size
        self._crc = zlib.crc32(_DATA_HEAD.pack(_DATA_MAGIC, 0))
        self.commit()

    def _open_existing(self) -> None:
        with open(self.path, "rb") as f:
            raw = f.read(_COMMIT_SIZE + 1)
        if len(raw) != _COMMIT_SIZE:  # read one byte past: any other size is refused
            _fail(self.path, f"commit file of {os.path.getsize(self.path)} bytes, "
                             f"not {_COMMIT_SIZE}")
        magic, version, gen, length, n_records, data_crc = _COMMIT.unpack_from(raw)
        if magic != _COMMIT_MAGIC:
            _fail(self.path, f"it starts with {magic!r}, not {_COMMIT_MAGIC!r} "
                             "(not an AgentPool spill file)")
        if version != _VERSION:
            _fail(self.path, f"format version {version}; this fa_core reads {_VERSION} only")
        if zlib.crc32(raw[:_COMMIT.size]) != _CRC.unpack_from(raw, _COMMIT.size)[0]:
            _fail(self.path, "commit record checksum mismatch")
        data = self._data_path(gen)
        try:
            fd = os.open(data, os.O_RDWR)
        except FileNotFoundError:
            _fail(self.path, f"its data file {data!r} is missing")
        try:
            size = os.fstat(fd).st_size
            if size < length:
                _fail(self.path, f"data file of {size} bytes, its commit record gives {length}")
            if length < _DATA_HEAD.size:
                _fail(self.path, f"committed length {length} is shorter than the data header")
            self._scan(memoryview(_read_all(fd, length)), gen, n_records, data_crc)
            if size > length:  # written after the last commit by a process that died
                os.ftruncate(fd, length)
                self.discarded = size - length
        except BaseException:
            os.close(fd)
            raise
        self._fd, self.gen, self.end, self.n_records, self._crc = (
            fd, gen, length, n_records, data_crc)
        self._live = _DATA_HEAD.size + sum(e.rec_len for e in self.entries.values())

    def _scan(self, buf: memoryview, gen: int, n_records: int, data_crc: int) -> None:
        """Check the committed region record by record and build ``entries``."""
        try:
            magic, got_gen = _DATA_HEAD.unpack_from(buf)
            if magic != _DATA_MAGIC or got_gen != gen:
                _fail(self.path, f"data file header {bytes(magic)!r}/{got_gen} is not "
                                 f"{_DATA_MAGIC!r}/{gen}")
            pos, n, count, entries = _DATA_HEAD.size, len(buf), 0, self.entries
            while pos < n:
                if n - pos < _REC.size + _CRC.size:
                    _fail(self.path, f"record {count} at offset {pos} is cut short")
                kind, meta_len, blob_len = _REC.unpack_from(buf, pos)
                rec_len = _REC.size + meta_len + blob_len + _CRC.size
                if kind not in (PUT, DELETE) or rec_len > n - pos:
                    _fail(self.path, f"record {count} at offset {pos}: kind {kind}, "
                                     f"{rec_len} bytes of {n - pos} left")
                body = buf[pos:pos + rec_len - _CRC.size]
                if zlib.crc32(body) != _CRC.unpack_from(buf, pos + rec_len - _CRC.size)[0]:
                    _fail(self.path, f"record {count} at offset {pos}: checksum mismatch")
                meta_raw = body[_REC.size:_REC.size + meta_len]
                if meta_len == _INT_META.size and meta_raw[:6] == _INT_META_HEAD \
                        and meta_raw[14] == 78:  # (int id, None): most pools, decoded fast
                    meta = (_INT_META.unpack(meta_raw)[1], None)
                else:
                    r = Reader(meta_raw, _WHAT)
                    meta = load_value(r)
                    r.done()
                if type(meta) is not tuple or len(meta) != 2 or not (
                        meta[1] is None or type(meta[1]) is str):
                    _fail(self.path, f"record {count} at offset {pos}: malformed metadata")
                agent_id, cls_name = meta
                try:
                    hash(agent_id)
                except TypeError:
                    _fail(self.path, f"record {count}: an agent id that is not hashable")
                if kind == PUT:
                    blob_off = pos + _REC.size + meta_len
                    key = self._key(buf[blob_off:blob_off + blob_len], count)
                    entries[agent_id] = Entry(pos, rec_len, blob_off, blob_len, cls_name, key)
                elif entries.pop(agent_id, None) is None:
                    _fail(self.path, f"record {count} deletes agent {agent_id!r}, absent")
                pos += rec_len
                count += 1
            if count != n_records:
                _fail(self.path, f"{count} records, its commit record gives {n_records}")
            if zlib.crc32(buf) != data_crc:
                _fail(self.path, "checksum mismatch over the committed records")
        except CorruptStateError:
            self.entries = {}
            raise

    def _key(self, blob, count: int) -> bytes:
        from fa_core.agent_state import _MAGIC, _VERSION, blob_model_key
        if len(blob) >= _BLOB_HEAD.size:  # the header fields blob_model_key checks, inline
            magic, version, _, key, stored, _ = _BLOB_HEAD.unpack_from(blob)
            if magic == _MAGIC and version == _VERSION and len(blob) == _BLOB_HEADER + stored:
                key = bytes(key)
                return self._keys.setdefault(key, key)
        try:
            key = blob_model_key(blob)
        except CorruptStateError as exc:
            _fail(self.path, f"record {count} holds no hibernated agent ({exc})")
        return self._keys.setdefault(key, key)

    def _remove_orphans(self) -> None:
        """Data files of other generations and a commit left half written (crashes)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        base = os.path.basename(self.path)
        keep = os.path.basename(self._data_path(self.gen))
        for name in os.listdir(folder):
            rest = name[len(base) + 1:]
            if name.startswith(base + ".") and name != keep and (
                    rest == "tmp" or rest.endswith(".data") and rest[:-5].isdigit()):
                os.unlink(os.path.join(folder, name))

    # -- records ---------------------------------------------------------------------

    def _append(self, kind: int, agent_id, cls_name, blob=b"") -> tuple[int, int]:
        meta = bytearray()
        dump_value(meta, (agent_id, cls_name), "agent id")
        rec = b"".join((_REC.pack(kind, len(meta), len(blob)), meta, blob))
        rec += _CRC.pack(zlib.crc32(rec))
        off = self.end
        os.pwrite(self._fd, rec, off)
        self._crc = zlib.crc32(rec, self._crc)
        self.end += len(rec)
        self.n_records += 1
        return off, len(meta)

    def put(self, agent_id, cls_name: str | None, blob: bytes, key: bytes) -> None:
        """Append agent ``agent_id``'s blob; it replaces any earlier record of that id."""
        off, meta_len = self._append(PUT, agent_id, cls_name, blob)
        rec_len = _REC.size + meta_len + len(blob) + _CRC.size
        old = self.entries.get(agent_id)
        self._live += rec_len - (0 if old is None else old.rec_len)
        self.entries[agent_id] = Entry(off, rec_len, off + _REC.size + meta_len, len(blob),
                                       cls_name, self._keys.setdefault(key, key))

    def delete(self, agent_id) -> None:
        """Append a record removing ``agent_id`` (KeyError if it is not on disk)."""
        self.entries[agent_id]  # noqa: B018 - KeyError before anything is written
        self._append(DELETE, agent_id, None)
        self._live -= self.entries.pop(agent_id).rec_len

    def read(self, entry: Entry) -> bytes:
        """The blob ``entry`` names."""
        blob = os.pread(self._fd, entry.blob_len, entry.blob_off)
        if len(blob) != entry.blob_len:
            _fail(self.path, f"the data file ends inside the record at offset {entry.rec_off}")
        return blob

    @property
    def nbytes(self) -> int:
        """Bytes of the data file."""
        return self.end

    @property
    def live_nbytes(self) -> int:
        """Bytes of the records that hold the agents on disk (the rest compaction reclaims)."""
        return self._live

    # -- durability ------------------------------------------------------------------

    def commit(self) -> None:
        """Make every record written so far durable (fsync, then rename the commit file)."""
        os.fsync(self._fd)
        head = _COMMIT.pack(_COMMIT_MAGIC, _VERSION, self.gen, self.end, self.n_records,
                            self._crc)
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(head + _CRC.pack(zlib.crc32(head)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path)

    def compact(self) -> None:
        """Rewrite the live records into the next generation's data file, then commit it."""
        gen = self.gen + 1
        fd = self._new_data(gen)
        try:
            end, crc = _DATA_HEAD.size, zlib.crc32(_DATA_HEAD.pack(_DATA_MAGIC, gen))
            entries = {}
            chunk, chunk_off = [], end
            for agent_id, e in sorted(self.entries.items(), key=lambda kv: kv[1].rec_off):
                rec = os.pread(self._fd, e.rec_len, e.rec_off)
                if len(rec) != e.rec_len:
                    _fail(self.path, f"the data file ends inside the record at {e.rec_off}")
                crc = zlib.crc32(rec, crc)
                shift = end - e.rec_off
                entries[agent_id] = e._replace(rec_off=end, blob_off=e.blob_off + shift)
                chunk.append(rec)
                end += e.rec_len
                if end - chunk_off > 1 << 20:
                    os.pwrite(fd, b"".join(chunk), chunk_off)
                    chunk, chunk_off = [], end
            if chunk:
                os.pwrite(fd, b"".join(chunk), chunk_off)
        except BaseException:
            os.close(fd)
            os.unlink(self._data_path(gen))
            raise
        old_fd, old_gen = self._fd, self.gen
        self._fd, self.gen, self.end, self._crc = fd, gen, end, crc
        self.n_records, self.entries, self._live = len(entries), entries, end
        self.commit()  # the new generation is the file from here on
        os.close(old_fd)
        os.unlink(self._data_path(old_gen))

    def close(self) -> None:
        """Close the data file (uncommitted records stay uncommitted)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
