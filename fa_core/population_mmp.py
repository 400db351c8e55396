"""``Population(..., inference_algo="MMP")``: marginal message passing for every agent.

The engine behind a population whose agents run pymdp's MMP with
:class:`fa_core.Agent`'s numbers. Each agent's window (what
``fa_core.mmp.MMPState`` keeps for one agent) lives in the population's
growable per-agent storage, so ``add``, ``remove``, pickling and
``hibernate`` / ``wake`` carry it:

========== =================================== ==================================
row        shape per agent                     holds
========== =================================== ==================================
mmp_lh     (horizon, lh_stride) float32        likelihood terms of the window's
                                               observations (rows of A), oldest
                                               first
mmp_q      (n_pol, horizon + policy_len, S)    each policy's beliefs over the
           float32                             window (Agent's ``qs[p][t]``)
mmp_F      (n_pol,) float32                    each policy's free energy
mmp_prior  (1 or n_pol, S) float32             the window's prior (one row with
                                               ``use_BMA``, else one per policy)
mmp_head   (horizon + policy_len - 1, nf) i32  the episode's first actions
mmp_tail   (max(horizon - 1, 1), nf) int32     the last ``horizon - 1`` actions
mmp_nobs   () int64                            observations seen
mmp_nact   () int64                            actions taken
mmp_fresh  () uint8                            ``mmp_q`` holds an inference made
                                               since the last reset
========== =================================== ==================================

pymdp pairs a window with ``prev_actions[-(horizon - 1):]``, or with every
past action while the window has not moved or ``inference_horizon`` is 1
(then only the episode's first actions are read); the first
``horizon + policy_len - 1`` and the last ``horizon - 1`` actions are all
such a slice can read, so those are kept, not the whole history.

``pop.qs`` is each agent's current step averaged over policies with its
``q_pi`` (after :meth:`Population.infer_states` the previous ``q_pi``, after
``infer_policies`` the new one); ``q_pi``, ``G`` and ``actions`` are what
they are for VANILLA. The per-step work runs in :mod:`fa_core._mmp`'s
population drivers (the per-agent kernels ``Agent`` runs, over agents on
OpenMP threads, without the GIL).
"""

from __future__ import annotations

import warnings

import numpy as np

from fa_core import _mmp, mmp
from fa_core import options as _opt
from fa_core.population_engine import PopulationEngine
from fa_core.population import PopulationMember
from fa_core.restore_checks import check_vector, fail

_KIND = "MMP"


def build(model, *, inference_horizon, use_BMA, policy_sep_prior, inference_params, C, E,
          use_param_info_gain, save_belief_hist) -> MMPEngine:
    """The checked MMP engine for a population of ``model`` (constructor options).

    Raises
    ------
    ValueError
        For a bad ``inference_horizon`` or ``inference_params``, per-agent ``C``,
        ``save_belief_hist`` or ``factorized=False``, which a population does not run
        with MMP.
    NotImplementedError
        For what ``fa_core.Agent`` refuses with MMP too (``use_param_info_gain``
        with ``pA`` / ``pB``, ``H``, neither ``use_BMA`` nor ``policy_sep_prior``).
    """
    params = mmp.check_params(inference_params, inference_horizon)
    if not params.get("factorized", True):
        raise ValueError("inference_params['factorized']=False (pymdp's run_mmp) is not "
                         "implemented for a Population; use fa_core.Agent")
    if C is not None:
        raise ValueError("per-agent C with inference_algo='MMP' is not implemented for a "
                         "Population (MMP reads the model's C)")
    if save_belief_hist:
        raise ValueError("save_belief_hist with inference_algo='MMP' is not implemented for a "
                         "Population: update_D learns from each agent's window prior")
    if use_param_info_gain and (model.has_pA or model.has_pB):
        raise NotImplementedError("use_param_info_gain with inference_algo='MMP' is not "
                                  "implemented")
    use_BMA = _opt.check_bool("use_BMA", use_BMA)
    policy_sep_prior = _opt.check_bool("policy_sep_prior", policy_sep_prior)
    if policy_sep_prior and use_BMA:
        warnings.warn("Inconsistent choice of `policy_sep_prior` and `use_BMA`. You have set "
                      "`policy_sep_prior` to True, so we are setting `use_BMA` to False",
                      stacklevel=3)
        use_BMA = False
    # MMPState refuses what Agent refuses (H, neither prior scheme) with Agent's messages
    mmp.MMPState(model, inference_horizon, params, use_BMA, policy_sep_prior)
    return MMPEngine(model, int(inference_horizon), params, use_BMA, policy_sep_prior)


class MMPEngine(PopulationEngine):
    """Population engine for ``inference_algo="MMP"`` (see the module docstring).

    Population calls ``infer_states(pop, obs)``, ``infer_policies(pop, replan)``,
    ``step_time(pop)`` (after it advanced time in ``sample_action``) and
    ``reset(pop, rows)``; ``rows`` names the per-agent arrays it keeps in the
    population's storage (name -> (shape per agent, dtype)).
    """

    kind = _KIND

    def __init__(self, model, horizon: int, params: dict, use_BMA: bool,
                 policy_sep_prior: bool):
        self.model = model
        self.horizon = horizon
        self.params = dict(params)
        self.use_BMA, self.policy_sep_prior = bool(use_BMA), bool(policy_sep_prior)
        self.km, self.l_K, self.lnE, pol = mmp.compiled(model, True)
        self.pol = np.ascontiguousarray(pol, np.int32)
        P, T, nf = self.pol.shape
        self.P, self.T, self.nf, self.S = P, T, nf, int(sum(model.num_states))
        H = horizon
        self.rows = {
            "mmp_lh": ((H, int(self.l_K.sum())), np.float32),
            "mmp_q": ((P, H + T, self.S), np.float32),
            "mmp_F": ((P,), np.float32),
            "mmp_prior": ((1 if use_BMA else P, self.S), np.float32),
            "mmp_head": ((H + T - 1, nf), np.int32),
            "mmp_tail": ((max(H - 1, 1), nf), np.int32),
            "mmp_nobs": ((), np.int64),
            "mmp_nact": ((), np.int64),
            "mmp_fresh": ((), np.uint8),
        }
        self._scratch = None

    # -- options -------------------------------------------------------------------------

    def options(self) -> dict:
        """The engine's options as plain values (pickled / hibernated with the population)."""
        return {"kind": _KIND, "inference_horizon": self.horizon,
                "inference_params": dict(self.params), "use_BMA": self.use_BMA,
                "policy_sep_prior": self.policy_sep_prior}

    def set_params(self, inference_params) -> None:
        """``pop.inference_params = ...``: MMP's options, checked as the constructor checks
        them (a refused value changes nothing)."""
        params = mmp.check_params(inference_params, self.horizon)
        if not params.get("factorized", True):
            raise ValueError("inference_params['factorized']=False (pymdp's run_mmp) is not "
                             "implemented for a Population; use fa_core.Agent")
        self.params = params

    def state(self) -> dict:
        """Plain values for a population's small state (its rows travel as arrays)."""
        return {"options": self.options()}

    @staticmethod
    def from_options(model, opts: dict) -> MMPEngine:
        """The engine ``options()`` describes (checked as the constructor checks them)."""
        return build(model, inference_horizon=opts["inference_horizon"],
                     use_BMA=opts["use_BMA"], policy_sep_prior=opts["policy_sep_prior"],
                     inference_params=opts["inference_params"], C=None, E=None,
                     use_param_info_gain=False, save_belief_hist=False)

    # -- stepping ------------------------------------------------------------------------

    def _scratch_rows(self, threads: int) -> tuple:
        widths = _mmp.population_scratch_widths(self.km, self.horizon, self.T, self.P)
        sc = self._scratch
        if sc is None or sc[0].shape[0] != threads:
            sc = self._scratch = (np.empty((threads, widths[0]), np.float32),
                                  np.empty((threads, widths[1]), np.float64),
                                  np.empty((threads, widths[2]), np.int32))
        return sc

    @property
    def scratch_nbytes(self) -> int:
        """Bytes of the per-thread scratch."""
        return 0 if self._scratch is None else sum(a.nbytes for a in self._scratch)

    def _check_window(self, pop) -> None:
        """Refuse an observation no agent window could pair with actions (as Agent does)."""
        nobs, nact = pop._rows("mmp_nobs") + 1, pop._rows("mmp_nact")
        H, T = self.horizon, self.T
        past = np.minimum(nobs, H)
        R = past + T - 1
        wlen = np.where((nobs > H) & (H > 1), np.minimum(nact, H - 1), np.minimum(nact, H + T - 1))
        bad = np.minimum(wlen, R) + T < R
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"MMP needs an action for each of the {int(past[i]) - 1} past steps "
                             f"in agent {i}'s window, but it has {int(wlen[i])}: call "
                             f"sample_action (or step) between infer_states calls")

    def infer_states(self, pop, obs: np.ndarray) -> None:
        """Every agent's window update for its observation (obs checked by the caller)."""
        self._check_window(pop)
        rows, threads = pop._rows, pop._threads()
        p = self.params
        _mmp.population_infer_states(
            self.km, self.pol, self.horizon, obs, rows("mmp_lh"), rows("mmp_q"), rows("mmp_F"),
            rows("mmp_prior"), rows("mmp_head"), rows("mmp_tail"), rows("mmp_nobs"),
            rows("mmp_nact"), rows("mmp_fresh"), rows("qs"), rows("q_pi"), int(p["num_iter"]),
            float(p["tau"]), 0.5, *self._scratch_rows(threads), threads)

    def check_replan(self, replan) -> None:
        """Intermittent planning is not defined for MMP: refuse a mask."""
        if replan is not None:
            raise ValueError("replan with inference_algo='MMP' is not implemented: an MMP "
                             "policy posterior also weighs each policy's free energy")

    def infer_policies(self, pop, replan=None) -> None:
        """Every agent's G and q_pi from its last window update."""
        self.check_replan(replan)
        rows = pop._rows
        if pop.n_agents and (rows("mmp_nobs") == 0).any():
            i = int(np.argmax(rows("mmp_nobs") == 0))
            raise ValueError(f"infer_policies with inference_algo='MMP' needs infer_states "
                             f"first (agent {i} has no observation)")
        lnE = rows("lnE")
        shared = lnE is None
        threads = pop._threads()
        _mmp.population_infer_policies(
            self.km, self.pol, self.horizon, rows("mmp_q"), rows("mmp_F"), rows("mmp_nobs"),
            self.lnE[None, :] if shared else lnE, shared, rows("gamma"), pop.use_utility,
            pop.use_states_info_gain, rows("G"), rows("q_pi"), rows("qs"),
            *self._scratch_rows(threads), threads)

    def step_time(self, pop) -> None:
        """After time advanced: each agent's action into its history and, once the window
        moves, the window's prior (Agent.step_time's set_latest_beliefs)."""
        rows = pop._rows
        _mmp.population_step_time(self.km, self.pol, self.horizon, rows("actions"),
                                  rows("curr_timestep"), rows("mmp_head"), rows("mmp_tail"),
                                  rows("mmp_nact"), rows("mmp_q"), rows("q_pi"),
                                  rows("mmp_fresh"), rows("mmp_prior"), pop._threads())

    def reset(self, pop, rows=None) -> None:
        """Agent's MMP reset for ``rows`` (default all): D as the window prior, beliefs of
        the window's first step uniform; the windows and action histories are kept, as
        pymdp keeps them. (Population resets qs, has_action and time itself.)"""
        sel = slice(None) if rows is None else rows
        idx = np.arange(pop.n_agents)[sel]
        pop._rows("mmp_fresh")[idx] = 0
        prior = pop._rows("mmp_prior")
        prior[idx] = np.concatenate(self.model.exact("D")).astype(np.float32)
        learned = pop.__dict__.get("_learned")
        if learned is not None and learned.D_rows is not None:
            edges = [lo for lo, _ in self.model.state_bounds]
            for i in idx[learned.own[idx] == 1]:  # agents with their own (learned) D
                counts = learned.D_rows["counts"][i].astype(np.float64)
                sums = np.repeat(np.add.reduceat(counts, edges), self.model.num_states)
                prior[i] = (counts / sums).astype(np.float32)

    # -- learning ------------------------------------------------------------------------

    def refuse_learning(self, name: str) -> None:
        """Agent refuses update_A and update_B with MMP; so does the population."""
        raise NotImplementedError(f"{name} with inference_algo='MMP' is not implemented")

    def window_start_belief(self, pop) -> np.ndarray:
        """update_D's default target: each window's prior, averaged over policies (n, S)."""
        prior = pop._rows("mmp_prior").astype(np.float64)
        if prior.shape[1] == 1:
            return prior[:, 0]
        return np.einsum("np,nps->ns", pop._rows("q_pi").astype(np.float64), prior)

    # -- views ---------------------------------------------------------------------------

    def member(self, pop, i: int):
        """``pop[i]``: agent ``i`` seen as an MMP ``fa_core.Agent`` (read-only view)."""
        return MMPMember(pop, i, self)

    def agent_beliefs(self, pop, i: int):
        """Agent ``i``'s ``qs[p][t][f]`` over its current window (float32 views of its rows),
        as ``fa_core.Agent.qs`` shows them with MMP."""
        n_obs = int(pop._rows("mmp_nobs")[i])
        q = pop._rows("mmp_q")[i]
        bounds = self.model.state_bounds
        if not pop._rows("mmp_fresh")[i]:  # after reset: pymdp's uniform first step only
            L = self.horizon + self.T + 1
            out = np.empty(self.P, dtype=object)
            for p in range(self.P):
                out[p] = np.empty(L, dtype=object)
                out[p][0] = np.empty(len(bounds), dtype=object)
                for f, n in enumerate(self.model.num_states):
                    out[p][0][f] = np.full(n, 1.0 / n, dtype=np.float32)
            return out
        infer_len = min(n_obs, self.horizon) + self.T
        qs = np.empty(self.P, dtype=object)
        for p in range(self.P):
            seq = np.empty(infer_len, dtype=object)
            for t in range(infer_len):
                fac = np.empty(len(bounds), dtype=object)
                for f, (lo, hi) in enumerate(bounds):
                    fac[f] = q[p, t, lo:hi]
                seq[t] = fac
            qs[p] = seq
        return qs

    def latest_belief(self, pop, i: int):
        """Agent ``i``'s window prior in pymdp's layout (``Agent.latest_belief``)."""
        return mmp.prior_layout(pop._rows("mmp_prior")[i].astype(np.float64),
                                self.model.state_bounds, self.policy_sep_prior)

def check_engine_state(state, model, n: int, what: str) -> None:
    """Refuse a restored engine state (options and per-agent rows) a kernel could not run on
    safely: options as the constructor checks them, row shapes and dtypes, finite
    non-negative beliefs, counters and actions in range."""
    if type(state) is not dict or set(state) not in ({"options", "rows"}, {"options"}):
        fail(what, "its engine state must hold 'options' and 'rows'")
    opts = state["options"]
    if type(opts) is not dict or opts.get("kind") != _KIND or set(opts) != {
            "kind", "inference_horizon", "inference_params", "use_BMA", "policy_sep_prior"}:
        fail(what, "its engine options are not MMP's")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = MMPEngine.from_options(model, opts)
    except (TypeError, ValueError, NotImplementedError) as exc:
        fail(what, str(exc))
    if "rows" not in state:  # a state file's: its rows are checked once mapped
        return
    rows = state["rows"]
    if type(rows) is not dict or set(rows) != set(engine.rows):
        fail(what, f"its MMP rows must be {sorted(engine.rows)}")
    for name, (shape, dtype) in engine.rows.items():
        nonneg = name not in ("mmp_F",)
        check_vector(what, name, rows[name], (n, *shape), (dtype,), nonneg=nonneg)
    nobs, nact = rows["mmp_nobs"], rows["mmp_nact"]
    if (nobs > 2 ** 62).any() or (nact > 2 ** 62).any():
        fail(what, "its MMP observation / action counters are out of range")
    if (rows["mmp_fresh"] > 1).any():
        fail(what, "mmp_fresh holds values other than 0 and 1")
    nc = np.asarray(model.num_controls)
    for name in ("mmp_head", "mmp_tail"):
        if rows[name].size and (rows[name] >= nc).any():
            fail(what, f"{name} holds actions outside num_controls = {list(nc)}")
    for name in ("mmp_q", "mmp_prior"):
        if rows[name].size and rows[name].max() > 1 + 1e-3:
            fail(what, f"{name} holds probabilities above 1")


class MMPMember(PopulationMember):
    """``pop[i]`` of an MMP population: agent ``i``'s MMP beliefs in ``fa_core.Agent``'s layout.

    ``qs`` (``qs[p][t][f]`` over the window), ``F``, ``latest_belief``,
    :meth:`get_future_qs`, ``q_pi``, ``G``, ``action`` and the parameters read
    the population's rows. It is a view for reading: stepping or learning
    through it raises NotImplementedError (step the population; an MMP window
    is advanced for all agents at once).
    """

    __slots__ = ("_engine",)

    def __init__(self, pop, i: int, engine: MMPEngine):  # noqa: D107
        super().__init__(pop, i)
        self._engine = engine
        self.inference_algo, self.inference_horizon = "MMP", engine.horizon
        self.inference_params = dict(engine.params)
        self.edge_handling_params = {"use_BMA": engine.use_BMA,
                                     "policy_sep_prior": engine.policy_sep_prior}

    @property
    def qs(self):
        return self._engine.agent_beliefs(self._pop, self._row)

    @qs.setter
    def qs(self, value):
        raise NotImplementedError("qs of an MMP population member is read-only")

    @property
    def F(self):
        pop = self._pop
        if not pop._rows("mmp_nobs")[self._row]:
            return None
        return pop._rows("mmp_F")[self._row].astype(np.float64)

    @F.setter
    def F(self, value):
        if value is not None:
            raise NotImplementedError("F of an MMP population member is read-only")

    @property
    def latest_belief(self):
        return self._engine.latest_belief(self._pop, self._row)

    def get_future_qs(self):
        """Each policy's beliefs over the current step and ``policy_len`` future steps."""
        T = self._engine.T
        qs = self.qs
        out = np.empty(len(qs), dtype=object)
        for p in range(len(qs)):
            out[p] = qs[p][-(T + 1):]
        return out

    def _refuse(self, *args, **kwargs):
        raise NotImplementedError("a member of an MMP population is a view for reading: step "
                                  "the Population (its windows advance for all agents at once)")

    infer_states = infer_policies = sample_action = step_time = reset = _refuse
    set_latest_beliefs = update_A = update_B = update_D = _refuse
