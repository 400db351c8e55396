"""Marginal message passing: time per step of pymdp's MMP agent and fa_core's, one run.

A step is ``infer_states`` + ``infer_policies`` + ``sample_action`` with
``inference_algo="MMP"``. Both agents run in this process on the same
builtin models and observation sequence; timing starts once the inference
window is full (``inference_horizon`` warm-up steps and more), so every timed
step does the full window's work. Prints a Markdown table of medians and the
ratio pymdp / fa_core.

pymdp's MMP prints its likelihood messages on every iteration; the script
replaces ``print`` in ``pymdp.legacy.algos.mmp`` with a no-op, so pymdp is timed
without that formatting cost (in its favour).

Run from the repository root::

    python benchmarks/mmp.py            # default repeats
    python benchmarks/mmp.py --quick    # a quick look

A second table times ``fa_core.Population(..., inference_algo="MMP")`` (every
agent's step in one compiled call over agents, OpenMP threads) against the
same agents stepped one by one as ``fa_core.Agent`` and as pymdp's agent:
agent-steps per second and microseconds per agent-step (builtin tmaze,
``policy_len=2``, ``inference_horizon=3``).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

try:
    from fa_core import builtin_models
except ImportError:  # run from a checkout without installing: use the tree
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fa_core import builtin_models
import fa_core
import numpy as np

import pymdp.legacy.algos.mmp as pymdp_mmp
from pymdp.legacy.agent import Agent as PymdpAgent

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_pymdp import observation_sequence  # noqa: E402

#: (label, builtin model, policy_len, inference_horizon, use_BMA, policy_sep_prior)
CASES = (
    ("tmaze, H=3, BMA", "tmaze", 1, 3, True, False),
    ("tmaze, H=5, sep. prior", "tmaze", 1, 5, False, True),
    ("grid10, H=4, BMA", "grid10", 1, 4, True, False),
    ("grid10, H=3, policy_len=2", "grid10", 2, 3, True, False),
)
#: Timed steps (pymdp, fa_core).
REPEATS, QUICK = (20, 500), (5, 100)
#: Population case: (builtin model, policy_len, inference_horizon), agents, timed steps
POP_CASE = ("tmaze", 2, 3)
POP_AGENTS, POP_STEPS, POP_QUICK = 256, 40, 10
#: wall time, and CPU time of the process (on a shared machine wall time includes waiting)
CLOCKS = (time.perf_counter, time.process_time)


def time_steps(agent, observations, warmup: int, repeats: int, clock=time.perf_counter) -> float:
    """Median seconds per step over ``repeats`` steps after ``warmup`` steps (gc paused)."""
    times = []
    gc.collect()
    gc.disable()
    try:
        for k in range(warmup + repeats):
            obs = observations[k % len(observations)]
            t0 = clock()
            agent.infer_states(obs)
            agent.infer_policies()
            agent.sample_action()
            if k >= warmup:
                times.append(clock() - t0)
    finally:
        gc.enable()
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    ap.add_argument("--population-only", action="store_true",
                    help="only the Population MMP table")
    args = ap.parse_args(argv)
    reps = QUICK if args.quick else REPEATS
    pymdp_mmp.print = lambda *a, **k: None  # silence pymdp's debug prints
    if args.population_only:
        population_table(args.quick)
        return
    print("| model | pymdp step | fa_core step | ratio |")
    print("|---|---|---|---|")
    for label, name, policy_len, horizon, bma, sep in CASES:
        kwargs = builtin_models.get(name)
        obs = observation_sequence(kwargs, 256)
        kw = dict(kwargs, inference_algo="MMP", policy_len=policy_len, inference_horizon=horizon,
                  use_BMA=bma, policy_sep_prior=sep)
        t_ref = time_steps(PymdpAgent(**kw), obs, horizon + 1, reps[0])
        t_fa = time_steps(fa_core.Agent(**kw, seed=0), obs, horizon + 1, reps[1])
        print(f"| {label} | {t_ref * 1e3:.2f} ms | {t_fa * 1e6:.1f} us | {t_ref / t_fa:.0f}x |",
              flush=True)
    population_table(args.quick)


def time_population(pop, observations, warmup: int, repeats: int,
                    clock=time.perf_counter) -> float:
    """Median seconds per population step (every agent) after ``warmup`` steps."""
    n = pop.n_agents
    times = []
    gc.collect()
    gc.disable()
    try:
        for k in range(warmup + repeats):
            # every agent sees what the timed Agent sees: the same work per agent-step (MMP's
            # cost depends on the observations: near-certain beliefs reach float32 subnormals)
            obs = np.tile(np.asarray(observations[k % len(observations)], np.int64), (n, 1))
            t0 = clock()
            pop.step(obs)
            if k >= warmup:
                times.append(clock() - t0)
    finally:
        gc.enable()
    return statistics.median(times)


def population_table(quick: bool) -> None:
    """Population MMP vs Agent MMP vs pymdp: agent-steps/s and us per agent-step."""
    name, policy_len, horizon = POP_CASE
    kwargs = builtin_models.get(name)
    obs = observation_sequence(kwargs, 256)
    kw = dict(kwargs, inference_algo="MMP", policy_len=policy_len, inference_horizon=horizon)
    steps = POP_QUICK if quick else POP_STEPS
    gm = fa_core.GenerativeModel(**kwargs, policy_len=policy_len)
    rows = []
    for threads in sorted({1, fa_core.population.default_threads()}):
        times = []
        for clock in CLOCKS:
            pop = fa_core.Population(gm, POP_AGENTS, seed=0, n_threads=threads,
                                     inference_algo="MMP", inference_horizon=horizon)
            times.append(time_population(pop, obs, horizon + 1, steps, clock) / POP_AGENTS)
        rows.append((f"Population MMP, {POP_AGENTS} agents, {threads} thread(s)", *times))
    # the same timed steps for every runner (their cost depends on the observations)
    for label, make in (("fa_core.Agent MMP, one by one", lambda: fa_core.Agent(**kw, seed=0)),
                        ("pymdp legacy Agent MMP, one by one", lambda: PymdpAgent(**kw))):
        rows.append((label, *[time_steps(make(), obs, horizon + 1, steps, clock)
                              for clock in CLOCKS]))
    print()
    print(f"Population: {name}, policy_len={policy_len}, inference_horizon={horizon}; wall time "
          "and process CPU time (all threads) per agent-step, medians")
    print()
    print("| runner | agent-steps/s (wall) | us per agent-step (wall) | us per agent-step (CPU) "
          "| vs pymdp (CPU) |")
    print("|---|---|---|---|---|")
    for label, wall, cpu in rows:
        print(f"| {label} | {1.0 / wall:,.0f} | {wall * 1e6:.1f} | {cpu * 1e6:.1f} "
              f"| {rows[-1][2] / cpu:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
