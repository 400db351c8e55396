"""Command line of fa_core: ``python -m fa_core simulate [options]``.

``simulate`` runs a :class:`fa_core.Population` of one builtin model in a
vectorised environment and reports throughput, memory per agent and what the
agents did. All agents share one :class:`fa_core.GenerativeModel`; each owns
only its beliefs, policy posterior, action and random stream, and every step
of the whole population is one kernel call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from typing import Callable, Sequence

import numpy as np

from fa_core import builtin_models
from fa_core.envs import GridWorld, TMaze
from fa_core.model import GenerativeModel
from fa_core.population import Population, default_threads

#: Environment factory per model name: (n_agents, rng) -> environment.
ENVS: dict[str, Callable] = {
    "grid10": lambda n, rng: GridWorld(10, n, seed=rng),
    "grid30": lambda n, rng: GridWorld(30, n, seed=rng),
    "tmaze": lambda n, rng: TMaze(n, seed=rng),
}


class _Progress:
    """A progress bar rewritten in place on a terminal; every tenth of the run otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream=sys.stdout):
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.every = max(1, total // 10)

    def __call__(self, done: int) -> None:
        if self.tty:
            filled = self.WIDTH * done // self.total
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            end = "\n" if done == self.total else ""
            print(f"\r  [{bar}] step {done}/{self.total}", end=end, file=self.stream, flush=True)
        elif done % self.every == 0 or done == self.total:
            print(f"  step {done}/{self.total}", file=self.stream, flush=True)


def _rss_bytes() -> tuple[int, str]:
    """Resident set size of this process, and what kind of figure it is."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"), "current"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0, "unavailable"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "peak"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _behaviour(env) -> str:
    if isinstance(env, GridWorld):
        return (f"{env.found.mean():.0%} of agents found food "
                f"(mean {env.food_steps.mean():.2f} steps on food per agent)")
    got = env.rewards > 0
    return (f"{got.mean():.0%} of agents got reward; per agent {env.rewards.mean():.2f} rewards, "
            f"{env.losses.mean():.2f} losses")


def simulate(model: str = "grid30", n_agents: int = 10_000, steps: int = 100, seed: int = 0,
             threads: int | None = None, out=sys.stdout, workers: int | None = None,
             address: str | None = None) -> dict:
    """Run a population of a builtin model for ``steps`` steps and report on ``out``.

    With ``workers`` or ``address`` the population is a
    :class:`fa_core.distributed.ShardedPopulation` on Ray: a local cluster of
    ``workers`` CPUs, or the running cluster at ``address`` (``"auto"`` finds
    it), one shard per worker CPU (``threads`` CPUs per shard). Same seed,
    same run as in one process.

    Memory is measured with :mod:`tracemalloc` while the model and the
    population are built and take their first step (so every per-agent buffer
    exists); throughput is timed over the remaining steps, untraced.

    Returns
    -------
    dict
        The reported figures: ``agent_steps_per_s`` (None if ``steps == 1``),
        ``bytes_per_agent`` (None on Ray), ``model_bytes``, ``rss_bytes``, the ``population``
        and the environment ``env``.
    """
    env_seed, pop_seed = np.random.SeedSequence(seed).spawn(2)
    env = ENVS[model](n_agents, np.random.default_rng(env_seed))
    arrays = builtin_models.get(model)
    sharded = workers is not None or address is not None
    if sharded:  # started before tracing: Ray's own allocations are not the agents'
        import ray
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=None if address else workers,
                     include_dashboard=False, logging_level="ERROR")
        threads = threads or 1
        where = (f"Ray cluster {address or 'local'}, {workers or 'all'} worker CPU(s), "
                 f"{threads} per shard")
    else:
        threads = default_threads() if threads is None else threads
        where = f"{threads} thread(s)"

    print(f"fa_core simulate: {model}, {n_agents:,} agents, {steps} steps, seed {seed}, "
          f"{where}", file=out)
    progress = _Progress(steps, out)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        gm = GenerativeModel(**arrays)
        model_bytes = tracemalloc.get_traced_memory()[0] - base
        if sharded:
            from fa_core.distributed import ShardedPopulation
            pop = ShardedPopulation(gm, n_agents, seed=pop_seed, cpus_per_shard=threads,
                                    n_shards=None if workers is None else workers // threads
                                    or 1)
        else:
            pop = Population(gm, n_agents, seed=pop_seed, n_threads=threads)
        t_build = time.perf_counter() - t0
        print(f"  {gm!r}; population built in {t_build:.2f} s (traced)", file=out)
        obs = env.step(pop.step(env.reset()))
        progress(1)
        agent_bytes = tracemalloc.get_traced_memory()[0] - base - model_bytes
    finally:
        tracemalloc.stop()

    elapsed = run(pop, env, obs, steps - 1, lambda k: progress(k + 1))
    rate = n_agents * (steps - 1) / elapsed if steps > 1 and elapsed > 0 else None
    rss, rss_kind = _rss_bytes()

    if rate is None:
        print("throughput: n/a (needs --steps >= 2; the first step is traced for memory)", file=out)
    else:
        print(f"throughput: {rate:,.0f} agent-steps/s "
              f"({n_agents * (steps - 1):,} agent-steps in {elapsed:.2f} s, steps 2-{steps})", file=out)
    if sharded:  # the agents live in the shards' processes, out of tracemalloc's sight
        agent_bytes = None
        print(f"memory: agents live in {pop.n_shards} Ray shard(s) {pop.shard_sizes}; "
              f"shared model {_fmt_bytes(model_bytes)}, driver RSS {_fmt_bytes(rss)} "
              f"({rss_kind})", file=out)
    else:
        print(f"memory: {_fmt_bytes(agent_bytes / n_agents)} per agent (tracemalloc), "
              f"shared model {_fmt_bytes(model_bytes)}, process RSS {_fmt_bytes(rss)} "
              f"({rss_kind})", file=out)
    print(f"behaviour: {_behaviour(env)}", file=out)
    return {"agent_steps_per_s": rate,
            "bytes_per_agent": None if agent_bytes is None else agent_bytes / n_agents,
            "model_bytes": model_bytes, "rss_bytes": rss, "population": pop, "env": env}


def run(pop: Population, env, obs: np.ndarray, steps: int,
        progress: Callable[[int], None] | None = None) -> float:
    """Step ``pop`` and ``env`` together ``steps`` times from ``obs``; return seconds spent."""
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        obs = env.step(pop.step(obs))
        if progress is not None:
            progress(k)
    return time.perf_counter() - t0


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fa_core",
        description="fa_core command line: compiled float32 active-inference agents.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    sim = sub.add_parser(
        "simulate", help="run many agents of a builtin model in its environment",
        description="Run N agents sharing one generative model in a vectorised environment; "
                    "each step every agent infers states, infers policies and samples an action. "
                    "Reports agent-steps per second, memory per agent and what the agents did.")
    sim.add_argument("--model", choices=sorted(ENVS), default="grid30",
                     help="grid10 / grid30: forager on a 10x10 / 30x30 grid looking for food; "
                          "tmaze: the classic T-maze (default: %(default)s)")
    sim.add_argument("--agents", type=_int_at_least(1), default=10_000, metavar="N",
                     help="number of agents (default: %(default)s)")
    sim.add_argument("--steps", type=_int_at_least(1), default=100, metavar="T",
                     help="number of time steps (default: %(default)s)")
    sim.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S",
                     help="seed of the environment and of every agent (default: %(default)s)")
    sim.add_argument("--threads", type=_int_at_least(1), default=None, metavar="K",
                     help="threads stepping the agents (default: all cores available; "
                          "with Ray: threads per shard, default 1)")
    sim.add_argument("--workers", type=_int_at_least(1), default=None, metavar="W",
                     help="run on a local Ray cluster of W worker CPUs, one shard each "
                          "(needs fa_core[ray]); same seed, same run")
    sim.add_argument("--address", default=None, metavar="ADDR",
                     help="run on the existing Ray cluster at ADDR ('auto': the one this "
                          "machine belongs to), one shard per cluster CPU unless --workers")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        simulate(args.model, args.agents, args.steps, args.seed, args.threads,
                 workers=args.workers, address=args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
