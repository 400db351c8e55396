"""Sophisticated inference: one tree search (``infer_policies``), fa_core beside pymdp."""

from .common import fa_agent, observations, pymdp_agent


class _SearchBenchmarks:
    """The T-maze at its first observation (uncertain context: the widest tree)."""

    param_names = ["si_horizon"]

    def make_agent(self, horizon):
        raise NotImplementedError

    def setup(self, horizon):
        self.agent = self.make_agent(horizon)
        self.agent.infer_states(observations("tmaze")[0])

    def time_infer_policies(self, horizon):
        self.agent.infer_policies()


class FaCoreSophisticated(_SearchBenchmarks):
    params = [2, 3, 4]

    def make_agent(self, horizon):
        return fa_agent("tmaze", sophisticated=True, si_horizon=horizon)


class PymdpSophisticated(_SearchBenchmarks):
    """pymdp's recursive search: seconds per call at si_horizon 4, so 2 and 3 only."""

    params = [2, 3]
    min_run_count = 1
    repeat = (1, 5, 10.0)
    processes = 1
    timeout = 300

    def make_agent(self, horizon):
        return pymdp_agent("tmaze", sophisticated=True, si_horizon=horizon)
