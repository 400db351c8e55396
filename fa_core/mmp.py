"""Marginal message passing (``inference_algo="MMP"``): window bookkeeping.

pymdp.legacy's MMP agent keeps, per policy, beliefs over a window of the last
``inference_horizon`` observed steps and ``policy_len`` future steps
(``qs[p][t][f]``), a free energy ``F`` per policy that enters the policy
posterior, and a prior for the window's first step (``latest_belief``):
the Bayesian model average over policies (``use_BMA``) or one prior per
policy (``policy_sep_prior``). This module holds that state for one agent in
bounded buffers (work and memory per step do not grow with the episode) and
calls the compiled kernels of :mod:`fa_core._mmp`; the Agent's side of MMP
(its methods, the pymdp-layout views made when read) is
:class:`fa_core.engines.MMPEngine`.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

from fa_core import _mmp
from fa_core import options as _opt
from fa_core.scratch import scratch

DEFAULT_PARAMS = {"num_iter": 10, "grad_descent": True, "tau": 0.25}
_EPS = 1e-16
# compiled arrays per GenerativeModel and form: agents sharing a model share them
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TLS = threading.local()


def _kernel_scratch(n_fs: int, n_ds: int, n_lnlh: int) -> tuple:
    """The kernels' per-thread scratch (``fs``, ``ds``, log likelihoods), shared by every
    agent on the thread: :func:`fa_core.scratch.scratch`'s buffers, looked up once per
    thread and size rather than at every call."""
    c = getattr(_TLS, "bufs", None)
    if c is None or c[0].shape[0] < n_fs or c[1].shape[0] < n_ds or c[2].shape[0] < n_lnlh:
        c = _TLS.bufs = (scratch(n_fs, "mmp_fs"), scratch(n_ds, "mmp_ds", np.float64),
                         scratch(n_lnlh, "mmp_lnlh", np.float64))
    return c


def check_params(inference_params, inference_horizon) -> dict:
    """Validated MMP options: pymdp's defaults updated with ``inference_params``.

    ``factorized`` (default True) selects pymdp's ``run_mmp_factorized`` (what
    ``Agent.infer_states`` runs); False selects ``run_mmp`` (one joint
    likelihood, full future messages), the form SPM's spm_MDP_VB_X.m computes.
    """
    _opt.check_int("inference_horizon (inference_algo='MMP')", inference_horizon, 1, None)
    params = dict(DEFAULT_PARAMS)
    if inference_params is not None:
        if not isinstance(inference_params, dict):
            raise TypeError("inference_params must be a dict, "
                            f"got {type(inference_params).__name__}")
        unknown = set(inference_params) - set(DEFAULT_PARAMS) - {"factorized"}
        if unknown:
            raise ValueError(f"inference_params has unknown keys {sorted(unknown)}; MMP takes "
                             f"{sorted(DEFAULT_PARAMS) + ['factorized']}")
        params.update(inference_params)
    _opt.check_int("inference_params['num_iter']", params["num_iter"], 1, _opt.MAX_NUM_ITER)
    tau = params["tau"]
    if not isinstance(tau, (int, float, np.integer, np.floating)) or not math.isfinite(tau) \
            or tau <= 0:
        raise ValueError(f"inference_params['tau'] must be a finite number > 0, got {tau!r}")
    if params["grad_descent"] is not True:
        raise NotImplementedError("inference_params['grad_descent']=False (fixed-point MMP) is not "
                                  "implemented; fa_core runs pymdp's default gradient descent")
    if not isinstance(params.get("factorized", True), (bool, np.bool_)):
        raise ValueError(f"inference_params['factorized'] must be a bool, "
                         f"got {params['factorized']!r}")
    return params


def _compile(B, B_factor_list, ns, terms, f_terms, A=None, A_factor_list=None, lnC=None,
             n_steps=1, a_H=None) -> tuple[_mmp.MMPModel, np.ndarray]:
    """The kernel's model: transitions, likelihood terms and (optionally) A for the EFE.

    ``terms`` lists the parent factors of each likelihood term and ``f_terms``
    the terms touching each factor; ``a_H`` (with ``A``) are the model's column
    entropies of A (``GenerativeModel._a_H``, computed once there). Returns it
    with the likelihood-term sizes.
    """
    nf = len(ns)
    s_off = np.concatenate([[0], np.cumsum(ns)]).astype(np.int32)
    off = lambda lens: np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)  # noqa: E731
    b_K = [int(np.prod([ns[d] for d in B_factor_list[f]])) for f in range(nf)]
    # B[f] (ns, *parents, nc) -> (nc, ns, K): one action's matrix is contiguous
    Bs = [np.ascontiguousarray(np.moveaxis(np.asarray(B[f], np.float32).reshape(ns[f], b_K[f], -1),
                                           -1, 0)) for f in range(nf)]
    children = [[i for i in range(nf) if f in B_factor_list[i]] for f in range(nf)]
    # CSC of every action's matrix (exact zeros left out: deterministic maps stay cheap)
    c_col, c_ptr, c_row, c_val, nnz = [], [], [], [], 0
    for b in Bs:
        c_col.append(len(c_ptr))
        for bu in b:
            rows, cols = np.nonzero(bu.T)  # column-major order: by column, then row
            c_ptr.extend(nnz + np.searchsorted(rows, np.arange(bu.shape[1] + 1)))
            c_row.append(cols)
            c_val.append(bu.T[rows, cols])
            nnz += len(rows)
    # spm_norm(B[i][..., u].T) = (B.T + 1e-16) / Z: the kernel applies 1 / Z per row of B
    rz, rz_off, pos = [], [], 0
    for i in range(nf):
        if len(B_factor_list[i]) == 1:
            z = 1.0 / (np.asarray(B[i], np.float64).sum(axis=1).T + ns[B_factor_list[i][0]] * _EPS)
            rz.append(z.ravel())
            rz_off.append(pos)
            pos += z.size
        else:
            rz_off.append(-1)
    l_K = [int(np.prod([ns[d] for d in dep])) for dep in terms]
    d = {"nf": nf, "S": int(sum(ns)), "ns": ns, "s_off": s_off, "max_ns": max(ns),
         "l_dep": [x for dep in terms for x in dep], "l_dep_off": off([len(t) for t in terms]),
         "l_off": off(l_K)[:-1], "lh_stride": int(sum(l_K)),
         "f_l": [x for ts in f_terms for x in ts], "f_l_off": off([len(t) for t in f_terms]),
         "B": np.concatenate([b.ravel() for b in Bs]), "b_off": off([b.size for b in Bs])[:-1],
         "b_dep": [x for dep in B_factor_list for x in dep],
         "b_dep_off": off([len(dep) for dep in B_factor_list]), "b_K": b_K,
         "ch": [x for c in children for x in c], "ch_off": off([len(c) for c in children]),
         "c_col": c_col, "c_ptr": c_ptr, "c_row": np.concatenate(c_row),
         "c_val": np.concatenate(c_val), "rz": np.concatenate(rz) if rz else np.zeros(1),
         "rz_off": rz_off}
    if A is None:
        A, A_factor_list, lnC = [], [], []
    a_K = [int(np.prod([ns[x] for x in dep])) for dep in A_factor_list]
    A2 = [np.asarray(a, np.float32).reshape(a.shape[0], -1) for a in A]
    aH = [] if a_H is None else [np.asarray(h, np.float32) for h in a_H]
    d.update({"nm": len(A2), "no": [a.shape[0] for a in A2],
              "max_no": max([1] + [a.shape[0] for a in A2]),
              "A": np.concatenate([a.ravel() for a in A2]) if A2 else np.zeros(1, np.float32),
              "a_off": off([a.size for a in A2])[:-1],
              "aH": np.concatenate(aH) if aH else np.zeros(1, np.float32),
              "ah_off": off(a_K)[:-1], "a_dep": [x for dep in A_factor_list for x in dep],
              "a_dep_off": off([len(dep) for dep in A_factor_list]),
              "lnC": np.concatenate([c.ravel() for c in lnC]) if lnC else np.zeros(1, np.float32),
              "lnc_off": off([c.size for c in lnC])[:-1], "n_steps": n_steps,
              "max_K": max([1] + a_K + b_K + l_K + list(ns))})
    return _mmp.MMPModel(d), np.asarray(l_K)


def _tiled_lnC(C, n_steps: int) -> list[np.ndarray]:
    """log softmax of C per time column over ``n_steps`` steps (pymdp's calc_expected_utility)."""
    out = []
    for m, c in enumerate(C):
        c = np.asarray(c, np.float64)
        if c.ndim == 1:
            c = np.tile(c[:, None], (1, n_steps))
        elif c.shape[1] != n_steps:
            raise ValueError(f"C[{m}] has {c.shape[1]} time columns; MMP scores the current step "
                             f"and policy_len future steps, so it needs {n_steps} (or a 1-D C)")
        e = np.exp(c - c.max(axis=0))
        out.append(np.log(e / e.sum(axis=0) + _EPS).astype(np.float32))
    return out


def compiled(model, factorized: bool) -> tuple:
    """``(MMPModel, likelihood-term sizes, lnE, policies)`` for ``model``, built once per model."""
    per_model = _COMPILED.setdefault(model, {})
    if factorized not in per_model:
        ns = list(model.num_states)
        nf, T = len(ns), model.policy_len
        if factorized:
            terms = [list(dep) for dep in model.A_factor_list]
            f_terms = [list(ms) for ms in model.A_modality_list]
        else:
            terms, f_terms = [list(range(nf))], [[0] for _ in range(nf)]
        km, l_K = _compile(model.B, model.B_factor_list, ns, terms, f_terms, model.A,
                           model.A_factor_list, _tiled_lnC(model.C, T + 1), T + 1,
                           model._a_H)
        lnE = np.log(np.asarray(model.E, np.float64) + _EPS).astype(np.float32)
        pol = np.ascontiguousarray(np.stack(model.policies).astype(np.int32))
        per_model[factorized] = (km, l_K, lnE, pol)
    return per_model[factorized]


class MMPState:
    """One agent's marginal-message-passing window: options, buffers and bookkeeping.

    Buffers are sized for the full window (``inference_horizon`` past steps
    plus ``policy_len``) once; a step shifts the window's likelihoods by one
    block and reruns the kernel over at most that many steps.
    """

    __slots__ = ("horizon", "num_iter", "tau", "factorized", "use_BMA", "policy_sep_prior",
                 "model", "_km", "_l_K", "_lnE", "_pol", "lh", "past_len", "n_obs", "obs_win",
                 "q", "infer_len", "F", "prior", "prior64", "_acts", "_lh_rows",
                 "_shape")

    def __init__(self, model, inference_horizon: int, params: dict, use_BMA: bool,
                 policy_sep_prior: bool):
        self.horizon = int(inference_horizon)
        self.num_iter, self.tau = int(params["num_iter"]), float(params["tau"])
        self.factorized = bool(params.get("factorized", True))
        self.use_BMA, self.policy_sep_prior = bool(use_BMA), bool(policy_sep_prior)
        if not (self.use_BMA or self.policy_sep_prior):
            raise NotImplementedError(
                "inference_algo='MMP' needs use_BMA=True or policy_sep_prior=True: with neither, "
                "pymdp feeds its per-policy window prior in as a per-factor prior and fails once "
                "the window moves")
        if model.has_H:
            raise NotImplementedError("H (inductive inference) with inference_algo='MMP' is not "
                                      "implemented")
        if not self.factorized and any(dep != [f] for f, dep in enumerate(model.B_factor_list)):
            raise ValueError("inference_params['factorized']=False (pymdp's run_mmp) needs "
                             "B_factor_list[f] == [f] for every factor")
        self.model = None
        self.n_obs = 0
        self.obs_win = []       # the window's observations, oldest first (at most horizon)
        self.past_len = 0
        self.infer_len = 0
        self.F = None
        self.prior = None
        self.bind(model)

    # -- model-dependent parts -----------------------------------------------------------

    def bind(self, model) -> None:
        """Use ``model``'s compiled arrays (a new model after assigning A, B, C or E, or
        after learning) and recompute the window's likelihoods from its observations."""
        ns = list(model.num_states)
        T = model.policy_len
        self._km, self._l_K, self._lnE, self._pol = compiled(model, self.factorized)
        n_pol, S, L = len(model.policies), int(sum(ns)), self.horizon + T
        if self.model is None or len(self.model.policies) != n_pol:
            self.q = np.zeros((n_pol, L, S), np.float32)
        self.lh = np.zeros((self.horizon, int(self._l_K.sum())), np.float32)
        self._acts = {}  # window_rows' buffers, by window length
        # A[m] as (num_obs[m], K) float32 rows and where they go in a likelihood block
        edges = np.concatenate([[0], np.cumsum([a[0].size for a in model.A])]).tolist()
        self._lh_rows = [(edges[i], edges[i + 1], a.reshape(a.shape[0], -1))
                         for i, a in enumerate(model.A)]
        self._shape = (n_pol, L, S)
        self.model = model
        for k, obs in enumerate(self.obs_win):
            self._fill_lh(k, obs)

    def _fill_lh(self, k: int, obs) -> None:
        """Likelihood block of window step ``k`` from ``obs`` = (distr, indices, distributions)."""
        m = self.model
        distr, idx, parts = obs
        if not distr and self.factorized:  # outcome indices: copy rows of A (float32)
            row = self.lh[k]
            for (lo, hi, a2), o in zip(self._lh_rows, idx.tolist()):
                row[lo:hi] = a2[o]
            return
        rows = [np.tensordot(parts[i], np.asarray(a, np.float32), axes=(0, 0)) if distr
                else m.A[i][idx[i]] for i, a in enumerate(m.A)]
        if self.factorized:
            off = 0
            for r in rows:
                self.lh[k, off:off + r.size] = r.ravel()
                off += r.size
        else:
            nf = m.num_factors
            joint = np.ones(m.num_states, np.float64)
            for i, r in enumerate(rows):
                shape = [1] * nf
                for f in m.A_factor_list[i]:
                    shape[f] = m.num_states[f]
                joint = joint * np.asarray(r, np.float64).reshape(shape)
            self.lh[k] = joint.ravel()

    # -- steps ---------------------------------------------------------------------------

    def push_observation(self, obs) -> None:
        """Append one observation to the window (dropping the oldest beyond the horizon)."""
        if len(self.obs_win) == self.horizon:
            del self.obs_win[0]
            self.lh[:-1] = self.lh[1:]
        self.obs_win.append(obs)
        self._fill_lh(len(self.obs_win) - 1, obs)
        self.n_obs += 1

    def infer_states(self, prev_actions, out: np.ndarray, record: bool = False):
        """Run the kernel over the window for every policy, writing ``out`` and ``self.F``.

        With ``record``, also returns ``(xn, vn)``: (n_pol, num_iter, infer_len, S)
        beliefs and prediction errors of every iteration.
        """
        past = len(self.obs_win)
        acts = self.window_rows(prev_actions, past, self.n_obs)
        return self.run(acts, past, out, record)

    def window_rows(self, prev_actions, past: int, n_obs: int) -> np.ndarray:
        """Each policy's actions out of the window's steps, (n_pol, max(R, 1), nf), for a
        window of ``past`` observations after ``n_obs`` in all; ValueError if
        ``prev_actions`` cannot fill it. The buffer is the window's, rewritten by the
        next call.

        pymdp takes ``prev_actions[-(horizon - 1):]`` once more observations than
        the horizon were seen, which for ``inference_horizon=1`` is every past
        action (``[-0:]``): its window then predicts the future with the
        episode's first actions. Reproduced (only the first rows are read).
        """
        T = self.model.policy_len
        R = past + T - 1
        if prev_actions is None:
            wa, k = None, 0
        else:
            wa = prev_actions[-(self.horizon - 1):] if n_obs > self.horizon and \
                self.horizon > 1 else prev_actions
            k = min(len(wa), R)
        if k + T < R:
            raise ValueError(f"MMP needs an action for each of the {past - 1} past steps in its "
                             f"window, but prev_actions has {0 if wa is None else len(wa)}: call "
                             f"sample_action (or set prev_actions) between infer_states calls")
        if k and wa[:k].min() < 0:
            raise ValueError("prev_actions has an empty (None) entry inside the MMP window")
        cached = self._acts.get(R)
        if cached is None or cached[1] != k:
            acts = np.empty((len(self._pol), max(R, 1), self.model.num_factors), np.int32)
            acts[:, k:R] = self._pol[:, :R - k]  # the policies' part: the same at every step
            self._acts[R] = cached = (acts, k)
        acts = cached[0]
        if k:
            acts[:, :k] = wa[:k]
        return acts

    def run(self, acts: np.ndarray, past: int, out: np.ndarray, record: bool = False):
        """The kernel over the window's first ``past`` steps with :meth:`window_rows`'s
        ``acts`` (see :meth:`infer_states`)."""
        infer_len = past + self.model.policy_len
        n_pol = len(self._pol)
        F = self.F if self.F is not None and self.F.shape == (n_pol,) and not record \
            else np.empty(n_pol, np.float32)
        xn = vn = None
        if record:
            xn = np.zeros((n_pol, self.num_iter, infer_len, out.shape[2]), np.float32)
            vn = np.zeros_like(xn)
        fs, ds, lnlh = _kernel_scratch(self._km.n_fs, self._km.n_ds + n_pol, self.lh.size)
        _mmp.infer_states(self._km, self.lh[:past].reshape(-1), past, infer_len, infer_len - 2,
                          acts, self.prior, out, F, self.num_iter, self.tau,
                          0.5 if self.factorized else 1.0, fs, ds, lnlh, xn, vn)
        self.past_len, self.infer_len, self.q, self.F = past, infer_len, out, F
        return xn, vn

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        """The kernels' per-thread scratch (shared by every agent on the thread)."""
        return _kernel_scratch(self._km.n_fs, self._km.n_ds + len(self._pol), 1)[:2]

    def infer_policies(self, gamma, use_utility, use_sig, G, q_pi) -> None:
        """G over the current step and policy_len future steps.

        q_pi = softmax(gamma G - F + lnE).
        """
        if self.F is None:
            raise ValueError("infer_policies with inference_algo='MMP' needs infer_states first")
        _mmp.infer_policies(self._km, self.q, self.past_len - 1, bool(use_utility), bool(use_sig),
                            self.F, self._lnE, float(gamma), G, q_pi, *self._scratch())

    def set_prior(self, rows: np.ndarray, rows32: np.ndarray | None = None,
                  owned: bool = False) -> None:
        """The window's prior: one row per policy, or one shared row (flat beliefs).

        The kernels read it in float32; ``latest_belief`` shows it as set (float64).
        With ``owned``, ``rows`` (float64) and ``rows32`` (its float32 values,
        C-contiguous) are new arrays nobody else holds, kept as they are.
        """
        if owned:
            self.prior64, self.prior = rows, rows32
            return
        self.prior64 = np.array(rows, dtype=np.float64)
        self.prior = np.ascontiguousarray(rows, dtype=np.float32)

    def prior_views(self):
        """``latest_belief`` in pymdp's layout: per factor, or per policy then factor."""
        return prior_layout(self.prior64, self.model.state_bounds, self.policy_sep_prior)

    def __getstate__(self) -> dict:
        # the compiled model is rebuilt from the (pickled) GenerativeModel
        skip = {"_km", "_l_K", "_lnE", "_pol", "lh", "_acts", "_lh_rows", "_shape"}
        return {k: getattr(self, k) for k in self.__slots__ if k not in skip and hasattr(self, k)}

    def __setstate__(self, state: dict) -> None:
        model = state.pop("model")
        q = state.pop("q")
        for k, v in state.items():
            setattr(self, k, v)
        if "prior64" not in state and self.prior is not None:
            self.prior64 = self.prior.astype(np.float64)
        self.model = None
        self.bind(model)
        self.q = q


def prior_layout(prior: np.ndarray, bounds, policy_sep_prior: bool) -> np.ndarray:
    """A window prior ``(1 or n_policies, sum(num_states))`` in pymdp's ``latest_belief``
    layout: an object array per factor, or (separate priors) per policy then factor."""
    def factors(row):
        out = np.empty(len(bounds), dtype=object)
        for f, (lo, hi) in enumerate(bounds):
            out[f] = row[lo:hi]
        return out
    if prior.shape[0] == 1 and not policy_sep_prior:
        return factors(prior[0])
    out = np.empty(prior.shape[0], dtype=object)
    for p in range(prior.shape[0]):
        out[p] = factors(prior[p])
    return out


def run_mmp(lh_seq, B, policy, prev_actions=None, prior=None, num_iter=10, grad_descent=True,
            tau=0.25, last_timestep=False):
    """pymdp.legacy's ``algos.mmp.run_mmp`` on fa_core's kernel (one policy, joint likelihood).

    Parameters
    ----------
    lh_seq : sequence of numpy.ndarray
        Likelihood of the hidden states (all factors jointly) for each past step.
    B : sequence of numpy.ndarray
        ``B[f]`` of shape (ns, ns, nc).
    policy : numpy.ndarray
        (policy_len, num_factors) future actions.
    prev_actions : numpy.ndarray, optional
        (n, num_factors) past actions, stacked before ``policy``.
    prior : sequence of numpy.ndarray, optional
        Prior over the first step's states (default uniform).
    num_iter, grad_descent, tau, last_timestep
        As pymdp (``grad_descent`` must be True).

    Returns
    -------
    qs_seq : numpy.ndarray of dtype object
        ``qs_seq[t][f]`` (float32) over the window.
    F : float
        Free energy of the policy.
    """
    params = check_params({"num_iter": num_iter, "tau": tau, "grad_descent": grad_descent}, 1)
    B = [np.asarray(b) for b in B]
    ns = [b.shape[0] for b in B]
    nf = len(ns)
    km, _ = _compile(B, [[f] for f in range(nf)], ns, [list(range(nf))], [[0]] * nf)
    policy = np.asarray(policy).reshape(-1, nf)
    acts = policy if prev_actions is None else np.vstack([np.asarray(prev_actions).reshape(-1, nf),
                                                          policy])
    past = len(lh_seq)
    infer_len = past + policy.shape[0] - (1 if last_timestep else 0)
    rows = np.zeros((1, max(infer_len - 1, 1), nf), np.int32)
    rows[0, :infer_len - 1] = acts[:infer_len - 1]
    if prior is None:
        prior = [np.full(n, 1.0 / n) for n in ns]
    lh = np.concatenate([np.asarray(x, np.float32).ravel() for x in lh_seq])
    q = np.zeros((1, infer_len, sum(ns)), np.float32)
    F = np.zeros(1, np.float32)
    _mmp.infer_states(km, lh, past, infer_len, past + policy.shape[0] - 2, rows,
                      np.concatenate([np.asarray(p, np.float32) for p in prior])[None, :], q, F,
                      params["num_iter"], params["tau"], 1.0, np.zeros(km.n_fs, np.float32),
                      np.zeros(km.n_ds + 1, np.float64), np.zeros(lh.size, np.float64))
    edges = np.concatenate([[0], np.cumsum(ns)])
    qs_seq = np.empty(infer_len, dtype=object)
    for t in range(infer_len):
        qs_seq[t] = np.empty(nf, dtype=object)
        for f in range(nf):
            qs_seq[t][f] = q[0, t, edges[f]:edges[f + 1]]
    return qs_seq, float(F[0])


# ---------------------------------------------------------------------------
# Conversions between pymdp's layouts and the window's flat rows (for fa_core.engines)
# ---------------------------------------------------------------------------

def flat(beliefs, model, name: str) -> np.ndarray:
    """Per-factor beliefs as one flat float32 row (validated)."""
    from fa_core.model import as_array_list
    vecs = as_array_list(beliefs, name)
    if len(vecs) != model.num_factors or any(v.shape != (n,) for v, n in
                                             zip(vecs, model.num_states)):
        raise ValueError(f"{name} must hold one vector per factor with lengths "
                         f"{model.num_states}; got shapes {[v.shape for v in vecs]}")
    return np.concatenate(vecs).astype(np.float32)


def rows(belief, model, name: str) -> np.ndarray:
    """``belief`` (per factor, or per policy then factor) as (1 or n_pol, S) rows."""
    n_pol = len(model.policies)
    if isinstance(belief, np.ndarray) and belief.dtype == object and len(belief) == n_pol \
            and all(isinstance(b, np.ndarray) and b.dtype == object for b in belief):
        return np.stack([flat(b, model, f"{name}[{p}]") for p, b in enumerate(belief)])
    return flat(belief, model, name)[None, :]


def iterations(rec: np.ndarray, model, infer_len: int) -> np.ndarray:
    """(n_pol, num_iter, T, S) records in pymdp's layout: ``x[p][itr][f]`` (num_states[f], T)."""
    out = np.empty(rec.shape[0], dtype=object)
    for p in range(rec.shape[0]):
        its = []
        for itr in range(rec.shape[1]):
            fac = np.empty(model.num_factors, dtype=object)
            for f, (lo, hi) in enumerate(model.state_bounds):
                fac[f] = rec[p, itr, :infer_len, lo:hi].T.astype(np.float64)
            its.append(fac)
        out[p] = its
    return out


def window_views(q: np.ndarray, infer_len: int, bounds, copy: bool,
                 nodes: list | None = None) -> np.ndarray:
    """``qs[p][t][f]`` over the first ``infer_len`` steps of ``q`` (n_pol, L, S).

    With ``copy``, views of one read-only float64 copy (what pymdp hands out:
    later steps do not change it); otherwise float32 views of ``q`` itself.
    Each level is an object array, as pymdp's; the per-step arrays are rows of
    one (n_pol * infer_len, num_factors) object array and the per-policy ones
    rows of one (n_pol, infer_len) array, which is several times cheaper to
    fill than one small array per entry. ``nodes``, if given, receives every
    array of the result (``qs`` first, the float64 copy last: what
    :func:`fa_core._views.refill_tree` refills once nobody holds any of them).
    """
    n_pol = q.shape[0]
    src = q[:, :infer_len]
    if copy:
        src = src.astype(np.float64)
        src.flags.writeable = False  # a copy handed out: writes would be lost, so refuse them
    n = n_pol * infer_len
    steps = np.empty((n, len(bounds)), dtype=object)
    # (policy, step) rows of one 2-D view: merging the two axes copies unless the
    # window spans the buffer, so otherwise go policy by policy
    parts = ((src.reshape(n, -1), 0),) if src.shape[1] == q.shape[1] or copy else \
        tuple((src[p], p * infer_len) for p in range(n_pol))
    for f, (lo, hi) in enumerate(bounds):
        col = steps[:, f]
        for rows, i0 in parts:
            for i, v in enumerate(rows[:, lo:hi], i0):
                col[i] = v
    seqs = np.empty((n_pol, infer_len), dtype=object)
    cells = seqs.reshape(-1)
    for i, v in enumerate(steps):
        cells[i] = v
    qs = np.empty(n_pol, dtype=object)
    for p, v in enumerate(seqs):
        qs[p] = v
    if nodes is not None:
        nodes.append(qs)
        nodes.extend(qs)
        nodes.append(seqs)
        nodes.extend(seqs.reshape(-1))
        nodes.append(steps)
        nodes.extend(steps.reshape(-1))
        nodes.append(src)
    return qs
