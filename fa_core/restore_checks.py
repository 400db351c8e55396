"""Checks on restored state: once, where state enters from bytes or a pickle.

:func:`check_agent` runs on an agent that :func:`fa_core.lifecycle.wake` or
unpickling has just filled in, before it is handed out; :func:`check_mmp_record`
runs on an MMP window's state before that window is rebuilt. Every value a
kernel uses as an index, size, count or divisor is checked here (action
indices against ``num_controls``, action-history rows, shapes of the belief
buffers against the model, history entries, finite non-negative beliefs, a
non-negative time step, numeric options), so the agent then runs unchecked.
Failures raise :class:`~fa_core.errors.CorruptStateError` naming the value
and its valid range.
"""

from __future__ import annotations

import math

import numpy as np

from fa_core.errors import CorruptStateError
from fa_core.mmp import MMPState
from fa_core.model import GenerativeModel
from fa_core.options import ACTION_SELECTIONS, SAMPLING_MODES

__all__ = ["check_agent", "check_mmp_record", "fail"]

_INT32_MAX = 2 ** 31 - 1


def fail(what: str, msg: str):
    raise CorruptStateError(f"corrupt or truncated {what}: {msg}")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_)))


def check_int(what, name, v, lo=0, hi=None, none_ok=False) -> None:
    if v is None and none_ok:
        return
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        fail(what, f"{name} must be an integer {rng}, got {v!r}")


_F32_MAX = float(np.finfo(np.float32).max)


def check_finite(what, name, v) -> None:
    """A real number the float32 kernels can hold (``|v| <= 3.4e38``)."""
    if not _is_real(v) or not math.isfinite(v) or abs(v) > _F32_MAX:
        fail(what, f"{name} must be a finite number within float32's range, got {v!r}")


def check_distribution(what, name, x, tol: float) -> None:
    """``x`` (already checked finite and non-negative) sums to 1 within ``tol``."""
    total = float(x.sum(dtype=np.float64))
    if abs(total - 1.0) > tol:
        fail(what, f"{name} sums to {total}, not 1 (it is a probability distribution)")


def check_vector(what, name, x, shape, dtypes=(np.float32,), nonneg=True, finite=True) -> None:
    """``x`` is an ndarray of one of ``dtypes`` and ``shape``, finite (and non-negative).

    Two reductions when the values are fine; the message is worked out only
    when they are not.
    """
    if type(x) is not np.ndarray or x.dtype not in dtypes or x.shape != tuple(shape):
        got = (f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__)
        fail(what, f"{name} must be a {'/'.join(np.dtype(d).name for d in dtypes)} array of "
                   f"shape {tuple(shape)}, got {got}")
    if x.size == 0:
        return
    if x.dtype.kind in "iu":
        if not nonneg or x.dtype.kind == "u" or x.min() >= 0:
            return
    elif nonneg:
        if x.min() >= 0 and x.max() < np.inf:  # False for NaN too
            return
    elif not finite or math.isfinite(x.sum(dtype=np.float64)):
        return
    if finite and x.dtype.kind == "f" and not np.isfinite(x).all():
        fail(what, f"{name} holds NaN or infinite values")
    if nonneg and (x < 0).any():
        fail(what, f"{name} holds negative {'values' if x.dtype.kind in 'iu' else 'probabilities'}")


def check_actions(what, name, a, num_controls, allow_none_rows=False) -> None:
    """Control indices ``0 <= a[..., f] < num_controls[f]`` (rows of -1 for "no action")."""
    nc = np.asarray(num_controls)
    if type(a) is not np.ndarray or a.dtype.kind not in "iu" or a.shape[-1:] != nc.shape:
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        fail(what, f"{name} must be an integer array with {len(nc)} columns (one per factor), "
                   f"got {got}")
    if a.size == 0 or (a.min() >= 0 and (a < nc).all()):
        return
    a2 = a.reshape(-1, len(nc)).astype(np.int64)
    if allow_none_rows:
        none = (a2 == -1).all(axis=1)
        a2 = a2[~none]
    bad = (a2 < 0) | (a2 >= nc)
    if bad.any():
        row, f = np.argwhere(bad)[0]
        fail(what, f"{name} holds control index {a2[row, f]} for factor {f}, outside "
                   f"0..{nc[f] - 1} (num_controls = {list(nc)})")


def _check_qs_hist(what, hist, sizes) -> None:
    """Per-factor belief vectors; their values checked in one pass over all entries."""
    nf = len(sizes)
    shapes = [(n,) for n in sizes]
    values = []
    for i, entry in enumerate(hist):
        if type(entry) is not np.ndarray or entry.dtype != object or entry.shape != (nf,):
            fail(what, f"qs_hist[{i}] must be an object array of {nf} per-factor beliefs")
        for f, q in enumerate(entry):
            if type(q) is not np.ndarray or q.dtype not in _FLOATS or q.shape != shapes[f]:
                check_vector(what, f"qs_hist[{i}][{f}]", q, shapes[f], _FLOATS)
            values.append(q)
    if values:
        check_vector(what, "qs_hist", np.concatenate(values), (sum(map(len, values)),), _FLOATS)


def _check_q_pi_hist(what, hist, n_pol) -> None:
    for i, q in enumerate(hist):
        if type(q) is not np.ndarray or q.dtype not in _FLOATS or q.shape != (n_pol,):
            check_vector(what, f"q_pi_hist[{i}]", q, (n_pol,), _FLOATS)
    if hist:
        check_vector(what, "q_pi_hist", np.concatenate(hist), (n_pol * len(hist),), _FLOATS)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_agent(agent, what: str = "hibernated agent") -> None:
    """Refuse an agent whose restored state a kernel could not run on safely."""

    m = agent._model
    if type(m) is not GenerativeModel:
        fail(what, f"its model is a {type(m).__name__}, not a GenerativeModel")
    nf, n_pol, sizes = m.num_factors, m.num_policies, m.num_states
    nc = m.num_controls_i32
    check_vector(what, "qs", agent._qs_buf, (sum(sizes),))
    check_vector(what, "q_pi", agent._q_pi, (n_pol,))
    check_distribution(what, "q_pi", agent._q_pi, 1e-3 + 1e-6 * n_pol)
    check_vector(what, "G", agent._G, (n_pol,), nonneg=False)
    for name in ("_qs_buf", "_q_pi", "_G"):
        if not getattr(agent, name).flags.c_contiguous:
            fail(what, f"{name} is not contiguous")
    act = agent._act_i
    if type(act) is not np.ndarray or act.dtype != np.int32 or act.shape != (nf,):
        fail(what, f"the action indices must be int32 of shape ({nf},)")
    check_actions(what, "the action", act, nc)
    action = agent._action
    if action is not None and not (type(action) is np.ndarray and action.dtype == np.float64
                                   and action.shape == (nf,) and (action == act).all()):
        check_vector(what, "action", action, (nf,), (np.float64,), nonneg=False)
        if not np.array_equal(action, np.round(action)):
            fail(what, f"action holds non-integer control indices {action}")
        check_actions(what, "action", action.astype(np.int64), nc)
    prev = agent._prev_actions
    if prev is not None:
        if type(prev) is not np.ndarray or prev.ndim != 2:
            fail(what, f"prev_actions must be a matrix of rows of {nf} control indices")
        check_actions(what, "prev_actions", prev, nc, allow_none_rows=True)
    check_int(what, "curr_timestep", agent.curr_timestep)
    rng = agent._rng
    if not (rng is np.random or type(rng) is np.random.Generator):
        fail(what, f"its random generator is a {type(rng).__name__}, not a numpy Generator")
    _check_options(agent, what)
    is_mmp = agent.inference_algo == "MMP"
    if is_mmp != (type(agent._engine.window) is MMPState):
        fail(what, f"inference_algo={agent.inference_algo!r} does not match its MMP window")
    if hasattr(agent, "qs_hist"):
        if type(agent.qs_hist) is not list:
            fail(what, "qs_hist must be a list")
        if not is_mmp:  # MMP entries are per-policy windows, read by no kernel
            _check_qs_hist(what, agent.qs_hist, sizes)
    if hasattr(agent, "q_pi_hist"):
        if type(agent.q_pi_hist) is not list:
            fail(what, "q_pi_hist must be a list")
        _check_q_pi_hist(what, agent.q_pi_hist, n_pol)
    if type(agent.prev_obs) is not list:
        fail(what, "prev_obs must be a list")


def _check_options(agent, what: str) -> None:
    for name in ("gamma", "alpha", "lr_pA", "lr_pB", "lr_pD"):
        check_finite(what, name, getattr(agent, name))
    if agent.action_selection not in ACTION_SELECTIONS:
        fail(what, f"action_selection {agent.action_selection!r} (deterministic, stochastic)")
    if agent.sampling_mode not in SAMPLING_MODES:
        fail(what, f"sampling_mode {agent.sampling_mode!r} (marginal, full)")
    if agent.inference_algo not in ("VANILLA", "MMP"):
        fail(what, f"inference_algo {agent.inference_algo!r} (VANILLA, MMP)")
    fpi = agent._engine.fpi
    if type(fpi) is not tuple or len(fpi) != 4:
        fail(what, "its fixed-point options are not (num_iter, dF, dF_tol, compute_vfe)")
    check_int(what, "inference_params['num_iter']", fpi[0], 0, _INT32_MAX)
    for name, v in zip(("dF", "dF_tol"), fpi[1:3]):
        if not _is_real(v) or math.isnan(v):
            fail(what, f"inference_params[{name!r}] must be a number, got {v!r}")
    if type(agent.inference_params) is not dict:
        fail(what, "inference_params must be a dict")
    check_int(what, "inference_horizon", agent.inference_horizon, 1, _INT32_MAX)
    check_int(what, "belief_hist_len", agent._hist_len, 1, none_ok=True)
    check_int(what, "action_hist_len", agent._act_hist_len, 1, none_ok=True)
    if agent.sophisticated:
        from fa_core import sophisticated as si
        try:
            si.check_options(agent._model, agent.si_horizon, agent.si_policy_prune_threshold,
                             agent.si_state_prune_threshold, agent.si_prune_penalty)
        except (TypeError, ValueError) as exc:
            fail(what, str(exc))
    if type(agent.edge_handling_params) is not dict:
        fail(what, "edge_handling_params must be a dict")


def check_mmp_record(state, model, inference_horizon, what: str = "hibernated agent") -> None:
    """Refuse an MMP window state (``MMPState.__getstate__`` without its model) that
    does not fit ``model`` and ``inference_horizon``."""
    keys = {"horizon", "num_iter", "tau", "factorized", "use_BMA", "policy_sep_prior",
            "past_len", "n_obs", "obs_win", "q", "infer_len", "F", "prior"}
    # the prior as set, float64 (latest_belief); rebuilt from prior if absent
    optional = {"prior64"}
    if type(state) is not dict or not keys <= set(state) or set(state) - keys - optional:
        fail(what, f"its MMP window must have the fields {sorted(keys)}")
    H, T = state["horizon"], model.policy_len
    check_int(what, "the MMP horizon", H, 1, _INT32_MAX)
    if H != inference_horizon:
        fail(what, f"its MMP window spans {H} steps, inference_horizon is {inference_horizon}")
    check_int(what, "MMP num_iter", state["num_iter"], 0, _INT32_MAX)
    check_finite(what, "MMP tau", state["tau"])
    for name in ("factorized", "use_BMA", "policy_sep_prior"):
        if type(state[name]) is not bool:
            fail(what, f"MMP {name} must be a bool")
    if not (state["use_BMA"] or state["policy_sep_prior"]):
        fail(what, "MMP needs use_BMA or policy_sep_prior")
    if not state["factorized"] and any(d != [f] for f, d in enumerate(model.B_factor_list)):
        fail(what, "an unfactorized MMP window needs B_factor_list[f] == [f]")
    n_pol, S = len(model.policies), sum(model.num_states)
    win = state["obs_win"]
    if type(win) is not list or len(win) > H:
        fail(what, f"the MMP window must hold at most {H} observations")
    for k, obs in enumerate(win):
        _check_window_obs(what, k, obs, model)
    check_int(what, "MMP n_obs", state["n_obs"], len(win))
    past, infer_len = state["past_len"], state["infer_len"]
    check_int(what, "MMP past_len", past, 0, H)
    if infer_len not in ((0, past + T) if past == 0 else (past + T,)):
        fail(what, f"MMP infer_len {infer_len!r} does not match past_len {past} + policy_len {T}")
    q = state["q"]
    if type(q) is not np.ndarray or q.dtype != np.float32 or q.ndim != 3 \
            or q.shape[0] != n_pol or q.shape[1] < max(infer_len, 1) or q.shape[2] != S \
            or not q.flags.c_contiguous:
        fail(what, f"the MMP beliefs must be float32 of shape ({n_pol}, >= {max(infer_len, 1)}, "
                   f"{S})")
    F = state["F"]
    if F is not None:
        check_vector(what, "MMP F", F, (n_pol,), nonneg=False)
        if past < 1:
            fail(what, "MMP F is set but no observation was inferred")
    prior = state["prior"]
    if type(prior) is not np.ndarray or prior.ndim != 2 or prior.shape[0] not in (1, n_pol) \
            or prior.shape[1] != S:
        fail(what, f"the MMP prior must be float32 of shape (1 or {n_pol}, {S})")
    check_vector(what, "the MMP prior", prior, prior.shape)
    if not prior.flags.c_contiguous:
        fail(what, "the MMP prior is not contiguous")


def _check_window_obs(what, k, obs, model) -> None:
    if type(obs) is not tuple or len(obs) != 3 or type(obs[0]) is not bool:
        fail(what, f"MMP window observation {k} must be (distr, indices, distributions)")
    distr, idx, parts = obs
    nm = model.num_modalities
    if distr:
        if type(parts) is not list or len(parts) != nm:
            fail(what, f"MMP window observation {k} must hold {nm} distributions")
        for i, p in enumerate(parts):
            check_vector(what, f"MMP window observation {k}[{i}]", p, (model.num_obs[i],))
        return
    if type(idx) is not np.ndarray or idx.dtype.kind not in "iu" or idx.shape != (nm,):
        fail(what, f"MMP window observation {k} must hold {nm} outcome indices")
    bad = (idx < 0) | (idx >= np.asarray(model.num_obs))
    if bad.any():
        i = int(np.argmax(bad))
        fail(what, f"MMP window observation {k} has outcome {idx[i]} for modality {i}, outside "
                   f"0..{model.num_obs[i] - 1}")
