"""A whole population stepped in one kernel call (``fa_core.Population``).

pymdp has no population: its twin is ``throughput.PymdpThroughput``, pymdp
agents stepped one after another in a Python loop.
"""

import time

import numpy as np

from fa_core import Population

from .common import POPULATION_MODELS, generative_model, observations


class FaCorePopulation:
    """``n_agents`` agents of one model, one thread (figures comparable across machines)."""

    params = (POPULATION_MODELS, [1_000, 10_000])
    param_names = ["model", "n_agents"]
    budget = 0.5

    def setup(self, name, n_agents):
        self.pop = Population(generative_model(name), n_agents, seed=0, n_threads=1)
        seq = np.array(observations(name), dtype=np.int64)
        # agent i sees the observation sequence from position i on
        self.obs = [np.roll(seq, -t, axis=0)[np.arange(n_agents) % len(seq)]
                    for t in range(4)]
        self.pop.step(self.obs[0])  # past the first step (no action yet)

    def time_step(self, name, n_agents):
        self.pop.step(self.obs[1])

    def track_agent_steps_per_s(self, name, n_agents):
        steps, t = 0, 0
        start = time.perf_counter()
        while True:
            self.pop.step(self.obs[t % len(self.obs)])
            steps += n_agents
            t += 1
            elapsed = time.perf_counter() - start
            if elapsed >= self.budget:
                return round(steps / elapsed, 1)

    track_agent_steps_per_s.unit = "agent-steps/s"
