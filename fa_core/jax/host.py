"""Host side of :class:`fa_core.jax.Agent`: compiled models by id, and the kernel calls.

Everything here runs in numpy on the host, inside ``jax.pure_callback``: JAX
hands over the per-agent arrays (model ids, observations, priors, beliefs,
preferences), the kernels of :mod:`fa_core._kernels` compute into fresh
float32 buffers, and the results go back to JAX.

Models are registered once per distinct content: :func:`register` turns
``A`` / ``B`` (one set per batch row, or one shared by the batch) into
:class:`fa_core.GenerativeModel` s, interned by content, and returns small
integer ids that the agent carries as a pytree leaf. Every later step looks
the model up by id, so the model is neither copied nor hashed per step. The
registry keeps models alive up to :data:`MAX_REGISTRY_BYTES` of compiled
model (least recently registered or used first out).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict

import numpy as np

from fa_core import _kernels
from fa_core.model import GenerativeModel
from fa_core.population import default_threads

#: Compiled models kept alive for the ids agents hold (bytes of packed model).
MAX_REGISTRY_BYTES = 2 << 30

_lock = threading.Lock()
_models: OrderedDict[int, GenerativeModel] = OrderedDict()
_ids_by_key: dict[bytes, int] = {}
_keys_by_id: dict[int, bytes] = {}
_bytes = 0
_next_id = 0


class ModelEvictedError(RuntimeError):
    """An agent refers to a compiled model the registry no longer holds."""


def _n_threads(n: int) -> int:
    """Threads for ``n`` rows: the cores this process may run on, as ``Population``."""
    return max(1, min(n, default_threads()))


def _content_key(A, B, spec) -> bytes:
    h = hashlib.blake2b(repr(spec).encode(), digest_size=20)
    for a in list(A) + list(B):
        a = np.ascontiguousarray(a, dtype=np.float32)
        h.update(repr(a.shape).encode())
        h.update(memoryview(a).cast("B"))
    return h.digest()


def _build(A, B, spec) -> GenerativeModel:
    A_deps, B_deps, policies = spec
    return GenerativeModel(
        A=[np.asarray(a, dtype=np.float64) for a in A],
        B=[np.asarray(b, dtype=np.float64) for b in B],
        A_factor_list=[list(d) for d in A_deps], B_factor_list=[list(d) for d in B_deps],
        policies=[np.asarray(p, dtype=np.int64) for p in policies])


def _id_for(A, B, spec) -> int:
    global _bytes, _next_id
    key = _content_key(A, B, spec)
    with _lock:
        mid = _ids_by_key.get(key)
        if mid is not None:
            _models.move_to_end(mid)
            return mid
    model = _build(A, B, spec)  # outside the lock: may take milliseconds
    with _lock:
        mid = _ids_by_key.get(key)
        if mid is not None:
            return mid
        mid = _next_id
        _next_id += 1
        _models[mid] = model
        _ids_by_key[key] = mid
        _keys_by_id[mid] = key
        _bytes += model.kmodel.nbytes
        while _bytes > MAX_REGISTRY_BYTES and len(_models) > 1:
            old, m = _models.popitem(last=False)
            _bytes -= m.kmodel.nbytes
            del _ids_by_key[_keys_by_id.pop(old)]
            _dense.pop(old, None)
    return mid


def model(mid: int) -> GenerativeModel:
    """The compiled model registered under ``mid``."""
    try:
        return _models[int(mid)]
    except KeyError:
        raise ModelEvictedError(
            f"compiled model {int(mid)} is no longer registered (more than "
            f"fa_core.jax.host.MAX_REGISTRY_BYTES = {MAX_REGISTRY_BYTES} bytes of models were "
            "registered since); build the agent again") from None


def register(spec, n_rows: int, *arrays) -> np.ndarray:
    """Ids (int32, ``(n_rows,)``) of the models of each batch row.

    ``arrays`` are the modalities' ``A`` then the factors' ``B``, each with a
    leading axis of 1 (shared by every row) or ``n_rows``.
    """
    n_mod = len(spec[0])
    A, B = arrays[:n_mod], arrays[n_mod:]
    shared = all(x.shape[0] == 1 for x in arrays)
    if shared:
        mid = _id_for([a[0] for a in A], [b[0] for b in B], spec)
        return np.full(n_rows, mid, dtype=np.int32)
    out = np.empty(n_rows, dtype=np.int32)
    for r in range(n_rows):
        out[r] = _id_for([a[r if a.shape[0] > 1 else 0] for a in A],
                         [b[r if b.shape[0] > 1 else 0] for b in B], spec)
    return out


def _groups(ids: np.ndarray, with_ids: bool = False):
    """(model, rows or None for all) for each distinct id in ``ids`` (id first if asked)."""
    first = ids[0]
    if (ids == first).all():
        yield (int(first), model(first), None) if with_ids else (model(first), None)
        return
    for mid in np.unique(ids):
        rows = np.flatnonzero(ids == mid)
        yield (int(mid), model(mid), rows) if with_ids else (model(mid), rows)


def _take(x, rows):
    return x if rows is None else np.ascontiguousarray(x[rows])


def _put(out, rows, value):
    if rows is None:
        out[...] = value
    else:
        out[rows] = value


def infer_states(num_iter: int, ids, obs, prior) -> np.ndarray:
    """Fixed-point iteration (exactly ``num_iter`` sweeps) for every row.

    ``obs`` is (n, num_modalities) int32 outcome indices, ``prior`` (n, S)
    float32 probabilities. Returns qs (n, S).
    """
    lead = np.shape(ids)  # (vmapped axes..., batch_size)
    ids = np.asarray(ids).reshape(-1)
    n = ids.shape[0]
    prior = np.ascontiguousarray(prior, dtype=np.float32).reshape(n, -1)
    obs = np.ascontiguousarray(obs, dtype=np.int32).reshape(n, -1)
    qs = np.empty_like(prior)
    for m, rows in _groups(ids):
        k = m.kmodel
        p, o = _take(prior, rows), _take(obs, rows)
        nr = p.shape[0]
        q = np.empty((nr, p.shape[1]), dtype=np.float32)
        threads = _n_threads(nr)
        P = m.num_policies
        _kernels.population_stages(
            k, 1, q, np.empty((nr, P), np.float32), np.empty((nr, P), np.float32),
            np.zeros((nr, m.num_factors), np.int32), np.zeros(nr, np.uint8), o,
            np.ones(nr, np.float32), np.ones(nr, np.float32), None, None,
            np.zeros(nr, np.uint64), np.empty((threads, k.scratch_size), np.float32),
            num_iter, 1.0, 0.0, False, True, True, False, False, False, False, True,
            threads, prior=p)
        _put(qs, rows, q)
    return qs.reshape(lead + (-1,))


def infer_policies(use_utility: bool, use_states_info_gain: bool, ids, qs, lnC, lnE, gamma):
    """``(q_pi, neg_efe)``, each (n, num_policies) float32, for every row.

    ``lnC`` (n, sum(num_obs) * policy_len) holds pymdp JAX's ``C`` as the
    kernels' utility weights (outcome-major, time columns), ``lnE`` the log
    policy prior, ``gamma`` (n,) the policy precisions.
    """
    lead = np.shape(ids)
    ids = np.asarray(ids).reshape(-1)
    n = ids.shape[0]
    # writable copies: JAX's buffers are read-only, the kernel's views of these are not
    qs = np.array(qs, dtype=np.float32, order="C").reshape(n, -1)
    lnC = np.array(lnC, dtype=np.float32, order="C").reshape(n, -1)
    lnE = np.array(lnE, dtype=np.float32, order="C").reshape(n, -1)
    gamma = np.array(gamma, dtype=np.float32, order="C").reshape(n)
    P = lnE.shape[1]
    q_pi = np.empty((n, P), dtype=np.float32)
    G = np.empty((n, P), dtype=np.float32)
    for m, rows in _groups(ids):
        k = m.kmodel
        q, c, e, g = _take(qs, rows), _take(lnC, rows), _take(lnE, rows), _take(gamma, rows)
        nr = q.shape[0]
        qp = np.empty((nr, P), np.float32)
        GG = np.empty((nr, P), np.float32)
        threads = _n_threads(nr)
        _kernels.population_stages(
            k, 2, q, qp, GG, np.zeros((nr, m.num_factors), np.int32), np.zeros(nr, np.uint8),
            np.zeros((nr, m.num_modalities), np.int32), g, np.ones(nr, np.float32), c, e,
            np.zeros(nr, np.uint64), np.empty((threads, k.scratch_size), np.float32),
            1, 1.0, 0.0, False, use_utility, use_states_info_gain, False, False, False,
            False, True, threads)
        _put(q_pi, rows, qp)
        _put(G, rows, GG)
    return q_pi.reshape(lead + (P,)), G.reshape(lead + (P,))


#: models whose transition matrices hold at most this many entries predict the next prior
#: with one float32 matrix product per factor and distinct action (instead of a kernel
#: call per row); larger ones keep the kernel's per-row (sparse-aware) product
DENSE_PREDICT_MAX = 1 << 16
_dense: dict[int, list | None] = {}


def _dense_B(mid: int, m: GenerativeModel):
    """``B`` as float32 ``(ns_f, prod(parents), nc_f)`` arrays when small, else None."""
    if mid not in _dense:
        if sum(math.prod(b.shape) for b in m.B) > DENSE_PREDICT_MAX:
            _dense[mid] = None
        else:
            _dense[mid] = [np.ascontiguousarray(b, dtype=np.float32).reshape(
                b.shape[0], -1, b.shape[-1]) for b in m.B]
    return _dense[mid]


def _predict_dense(m: GenerativeModel, dense, qs, action, out) -> None:
    edges = np.concatenate([[0], np.cumsum(m.num_states)])
    for f, Bf in enumerate(dense):
        joint = None
        for d in m.B_factor_list[f]:
            q = qs[:, edges[d]:edges[d + 1]]
            joint = q if joint is None else (joint[:, :, None] * q[:, None, :]).reshape(
                q.shape[0], -1)
        dst = out[:, edges[f]:edges[f + 1]]
        u = action[:, f]
        for val in np.unique(u):
            sel = u == val
            dst[sel] = joint[sel] @ Bf[:, :, val].T


def predict_states(ids, qs, action) -> np.ndarray:
    """``B[f][..., action[f]]`` applied to ``qs`` for every row: (n, S) float32."""
    lead = np.shape(ids)
    ids = np.asarray(ids).reshape(-1)
    n = ids.shape[0]
    qs = np.ascontiguousarray(qs, dtype=np.float32).reshape(n, -1)
    action = np.ascontiguousarray(action, dtype=np.int32).reshape(n, -1)
    out = np.empty_like(qs)
    for mid, m, rows in _groups(ids, with_ids=True):
        k = m.kmodel
        # as a jnp gather would index B: negative actions from the end, others clamped
        # (rows with invalid actions are discarded by the caller's select, never read)
        nc = m.num_controls_i32
        action = np.clip(np.where(action < 0, action + nc, action), 0, nc - 1).astype(np.int32)
        dense = _dense_B(mid, m)
        if dense is not None:
            sub = np.empty((n if rows is None else len(rows), qs.shape[1]), np.float32)
            _predict_dense(m, dense, _take(qs, rows), _take(action, rows), sub)
            _put(out, rows, sub)
            continue
        scratch = np.empty(k.scratch_size, dtype=np.float32)
        idx = range(n) if rows is None else rows
        for i in idx:
            _kernels.predict_states(k, qs[i], action[i], out[i], scratch)
    return out.reshape(lead + (-1,))
