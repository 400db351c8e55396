"""Agent-steps per second of a Ray-sharded population on the 30x30 grid forager.

    python benchmarks/distributed.py [--agents N] [--steps T] [--workers 1,2]

Starts a local Ray cluster with as many CPUs as the largest worker count and
steps ``fa_core.distributed.ShardedPopulation`` (one shard per worker, one
thread per shard) in the grid30 environment, timing ``step`` calls only (the
environment runs on the driver, untimed). Prints, per worker count:

- agent-steps/s, and the scaling efficiency ``rate(W) / (W * rate(1))``;
- per-shard throughput: agents per shard * steps / seconds the shard spent
  inside ``Population.step`` (measured in the actor);
- Ray's per-step overhead two ways: the wall time of a step minus the
  slowest shard's compute in that step, and the wall time of a step of
  1-agent shards (task round trips with nothing to compute).

It ends with an estimate for 16 machines from those figures (see
``estimate``). Also prints a single-process ``Population`` (1 thread) for
reference, with 1 thread and with as many threads as the largest worker
count: how much the machine's cores give without Ray. Figures are medians over
steps; on a shared machine expect noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ray  # noqa: E402

import fa_core  # noqa: E402
from fa_core import builtin_models  # noqa: E402
from fa_core.distributed import ShardedPopulation  # noqa: E402
from fa_core.envs import GridWorld  # noqa: E402
from fa_core.population import check_obs  # noqa: E402


def timed_steps(pop, n: int, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Wall times of ``steps`` calls of ``pop.step`` after one warm-up step, and for a sharded
    population the seconds each shard computed in each step (steps x shards)."""
    env = GridWorld(30, n, seed=np.random.default_rng(seed))
    obs = env.step(pop.step(env.reset()))
    sharded = isinstance(pop, ShardedPopulation)
    before = np.array(pop.compute_seconds()) if sharded else None
    times, compute = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        actions = pop.step(obs)
        times.append(time.perf_counter() - t0)
        if sharded:  # untimed round trip
            now = np.array(pop.compute_seconds())
            compute.append(now - before)
            before = now
        obs = env.step(actions)
    return np.array(times), np.array(compute)


def driver_seconds_per_agent(sp: ShardedPopulation, obs: np.ndarray, repeat: int = 20) -> float:
    """The driver's own serial work per agent in a step: checking obs, splitting it by
    shard and assembling the actions (serialisation and transport are in the round trips)."""
    actions = sp.gather("actions")
    parts = [actions[m] for m in sp._members]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        checked = check_obs(sp.model, sp.n_agents, obs)
        [checked[m] for m in sp._members]
        sp._assemble(parts)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / sp.n_agents


def estimate(machines: int, shards_per_machine: int, agents_per_shard: int,
             shard_rate: float, o_fixed: float, o_per_shard: float, per_agent: float) -> float:
    """Agent-steps/s of ``machines * shards_per_machine`` shards of ``agents_per_shard`` agents.

    A step takes the shards' compute (in parallel), plus Ray's round trips
    (``o_fixed + o_per_shard * shards``, from 1-agent shards) plus the
    driver's per-agent work (checking, splitting and assembling arrays),
    which is serial and grows with the whole population.
    Network transfer between machines is not measured here: it adds about
    (obs + action bytes per agent) / bandwidth per agent to ``per_agent``.
    """
    shards = machines * shards_per_machine
    n = shards * agents_per_shard
    t = agents_per_shard / shard_rate + o_fixed + o_per_shard * shards + per_agent * n
    return n / t


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--tiny-steps", type=int, default=60)
    parser.add_argument("--cores-per-machine", type=int, default=os.cpu_count() or 1,
                        help="shards per machine in the 16-machine estimate")
    args = parser.parse_args(argv)
    workers = sorted({int(w) for w in args.workers.split(",")})
    n, steps = args.agents, args.steps

    gm = fa_core.GenerativeModel(**builtin_models.get("grid30"))
    print(f"grid30 forager: {gm!r}; {n:,} agents, {steps} timed steps, "
          f"{os.cpu_count()} cores on this machine")
    t0 = time.perf_counter()
    ray.init(num_cpus=max(workers), include_dashboard=False, logging_level="ERROR")
    print(f"ray {ray.__version__}: local cluster of {max(workers)} CPUs started in "
          f"{time.perf_counter() - t0:.1f} s")

    print()
    for threads in sorted({1, max(workers)}):  # what the machine's cores give without Ray
        times, _ = timed_steps(fa_core.Population(gm, n, seed=0, n_threads=threads), n, steps)
        print(f"single process, {threads} thread(s) (no Ray): {n / np.median(times):,.0f} "
              f"agent-steps/s")

    print(f"\n{'workers':>7} {'agent-steps/s':>14} {'efficiency':>10} {'per-shard/s':>12} "
          f"{'step ms':>8} {'overhead ms':>11} {'tiny-step ms':>12}")
    rows = {}
    for w in workers:
        sp = ShardedPopulation(gm, n, n_shards=w, seed=0, cpus_per_shard=1)
        times, compute = timed_steps(sp, n, steps)
        per_agent = driver_seconds_per_agent(sp, GridWorld(30, n, seed=1).reset())
        sp.shutdown()
        tiny = ShardedPopulation(gm, w, n_shards=w, seed=0, cpus_per_shard=1)
        tiny_times, _ = timed_steps(tiny, w, args.tiny_steps)
        tiny.shutdown()
        step = np.median(times)
        rate = n / step
        shard_rate = (n / w) / np.median(compute)
        overhead = np.median(times - compute.max(axis=1))  # outside the slowest shard
        rows[w] = dict(rate=rate, step=step, shard_rate=shard_rate, overhead=overhead,
                       tiny=np.median(tiny_times), per_agent=per_agent)
        eff = rate / (w * rows[workers[0]]["rate"] / workers[0])
        print(f"{w:>7} {rate:>14,.0f} {eff:>10.0%} {shard_rate:>12,.0f} {1e3 * step:>8.1f} "
              f"{1e3 * overhead:>11.2f} {1e3 * rows[w]['tiny']:>12.2f}")
    ray.shutdown()
    for w, r in rows.items():  # where the efficiency went: slower shards, or Ray
        relative = r["shard_rate"] / rows[workers[0]]["shard_rate"]
        print(f"  {w} worker(s): each shard computes at {relative:.0%} of the rate with "
              f"{workers[0]}; Ray's overhead is {r['overhead'] / r['step']:.1%} of the step")

    lo, hi = workers[0], workers[-1]
    o_per_shard = max(0.0, (rows[hi]["tiny"] - rows[lo]["tiny"]) / (hi - lo)) if hi > lo else 0.0
    o_fixed = rows[lo]["tiny"] - o_per_shard * lo
    per_agent = max(r["per_agent"] for r in rows.values())
    # per-shard compute with every worker busy (the machine's cores shared: conservative)
    # and alone (optimistic: what a shard does when nothing else competes for its core)
    rates = {"busy": rows[hi]["shard_rate"], "alone": rows[lo]["shard_rate"]}
    print(f"\nRay per-step overhead: {1e3 * o_fixed:.2f} ms + {1e3 * o_per_shard:.2f} ms per shard "
          f"(1-agent shards), plus {1e9 * per_agent:.0f} ns per agent on the driver "
          f"(check, split, assemble); per-shard compute {rates['busy']:,.0f} agent-steps/s with "
          f"{hi} workers busy, {rates['alone']:,.0f} with {lo}")
    per_machine = args.cores_per_machine
    print(f"\n16 machines x {per_machine} shards, estimate (busy / alone per-shard rate; network "
          f"transfer not included):")
    for agents_per_shard in (n // hi, 100_000, 1_000_000):
        total = 16 * per_machine * agents_per_shard
        est = {k: estimate(16, per_machine, agents_per_shard, r, o_fixed, o_per_shard, per_agent)
               for k, r in rates.items()}
        eff = est["busy"] / (16 * per_machine * rates["busy"])
        print(f"  {agents_per_shard:>9,} agents per shard ({total:>11,} agents): "
              f"{est['busy']:>12,.0f} / {est['alone']:>12,.0f} agent-steps/s "
              f"({eff:.0%} of no-overhead)")
    io_bytes = 4 * (gm.num_modalities + gm.num_factors)
    print(f"  driver ceilings, whatever the number of machines: {1 / max(per_agent, 1e-12):,.0f} "
          f"agent-steps/s from its serial per-agent work; {io_bytes} bytes per agent-step "
          f"through its network link ({1.25e9 / io_bytes:,.0f} agent-steps/s at 10 Gbit/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
