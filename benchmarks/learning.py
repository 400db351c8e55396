"""Learning populations: memory per learning agent and agent-steps per second, against pymdp.

One learning agent-step is ``infer_states`` + ``update_B(qs_prev)`` + ``update_A(obs)``
+ ``infer_policies`` + ``sample_action``. Compared on grid30 (900 locations; ``A``
and ``B`` sparse) with Dirichlet counts ``pA = 10 A + 1`` and ``pB = 10 B + 1`` on
the non-zeros of ``A`` / ``B`` (so the model keeps their sparsity pattern):

- ``fa_core.Population`` of N agents learning A and B every step (``pop.update_A``,
  ``pop.update_B``), with 1 and 2 threads, and the same population not learning
  (the same run, so the cost of learning is read off directly);
- pymdp's numpy Agent (``pymdp.legacy.agent.Agent``) with the same counts, a few
  agents for a few steps (it is slow), extrapolated to N agents stepped one after
  the other: its agent-steps/s does not depend on N.

Memory per learning agent: for fa_core, what tracemalloc sees allocated by the
population's learned rows and per-agent models in its first two learning steps
(the first learns A, the second B too), divided by N, and
``Population.memory_report()``'s private parameters per agent; for pymdp,
tracemalloc of building one agent from its own model copy and taking one
learning step.

Run from the repository root after building the extension::

    python benchmarks/learning.py               # N = 2000, about a minute
    python benchmarks/learning.py --agents 500 --pymdp-steps 2
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from fa_core import GenerativeModel, Population, builtin_models  # noqa: E402
from fa_core.envs import GridWorld  # noqa: E402


def _obj(arrays) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def model_arrays() -> dict:
    """grid30 in pymdp's layout, with counts on the non-zeros of A and B."""
    d = dict(builtin_models.get("grid30"))
    d["pA"] = _obj([(10.0 * a + 1.0) * (a > 0) for a in d["A"]])
    d["pB"] = _obj([(10.0 * b + 1.0) * (b > 0) for b in d["B"]])
    return d


def learning_step(pop: Population, obs, prev):
    pop.infer_states(obs)
    if prev is not None:
        pop.update_B(prev)
    pop.update_A(obs)
    pop.infer_policies()
    return pop.sample_action()


def bench_fa(gm, n: int, threads: int, steps: int, learn: bool) -> tuple[float, float, float]:
    """(agent-steps/s, learned bytes per agent by tracemalloc, memory_report per agent)."""
    pop = Population(gm, n, seed=0, n_threads=threads)
    env = GridWorld(30, n, seed=1)
    obs = env.reset()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    prev = None
    if learn:  # the first two steps make every agent's rows (A, then B) and model
        for _ in range(2):
            obs = env.step(learning_step(pop, obs, prev))
            prev = pop.qs.copy()
    traced = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    report = pop.memory_report().private_params / n
    t0 = time.perf_counter()
    for _ in range(steps):
        if learn:
            actions = learning_step(pop, obs, prev)
            prev = pop.qs.copy()
        else:
            actions = pop.step(obs)
        obs = env.step(actions)
    dt = time.perf_counter() - t0
    return n * steps / dt, traced, report


def bench_pymdp(d: dict, n_agents: int, steps: int) -> tuple[float, float]:
    """(agent-steps/s, bytes per agent) of pymdp's numpy Agent learning A and B."""
    from pymdp.legacy.agent import Agent

    keys = ("A", "B", "C", "D", "pA", "pB")
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    one = Agent(**copy.deepcopy({k: d[k] for k in keys}))
    env = GridWorld(30, 1, seed=1)
    obs = env.reset()
    qs = one.infer_states(list(obs[0]))
    one.update_A(list(obs[0]))
    one.infer_policies()
    one.sample_action()
    mem = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    agents = [Agent(**copy.deepcopy({k: d[k] for k in keys})) for _ in range(n_agents)]
    env = GridWorld(30, n_agents, seed=1)
    obs = env.reset()
    prev = [None] * n_agents
    t0 = time.perf_counter()
    for _ in range(steps):
        actions = np.zeros((n_agents, 1), np.int64)
        for i, a in enumerate(agents):
            qs = a.infer_states(list(obs[i]))
            if prev[i] is not None:
                a.update_B(prev[i])
            a.update_A(list(obs[i]))
            a.infer_policies()
            actions[i] = a.sample_action().astype(np.int64)
            prev[i] = copy.deepcopy(qs)
        obs = env.step(actions)
    dt = time.perf_counter() - t0
    return n_agents * steps / dt, mem


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pymdp-agents", type=int, default=2)
    ap.add_argument("--pymdp-steps", type=int, default=3)
    args = ap.parse_args(argv)
    d = model_arrays()
    gm = GenerativeModel(A=d["A"], B=d["B"], C=d["C"], D=d["D"], pA=d["pA"], pB=d["pB"])
    print(f"grid30 with pA, pB: shared model {gm.nbytes / 1e6:.2f} MB, sparse "
          f"{gm.is_sparse}; N = {args.agents}", file=sys.stderr)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        still, _, _ = bench_fa(gm, args.agents, threads, args.steps, learn=False)
        rate, traced, report = bench_fa(gm, args.agents, threads, args.steps, learn=True)
        rows.append((f"fa_core Population, {threads} thread(s), learning A+B", rate, traced,
                     report))
        rows.append((f"fa_core Population, {threads} thread(s), not learning", still, None,
                     None))
    try:
        rate, mem = bench_pymdp(d, args.pymdp_agents, args.pymdp_steps)
        rows.append((f"pymdp numpy Agent, learning A+B ({args.pymdp_agents} agents x "
                     f"{args.pymdp_steps} steps, extrapolated)", rate, mem, None))
    except ImportError:
        print("pymdp not installed: its row is skipped", file=sys.stderr)
    print(f"| grid30, N = {args.agents} | agent-steps/s | learned bytes / agent (tracemalloc) "
          "| private params / agent (memory_report) |")
    print("|---|---|---|---|")
    for label, rate, traced, report in rows:
        print(f"| {label} | {rate:,.0f} | "
              f"{'' if traced is None else f'{traced / 1e3:,.1f} KB'} | "
              f"{'' if report is None else f'{report / 1e3:,.1f} KB'} |")
    pym = [r for r in rows if r[0].startswith("pymdp")]
    if pym:
        best = max(r[1] for r in rows if "learning A+B" in r[0] and r[0].startswith("fa_core"))
        print(f"\nlearning fa_core / pymdp: {best / pym[0][1]:,.0f}x agent-steps/s; "
              f"{args.agents} pymdp agents would take {args.agents / pym[0][1]:,.1f} s "
              f"per step")


if __name__ == "__main__":
    main()
