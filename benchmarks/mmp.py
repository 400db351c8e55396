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


def time_steps(agent, observations, warmup: int, repeats: int) -> float:
    """Median seconds per step over ``repeats`` steps after ``warmup`` steps (gc paused)."""
    times = []
    gc.collect()
    gc.disable()
    try:
        for k in range(warmup + repeats):
            obs = observations[k % len(observations)]
            t0 = time.perf_counter()
            agent.infer_states(obs)
            agent.infer_policies()
            agent.sample_action()
            if k >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    args = ap.parse_args(argv)
    reps = QUICK if args.quick else REPEATS
    pymdp_mmp.print = lambda *a, **k: None  # silence pymdp's debug prints
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


if __name__ == "__main__":
    main()
