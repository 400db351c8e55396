"""Agent lifecycle: pickling, hibernation to compact bytes, and a pool under a memory budget.

Three ways to put an :class:`~fa_core.agent.Agent` away:

* ``pickle``: self-contained and exact. The agent's model is pickled by
  reference, so a pickle of many agents sharing one model stores it once, and
  unpickling it where an equal model is alive reuses that model (see
  :meth:`GenerativeModel.content_key <fa_core.model.GenerativeModel.content_key>`).
  :func:`dumps` / :func:`loads` go further and leave models out of the pickle.
  Unpickled agents are checked (:func:`fa_core.restore_checks.check_agent`),
  but as with any pickle, unpickling untrusted data can run arbitrary code.
* :func:`hibernate` / :func:`wake`: a compact blob holding only what the agent
  owns (beliefs, policy posterior, expected free energies, action, action
  history, time step, options that differ from the defaults, RNG state) and
  the model's content key. Exact by default; opt-in lossy compression of beliefs.
  The blob is checked (length, version, CRC-32) and pickle-free (see
  :mod:`fa_core.blobformat`): waking bytes from elsewhere never runs code and
  raises :class:`~fa_core.errors.CorruptStateError` for anything malformed.
* :class:`~fa_core.pool.AgentPool` (in :mod:`fa_core.pool`, re-exported here):
  agents by id with at most a budget of them awake; the least recently used
  are hibernated (in RAM or spilled to a file) and woken again on access.
"""

from __future__ import annotations

import copyreg
import functools
import gc
import itertools
import math
import pickle
import struct
from typing import Any

import numpy as np

from fa_core.agent import Agent
from fa_core.blobformat import F_ZLIB, Reader, Record, encode_state, frame, load_value, unframe
from fa_core.errors import CorruptStateError
from fa_core.mmp import MMPState
from fa_core.model import GenerativeModel, model_by_key, resolve_model
from fa_core.restore_checks import check_actions, check_agent, check_mmp_record

__all__ = ["hibernate", "wake", "blob_model_key", "dumps", "loads",
           "FLOAT16_REL_ERROR", "FLOAT16_ABS_ERROR"]

#: Largest relative error float16 rounding puts on a belief entry in the normal
#: float16 range (>= 2**-14): half a unit in the last of its 11 significant bits.
FLOAT16_REL_ERROR = 2.0 ** -11
#: Largest absolute error float16 rounding puts on any belief entry in [0, 1]:
#: half the spacing of float16's subnormals (entries below it become 0).
FLOAT16_ABS_ERROR = 2.0 ** -25

# slots rebuilt from others rather than stored (the float64 views handed to the user
# are made again when read; pending in-place edits are applied before saving)
_DERIVED = ("_qs", "_randint", "_pviews", "_pdirty", "_pi_ref", "_G_ref")

# ---------------------------------------------------------------------------
# Pickling
# ---------------------------------------------------------------------------


def agent_getstate(agent: Agent) -> dict:
    """Every set slot of ``agent`` except derived views, for ``Agent.__getstate__``.

    The model stays an object reference: pickle's memo then stores a model
    shared by many agents once per pickle, and the model pickles by content
    (:meth:`GenerativeModel.__reduce__`). The global ``np.random`` (``seed=None``)
    is recorded as ``None``; a ``numpy.random.Generator`` pickles with its state.
    """
    agent._sync()
    state = {}
    for name in copyreg._slotnames(type(agent)):
        if name not in _DERIVED:
            try:
                state[name] = getattr(agent, name)
            except AttributeError:
                pass  # unset slots stay unset (``qs_hist`` without save_belief_hist)
    extra = _instance_dict(agent)
    if state.get("_rng") is np.random:
        state["_rng"] = None
    if extra:
        state["__dict__"] = dict(extra)
    return state


def agent_setstate(agent: Agent, state: dict, what: str = "unpickled agent") -> None:
    """Restore an agent from :func:`agent_getstate` output (``Agent.__setstate__``).

    The restored values are checked against the model
    (:func:`fa_core.restore_checks.check_agent`); CorruptStateError if one is
    out of range, and the agent must then be discarded.
    """
    state = dict(state)
    extra = state.pop("__dict__", None)
    rng = state.pop("_rng", None)
    qs_buf = state.pop("_qs_buf")
    for name, value in state.items():
        setattr(agent, name, value)
    agent._rng = np.random if rng is None else rng
    if not (rng is None or type(rng) is np.random.Generator):
        raise CorruptStateError(f"corrupt or truncated {what}: its random generator is a "
                                f"{type(rng).__name__}, not a numpy Generator")
    agent._randint = np.random.randint if rng is None else rng.integers
    agent._pviews = agent._pdirty = agent._pi_ref = agent._G_ref = None
    agent._qs_buf = qs_buf
    try:
        check_agent(agent, what)
    except AttributeError as exc:
        raise CorruptStateError(
            f"corrupt or truncated {what}: a field is missing ({exc})") from None
    agent._set_qs_buffer(qs_buf)
    if extra:
        agent.__dict__.update(extra)


def _instance_dict(agent: Agent, n_set: int | None = None) -> dict | None:
    """The agent's ``__dict__`` if it has attributes there, else None.

    Reading ``agent.__dict__`` would allocate a dict on every agent it is
    asked of, so look first: the garbage collector's view of an agent is its
    set slots (``n_set`` of them, counted here if not given) and its type,
    plus anything in its ``__dict__``.
    """
    cls = type(agent)
    if n_set is None:
        names = copyreg._slotnames(cls)
        n_set = sum(map(hasattr, itertools.repeat(agent, len(names)), names))
    refs = gc.get_referents(agent)
    # the type is visited last; if it also sat in a slot, an empty dict is returned: harmless
    if len(refs) - (refs[-1] is cls if refs else 0) <= n_set:
        return None
    return object.__getattribute__(agent, "__dict__")


class _ModelRefPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if type(obj) is GenerativeModel:
            return ("fa_core.GenerativeModel", obj.content_key())
        return None


class _ModelRefUnpickler(pickle.Unpickler):
    def __init__(self, file, models: dict[bytes, GenerativeModel]):
        super().__init__(file)
        self._models = models

    def persistent_load(self, pid):
        kind, key = pid
        if kind != "fa_core.GenerativeModel":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        model = self._models.get(key) or model_by_key(key)
        if model is None:
            raise pickle.UnpicklingError(
                f"the pickle refers to model {key.hex()}, which is not alive here: "
                "pass it in models=, or pickle with fa_core.lifecycle.dumps(..., "
                "include_models=True) or plain pickle")
        return model


def dumps(obj: Any, *, include_models: bool = False,
          protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    """Pickle ``obj`` (agents, lists of agents, ...) with models left out.

    Every :class:`GenerativeModel` inside is written as its content key only,
    so the pickle holds per-agent state alone; :func:`loads` resolves the keys
    to live models. With ``include_models=True`` this is plain ``pickle.dumps``.

    Parameters
    ----------
    obj : object
        What to pickle.
    include_models : bool
        Write the models too (plain pickle).
    protocol : int
        The pickle protocol.

    Returns
    -------
    data : bytes
        The pickle.

    Examples
    --------
    >>> import pickle
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> from fa_core import lifecycle
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> agent = Agent(model=gm, seed=0)
    >>> _ = agent.infer_states([0, 0, 1])
    >>> agents = [agent, Agent(model=gm, seed=1)]
    >>> len(lifecycle.dumps(agents)) < len(pickle.dumps(agents))   # no model inside
    True
    """
    if include_models:
        return pickle.dumps(obj, protocol=protocol)
    import io
    buf = io.BytesIO()
    _ModelRefPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def loads(data: bytes, models=()) -> Any:
    """Unpickle :func:`dumps` output; models come from ``models`` or the live registry.

    This is pickle: load data from trusted sources only (unpickling can run
    arbitrary code). Use :func:`hibernate` / :func:`wake` for untrusted bytes.

    Parameters
    ----------
    data : bytes
        What :func:`dumps` returned.
    models : iterable of GenerativeModel
        Models to resolve keys with, in addition to every live model that
        :func:`fa_core.model.model_by_key` finds.

    Returns
    -------
    obj : object
        The unpickled object, its models the live ones.

    Raises
    ------
    pickle.UnpicklingError
        If a model the pickle refers to is neither given nor alive.

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> from fa_core import lifecycle
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> agent = Agent(model=gm, seed=0)
    >>> _ = agent.infer_states([0, 0, 1])
    >>> again = lifecycle.loads(lifecycle.dumps([agent]), models=[gm])
    >>> again[0].model is gm
    True
    """
    import io
    by_key = {m.content_key(): m for m in models}
    return _ModelRefUnpickler(io.BytesIO(data), by_key).load()


# ---------------------------------------------------------------------------
# Hibernation
# ---------------------------------------------------------------------------

# blob = the checked frame of fa_core.blobformat (magic, version, flags, model key,
# lengths, CRC-32) around a body (deflated when that makes it smaller)
_MAGIC, _VERSION = b"FA", 2
_F_ZLIB, _F_RENORM = F_ZLIB, 2
_WHAT = "hibernated agent"
_FIXED = struct.Struct("<qBB")      # curr_timestep, field flags, rng kind
_B_ACTION, _B_PREV, _B_PREV_LAST_IS_ACTION, _B_QS_HIST, _B_QPI_HIST = 1, 2, 4, 8, 16
_RNG_GLOBAL, _RNG_PCG64, _RNG_OTHER = 0, 1, 2
_PCG64 = struct.Struct("<16s16sBI")  # state, increment, has_uint32, uinteger
_U32 = struct.Struct("<I")
# float section encodings: dense or (index, value) pairs, float32 or float16 values
_DENSE32, _DENSE16, _SPARSE32, _SPARSE16 = 0, 1, 2, 3
# history entries: float32; float64 whose values float32 holds exactly (stored as
# float32); float64 (stored as float64)
_H32, _H64_AS_32, _H64 = 0, 1, 2

_MISSING = object()
_SEED = np.random.SeedSequence(0)
_F64 = np.dtype(np.float64)


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    """Option slots of an agent built with every default."""
    tiny = GenerativeModel(A=[np.ones((1, 1))], B=[np.ones((1, 1, 1))])
    state = agent_getstate(Agent(model=tiny))
    return {k: v for k, v in state.items() if k not in _COMPACT}


@functools.lru_cache(maxsize=1)
def _default_containers() -> tuple[str, ...]:
    """Options whose defaults are mutable containers (each woken agent gets its own)."""
    return tuple(k for k, v in _defaults().items() if type(v) in (dict, list))


def _fresh(value):
    """A copy of a default option that shares no mutable container with it."""
    if type(value) is dict:
        return {k: _fresh(v) for k, v in value.items()}
    if type(value) is list:
        return [_fresh(v) for v in value]
    return value


@functools.cache
def _slot_plan(cls: type) -> tuple[tuple[str, object], ...]:
    """Every slot of ``cls`` but the derived ones, with its default (``_COMPACT`` for
    the binary-encoded slots, ``_MISSING`` for slots an Agent does not have)."""
    options = _defaults()
    return tuple((name, _COMPACT if name in _COMPACT else options.get(name, _MISSING))
                 for name in copyreg._slotnames(cls) if name not in _DERIVED)


def _split_state(agent: Agent) -> tuple[dict, dict]:
    """The binary-encoded slots, and the extras (stored as plain values): options that differ
    from their defaults, default slots left unset, the instance ``__dict__``,
    and the class if it is not Agent."""
    state, extras, absent = {}, {}, []
    n_set = len(_DERIVED)
    for name, default in _slot_plan(type(agent)):
        value = getattr(agent, name, _MISSING)
        if value is _MISSING:
            if default is not _COMPACT and default is not _MISSING:
                absent.append(name)
            continue
        n_set += 1
        if default is _COMPACT:
            state[name] = value
        elif value is not default and not _same(value, default):
            extras[name] = value
    if absent:
        extras["\0absent"] = absent
    if type(agent) is not Agent:
        extras["\0class"] = _class_name(type(agent))
    d = _instance_dict(agent, n_set)
    if d:
        extras["__dict__"] = dict(d)
    return state, extras


# slots the blob encodes in binary; every other slot is an option, stored
# (as a plain value) only when it differs from the default
_COMPACT = frozenset({"_model", "_qs_buf", "_q_pi", "_G", "_act_i", "_action", "_prev_actions",
                      "curr_timestep", "_rng", "qs_hist", "q_pi_hist"})


def _same(a, b) -> bool:
    """Equal values of the same types (so restoring the default changes nothing)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(map(_same, a.values(), map(b.__getitem__, a)))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, (np.ndarray, np.generic)):
        return False
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - any object that cannot compare is simply stored
        return False


def _lossy_check(lossy, prune) -> None:
    if lossy not in (None, "float16"):
        raise ValueError(f"lossy must be None or 'float16', got {lossy!r}")
    if prune is not None and not (isinstance(prune, (int, float)) and 0 < prune < 1):
        raise ValueError(f"prune must be a threshold in (0, 1), got {prune!r}")


def _encode_floats(out: bytearray, x: np.ndarray, sizes, lossy, prune) -> None:
    """Append float32 vector ``x`` (blocks of ``sizes``), pruned / float16 if asked,
    dense or as (index, value) pairs, whichever is smaller."""
    if prune is not None:
        x = x.copy()
        off = 0
        for n in sizes:
            block = x[off:off + n]
            keep = int(np.argmax(block))  # never prune a block to nothing
            top = block[keep]
            block[block < prune] = 0.0
            block[keep] = top
            off += n
    vals = x.astype(np.float16) if lossy == "float16" else x
    n = x.shape[0]
    idx_dtype = np.uint16 if n <= 1 << 16 else np.uint32
    sparse_bytes = 4 + np.count_nonzero(vals) * (idx_dtype().itemsize + vals.itemsize)
    half = vals.dtype == np.float16
    if sparse_bytes < vals.nbytes:
        nz = np.flatnonzero(vals)
        out.append(_SPARSE16 if half else _SPARSE32)
        out += _U32.pack(nz.size)
        out += nz.astype(idx_dtype).tobytes()
        out += vals[nz].tobytes()
    else:
        out.append(_DENSE16 if half else _DENSE32)
        out += vals.tobytes()


def _decode_floats(r: Reader, n: int) -> np.ndarray:
    """A float32 vector of ``n`` entries that :func:`_encode_floats` wrote."""
    method = r.byte()
    if method > _SPARSE16:
        r.fail(f"unknown float encoding {method}")
    dtype = np.float16 if method in (_DENSE16, _SPARSE16) else np.float32
    if method in (_DENSE32, _DENSE16):
        return r.array(dtype, n, copy=False).astype(np.float32)
    nnz = r.u32()
    if nnz > n:
        r.fail(f"{nnz} non-zero entries in a vector of {n}")
    idx = r.array(np.uint16 if n <= 1 << 16 else np.uint32, nnz, copy=False)
    if nnz and int(idx.max()) >= n:
        r.fail(f"entry index {int(idx.max())} in a vector of {n}")
    out = np.zeros(n, dtype=np.float32)
    out[idx] = r.array(dtype, nnz, copy=False)
    return out


def _renormalise(x: np.ndarray, sizes) -> np.ndarray:
    """Each block rescaled to sum to 1, in float64, returned as float32."""
    y = x.astype(np.float64)
    off = 0
    for n in sizes:
        s = y[off:off + n].sum()
        if s > 0:
            y[off:off + n] /= s
        off += n
    return y.astype(np.float32)


def _compact_actions(prev, nf: int, dtype) -> np.ndarray | None:
    """``prev_actions`` as a ``dtype`` matrix, or None if it holds anything else
    (``None`` entries, other shapes or types, values ``dtype`` cannot hold
    exactly, aliased entries): then it goes to the extras."""
    if isinstance(prev, np.ndarray):  # the agent's compact history matrix
        if prev.ndim != 2 or prev.shape[1] != nf or np.any(prev < 0) \
                or np.any(prev > np.iinfo(dtype).max):
            return None
        return prev.astype(dtype)
    if type(prev) is not list or len(set(map(id, prev))) != len(prev):
        return None
    if not prev:
        return np.zeros((0, nf), dtype=dtype)
    if not all(type(a) is np.ndarray and (a.dtype is _F64 or a.dtype == _F64) for a in prev):
        return None
    mat = np.array(prev)
    if mat.shape != (len(prev), nf):
        return None
    with np.errstate(invalid="ignore"):
        small = mat.astype(dtype)
    if small.astype(np.float64).tobytes() != mat.tobytes():  # exact, -0.0 and NaN included
        return None
    return small


def _hist_kind(arrays) -> int | None:
    """How a history's float arrays are stored (``_H32``, ``_H64_AS_32``, ``_H64``),
    or None if they are not all float32 or all float64."""
    dtypes = {a.dtype for a in arrays}
    if not dtypes or dtypes == {np.dtype(np.float32)}:
        return _H32
    if dtypes != {_F64}:
        return None
    exact = all(a.astype(np.float32).astype(np.float64).tobytes() == a.tobytes() for a in arrays)
    return _H64_AS_32 if exact else _H64


def _compact_qs_hist(hist, sizes) -> int | None:
    """``qs_hist``'s storage kind, or None if it holds anything but per-factor vectors."""
    if not isinstance(hist, list):
        return None
    for entry in hist:
        if (type(entry) is not np.ndarray or entry.dtype != object or entry.shape != (len(sizes),)
                or any(type(q) is not np.ndarray or q.dtype not in (np.float32, _F64)
                       or q.shape != (n,) for q, n in zip(entry, sizes))):
            return None
    return _hist_kind([q for entry in hist for q in entry])


def _compact_qpi_hist(hist, n_pol: int) -> int | None:
    if not (isinstance(hist, list) and all(
            type(q) is np.ndarray and q.dtype in (np.float32, _F64) and q.shape == (n_pol,)
            for q in hist)):
        return None
    return _hist_kind(hist)


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain_extras(extras: dict) -> bytes:
    """The extras as plain values (an MMP window as a record of its state)."""
    extras = dict(extras)
    mmp_state = extras.get("_mmp")
    if type(mmp_state) is MMPState:
        state = mmp_state.__getstate__()
        state.pop("model", None)  # rebound to the agent's model on waking
        extras["_mmp"] = Record("MMPState", state)
    return bytes(encode_state(extras, "agent"))


def hibernate(agent: Agent, *, lossy: str | None = None, prune: float | None = None,
              compress: bool = True) -> bytes:
    """Everything ``agent`` owns, as a compact blob that :func:`wake` restores.

    The blob holds the beliefs (``qs``), ``q_pi``, ``G``, the action, the action
    history, the time step, ``qs_hist`` / ``q_pi_hist`` when kept, every option
    that differs from its default, the RNG state and the model's content key
    (not the model: keep the model alive, or pass it to :func:`wake`).

    Parameters
    ----------
    agent : Agent
        The agent to store (it stays awake and unchanged).
    lossy : {None, "float16"}
        ``None`` (default): lossless, :func:`wake` restores every value bit for
        bit. ``"float16"``: beliefs (``qs`` and ``qs_hist``) are stored as
        float16 and renormalised per factor on waking. Before renormalisation
        each entry ``x`` in [0, 1] becomes ``x16`` with
        ``|x16 - x| <= max(2**-11 * x, 2**-25)``: relative error at most
        ``2**-11`` (:data:`FLOAT16_REL_ERROR`) for ``x >= 2**-14``, absolute error
        at most ``2**-25`` below that (entries under ``2**-25`` become 0).
        After renormalisation of a factor with ``n`` states whose beliefs sum
        to ``s`` (1 up to float32 rounding), the L1 distance to the original is
        at most ``|1 - s| + 2 * (2**-11 + n * 2**-25)`` (plus float32 rounding
        of the result, ``2**-24`` per entry).
    prune : float in (0, 1), optional
        Belief entries below ``prune`` are set to 0 (the largest entry of each
        factor is always kept), then each factor is renormalised on waking.
        If the pruned entries of a factor held mass ``r`` (at most ``n *
        prune``), the L1 distance to the original is at most ``|1 - s| + 2r``
        and each kept entry changes by a factor ``1 / (1 - r)`` (up to float32
        rounding). Combined with ``lossy="float16"`` the two bounds add.
    compress : bool
        zlib-compress the blob when that makes it smaller (beliefs often hold
        a few distinct values, which compresses well).

    Returns
    -------
    blob : bytes
        The checked blob: a 36-byte header and the agent's plain values.

    Notes
    -----
    ``q_pi``, ``G`` and ``q_pi_hist`` are always stored exactly. A
    ``numpy.random.Generator`` shared by several agents is copied into each
    blob, so woken agents no longer share it; a PCG64 generator is stored as
    its 37-byte state (its SeedSequence, used only by ``spawn``, is not kept).

    Everything is stored as plain values (no pickle): options, odd history
    forms, an MMP window and attributes in the instance ``__dict__`` must be
    numbers, strings, bytes, lists, tuples, dicts, numeric numpy arrays (or
    object arrays of these) or numpy random generators; anything else raises
    TypeError (pickle such an agent instead). A subclass is recorded by name
    and woken with ``Subclass.wake(blob)``.

    Raises
    ------
    TypeError
        If the agent holds a value the plain format cannot store.

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> from fa_core import lifecycle
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> agent = Agent(model=gm, seed=0)
    >>> _ = agent.infer_states([0, 0, 1])
    >>> blob = lifecycle.hibernate(agent)
    >>> again = lifecycle.wake(blob)
    >>> bool((again.qs[1] == agent.qs[1]).all())
    True
    >>> small = lifecycle.hibernate(agent, lossy="float16")    # beliefs as float16
    >>> len(small) <= len(blob)
    True
    """
    _lossy_check(lossy, prune)
    _check_hibernatable(agent)
    agent._sync()
    model = agent._model
    sizes = model.num_states
    state, extras = _split_state(agent)

    flags = 0
    act_i = state["_act_i"]
    action = state.get("_action")
    if action is not None:
        if (type(action) is np.ndarray and action.dtype == _F64 and action.shape == act_i.shape
                and action.tobytes() == act_i.astype(np.float64).tobytes()):
            flags |= _B_ACTION
        else:
            extras["_action"] = action
    prev = state.get("_prev_actions")
    prev_mat = None
    if prev is not None:
        prev_mat = _compact_actions(prev, model.num_factors,
                                    np.uint8 if max(model.num_controls) <= 256 else np.int32)
        if prev_mat is None:
            extras["_prev_actions"] = prev
        else:
            flags |= _B_PREV
            if type(prev) is list and prev and flags & _B_ACTION and prev[-1] is action:
                flags |= _B_PREV_LAST_IS_ACTION
    qs_hist = state.get("qs_hist", _MISSING)
    qs_kind = None if qs_hist is _MISSING else _compact_qs_hist(qs_hist, sizes)
    if qs_kind is not None:
        flags |= _B_QS_HIST
    elif qs_hist is not _MISSING:
        extras["qs_hist"] = qs_hist
    q_pi_hist = state.get("q_pi_hist", _MISSING)
    qpi_kind = None if q_pi_hist is _MISSING else _compact_qpi_hist(q_pi_hist, model.num_policies)
    if qpi_kind is not None:
        flags |= _B_QPI_HIST
    elif q_pi_hist is not _MISSING:
        extras["q_pi_hist"] = q_pi_hist

    rng = state.get("_rng")
    rng_kind = _RNG_GLOBAL
    if rng is not np.random:
        if (type(rng) is np.random.Generator
                and type(rng.bit_generator) is np.random.PCG64):
            rng_kind = _RNG_PCG64
        else:
            rng_kind = _RNG_OTHER
            extras["_rng"] = rng

    body = bytearray(_FIXED.pack(int(state.get("curr_timestep", 0)), flags, rng_kind))
    body += np.ascontiguousarray(act_i, dtype=np.int32).tobytes()
    _encode_floats(body, np.asarray(state["_qs_buf"], dtype=np.float32), sizes, lossy, prune)
    body += np.asarray(state["_q_pi"], dtype=np.float32).tobytes()
    body += np.asarray(state["_G"], dtype=np.float32).tobytes()
    if rng_kind == _RNG_PCG64:
        st = rng.bit_generator.state
        body += _PCG64.pack(st["state"]["state"].to_bytes(16, "little"),
                            st["state"]["inc"].to_bytes(16, "little"),
                            st["has_uint32"], st["uinteger"])
    if flags & _B_PREV:
        body += _U32.pack(len(prev_mat)) + bytes([prev_mat.dtype.itemsize])
        body += prev_mat.tobytes()
    lossless = lossy is None and prune is None
    if flags & _B_QS_HIST:
        kind = qs_kind if lossless or qs_kind != _H64 else _H64_AS_32
        body += bytes([kind]) + _U32.pack(len(qs_hist))
        for entry in qs_hist:
            flat = np.concatenate(list(entry))
            if kind == _H64:
                body += flat.tobytes()
            else:
                _encode_floats(body, flat.astype(np.float32), sizes, lossy, prune)
    if flags & _B_QPI_HIST:
        body += bytes([qpi_kind]) + _U32.pack(len(q_pi_hist))
        for q in q_pi_hist:
            body += q.astype(np.float64 if qpi_kind == _H64 else np.float32).tobytes()
    body += _plain_extras(extras) if extras else b"N"

    head_flags = 0 if lossless else _F_RENORM
    return frame(_MAGIC, _VERSION, head_flags, model.content_key(), bytes(body), compress)


def _check_hibernatable(agent) -> None:
    """Refuse what pickling refuses: an Agent subclass with its own ``__reduce__``
    (a view of other state, such as a Population member) has no state of its own."""
    if not isinstance(agent, Agent):
        raise TypeError(f"hibernate takes an fa_core.Agent, got {type(agent).__name__}")
    if type(agent).__reduce__ is not Agent.__reduce__:
        try:
            agent.__reduce__()
        except TypeError as exc:
            raise TypeError(f"cannot hibernate a {type(agent).__name__}: {exc}") from exc


def blob_model_key(blob: bytes) -> bytes:
    """The content key of the model a hibernated agent needs.

    Checks the blob's header and length only; :func:`wake` checks the rest.

    Parameters
    ----------
    blob : bytes
        What :func:`hibernate` returned.

    Returns
    -------
    key : bytes
        The model's :meth:`GenerativeModel.content_key <fa_core.GenerativeModel.content_key>`.

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> from fa_core import lifecycle
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> agent = Agent(model=gm, seed=0)
    >>> _ = agent.infer_states([0, 0, 1])
    >>> lifecycle.blob_model_key(agent.hibernate()) == gm.content_key()
    True
    """
    return unframe(blob, _MAGIC, _VERSION, _F_ZLIB | _F_RENORM, _WHAT, verify=False)[1]


def wake(blob: bytes, model: GenerativeModel | None = None, *, cls: type = Agent) -> Agent:
    """The agent :func:`hibernate` put in ``blob``.

    Waking never unpickles: the blob holds plain values only (see
    :mod:`fa_core.blobformat`), its checksum, length and version are checked
    first, and every restored value a kernel reads as an index, size or count
    is checked against the model (:func:`fa_core.restore_checks.check_agent`)
    before the agent is returned, so bytes from elsewhere cannot run code or
    crash a later step.

    Parameters
    ----------
    blob : bytes
        What :func:`hibernate` returned.
    model : GenerativeModel, optional
        The agent's model. By default the live model with the blob's content
        key (see :func:`fa_core.model.model_by_key`).
    cls : type
        The agent's class: ``Agent`` (default) or the subclass it was
        hibernated as (``MySubclass.wake(blob)`` passes it). The blob names
        its class but never imports it.

    Returns
    -------
    agent : Agent
        A new agent of class ``cls``, as it was hibernated (exactly, for
        lossless blobs).

    Raises
    ------
    CorruptStateError
        If ``blob`` is corrupt or truncated (failed checksum, length, version or
        a value out of range for the model); a ``ValueError``.
    ValueError
        If no live model has the blob's key, ``model`` is not the model the
        agent was hibernated with, or the blob holds another class than ``cls``.

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> from fa_core import lifecycle
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> agent = Agent(model=gm, seed=0)
    >>> _ = agent.infer_states([0, 0, 1])
    >>> blob = lifecycle.hibernate(agent)
    >>> lifecycle.wake(blob).curr_timestep
    0
    >>> lifecycle.wake(blob[:-1])                 # truncated: refused, nothing built
    Traceback (most recent call last):
    ...
    fa_core.errors.CorruptStateError: corrupt or truncated hibernated agent: ...
    """
    flags, key, body = unframe(blob, _MAGIC, _VERSION, _F_ZLIB | _F_RENORM, _WHAT)
    model = _resolve_model(key, model)
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"cls must be fa_core.Agent or a subclass, got {cls!r}")
    state = _decode_state(Reader(body, _WHAT), model, bool(flags & _F_RENORM))
    extras = state.pop("\0extras")
    if extras is not None:
        _apply_extras(state, extras, model, cls)
    elif cls is not Agent:
        raise ValueError(f"the blob holds an fa_core.Agent, not a {cls.__name__}: wake it "
                         "with fa_core.Agent.wake")
    agent = cls.__new__(cls)
    agent_setstate(agent, state, _WHAT)
    return agent


def _resolve_model(key: bytes, model) -> GenerativeModel:
    return resolve_model(key, model, "agent")


def _decode_state(r: Reader, model: GenerativeModel, renorm: bool) -> dict:
    """The slots a blob body holds (extras still encoded as plain values, under ``\0extras``)."""
    sizes = model.num_states
    nf, n_pol, S = model.num_factors, model.num_policies, sum(sizes)
    defaults = _defaults()
    state = dict(defaults)
    for name in _default_containers():
        state[name] = _fresh(defaults[name])
    t, flags, rng_kind = r.unpack(_FIXED)
    if flags >= 32 or rng_kind > _RNG_OTHER:
        r.fail(f"unknown field flags {flags:#x} or random generator kind {rng_kind}")
    state["_model"] = model
    state["curr_timestep"] = t
    act_i = state["_act_i"] = r.array(np.int32, nf)
    qs = _decode_floats(r, S)
    state["_qs_buf"] = _renormalise(qs, sizes) if renorm else qs
    state["_q_pi"] = r.array(np.float32, n_pol)
    state["_G"] = r.array(np.float32, n_pol)
    state["_action"] = act_i.astype(np.float64) if flags & _B_ACTION else None
    state["_rng"] = None
    if rng_kind == _RNG_PCG64:
        s, inc, has32, uint = r.unpack(_PCG64)
        bg = np.random.PCG64(_SEED)  # a fixed seed: cheaper than OS entropy; state set next
        try:
            bg.state = {"bit_generator": "PCG64",
                        "state": {"state": int.from_bytes(s, "little"),
                                  "inc": int.from_bytes(inc, "little")},
                        "has_uint32": has32, "uinteger": uint}
        except (TypeError, ValueError, OverflowError) as exc:
            r.fail(f"a PCG64 state numpy refuses ({exc})")
        state["_rng"] = np.random.Generator(bg)
    state["_prev_actions"] = None
    if flags & _B_PREV:
        count = r.u32()
        code = r.byte()
        if code not in (1, 4):
            r.fail(f"action history of {code}-byte integers")
        mat = r.array({1: np.uint8, 4: np.int32}[code], count * nf).reshape(count, nf)
        check_actions(_WHAT, "prev_actions", mat, model.num_controls_i32)  # before narrowing
        state["_prev_actions"] = mat.astype(model.action_dtype)
        if flags & _B_PREV_LAST_IS_ACTION and state["_action"] is None:
            r.fail("history flags without an action")
    if flags & _B_QS_HIST:
        kind, count = _hist_head(r)
        cuts = np.cumsum(sizes)[:-1]
        hist = []
        for _ in range(count):
            flat = r.array(np.float64, S) if kind == _H64 else _decode_floats(r, S)
            if renorm:
                flat = _renormalise(flat, sizes)
            if kind != _H32:
                flat = flat.astype(np.float64)
            entry = np.empty(nf, dtype=object)
            for f, q in enumerate(np.split(flat, cuts)):
                entry[f] = q.copy()
            hist.append(entry)
        state["qs_hist"] = hist
    if flags & _B_QPI_HIST:
        kind, count = _hist_head(r)
        dtype = np.float64 if kind == _H64 else np.float32
        out_dtype = np.float32 if kind == _H32 else np.float64
        state["q_pi_hist"] = [r.array(dtype, n_pol).astype(out_dtype, copy=False)
                              for _ in range(count)]
    state["\0extras"] = load_value(r)
    r.done()
    return state


def _hist_head(r: Reader) -> tuple[int, int]:
    kind = r.byte()
    if kind > _H64:
        r.fail(f"unknown history kind {kind}")
    count = r.u32()
    if count > r.left:
        r.fail(f"a history of {count} entries in {r.left} remaining bytes")
    return kind, count


def _apply_extras(state: dict, extras, model: GenerativeModel, cls: type) -> None:
    """Merge decoded extras into ``state``: only slots of ``cls``, the instance
    ``__dict__``, and an MMP window rebuilt after its checks."""
    def fail(msg):
        raise CorruptStateError(f"corrupt or truncated {_WHAT}: {msg}")

    if type(extras) is not dict:
        fail("its extra fields are not a mapping")
    extras = dict(extras)
    name = extras.pop("\0class", None)
    if name is not None and name != _class_name(cls) or name is None and cls is not Agent:
        held = "fa_core.Agent" if name is None else name
        raise ValueError(f"the blob holds a {held}, not a {_class_name(cls)}: wake it with "
                         f"that class's wake (e.g. {held.rsplit('.', 1)[-1]}.wake(blob))")
    plan = dict(_slot_plan(cls))
    allowed = {k for k, d in plan.items() if d is not _COMPACT} | _EXTRA_COMPACT
    absent = extras.pop("\0absent", [])
    if type(absent) is not list or not all(type(a) is str and a in allowed for a in absent):
        fail("its list of unset slots names unknown slots")
    unknown = sorted(k for k in extras if k not in allowed and k != "__dict__")
    if unknown:
        fail(f"fields {unknown} are not settable slots of {cls.__name__}")
    inst = extras.get("__dict__")
    if inst is not None and (type(inst) is not dict or not all(type(k) is str for k in inst)):
        fail("its instance attributes are not a mapping of names")
    for a in absent:
        state.pop(a, None)
    rec = extras.get("_mmp")
    if rec is not None:
        if type(rec) is not Record or rec.name != "MMPState":
            fail("its MMP window is not an MMPState record")
        check_mmp_record(rec.state, model, extras.get("inference_horizon",
                                                      state.get("inference_horizon")), _WHAT)
        st = object.__new__(MMPState)
        st.__setstate__(dict(rec.state, model=model))
        extras["_mmp"] = st
    state.update(extras)


# binary-encoded slots that fall back to the extras when they hold other forms
_EXTRA_COMPACT = frozenset({"_action", "_prev_actions", "qs_hist", "q_pi_hist", "_rng"})


def __getattr__(name: str):
    # AgentPool lives in fa_core.pool, which imports this module: re-exported lazily
    if name == "AgentPool":
        from fa_core.pool import AgentPool
        return AgentPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
