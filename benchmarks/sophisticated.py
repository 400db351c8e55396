"""Sophisticated inference: pymdp's numpy Agent against fa_core's Agent, in one run.

For each model and search horizon both agents (``sophisticated=True``,
default pruning thresholds) take the same first observation, then
``infer_policies`` (the tree search) is timed repeatedly from those beliefs;
the search does not change the beliefs, so every repeat does the same work.
Prints a Markdown table of medians and the ratio pymdp / fa_core, then checks
the project target (at least 100x at ``si_horizon=3``).

A second table times whole steps (``infer_states``, ``infer_policies``,
``sample_action``) in agent-steps per second, in the same run: a
``fa_core.Population(sophisticated=True)`` of ``--population`` agents (one
thread, then every core), the same number of ``fa_core.Agent(sophisticated=True)``
stepped one by one, and one pymdp agent (its steps per second are the
agent-steps per second of pymdp agents stepped one by one). Every step starts
from a reset (no previous action, the prior ``D``) with the model's first
observation, so all three do the same searches.

Run from the repository root::

    python benchmarks/sophisticated.py              # horizons 2, 3, 4 (about a minute)
    python benchmarks/sophisticated.py --quick      # one pymdp repeat per case
    python benchmarks/sophisticated.py --horizons 3 --models tmaze
    python benchmarks/sophisticated.py --population 0   # the search table only

The models are the T-maze (:func:`fa_core.builtin_models.tmaze`, uncertain
context at the start: the widest tree) and a 4 x 4 grid forager
(:func:`fa_core.builtin_models.grid_forager`); pymdp's search is exponential
in the horizon, so larger grids take minutes per call there.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import numpy as np

try:
    import fa_core
except ImportError:  # run from a checkout without installing: use the tree
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fa_core
from fa_core import builtin_models

from pymdp.legacy.agent import Agent as PymdpAgent

#: model name -> (builder, first observation)
MODELS = {
    "tmaze": (builtin_models.tmaze, [0, 0, 0]),
    "grid4": (lambda: builtin_models.grid_forager(4), [0, 0]),
}
#: timed repeats per horizon, (pymdp, fa_core); pymdp's h=4 T-maze search takes seconds
REPEATS = {2: (7, 300), 3: (5, 200), 4: (3, 100)}
QUICK_REPEATS = {2: (1, 50), 3: (1, 30), 4: (1, 20)}
TARGET_HORIZON, TARGET_RATIO = 3, 100.0


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(name: str, horizon: int, repeats: tuple[int, int]) -> tuple[float, float]:
    build, obs = MODELS[name]
    kw = build()
    ref = PymdpAgent(**copy.deepcopy(kw), sophisticated=True, si_horizon=horizon)
    fa = fa_core.Agent(**copy.deepcopy(kw), sophisticated=True, si_horizon=horizon)
    ref.infer_states(list(obs))
    fa.infer_states(list(obs))
    fa.infer_policies()  # warm-up: builds the dense copy and the scratch once
    return median_seconds(ref.infer_policies, repeats[0]), median_seconds(fa.infer_policies,
                                                                          repeats[1])


def agent_steps_per_second(step, n_agents: int, steps: int) -> float:
    """``n_agents * steps / seconds`` of ``steps`` calls of ``step`` (after one warm-up call)."""
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return n_agents * steps / (time.perf_counter() - t0)


def run_population_case(name: str, horizon: int, n_agents: int, steps: tuple[int, int],
                        threads: list[int]) -> dict:
    """Agent-steps per second of a sophisticated Population, Agents and pymdp (see module doc)."""
    build, obs = MODELS[name]
    kw = build()
    out = {}
    gm = fa_core.GenerativeModel(**copy.deepcopy(kw))
    batch = np.array([obs] * n_agents)
    for t in threads:
        pop = fa_core.Population(gm, n_agents, seed=0, n_threads=t, sophisticated=True,
                                 si_horizon=horizon)
        def pop_step(pop=pop):
            pop.reset()
            pop.step(batch)
        out[f"Population, {t} thread{'s' if t > 1 else ''}"] = agent_steps_per_second(
            pop_step, n_agents, steps[1])
    agents = [fa_core.Agent(model=gm, sophisticated=True, si_horizon=horizon, seed=i)
              for i in range(n_agents)]

    def agents_step():
        for a in agents:
            a.reset()
            a.infer_states(list(obs))
            a.infer_policies()
            a.sample_action()
    out["Agent, one by one"] = agent_steps_per_second(agents_step, n_agents,
                                                      max(1, steps[1] // 4))
    ref = PymdpAgent(**copy.deepcopy(kw), sophisticated=True, si_horizon=horizon)

    def ref_step():
        ref.reset()
        ref.infer_states(list(obs))
        ref.infer_policies()
        ref.sample_action()
    out["pymdp, one by one"] = agent_steps_per_second(ref_step, 1, steps[0])
    return out


def fmt(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--horizons", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="one pymdp repeat per case")
    parser.add_argument("--population", type=int, default=256, metavar="N",
                        help="agents in the Population table (0: no such table)")
    args = parser.parse_args(argv)
    table = QUICK_REPEATS if args.quick else REPEATS
    rows, missed = [], []
    for name in args.models:
        for h in args.horizons:
            reps = table.get(h, (1, 10))
            print(f"{name} si_horizon={h} ...", file=sys.stderr, flush=True)
            t_ref, t_fa = run_case(name, h, reps)
            ratio = t_ref / t_fa
            rows.append((name, h, t_ref, t_fa, ratio, reps))
            if h == TARGET_HORIZON and ratio < TARGET_RATIO:
                missed.append((name, ratio))
    print("Sophisticated inference, `infer_policies` (the tree search), median per call\n")
    print("| model | si_horizon | pymdp | fa_core | pymdp / fa_core | repeats (pymdp, fa_core) |")
    print("|---|---|---|---|---|---|")
    for name, h, t_ref, t_fa, ratio, reps in rows:
        print(f"| {name} | {h} | {fmt(t_ref)} | {fmt(t_fa)} | {ratio:.0f}x "
              f"| {reps[0]}, {reps[1]} |")
    if TARGET_HORIZON in args.horizons:
        verdict = "met" if not missed else f"MISSED for {missed}"
        print(f"\nTarget: at least {TARGET_RATIO:.0f}x at si_horizon={TARGET_HORIZON}: {verdict}")
    if args.population > 0:
        threads = sorted({1, fa_core.population.default_threads()})
        print(f"\nWhole steps, agent-steps per second ({args.population} agents; pymdp: one "
              f"agent)\n")
        print("| model | si_horizon | " + " | ".join(
            ["Population, 1 thread"] + [f"Population, {t} threads" for t in threads[1:]]
            + ["Agent, one by one", "pymdp, one by one", "Population (all threads) / pymdp"])
            + " |")
        print("|---|---|" + "---|" * (len(threads) + 3))
        for name in args.models:
            for h in args.horizons:
                reps = table.get(h, (1, 10))
                print(f"{name} si_horizon={h}: population ...", file=sys.stderr, flush=True)
                res = run_population_case(name, h, args.population, (reps[0], 8), threads)
                vals = list(res.values())
                print(f"| {name} | {h} | " + " | ".join(f"{v:,.0f}" for v in vals)
                      + f" | {vals[len(threads) - 1] / vals[-1]:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
