"""What :class:`fa_core.Population` asks of the engine of a non-VANILLA algorithm.

VANILLA runs in Population's own fused kernel call and has no engine
(``pop._engine is None``). Every other algorithm is an engine object:
:class:`fa_core.population_mmp.MMPEngine` (``inference_algo="MMP"``) and
:class:`fa_core.population_si.SophisticatedEngine` (``sophisticated=True``).
Both derive from :class:`PopulationEngine`, whose defaults are what an engine
that does not need a hook gets, so Population calls every hook unconditionally.
"""

from __future__ import annotations


class PopulationEngine:
    """Base of the Population engines: the interface and VANILLA-like defaults.

    Attributes
    ----------
    rows : dict
        The engine's per-agent arrays, ``name -> (shape per agent, dtype)``.
        Population keeps them in its growable storage (``pop._<name>``), so
        add / remove, pickling, hibernation and state files carry them.
    scratch_nbytes : int
        Bytes of the engine's per-thread scratch (for memory reports).
    """

    rows: dict = {}
    scratch_nbytes = 0

    def infer_states(self, pop, obs) -> None:
        """Update ``pop.qs`` (and the engine's rows) from checked observations."""
        raise NotImplementedError

    def infer_policies(self, pop, replan=None) -> None:
        """Fill ``pop.q_pi`` and ``pop.G`` (only for the agents in ``replan`` when given)."""
        raise NotImplementedError

    def sample_action(self, pop) -> None:
        """Every agent's action from its ``q_pi``: the population's selection kernel."""
        from fa_core.population import _SAMPLE
        pop._run(_SAMPLE)

    def step(self, pop, obs, replan=None) -> None:
        """``infer_states``, ``infer_policies`` and ``sample_action`` (time is Population's)."""
        self.infer_states(pop, obs)
        self.infer_policies(pop, replan)
        self.sample_action(pop)

    def step_time(self, pop) -> None:
        """After the time step advanced (MMP moves its window here)."""

    def check_replan(self, replan) -> None:
        """Refuse a ``replan`` mask the algorithm cannot honour, before anything moves."""

    def reset(self, pop, rows=None) -> None:
        """Reset the engine's rows of every agent, or of ``rows`` (agents just added)."""

    def refuse_learning(self, name: str) -> None:
        """Raise if ``pop.<name>`` (``"update_A"``, ...) is not defined for the algorithm."""

    def window_start_belief(self, pop):
        """The default ``qs_t0`` of ``update_D`` (concatenated factors, all agents), or None."""
        return None

    def member(self, pop, i: int):
        """``pop[i]``, or None for the usual :class:`~fa_core.population.PopulationMember`."""
        return None

    def configure_member(self, agent) -> None:
        """Give a PopulationMember the algorithm's options (and Agent engine)."""
