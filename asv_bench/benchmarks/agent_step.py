"""Time of one agent's inference calls and full step, fa_core beside pymdp."""

from itertools import cycle

from .common import MODELS, fa_agent, observations, prime, pymdp_agent, step


class _StepBenchmarks:
    """The same timed calls for any agent factory; subclasses say which."""

    params = MODELS
    param_names = ["model"]

    def make_agent(self, name):
        raise NotImplementedError

    def setup(self, name):
        self.agent = self.make_agent(name)
        prime(self.agent, name)
        self.obs = cycle(observations(name))

    def time_infer_states(self, name):
        self.agent.infer_states(next(self.obs))

    def time_infer_policies(self, name):
        self.agent.infer_policies()

    def time_step(self, name):
        step(self.agent, next(self.obs))


class FaCoreAgent(_StepBenchmarks):
    """``fa_core.Agent``: the pymdp-compatible facade."""

    def make_agent(self, name):
        return fa_agent(name)


class PymdpAgent(_StepBenchmarks):
    """``pymdp.legacy.agent.Agent``: one call can take tens of seconds (four_factor)."""

    # A single call is its own sample on the slow models: no extra calibration
    # run, few samples, one process, and room for a 30-s call.
    min_run_count = 1
    repeat = (1, 5, 10.0)
    processes = 1
    timeout = 600

    def make_agent(self, name):
        return pymdp_agent(name)
