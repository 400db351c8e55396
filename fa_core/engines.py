"""Inference engines behind :class:`fa_core.Agent`: one per inference algorithm.

An :class:`~fa_core.agent.Agent` owns what every algorithm shares: its model,
the flat float32 beliefs, ``q_pi``, ``G``, the action, the action history and
the options. Its engine owns what its algorithm adds and runs that
algorithm's kernels:

* :class:`VanillaEngine` (``inference_algo="VANILLA"``): fixed-point state
  inference and expected-free-energy policy evaluation (:mod:`fa_core._kernels`);
  holds the fixed-point options.
* :class:`SophisticatedEngine` (``sophisticated=True``): VANILLA state inference,
  policies by pymdp's tree search (:mod:`fa_core.sophisticated`).
* :class:`MMPEngine` (``inference_algo="MMP"``): marginal message passing over a
  window of past steps (:class:`fa_core.mmp.MMPState`) and the pymdp-layout
  views of its beliefs, ``qs[p][t][f]``, built when read.

The agent calls each engine method with the buffers it needs (engines never
read an agent's private attributes) and, where an engine sets pymdp attributes
of the agent (MMP's ``F`` and ``prev_obs``), with the agent as ``host``, of
which it uses public attributes only. Engines whose beliefs are the agent's
per-factor buffer (VANILLA, sophisticated) answer ``None`` to :meth:`beliefs`;
the agent then shows the buffer itself.

What an engine persists is :meth:`~VanillaEngine.persisted`: the fixed-point
options and the MMP window under the names pickles and hibernated blobs have
always used (``_fpi``, ``_mmp``); :func:`restore` rebuilds the engine from them.
"""

from __future__ import annotations

import numpy as np

from fa_core import _kernels, _views, mmp
from fa_core import sophisticated as _si
from fa_core.scratch import scratch

__all__ = ["VanillaEngine", "SophisticatedEngine", "MMPEngine", "make", "restore"]


def _uniform(num_states) -> np.ndarray:
    out = np.empty(len(num_states), dtype=object)
    for f, n in enumerate(num_states):
        out[f] = np.full(n, 1.0 / n)
    return out


class VanillaEngine:
    """Fixed-point state inference and expected-free-energy policy evaluation.

    Parameters
    ----------
    fpi : tuple
        ``(num_iter, dF, dF_tol, compute_vfe)``, from
        :func:`fa_core.options.fpi_args`.
    """

    __slots__ = ("fpi",)
    name = "VANILLA"
    window = None  # no MMP window

    def __init__(self, fpi: tuple):
        self.fpi = fpi

    # -- beliefs -------------------------------------------------------------------------

    def beliefs(self, reuse: bool):
        """The beliefs in pymdp's layout, or ``None``: they are the agent's buffer."""
        return None

    def set_beliefs(self, value) -> bool:
        """Keep ``value`` as the beliefs; ``False``: the agent loads it into its buffer."""
        return False

    def reset(self, model, init_qs, load) -> None:
        """Uniform beliefs (or ``init_qs``), loaded by the agent's ``load(value, name)``."""
        load(_uniform(model.num_states) if init_qs is None else init_qs, "init_qs")

    # -- steps ---------------------------------------------------------------------------

    def infer_states(self, host, model, loaded, observation, distr_obs, qs_buf, act_i,
                     has_action, prev_actions, act_hist_len, reuse, record=False):
        """One fixed-point state inference, prior and posterior in ``qs_buf`` (in place).

        Returns ``None`` (no iteration records: ``record`` is pymdp's MMP test
        variant, the same call here).
        """
        distr, obs, obs_distr = loaded
        km = model.kmodel
        num_iter, dF, dF_tol, compute_vfe = self.fpi
        # the kernel reads the prior from the buffer and writes the posterior over it
        _kernels.infer_states(km, qs_buf, qs_buf, act_i, has_action, obs, obs_distr, distr,
                              num_iter, dF, dF_tol, compute_vfe, scratch(km.scratch_size))
        return None

    def infer_policies(self, host, model, qs_buf, G, q_pi) -> None:
        """``G`` and ``q_pi = softmax(gamma G + ln E)`` into the float32 buffers."""
        km = model.kmodel
        use_param = bool(host.use_param_info_gain)
        _kernels.infer_policies(km, qs_buf, float(host.gamma), bool(host.use_utility),
                                bool(host.use_states_info_gain), use_param and model.has_pA,
                                use_param and model.has_pB, model.has_H, G, q_pi,
                                scratch(km.scratch_size))

    def tie_rtol(self, model, G, q_pi, gamma: float) -> float:
        """Relative band within which two action probabilities are a tie."""
        return _kernels.tie_rtol(model.kmodel, G, gamma)

    def advance(self, model, curr_timestep: int, q_pi) -> None:
        """Time moved on to ``curr_timestep`` (after an action)."""

    # -- MMP-only and learning hooks -----------------------------------------------------

    def set_latest_beliefs(self, model, last_belief, curr_timestep, q_pi):
        raise NotImplementedError("set_latest_beliefs belongs to inference_algo='MMP'")

    def future_beliefs(self, model):
        raise NotImplementedError("get_future_qs belongs to inference_algo='MMP'")

    def latest_belief(self, model):
        raise AttributeError("latest_belief exists with inference_algo='MMP' only")

    def check_learning(self, name: str) -> None:
        """Raise if ``name`` (``update_A`` / ``update_B``) cannot run with this engine."""

    def window_start_belief(self, model, q_pi):
        """``update_D``'s default target: ``None``, the first saved belief."""
        return None

    # -- persistence ---------------------------------------------------------------------

    def persisted(self) -> dict:
        """The engine's state under the names pickles and blobs store it as."""
        return {"_fpi": self.fpi, "_mmp": self.window}


class SophisticatedEngine(VanillaEngine):
    """VANILLA state inference; policies by pymdp's sophisticated-inference tree search.

    The search's options (``si_horizon`` and its thresholds) are read from
    the agent at each call, as pymdp reads them.
    """

    __slots__ = ()

    def infer_policies(self, host, model, qs_buf, G, q_pi) -> None:
        """Run the tree search from ``qs_buf`` (``q_pi = softmax(G)``, as pymdp)."""
        _si.infer_policies(model, qs_buf, host.si_horizon, host.si_policy_prune_threshold,
                           host.si_state_prune_threshold, host.si_prune_penalty, self.fpi,
                           G, q_pi)

    def tie_rtol(self, model, G, q_pi, gamma: float) -> float:
        return _si.tie_rtol(G, q_pi)


class MMPEngine(VanillaEngine):
    """Marginal message passing over a window; beliefs per policy and time step.

    Parameters
    ----------
    window : fa_core.mmp.MMPState
        The window (options, likelihoods, beliefs, free energies, prior).
    fpi : tuple
        The VANILLA fixed-point options (kept as the agent's ``_fpi`` was).

    Notes
    -----
    ``qs[p][t][f]`` in pymdp's layout is made on the first read after a step
    and kept until the next one: float64 copies (or, with ``reuse_buffers``,
    float32 views of the window's buffer, kept as long as the window's length
    and buffer stay the same). Beliefs set by the user (``agent.qs = ...``,
    ``reset(init_qs)``) are kept as given, as pymdp keeps them, until the next
    step.
    """

    __slots__ = ("window", "_given", "_views", "_views_key", "_pool", "_spare", "_n_steps")
    name = "MMP"

    def __init__(self, window: mmp.MMPState, fpi: tuple):
        self.fpi = fpi
        self.window = window
        self._given = None                       # beliefs set by the user or by reset
        self._views = self._views_key = None     # the views last made, and of what
        self._pool = []       # float64 view trees made, newest last: (nodes, fingerprint)
        self._spare = None    # the window's previous belief buffer, written by the next step
        self._n_steps = 0     # window updates so far (what the views were made of)

    def _bound(self, model) -> mmp.MMPState:
        w = self.window
        if w.model is not model:  # A/B/C/E assigned or learned since the last step
            w.bind(model)
        return w

    # -- beliefs -------------------------------------------------------------------------

    def beliefs(self, reuse: bool):
        """``qs[p][t][f]``: as set, or the window's (made now if not since the last step)."""
        if self._given is not None:
            return self._given
        w = self.window
        if w.F is None:  # no step since the window was restored: reset's uniform beliefs
            self._given = self._reset_beliefs(w.model)
            return self._given
        k = self._views_key
        # float32 views of the window's buffer stay right while it is the same buffer;
        # float64 copies are of one step
        n = 0 if reuse else self._n_steps
        if self._views is None or k[0] is not w.q or k[1] != n or k[2] != w.infer_len \
                or k[3] != reuse:
            self._views = None  # no reference of ours while the pool's trees are checked
            self._views = (mmp.window_views(w.q, w.infer_len, w.model.state_bounds, copy=False)
                           if reuse else self._copied_views(w))
            self._views_key = (w.q, n, w.infer_len, reuse)
        return self._views

    def _copied_views(self, w: mmp.MMPState) -> np.ndarray:
        """float64 ``qs[p][t][f]`` of the window, as new to everyone but this engine.

        A tree of views made at an earlier step that nobody else holds any part of
        (no reference, weak reference or change from outside since it was made,
        :func:`fa_core._views.refill_tree`) is refilled with the new values: no one
        can tell it from a new one, and it costs a copy instead of ~250 arrays.
        Otherwise a new tree is made; the two newest are kept.
        """
        shape = w.q.shape[0], w.infer_len, w.q.shape[2]
        pool = self._pool = [e for e in self._pool if e[2] == shape]  # trees of this window
        for i in range(len(pool)):
            if _views.refill_tree(pool[i][0], pool[i][1], w.q, w.infer_len):
                pool.append(pool.pop(i))
                return pool[-1][0][0]
        nodes = []
        mmp.window_views(w.q, w.infer_len, w.model.state_bounds, copy=True, nodes=nodes)
        pool.append((nodes, _views.tree_state(nodes), shape))
        if len(pool) > 2:
            del pool[0]
        return nodes[0]

    def set_beliefs(self, value) -> bool:
        self._given = value  # per policy, time and factor; pymdp stores it as given
        return True

    def _reset_beliefs(self, model) -> np.ndarray:
        """pymdp's MMP reset beliefs: uniform first step, per policy, over its window length."""
        L = self.window.horizon + model.policy_len + 1  # pymdp's length, step 0 filled
        qs = np.empty(len(model.policies), dtype=object)
        for p in range(len(model.policies)):
            qs[p] = np.empty(L, dtype=object)
            qs[p][0] = np.empty(model.num_factors, dtype=object)
            for f, n in enumerate(model.num_states):
                qs[p][0][f] = np.full(n, 1.0 / n, dtype=np.float32)
        return qs

    def reset(self, model, init_qs, load) -> None:
        """pymdp's MMP reset: uniform first-step beliefs per policy and D as the window prior."""
        w = self._bound(model)
        self._given = init_qs if init_qs is not None else self._reset_beliefs(model)
        D = np.concatenate(model.exact("D"))
        n_rows = len(model.policies) if w.policy_sep_prior else 1
        w.set_prior(np.tile(D, (n_rows, 1)))

    # -- steps ---------------------------------------------------------------------------

    def infer_states(self, host, model, loaded, observation, distr_obs, qs_buf, act_i,
                     has_action, prev_actions, act_hist_len, reuse, record=False):
        """Window update for one observation: beliefs and ``F`` per policy.

        Sets ``host.F`` and appends to ``host.prev_obs`` (pymdp's attributes).
        With ``record``, runs pymdp's non-factorised scheme (``_run_mmp_testing``)
        and returns ``(xn, vn)``, every iteration's beliefs and errors in pymdp's
        layout; otherwise ``None``.
        """
        w = self._bound(model)
        if record and w.factorized:
            w.factorized = False
            w.bind(model)  # joint likelihoods and SPM's (unhalved) future message
            try:
                return self.infer_states(host, model, loaded, observation, distr_obs, qs_buf,
                                         act_i, has_action, prev_actions, act_hist_len, reuse,
                                         record)
            finally:
                w.factorized = True
                w.bind(model)
        distr, obs, obs_distr = loaded
        if distr:
            edges = np.concatenate([[0], np.cumsum(model.num_obs)])
            item = (True, None,
                    [obs_distr[edges[i]:edges[i + 1]].copy() for i in range(len(model.num_obs))])
        else:
            item = (False, obs[:model.num_modalities].copy(), None)
        past = min(len(w.obs_win) + 1, w.horizon)
        # checked before anything changes: a failed call leaves the agent unchanged
        acts = w.window_rows(prev_actions, past, w.n_obs + 1)
        shape = w._shape
        if reuse and w.q.shape == shape:
            out = w.q  # rewritten in place (the user holds views of it)
        else:  # the buffer before the last step's (nobody else reads it), or a new one
            out = self._spare
            if out is None or out.shape != shape or out is w.q:
                out = np.empty(shape, np.float32)
        w.push_observation(item)
        last = w.q
        xn, vn = w.run(acts, past, out, record)
        self._spare = last if last is not out and not reuse else None
        self._n_steps += 1
        host.prev_obs.append(observation if distr_obs else tuple(observation) if
                             isinstance(observation, (list, tuple, np.ndarray)) else
                             (observation,))
        if act_hist_len is not None and len(host.prev_obs) > act_hist_len:
            del host.prev_obs[0]
        host.F = _views.f64_vector(w.F)
        self._given = None  # the window's beliefs from now on, viewed when read
        if record:
            return (mmp.iterations(xn, model, w.infer_len), mmp.iterations(vn, model, w.infer_len))
        return None

    def infer_policies(self, host, model, qs_buf, G, q_pi) -> None:
        """Policy posterior and G of the window, into the agent's float32 buffers."""
        self._bound(model).infer_policies(host.gamma, host.use_utility,
                                          host.use_states_info_gain, G, q_pi)

    def advance(self, model, curr_timestep: int, q_pi) -> None:
        """Once the window moves on, its first step's prior (pymdp's step_time)."""
        if curr_timestep - self.window.horizon >= 0:
            self._set_prior(model, None, curr_timestep, q_pi)  # no views: none is read here

    # -- MMP's own methods ---------------------------------------------------------------

    def _first_step_rows(self, model) -> np.ndarray:
        """Each policy's belief about the window's first step, (n_pol, S)."""
        w = self.window
        if self._given is None and w.F is not None:  # the beliefs the kernel wrote
            return w.q[:, 0, :].copy()
        qs = self.beliefs(False)
        return np.stack([mmp.flat(qs[p][0], model, f"qs[{p}][0]") for p in range(len(qs))])

    def set_latest_beliefs(self, model, last_belief, curr_timestep, q_pi):
        """pymdp's set_latest_beliefs: the prior for the window's first step.

        With ``use_BMA`` once the window has moved, the average of the policies'
        beliefs weighted by the current ``q_pi``; otherwise ``last_belief`` as is
        (default: each policy's belief about the window's first step).
        """
        return self._set_prior(model, last_belief, curr_timestep, q_pi).prior_views()

    def _set_prior(self, model, last_belief, curr_timestep, q_pi) -> mmp.MMPState:
        w = self._bound(model)
        if last_belief is None and self._given is None and w.F is not None:
            # the beliefs the kernel wrote: what the general path below computes, without
            # its copies (this runs at every step once the window moves)
            first = w.q[:, 0, :]
            if w.use_BMA and curr_timestep - w.horizon >= 0:
                prior64 = (q_pi.astype(np.float64) @ first.astype(np.float64))[None, :]
                w.set_prior(prior64, prior64.astype(np.float32), owned=True)
            else:
                w.set_prior(first.astype(np.float64), first.copy(), owned=True)
            return w
        rows = (self._first_step_rows(model) if last_belief is None
                else mmp.rows(last_belief, model, "last_belief"))
        if w.use_BMA and curr_timestep - w.horizon >= 0:
            if rows.shape[0] != len(model.policies):
                raise ValueError("set_latest_beliefs with use_BMA needs one belief per policy")
            rows = (q_pi.astype(np.float64) @ rows.astype(np.float64))[None, :]
        elif w.policy_sep_prior and rows.shape[0] == 1:
            rows = np.tile(rows, (len(model.policies), 1))
        w.set_prior(rows)
        return w

    def future_beliefs(self, model):
        """The last ``policy_len + 1`` window steps of each policy's beliefs."""
        T = model.policy_len
        qs = self.beliefs(False) if self._given is not None or self._views is None \
            else self._views
        out = np.empty(len(qs), dtype=object)
        for p in range(len(qs)):
            out[p] = qs[p][-(T + 1):]
        return out

    def latest_belief(self, model):
        return self._bound(model).prior_views()

    def check_learning(self, name: str) -> None:
        # pymdp reads MMP's per-policy, per-time qs as per-factor beliefs here and
        # returns wrongly shaped counts
        raise NotImplementedError(f"{name} with inference_algo='MMP' is not implemented")

    def window_start_belief(self, model, q_pi) -> list[np.ndarray]:
        """pymdp's update_D target under MMP: the window prior, averaged over policies."""
        w = self._bound(model)
        if w.prior.shape[0] == 1:
            return [np.asarray(x, np.float64) for x in w.prior_views()]
        bma = q_pi.astype(np.float64) @ w.prior.astype(np.float64)
        return [bma[lo:hi] for lo, hi in model.state_bounds]


def make(inference_algo: str, sophisticated: bool, fpi: tuple, window=None) -> VanillaEngine:
    """The engine for these (validated) options; ``window`` for MMP."""
    if inference_algo == "MMP":
        return MMPEngine(window, fpi)
    return SophisticatedEngine(fpi) if sophisticated else VanillaEngine(fpi)


def restore(state: dict, sophisticated) -> VanillaEngine:
    """The engine of restored state: pops ``_fpi`` and ``_mmp`` (:meth:`persisted`'s names).

    Values are not checked here (:func:`fa_core.restore_checks.check_agent` checks the
    restored agent, its engine included).
    """
    fpi = state.pop("_fpi", None)
    window = state.pop("_mmp", None)
    if isinstance(window, mmp.MMPState):
        return MMPEngine(window, fpi)
    return SophisticatedEngine(fpi) if sophisticated is True else VanillaEngine(fpi)
