"""Sparse beliefs in policy evaluation: Population.step cost on the grid forager, by size.

After a location cue a forager's belief sits on one cell, so policy evaluation
rolls it forward over that cell only (``fa_core._policies.sparse_beliefs``);
``--dense`` turns that path off for comparison in the same build. Prints
agent-steps per second of ``Population.step`` alone (no world simulation), one
thread, best of ``--repeats``. For exact instruction counts run it under
callgrind, e.g.::

    valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect='*population_stages*' \\
        "$(python -c 'import sys; print(sys.executable)')" \\
        benchmarks/sparse_beliefs.py --sizes 30 --agents 64 --steps 3 --repeats 1

and divide "Collected" by agents * steps * (repeats + 1).

Usage::

    python benchmarks/sparse_beliefs.py                 # grid 10, 30, 50
    python benchmarks/sparse_beliefs.py --dense         # the dense path
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fa_core
import fa_core._policies as pol
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


def main() -> None:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,30,50", help="grid sides, comma-separated")
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--policy-len", type=int, default=1)
    p.add_argument("--dense", action="store_true", help="turn the sparse path off")
    args = p.parse_args()
    pol.sparse_beliefs(not args.dense)
    for size in (int(s) for s in args.sizes.split(",")):
        rate = run(size, args.agents, args.steps, args.repeats, args.policy_len)
        print(f"grid{size} ({size * size} states): {rate:,.0f} agent-steps/s "
              f"({'dense' if args.dense else 'sparse'} path)")


if __name__ == "__main__":
    main()
