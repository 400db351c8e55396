"""How many agents fit in memory: fa_core against pymdp's numpy Agent, in one run.

Model: the 30x30 grid forager (:func:`fa_core.builtin_models.grid_forager`,
900 states, 5 moves, location and reward modalities). Sections:

1. **Shared model.** ``--agents`` fa_core agents built from one
   :class:`fa_core.GenerativeModel`, each stepped ``--steps`` times
   (``infer_states``, ``infer_policies``, ``sample_action``) in a
   :class:`fa_core.envs.GridWorld`. Bytes per agent beyond the shared model by
   RSS (``VmRSS`` of ``/proc/self/status`` before and after, over all agents)
   and by tracemalloc (over ``--sample`` agents built and stepped the same way,
   with :func:`fa_core.memory_report_many`'s breakdown of the same agents).
2. **pymdp.** ``--pymdp-agents`` agents of ``pymdp.legacy.agent.Agent``, each
   built from its own copy of the model as users do and stepped the same way;
   bytes per agent by RSS and tracemalloc, extrapolated to ``--agents``.
3. **Hibernated.** Every fa_core agent of section 1 hibernated (lossless)
   into a list of blobs; bytes per agent as ``sys.getsizeof`` of the blobs
   plus the list slot, and by tracemalloc over the sample.
4. **Private models.** ``--private-agents`` agents, each with its own
   ``fa_core.GenerativeModel(**d)``: dense (``sparse=False``), ``sparse="auto"``
   (the default: one-hot matrices become CSC) and ``sparse=True``, against pymdp.

Run from the repository root::

    python benchmarks/density.py                       # 100,000 agents
    python benchmarks/density.py --agents 1000000      # the headline (minutes, ~8 GB)
    python benchmarks/density.py --agents 20000 --steps 2 --pymdp-agents 2

RSS figures include allocator overhead (malloc headers, pymalloc pools) that
tracemalloc does not count, so RSS per agent is the larger of the two.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import sys
import time
import tracemalloc
from importlib.metadata import version

import numpy as np

try:
    import fa_core
    from fa_core import builtin_models
except ImportError:  # run from a checkout without installing: use the tree
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fa_core
    from fa_core import builtin_models

from fa_core.envs import GridWorld
from fa_core.lifecycle import hibernate
from fa_core.memory import memory_report_many

SIZE = 30
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: RSS then also counts freed pages the allocator keeps
    _LIBC = None
GiB = 1 << 30

#: The issue's targets.
TARGET_RSS_1M = 8 * GiB           # 1,000,000 awake agents under this RSS
TARGET_AWAKE = 8 * 1024           # bytes per awake agent beyond the shared model
TARGET_RATIO = 4000               # pymdp bytes / fa_core bytes per agent
TARGET_HIBERNATED = 2 * 1024      # bytes per hibernated agent
TARGET_PRIVATE_DENSE = 2.0        # pymdp / fa_core private dense model
TARGET_PRIVATE_SPARSE = 20.0      # pymdp / fa_core private model with one-hot B stored sparse


def rss() -> int:
    """Resident set size of this process in bytes (VmRSS), after handing free heap
    pages back to the system (``malloc_trim``), so it counts memory in use."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def step_all(agents, env: GridWorld, steps: int) -> None:
    obs = env.reset()
    for _ in range(steps):
        actions = np.empty(len(agents), dtype=np.int64)
        for i, agent in enumerate(agents):
            agent.infer_states(obs[i].tolist())
            agent.infer_policies()
            actions[i] = agent.sample_action()[0]
        obs = env.step(actions)


def traced(fn):
    """(bytes still allocated after ``fn()``, its result), by tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = fn()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, out
    finally:
        tracemalloc.stop()


def fmt(n: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=100_000, help="fa_core agents (shared model)")
    ap.add_argument("--steps", type=int, default=5, help="steps per agent")
    ap.add_argument("--sample", type=int, default=5_000,
                    help="fa_core agents measured with tracemalloc")
    ap.add_argument("--pymdp-agents", type=int, default=3)
    ap.add_argument("--private-agents", type=int, default=5,
                    help="agents per private-model variant")
    args = ap.parse_args(argv)
    n, steps = args.agents, args.steps
    sample = min(args.sample, n)
    from pymdp.legacy.agent import Agent as PymdpAgent

    print(f"# Agent density: {SIZE}x{SIZE} grid forager, {n:,} agents, {steps} steps each")
    print(f"fa_core {fa_core.__version__}, inferactively-pymdp {version('inferactively-pymdp')}, "
          f"numpy {np.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}")
    kwargs = builtin_models.grid_forager(SIZE)
    results = {}

    # -- 1. fa_core, one shared model --------------------------------------------------
    model = fa_core.GenerativeModel(**kwargs)
    warm = fa_core.Agent(model=model)
    step_all([warm], GridWorld(SIZE, 1, seed=0), 1)  # scratch grown once, before measuring
    del warm

    # RSS first, in a heap nothing has been freed into yet
    gc.disable()  # a million agents make no reference cycles; spare the collector's passes
    t0 = time.perf_counter()
    rss_before = rss()
    agents = [fa_core.Agent(model=model) for _ in range(n)]
    rss_built = rss()
    step_all(agents, GridWorld(SIZE, n, seed=2), steps)
    rss_stepped = rss()
    elapsed = time.perf_counter() - t0
    fa_rss = (rss_stepped - rss_before) / n

    t1 = time.perf_counter()
    blobs = [hibernate(a) for a in agents]
    hib_time = time.perf_counter() - t1
    hib_sizeof = (sum(sys.getsizeof(b) for b in blobs) + 8 * len(blobs)) / n
    blob_len = sum(len(b) for b in blobs) / n
    del agents
    rss_hibernated = rss()
    del blobs
    gc.enable()
    gc.collect()

    def build_sample():
        agents = [fa_core.Agent(model=model) for _ in range(sample)]
        step_all(agents, GridWorld(SIZE, sample, seed=1), steps)
        return agents

    sample_bytes, sample_agents = traced(build_sample)
    report = memory_report_many(sample_agents)
    fa_traced = sample_bytes / sample
    # the agents bound as an argument: the name is deleted below, once they are hibernated
    hib_bytes, blobs = traced(lambda agents=sample_agents: [hibernate(a) for a in agents])
    del sample_agents
    gc.collect()
    hib_traced = hib_bytes / sample  # blobs, bytes objects and list slots, agents freed
    del blobs
    gc.collect()

    print("\n## fa_core, one shared model")
    print(f"shared model: {fmt(model.nbytes)} packed "
          f"(+ {fmt(report.shared_model - model.nbytes)} of Python objects and views), "
          f"scratch pool {fmt(report.scratch)}")
    print(f"built and stepped {n:,} agents in {elapsed:,.0f} s")
    print("| measure | total | per agent |\n|---|---:|---:|")
    print(f"| RSS before agents | {fmt(rss_before)} | |")
    print(f"| RSS after building | {fmt(rss_built)} | {fmt((rss_built - rss_before) / n)} |")
    print(f"| RSS after {steps} steps | {fmt(rss_stepped)} | {fmt(fa_rss)} |")
    print(f"| tracemalloc ({sample:,} agents, built + stepped) | {fmt(sample_bytes)} | "
          f"{fmt(fa_traced)} |")
    print(f"| memory_report: beliefs + options (same agents) | {fmt(report.beliefs)} | "
          f"{fmt(report.beliefs / sample)} |")
    print(f"| memory_report: history (prev_actions, {steps} entries) | {fmt(report.history)} | "
          f"{fmt(report.history / sample)} |")
    results["fa_rss"], results["fa_traced"] = fa_rss, fa_traced

    # -- 2. pymdp --------------------------------------------------------------------------
    k = args.pymdp_agents

    def build_pymdp():
        ags = [PymdpAgent(**builtin_models.grid_forager(SIZE)) for _ in range(k)]
        step_all(ags, GridWorld(SIZE, k, seed=3), steps)
        return ags

    gc.collect()
    r0 = rss()
    pym_agents = build_pymdp()
    pym_rss = (rss() - r0) / k
    del pym_agents
    gc.collect()
    pym_bytes, pym_agents = traced(build_pymdp)
    pym_traced = pym_bytes / k
    del pym_agents
    gc.collect()
    print(f"\n## pymdp {version('inferactively-pymdp')}, each agent with its own model "
          f"({k} agents, extrapolated)")
    print(f"| measure | per agent | x {n:,} agents | pymdp / fa_core |\n|---|---:|---:|---:|")
    print(f"| RSS | {fmt(pym_rss)} | {fmt(pym_rss * n)} | {pym_rss / fa_rss:,.0f}x |")
    print(f"| tracemalloc | {fmt(pym_traced)} | {fmt(pym_traced * n)} | "
          f"{pym_traced / fa_traced:,.0f}x |")

    # -- 3. hibernated -------------------------------------------------------------------------
    print(f"\n## fa_core hibernated (lossless), {n:,} agents")
    print("| measure | per agent |\n|---|---:|")
    print(f"| blob length | {fmt(blob_len)} |")
    print(f"| blobs as bytes objects in a list (sys.getsizeof + slot) | {fmt(hib_sizeof)} |")
    print(f"| tracemalloc ({sample:,} agents hibernated, awake agents freed) | "
          f"{fmt(hib_traced)} |")
    print(f"| RSS after freeing the awake agents, over RSS before them (pymalloc keeps "
          f"partly used arenas) | "
          f"{fmt((rss_hibernated - rss_before) / n)} |")
    print(f"hibernated {n:,} agents in {hib_time:,.0f} s")

    # -- 4. private models -------------------------------------------------------------------
    kp = args.private_agents
    print(f"\n## Every agent its own model ({kp} agents per variant)")
    print("| agent | tracemalloc / agent | RSS / agent | pymdp / fa_core (tracemalloc) |")
    print("|---|---:|---:|---:|")
    print(f"| pymdp | {fmt(pym_traced)} | {fmt(pym_rss)} | 1x |")
    private = {}
    for label, sparse in (("dense", False), ("auto", "auto"), ("sparse", True)):
        def build_private(sparse=sparse):
            return [fa_core.Agent(model=fa_core.GenerativeModel(**kwargs, sparse=sparse))
                    for _ in range(kp)]

        gc.collect()
        r0 = rss()
        ags = build_private()
        per_rss = (rss() - r0) / kp
        del ags
        gc.collect()
        per_bytes, ags = traced(build_private)
        per = per_bytes / kp
        b_sparse = ags[0].model.is_sparse["B"][0][0]
        a_sparse = ags[0].model.is_sparse["A"]
        del ags
        private[label] = per
        print(f"| fa_core sparse={sparse!r} (A sparse {a_sparse}, B sparse {b_sparse}) | "
              f"{fmt(per)} | {fmt(per_rss)} | {pym_traced / per:,.1f}x |")

    # -- targets -------------------------------------------------------------------------------
    rss_1m = rss_before + 1_000_000 * fa_rss
    print("\n## Targets")
    print(f"- 1,000,000 awake agents under 8 GiB RSS: "
          f"{'measured' if n >= 1_000_000 else 'extrapolated from ' + f'{n:,}'} "
          f"{fmt(rss_1m if n < 1_000_000 else rss_stepped)}: "
          f"{verdict((rss_1m if n < 1_000_000 else rss_stepped) < TARGET_RSS_1M)}")
    worst = max(fa_rss, fa_traced)
    print(f"- <= 8 KiB per awake agent beyond the shared model: RSS {fmt(fa_rss)}, "
          f"tracemalloc {fmt(fa_traced)}: {verdict(worst <= TARGET_AWAKE)}")
    ratio = min(pym_rss / fa_rss, pym_traced / fa_traced)
    print(f"- >= {TARGET_RATIO:,}x less per agent than pymdp: {ratio:,.0f}x (lower of RSS and "
          f"tracemalloc ratios): {verdict(ratio >= TARGET_RATIO)}")
    hib = max(hib_sizeof, hib_traced)
    print(f"- <= 2 KiB per hibernated agent: {fmt(hib)}: {verdict(hib <= TARGET_HIBERNATED)}")
    dense_ratio = pym_traced / private["dense"]
    tensors = sum(np.asarray(x, dtype=np.float64).nbytes for x in [*kwargs["A"], *kwargs["B"]])
    print(f"- private dense model >= {TARGET_PRIVATE_DENSE:g}x less than pymdp: "
          f"{dense_ratio:.4f}x: {verdict(dense_ratio >= TARGET_PRIVATE_DENSE)} (float32 A and B "
          f"are exactly half of pymdp's float64; fa_core's {fmt(private['dense'] - tensors / 2)} "
          f"beside them against pymdp's {fmt(pym_traced - tensors)} decides the rest)")
    sparse_ratio = pym_traced / private["sparse"]
    print(f"- private model with one-hot B stored sparse >= {TARGET_PRIVATE_SPARSE:g}x less: "
          f"{sparse_ratio:,.0f}x: {verdict(sparse_ratio >= TARGET_PRIVATE_SPARSE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
