"""Side-by-side speed and memory of pymdp's numpy Agent and fa_core's Agent.

Both agents run in this one process on the same builtin models
(:mod:`fa_core.builtin_models`) and the same observation sequence, and the
script prints Markdown tables ready to paste into a note:

* time per call of ``infer_states``, ``infer_policies``, ``sample_action`` and
  a full step (the three in a row): median over timed steps, after warm-up
  steps, with the ratio pymdp / fa_core;
* memory per agent: bytes that stay allocated (tracemalloc) after building one
  agent. pymdp's agent is built from its own copy of the model, as users do;
  fa_core's agent either from its own copy of the arrays ("own model") or from a
  :class:`fa_core.GenerativeModel` shared by all agents, as
  ``Agent(model=gm, C=..., D=...)`` ("shared") and as ``Agent(model=gm)``
  ("shared, no C/D"); shared figures are averaged over several agents.

Run from the repository root::

    python benchmarks/compare_pymdp.py                  # all models, default repeats
    python benchmarks/compare_pymdp.py --quick          # a quick look (~1 min)
    python benchmarks/compare_pymdp.py --models tmaze grid10 --repeats 50

pymdp is slow on the larger models (one ``infer_policies`` on ``four_factor``
takes seconds to tens of seconds), so its repeats are few there; fa_core's
repeats are larger because its calls take microseconds.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from collections.abc import Callable

import numpy as np

try:
    import fa_core
    from fa_core import builtin_models
except ImportError:  # run from a checkout without installing: use the tree
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fa_core
    from fa_core import builtin_models
from fa_core.memory import retained_bytes

from pymdp.legacy.agent import Agent as PymdpAgent

CALLS = ("infer_states", "infer_policies", "sample_action", "step")

#: Timed steps per model, (pymdp, fa_core): default and with ``--quick``.
REPEATS = {
    "tmaze": (30, 1000),
    "grid10": (30, 1000),
    "grid30": (5, 300),
    "four_factor": (2, 200),
}
QUICK_REPEATS = {
    "tmaze": (5, 100),
    "grid10": (5, 100),
    "grid30": (2, 30),
    "four_factor": (1, 20),
}
#: Untimed steps before timing, (pymdp, fa_core). pymdp gets none on
#: four_factor, where one step is the whole budget.
WARMUP = {"four_factor": (0, 5)}
DEFAULT_WARMUP = (2, 20)

#: Agents averaged over for the shared-model memory figure.
SHARED_AGENTS = 20

#: Targets of the project, checked at the end: (model, call, minimum speed-up).
TARGETS = (
    ("tmaze", "step", 50.0),
    ("grid10", "step", 50.0),
    ("four_factor", "infer_policies", 1000.0),
)


def observation_sequence(kwargs: dict, n: int, seed: int = 0) -> list[list[int]]:
    """Observations of a random walk through the model's own generative process.

    The hidden state starts from ``D``, each observation is drawn from ``A`` and
    each move uses a random control per factor, so the observations are ones
    the model can produce (beliefs and iteration counts stay realistic). Both
    libraries get the same sequence.

    Parameters
    ----------
    kwargs : dict
        A builtin model; every ``A[m]`` must depend on all factors and every
        ``B[f]`` on factor ``f`` only (pymdp's default layout).
    n : int
        Length of the sequence.
    seed : int

    Returns
    -------
    list of list of int
    """
    if kwargs.get("A_factor_list") is not None or kwargs.get("B_factor_list") is not None:
        raise ValueError("kwargs: models with A_factor_list / B_factor_list are not supported")
    rng = np.random.default_rng(seed)
    A, B, D = kwargs["A"], kwargs["B"], kwargs["D"]
    state = [int(rng.choice(len(d), p=d)) for d in D]
    seq = []
    for _ in range(n):
        seq.append([int(rng.choice(a.shape[0], p=a[(slice(None), *state)])) for a in A])
        state = [int(rng.choice(b.shape[0], p=b[:, s, rng.integers(b.shape[-1])]))
                 for b, s in zip(B, state)]
    return seq


def time_steps(agent, observations: list, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each of :data:`CALLS` over ``repeats`` steps.

    The garbage collector is paused while timing, as ``timeit`` does, so a
    collection triggered by one library's garbage does not land in the other's
    figures.
    """
    times = {c: [] for c in CALLS}
    clock = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        for k in range(warmup + repeats):
            obs = observations[k % len(observations)]
            t0 = clock()
            agent.infer_states(obs)
            t1 = clock()
            agent.infer_policies()
            t2 = clock()
            agent.sample_action()
            t3 = clock()
            if k >= warmup:
                for call, dt in zip(CALLS, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                    times[call].append(dt)
    finally:
        gc.enable()
    return {c: statistics.median(v) for c, v in times.items()}


def measure_memory(kwargs: dict, observation: list) -> dict[str, float]:
    """Bytes per agent: pymdp, fa_core with its own model, fa_core on a shared one."""
    # One throw-away agent of each first, so one-off allocations (lazy imports,
    # caches, per-thread scratch) are not charged to the measured agent.
    for make in (lambda: PymdpAgent(**copy.deepcopy(kwargs)),
                 lambda: fa_core.Agent(**copy.deepcopy(kwargs), seed=0)):
        warm = make()
        warm.infer_states(observation)
        del warm
    gc.collect()

    gm = fa_core.GenerativeModel(**kwargs)
    out = {
        "pymdp": retained_bytes(lambda: PymdpAgent(**copy.deepcopy(kwargs))),
        # fa_core interns models by content: no other agent of this model is
        # alive here, so this agent builds and owns its model.
        "fa_own": retained_bytes(lambda: fa_core.Agent(**copy.deepcopy(kwargs), seed=0)),
        "fa_shared": retained_bytes(
            lambda: fa_core.Agent(model=gm, C=kwargs["C"], D=kwargs["D"], seed=0),
            count=SHARED_AGENTS),
        # without per-agent C and D the agent adds no derived model of its own
        "fa_shared_only": retained_bytes(lambda: fa_core.Agent(model=gm, seed=0),
                                         count=SHARED_AGENTS),
    }
    return out


def run_model(name: str, repeats: tuple[int, int], warmup: tuple[int, int],
              log: Callable[[str], None]) -> dict:
    """Memory and timings of both libraries on one builtin model."""
    kwargs = builtin_models.get(name)
    observations = observation_sequence(kwargs, 256)
    gm = fa_core.GenerativeModel(**kwargs)
    info = (f"{gm.num_factors} factors {list(gm.num_states)}, "
            f"{gm.num_modalities} modalities {list(gm.num_obs)}, {gm.num_policies} policies")
    del gm
    log(f"{name}: {info}")

    log("  memory ...")
    memory = measure_memory(kwargs, observations[0])

    log(f"  fa_core: {warmup[1]} warm-up + {repeats[1]} timed steps ...")
    fa_agent = fa_core.Agent(**kwargs, seed=0)
    fa_times = time_steps(fa_agent, observations, warmup[1], repeats[1])
    del fa_agent

    log(f"  pymdp:   {warmup[0]} warm-up + {repeats[0]} timed steps ...")
    np.random.seed(0)  # pymdp breaks ties with the global generator
    t0 = time.perf_counter()
    py_times = time_steps(PymdpAgent(**kwargs), observations, warmup[0], repeats[0])
    log(f"  pymdp:   done in {time.perf_counter() - t0:.1f} s")

    return {"name": name, "info": info, "repeats": repeats, "memory": memory,
            "pymdp": py_times, "fa_core": fa_times}


def fmt_time(seconds: float) -> str:
    """``12.3 ms``, ``45.6 us``: three significant figures."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(n: float) -> str:
    """Decimal units (``38.9 MB``), as in the project's reference figures."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_ratio(r: float) -> str:
    return f"{r:,.0f}x" if r >= 100 else f"{r:.3g}x"


def header() -> list[str]:
    """Versions, machine and load, so a pasted table says where it came from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = "n/a"
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"pymdp {version('inferactively-pymdp')} (legacy numpy Agent) "
        f"vs fa_core {fa_core.__version__}; "
        f"Python {platform.python_version()}, numpy {np.__version__}",
        f"{cpu}, {os.cpu_count()} cores, load average {load}; "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}",
    ]


def report(results: list[dict], quick: bool) -> str:
    """Markdown: a time table, a memory table and the targets."""
    lines = [f"### fa_core vs pymdp{' (--quick)' if quick else ''}", ""]
    lines += [f"{h}  " for h in header()] + [""]

    lines += ["Models:", ""]
    for r in results:
        lines.append(f"- `{r['name']}`: {r['info']}; timed steps pymdp {r['repeats'][0]}, "
                     f"fa_core {r['repeats'][1]}")
    lines += ["", "Time per call (median):", "",
              "| model | call | pymdp | fa_core | speed-up |",
              "|---|---|---:|---:|---:|"]
    for r in results:
        for call in CALLS:
            p, f = r["pymdp"][call], r["fa_core"][call]
            label = "full step" if call == "step" else call
            lines.append(f"| {r['name']} | {label} | {fmt_time(p)} | {fmt_time(f)} | "
                         f"{fmt_ratio(p / f)} |")

    columns = ("fa_own", "fa_shared", "fa_shared_only")
    lines += ["", "Memory per agent (tracemalloc, bytes kept after construction). fa_core: "
              "own model = `Agent(**arrays)`; shared = `Agent(model=gm, C=..., D=...)`; "
              "shared, no C/D = `Agent(model=gm)`:", "",
              "| model | pymdp | fa_core own model | fa_core shared | fa_core shared, no C/D | "
              "pymdp / own | pymdp / shared | pymdp / shared, no C/D |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        m = r["memory"]
        cells = [fmt_bytes(m["pymdp"])] + [fmt_bytes(m[c]) for c in columns]
        cells += [fmt_ratio(m["pymdp"] / m[c]) for c in columns]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")

    by_name = {r["name"]: r for r in results}
    checked = [(m, c, t) for m, c, t in TARGETS if m in by_name]
    if checked:
        lines += ["", "Targets:", ""]
        for model, call, target in checked:
            r = by_name[model]
            got = r["pymdp"][call] / r["fa_core"][call]
            label = "full step" if call == "step" else call
            verdict = "met" if got >= target else "NOT met"
            lines.append(f"- {model} {label}: {fmt_ratio(got)} "
                         f"(target >= {target:,.0f}x): {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(REPEATS), choices=list(REPEATS),
                        metavar="NAME", help=f"models to run (default: all of {list(REPEATS)})")
    parser.add_argument("--repeats", type=int, default=None, metavar="N",
                        help="timed steps per library and model (default: per model, "
                             "few for pymdp on the large models)")
    parser.add_argument("--quick", action="store_true",
                        help="few repeats and warm-up steps, for a quick look")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = []
    for name in args.models:
        repeats = (QUICK_REPEATS if args.quick else REPEATS)[name]
        if args.repeats is not None:
            repeats = (args.repeats, args.repeats)
        warmup = WARMUP.get(name, DEFAULT_WARMUP)
        if args.quick:
            warmup = (min(warmup[0], 1), min(warmup[1], 5))
        results.append(run_model(name, repeats, warmup, log))
    print(report(results, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
