"""Issue 17's cases: Population.step at 1 and 2 threads on the models of its throughput
targets, and the grid-side scaling of per-agent-step cost on concentrated beliefs.

The agents live in a world (``SampledWorld``, or ``GridWorld`` for the exact-cue grids)
stepped between their steps, so their beliefs are those of a run; ``track_*`` figures
time ``Population.step`` alone, ``time_step`` one step of the agents and their world (the
world's part is a small share: a few vectorised draws per agent). The same cases as
``benchmarks/throughput.py``.
"""

import time

from fa_core import Population
from fa_core.envs import GridWorld

from .common import SampledWorld, generative_model, grid_model

#: Untimed steps after building: a forager's first location cue concentrates its belief.
WARMUP = 4


def _rate(pop, world, obs, n, budget):
    """Agent-steps/s of ``pop.step`` alone over about ``budget`` seconds, the world stepped
    between (untimed); returns the rate and the last observations."""
    spent, steps = 0.0, 0
    while spent < budget or steps < 2:
        t0 = time.perf_counter()
        actions = pop.step(obs)
        spent += time.perf_counter() - t0
        obs = world.step(actions)
        steps += 1
    return steps * n / spent, obs


class FaCoreThreads:
    """Issue 17's targets at 2 threads (1 beside): T-maze-sized dense random A and B, the
    builtin T-maze, grid30 and grid30_confused."""

    params = (["tmaze_dense", "tmaze", "grid30", "grid30_confused"], [1, 2])
    param_names = ["model", "n_threads"]
    agents = {"tmaze_dense": 20_000, "tmaze": 20_000, "grid30": 2_000, "grid30_confused": 2_000}
    budget = 0.5
    timeout = 300

    def setup(self, name, n_threads):
        self.n = self.agents[name]
        self.pop = Population(generative_model(name), self.n, seed=0, n_threads=n_threads)
        self.world = SampledWorld(name, self.n, seed=1)
        self.obs = self.world.observe()
        for _ in range(WARMUP):
            self.obs = self.world.step(self.pop.step(self.obs))

    def time_step(self, name, n_threads):
        self.obs = self.world.step(self.pop.step(self.obs))

    def track_agent_steps_per_s(self, name, n_threads):
        rate, self.obs = _rate(self.pop, self.world, self.obs, self.n, self.budget)
        return round(rate, 1)

    track_agent_steps_per_s.unit = "agent-steps/s"


class FaCoreGridScaling:
    """Grid foragers of side 10, 30, 50, 100 (100 to 10,000 states) on concentrated beliefs:
    microseconds per agent-step per core, which should grow clearly slower than the number
    of states. The models come from ``setup_cache`` (the large grids from the cache that
    ``benchmarks/throughput.py`` shares; a grid that cannot be built in the memory available
    is skipped)."""

    params = ([10, 30, 50, 100], [1, 2])
    param_names = ["side", "n_threads"]
    agents = {10: 5_000, 30: 1_000, 50: 500, 100: 100}
    budget = 0.5
    timeout = 900

    def setup_cache(self):
        return {side: grid_model(side) for side in self.params[0]}

    def setup(self, models, side, n_threads):
        gm = models[side]
        if gm is None:
            raise NotImplementedError(f"grid{side}: not enough memory to build the model")
        self.n = self.agents[side]
        self.threads = n_threads
        self.pop = Population(gm, self.n, seed=0, n_threads=n_threads)
        self.world = GridWorld(side, self.n, seed=1)
        self.obs = self.world.reset()
        for _ in range(WARMUP):
            self.obs = self.world.step(self.pop.step(self.obs))

    def time_step(self, models, side, n_threads):
        self.obs = self.world.step(self.pop.step(self.obs))

    def track_us_per_agent_step_per_core(self, models, side, n_threads):
        rate, self.obs = _rate(self.pop, self.world, self.obs, self.n, self.budget)
        return round(1e6 * self.threads / rate, 3)

    track_us_per_agent_step_per_core.unit = "us"

    def track_believed_states(self, models, side, n_threads):
        """Mean states per agent with belief above 1e-10 (the sparse-belief threshold)."""
        return float((self.pop.qs > 1e-10).sum(axis=1).mean())

    track_believed_states.unit = "states"
