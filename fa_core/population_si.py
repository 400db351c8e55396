"""Sophisticated inference for :class:`fa_core.Population` (``sophisticated=True``).

A population built with ``sophisticated=True`` gets a :class:`SophisticatedEngine`
as ``pop._engine``; ``Population.infer_states``, ``infer_policies``,
``sample_action``, ``step`` and ``reset`` hand over to it. It runs what
:class:`fa_core.Agent` runs with ``sophisticated=True`` (see
:mod:`fa_core.sophisticated`), with the same numbers:

* state inference: the population's own fixed-point iteration (VANILLA), as
  the agent's;
* policies: pymdp's tree search of depth ``si_horizon`` for every agent, in
  one compiled loop over agents without the GIL, on the population's
  ``n_threads`` OpenMP threads (``fa_core._sophisticated.population_stages``,
  which calls the agent's search, ``c_search``). Policies are one-step, so
  ``q_pi`` and ``G`` have the model's ``num_policies`` columns, as the agent's.
  ``q_pi = softmax(G)``: the search runs at ``gamma = 1`` with no policy
  prior, whatever the population's ``gamma`` and ``E`` are (pymdp's semantics);
* action selection: the population's (each agent's own random stream) with
  the search's tie band (:func:`fa_core.sophisticated.tie_rtol`).

``step(obs, replan=mask)`` is supported: an agent outside the mask that has a
previous action keeps its ``q_pi`` and ``G`` (a one-step plan has nothing left
to shift, as VANILLA with ``policy_len`` 1) and chooses again from them.

An agent that learned (``pop.update_A`` / ``update_B`` / ``update_D``) searches
with its own parameters, as an ``Agent`` that learned: the engine builds the
search's dense copy of that agent's model (``pop[i]``'s) once per change of the
population's parameters, in Python, so learning populations pay that per
learning agent and update; the search itself stays in the one compiled loop.

Not implemented (refused with NotImplementedError at construction): per-agent
``C`` (the search reads the model's preferences).

The engine keeps no per-agent arrays of its own (``rows`` is empty): the
search's state lives in per-thread scratch, sized once per population and
thread count, never per step.
"""

from __future__ import annotations

import numpy as np

from fa_core import _sophisticated, engines
from fa_core import sophisticated as _si
from fa_core.population_engine import PopulationEngine
from fa_core.restore_checks import fail

#: the keywords of ``Population(sophisticated=True, ...)``, with Agent's defaults
DEFAULTS = {"si_horizon": 3, "si_policy_prune_threshold": 1 / 16,
            "si_state_prune_threshold": 1 / 16, "si_prune_penalty": 512}

#: Population's stage bits (fa_core.population: 1 infer_states, 2 infer_policies, 4 sample)
_POLICIES, _SAMPLE = 2, 4


class SophisticatedEngine(PopulationEngine):
    """Policy evaluation of a population by sophisticated inference.

    Parameters
    ----------
    model : GenerativeModel
        The population's model (one-step policies).
    si_horizon, si_policy_prune_threshold, si_state_prune_threshold, si_prune_penalty
        As :class:`fa_core.Agent`.
    E, use_utility, use_states_info_gain, use_param_info_gain : optional
        The population's options, only to warn (as ``Agent``) about those
        the search does not read.

    Raises
    ------
    ValueError, TypeError
        For options the search cannot run with (see
        :func:`fa_core.sophisticated.check_options`).
    """

    algo = "sophisticated"
    #: per-agent arrays this engine needs in the population's storage: none
    rows: dict = {}

    def __init__(self, model, si_horizon=3, si_policy_prune_threshold=1 / 16,
                 si_state_prune_threshold=1 / 16, si_prune_penalty=512, *, E=None,
                 use_utility=True, use_states_info_gain=True, use_param_info_gain=False):
        _si.check_options(model, si_horizon, si_policy_prune_threshold,
                          si_state_prune_threshold, si_prune_penalty, E=E,
                          use_utility=use_utility, use_states_info_gain=use_states_info_gain,
                          use_param_info_gain=use_param_info_gain)
        self.si_horizon = int(si_horizon)
        self.si_policy_prune_threshold = float(si_policy_prune_threshold)
        self.si_state_prune_threshold = float(si_state_prune_threshold)
        self.si_prune_penalty = float(si_prune_penalty)
        self._model = model
        self._sm = _si.si_model(model)
        self._scratch = None  # (doubles, ints, floats), one row per thread
        self._own = (None, {})  # (parameter version, {agent: SIModel of its learned model})

    @property
    def options(self) -> dict:
        """The search's options, as the constructor's keywords."""
        return {name: getattr(self, name) for name in DEFAULTS}

    def state(self) -> dict:
        """Plain values for pickling / hibernation (:func:`restore` rebuilds the engine)."""
        return {"algo": self.algo, **self.options}

    # -- the Population interface ----------------------------------------------------

    def infer_states(self, pop, obs) -> None:
        """The population's VANILLA state inference (as Agent's with sophisticated=True)."""
        from fa_core.population import _INFER_STATES
        pop._run(_INFER_STATES, obs)

    def infer_policies(self, pop, replan=None) -> None:
        """The search for every agent (or those in ``replan``); fills ``pop.q_pi``, ``pop.G``."""
        self._drive(pop, _POLICIES, replan)

    def sample_action(self, pop) -> None:
        """Every agent's action from its ``q_pi``, with the search's tie band."""
        self._drive(pop, _SAMPLE, None)

    def step(self, pop, obs, replan=None) -> None:
        """infer_states, infer_policies and sample_action (nothing runs if refused)."""
        from fa_core.population import _INFER_STATES
        pop._run(_INFER_STATES, obs)
        self._drive(pop, _POLICIES | _SAMPLE, replan)

    def reset(self, pop, rows=None) -> None:
        """Nothing of the engine's own to reset (it keeps no per-agent state)."""

    def configure_member(self, agent) -> None:
        """Make ``pop[i]`` (a PopulationMember) run the agent's search with these options."""
        agent.sophisticated = True
        for name, value in self.options.items():
            setattr(agent, name, value)
        agent._engine = engines.make("VANILLA", True, agent._engine.fpi)

    @property
    def scratch_nbytes(self) -> int:
        """Bytes of the per-thread search scratch."""
        return 0 if self._scratch is None else sum(a.nbytes for a in self._scratch)

    # -- internals -----------------------------------------------------------------------

    def _models(self, pop):
        """Per agent the address of its own search model (learned parameters) or 0; None
        when every agent reads the shared model. The cache lives until parameters change."""
        d = pop.__dict__
        n, learned = d["_n"], d["_learned"]
        if learned is None or not learned.own[:n].any():
            return None
        version = d.get("_param_version", 0)
        if self._own[0] != version:
            self._own = (version, {})
        cache = self._own[1]
        addr = np.zeros(n, np.uintp)
        for i in np.nonzero(learned.own[:n])[0].tolist():
            sm = cache.get(i)
            if sm is None:
                sm = cache[i] = _si.si_model(pop._agent_model(i))
            addr[i] = sm.c_address
        return addr

    def _scratch_for(self, kmodel, threads: int):
        nd, ni, nf = _sophisticated.population_scratch_sizes(self._sm, kmodel, self.si_horizon)
        sc = self._scratch
        if sc is None or sc[0].shape != (threads, nd):
            sc = self._scratch = (np.empty((threads, nd), np.float64),
                                  np.empty((threads, ni), np.int32),
                                  np.empty((threads, nf), np.float32))
        return sc

    def _drive(self, pop, stages: int, replan) -> None:
        """One compiled call over every agent; the caller holds ``pop._lock``."""
        d = pop.__dict__
        n = d["_n"]
        threads = max(1, min(d["n_threads"], n))
        km = d["_model"].kmodel
        dbl, ints, flt = self._scratch_for(km, threads)
        num_iter, dF, dF_tol, compute_vfe = d["_fpi"]
        models = self._models(pop) if stages & _POLICIES else None
        rows = pop._rows
        _sophisticated.population_stages(
            self._sm, km, stages, rows("qs"), rows("q_pi"), rows("G"), rows("actions"),
            rows("has_action"), rows("alpha"), rows("rng"), replan, self.si_horizon,
            self.si_policy_prune_threshold, self.si_state_prune_threshold,
            self.si_prune_penalty, num_iter, dF, dF_tol, compute_vfe,
            d["sampling_mode"] == "full", d["action_selection"] == "deterministic",
            dbl, ints, flt, threads, models)


def check_population(model, n_agents: int, C) -> None:
    """Refuse population options the search cannot honour (before anything is built)."""
    if C is not None:
        raise NotImplementedError(
            "per-agent C with sophisticated=True is not implemented: the search reads the "
            "model's C (build one Population per preference, with model.derived(C=...))")


def restore(model, state, what: str) -> SophisticatedEngine:
    """The engine a pickled / hibernated population's ``state["engine"]`` describes.

    Raises CorruptStateError (naming ``what``) for a state that is not one.
    """
    if type(state) is not dict or state.get("algo") != SophisticatedEngine.algo \
            or set(state) != {"algo", *DEFAULTS}:
        fail(what, f"its engine state must be a dict with the keys {['algo', *DEFAULTS]}")
    opts = {k: v for k, v in state.items() if k != "algo"}
    try:
        return SophisticatedEngine(model, **opts)
    except (TypeError, ValueError) as exc:
        fail(what, str(exc))
