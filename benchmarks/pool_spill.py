"""AgentPool spilled to a file: hibernate+spill rate, bytes per agent on disk, wake latency.

Model: the T-maze (:func:`fa_core.builtin_models.tmaze`). ``--agents`` agents,
each stepped once (``infer_states``, ``infer_policies``, ``sample_action``),
are put into ``AgentPool(max_awake=--awake, spill=PATH)``; every insertion
beyond the budget hibernates the least recently used agent and appends it to
the spill file. Reported:

* hibernate+spill: agents per second of ``pool[i] = agent`` (building and
  stepping the agents excluded), then ``flush()`` (fsync and commit);
* bytes per agent on disk (data file / agents), and per agent in RAM for the
  index of a reopened pool (tracemalloc);
* reopen: seconds to open the file again (every record checked);
* wake latency: median and 99th percentile of ``pool[i]`` for random hibernated
  ``i`` (read, checksum, decode; the evicted agent is hibernated and appended);
* compaction: seconds to compact after deleting half of the agents, and the
  bytes it reclaims.

Run from the repository root::

    python benchmarks/pool_spill.py                  # 20,000 agents, about a minute
    python benchmarks/pool_spill.py --agents 100000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc

import numpy as np

import fa_core
from fa_core import Agent, AgentPool, builtin_models


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=20_000)
    ap.add_argument("--awake", type=int, default=64)
    ap.add_argument("--wakes", type=int, default=5_000)
    ap.add_argument("--dir", default=None, help="folder for the spill file (default: a temp dir)")
    args = ap.parse_args(argv)

    gm = fa_core.GenerativeModel(**builtin_models.tmaze())
    agents = []
    for i in range(args.agents):
        a = Agent(model=gm, seed=i)
        a.infer_states([0, 0, 1])
        a.infer_policies()
        a.sample_action()
        agents.append(a)
    folder = args.dir or tempfile.mkdtemp(prefix="fa_pool_spill_")
    path = os.path.join(folder, "bench.pool")

    pool = AgentPool(max_awake=args.awake, spill=path)
    t0 = time.perf_counter()
    for i, a in enumerate(agents):
        pool[i] = a
    t_put = time.perf_counter() - t0
    t0 = time.perf_counter()
    pool.flush()
    t_flush = time.perf_counter() - t0
    n_spilled = pool.n_hibernated
    ram = AgentPool(max_awake=args.awake)  # the same insertions, hibernated into RAM
    t0 = time.perf_counter()
    for i, a in enumerate(agents):
        ram[i] = a
    t_ram = time.perf_counter() - t0
    del ram
    del agents
    pool.close()
    disk = os.path.getsize(path + f".{pool._spill.gen}.data")

    tracemalloc.start()  # the index's RAM, on an open timed apart (tracemalloc slows it)
    AgentPool.open(path, max_awake=args.awake, models=[gm]).close()
    index_ram = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t0 = time.perf_counter()
    pool = AgentPool.open(path, max_awake=args.awake, models=[gm])
    t_open = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    lat = np.empty(args.wakes)
    for j, i in enumerate(rng.integers(0, args.agents, args.wakes).tolist()):
        t0 = time.perf_counter()
        pool[i]  # noqa: B018 - wake (and hibernate the least recently used)
        lat[j] = time.perf_counter() - t0

    for i in range(0, args.agents, 2):
        del pool[i]
    before = pool.spill_nbytes
    t0 = time.perf_counter()
    pool.compact()
    t_compact = time.perf_counter() - t0
    after = pool.spill_nbytes
    pool.close()

    print(f"AgentPool(spill=...) on the T-maze: {args.agents:,} agents, max_awake={args.awake}")
    print(f"  hibernate+spill    {n_spilled / t_put:12,.0f} agents/s  "
          f"({n_spilled:,} evictions in {t_put:.2f} s; flush {t_flush * 1e3:.1f} ms; "
          f"in RAM: {n_spilled / t_ram:,.0f} agents/s)")
    print(f"  on disk            {disk / args.agents:12.1f} bytes/agent  ({disk:,} bytes)")
    print(f"  reopen             {t_open:12.3f} s  (every record checked; index in RAM: "
          f"{index_ram / args.agents:.0f} bytes/agent, peak)")
    print(f"  wake latency       median {np.median(lat) * 1e6:.1f} us, "
          f"p99 {np.percentile(lat, 99) * 1e6:.1f} us  ({args.wakes:,} random wakes)")
    print(f"  compact            {t_compact:12.3f} s  after deleting half: "
          f"{before:,} -> {after:,} bytes")


if __name__ == "__main__":
    main()
