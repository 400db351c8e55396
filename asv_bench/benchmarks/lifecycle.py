"""Putting an idle agent away and bringing it back, fa_core beside pymdp.

fa_core hibernates an agent to a blob of its own state (the shared model is
referenced by content key) and wakes it from there; a pymdp user's nearest
equivalent is pickling the agent, model included.
"""

import pickle

import fa_core

from .common import MODELS, fa_agent, observations, prime, pymdp_agent


class _LifecycleBenchmarks:
    params = MODELS
    param_names = ["model"]

    def make_agent(self, name):
        raise NotImplementedError

    def put_away(self, agent) -> bytes:
        raise NotImplementedError

    def bring_back(self, blob: bytes):
        raise NotImplementedError

    def setup(self, name):
        self.agent = self.make_agent(name)
        prime(self.agent, name)
        self.agent.infer_states(observations(name)[1])
        self.blob = self.put_away(self.agent)

    def time_hibernate(self, name):
        self.put_away(self.agent)

    def time_wake(self, name):
        self.bring_back(self.blob)

    def track_hibernated_bytes(self, name):
        return len(self.blob)

    track_hibernated_bytes.unit = "bytes"


class FaCoreLifecycle(_LifecycleBenchmarks):
    """``agent.hibernate()`` (lossless) and ``fa_core.Agent.wake``."""

    def make_agent(self, name):
        return fa_agent(name)

    def put_away(self, agent):
        return agent.hibernate()

    def bring_back(self, blob):
        return fa_core.Agent.wake(blob)


class PymdpLifecycle(_LifecycleBenchmarks):
    """``pickle.dumps`` / ``pickle.loads`` of a pymdp agent."""

    processes = 1
    timeout = 300

    def make_agent(self, name):
        return pymdp_agent(name)

    def put_away(self, agent):
        return pickle.dumps(agent, protocol=pickle.HIGHEST_PROTOCOL)

    def bring_back(self, blob):
        return pickle.loads(blob)
