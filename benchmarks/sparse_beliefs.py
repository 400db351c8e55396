"""Sparse beliefs: Population.step cost on the grid forager, by size.

After a location cue a forager's belief sits on one cell, so state inference
computes its posterior over the cells its prediction reaches
(``fa_core._states.sparse_states``) and policy evaluation rolls it forward over
that cell only (``fa_core._policies.sparse_beliefs``); ``--dense`` turns both
paths off for comparison in the same build. Prints agent-steps per second of
``Population.step`` alone (no world simulation), one thread, best of
``--repeats``, and with ``--stages`` the median microseconds per agent of each
stage (infer_states, infer_policies, sample_action) on agents that walk the grid
and see their true cell. For exact instruction counts run it under
callgrind, e.g.::

    valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect='*population_stages*' \\
        "$(python -c 'import sys; print(sys.executable)')" \\
        benchmarks/sparse_beliefs.py --sizes 30 --agents 64 --steps 3 --repeats 1

and divide "Collected" by agents * steps * (repeats + 1).

Usage::

    python benchmarks/sparse_beliefs.py                 # grid 10, 30, 50
    python benchmarks/sparse_beliefs.py --dense         # the dense paths
    python benchmarks/sparse_beliefs.py --stages --sizes 10,30,50,100 --agents 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fa_core
import fa_core._policies as pol
import fa_core._states as states
from fa_core import builtin_models
from fa_core.population import Population


def run(size: int, n: int, steps: int, repeats: int, policy_len: int) -> float:
    """Best agent-steps/s of ``steps`` Population steps on a ``size`` grid."""
    gm = fa_core.GenerativeModel(**builtin_models.grid_forager(size), policy_len=policy_len)
    pop = Population(gm, n, n_threads=1, seed=0)
    rng = np.random.default_rng(0)
    obs = [np.stack([rng.integers(0, size * size, n), np.zeros(n, int)], 1)
           for _ in range(steps)]
    pop.step(obs[0])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for o in obs:
            pop.step(o)
        best = min(best, time.perf_counter() - t0)
    return steps * n / best


def stages(size: int, n: int, steps: int) -> dict[str, float]:
    """Median microseconds per agent of each stage over ``steps`` steps (after 4 warm-up
    steps) of ``n`` agents walking a ``size`` grid and seeing their true cell and reward."""
    gm = fa_core.GenerativeModel(**builtin_models.grid_forager(size))
    pop = Population(gm, n, n_threads=1, seed=0)
    S = size * size
    rows, cols = np.divmod(np.arange(S), size)
    nxt = np.stack([np.clip(rows + dr, 0, size - 1) * size + np.clip(cols + dc, 0, size - 1)
                    for dr, dc in builtin_models.GRID_ACTIONS], 1)
    food = np.zeros(S, bool)
    for r, c in builtin_models.default_reward_locations(size):
        food[r * size + c] = True
    loc = np.random.default_rng(0).integers(0, S, n)
    times: dict[str, list[float]] = {"infer_states": [], "infer_policies": [],
                                     "sample_action": []}
    for k in range(4 + steps):
        obs = np.stack([loc, food[loc]], 1).astype(np.int64)
        t0 = time.perf_counter()
        pop.infer_states(obs)
        t1 = time.perf_counter()
        pop.infer_policies()
        t2 = time.perf_counter()
        a = np.asarray(pop.sample_action()).reshape(n, -1)[:, 0].astype(int)
        t3 = time.perf_counter()
        if k >= 4:
            for name, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[name].append(dt)
        loc = nxt[loc, a]
    return {name: float(np.median(v)) / n * 1e6 for name, v in times.items()}


def main() -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,30,50", help="grid sides, comma-separated")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--policy-len", type=int, default=1)
    p.add_argument("--dense", action="store_true", help="turn the sparse paths off")
    p.add_argument("--stages", action="store_true",
                   help="per-stage microseconds per agent instead of Population.step")
    args = p.parse_args()
    pol.sparse_beliefs(not args.dense)
    states.sparse_states(not args.dense)
    for size in (int(s) for s in args.sizes.split(",")):
        if args.stages:
            us = stages(size, args.agents, args.steps)
            print(f"grid{size} ({size * size} states, {'dense' if args.dense else 'sparse'}): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in us.items())
                  + f" us/agent, total {sum(us.values()):.2f}")
            continue
        rate = run(size, args.agents, args.steps, args.repeats, args.policy_len)
        print(f"grid{size} ({size * size} states): {rate:,.0f} agent-steps/s "
              f"({'dense' if args.dense else 'sparse'} path)")


if __name__ == "__main__":
    main()
