"""Time of Dirichlet learning updates (``update_A``, ``update_B``), fa_core beside pymdp."""

import copy
import functools

import fa_core

from .common import MODELS, learning_kwargs, observations, prime, pymdp_agent


@functools.cache
def _learning_model(name):
    return fa_core.GenerativeModel(**learning_kwargs(name))


class _LearningBenchmarks:
    """Updates after one observation of an agent primed mid-episode."""

    params = MODELS
    param_names = ["model"]

    def make_agent(self, name):
        raise NotImplementedError

    def setup(self, name):
        self.agent = self.make_agent(name)
        prime(self.agent, name)
        # fa_core rewrites qs in place, so the previous beliefs are copied
        self.qs_prev = copy.deepcopy(self.agent.qs)
        self.obs = observations(name)[1]
        self.agent.infer_states(self.obs)

    def time_update_A(self, name):
        self.agent.update_A(self.obs)

    def time_update_B(self, name):
        self.agent.update_B(self.qs_prev)


class FaCoreLearning(_LearningBenchmarks):
    def make_agent(self, name):
        return fa_core.Agent(model=_learning_model(name), seed=0)


class PymdpLearning(_LearningBenchmarks):
    processes = 1
    timeout = 300

    def make_agent(self, name):
        kwargs = learning_kwargs(name)
        return pymdp_agent(name, pA=kwargs["pA"], pB=kwargs["pB"])
