"""Agent-steps per second of a group of agents stepped one after another, fa_core beside pymdp."""

import time

from .common import MODELS, PYMDP_STEPPED_MODELS, fa_agent, observations, prime, pymdp_agent, step


class _Throughput:
    """Full steps of ``n_agents`` agents in rounds, until ``budget`` seconds have passed."""

    param_names = ["model"]
    unit = "agent-steps/s"
    n_agents = 1
    budget = 0.5

    def make_agent(self, name):
        raise NotImplementedError

    def setup(self, name):
        self.agents = [self.make_agent(name) for _ in range(self.n_agents)]
        for agent in self.agents:
            prime(agent, name)
        self.obs = observations(name)

    def track_agent_steps_per_s(self, name):
        obs, n_obs = self.obs, len(self.obs)
        steps, rounds = 0, 0
        start = time.perf_counter()
        while True:
            for i, agent in enumerate(self.agents):
                # each agent sees its own stretch of the observation sequence
                step(agent, obs[(rounds + i) % n_obs])
            steps += len(self.agents)
            rounds += 1
            elapsed = time.perf_counter() - start
            if elapsed >= self.budget:
                return round(steps / elapsed, 1)


class FaCoreThroughput(_Throughput):
    """100 ``fa_core.Agent`` sharing one model."""

    params = MODELS
    n_agents = 100

    def make_agent(self, name):
        return fa_agent(name)


class PymdpThroughput(_Throughput):
    """10 pymdp agents on the same arrays."""

    params = PYMDP_STEPPED_MODELS
    n_agents = 10
    budget = 1.0
    processes = 1
    timeout = 300

    def make_agent(self, name):
        return pymdp_agent(name)
