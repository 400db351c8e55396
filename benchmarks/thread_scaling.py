"""Thread scaling of ``fa_core.Population``: agent-steps/s with 1 and 2 (or more) threads.

Two measures, because wall-clock speedups are only meaningful on an otherwise idle
machine:

- wall clock: for each builtin model, runs of one ``Population.step`` loop alternate
  between the thread counts (so load that comes and goes hits both alike); each figure
  is the median over ``--repeats`` runs. Printed with the load average and the process's
  CPU time / wall time during the multi-thread runs: well below the thread count means
  the threads did not get their cores (other work on the machine), and the wall
  speedup then says nothing about fa_core.
- ``--callgrind``: instruction counts per thread under valgrind (one run per model with
  the largest thread count), independent of load. ``balance`` is the single-thread
  count divided by the busiest thread's: the speedup the split allows if every
  instruction cost the same (it ignores memory bandwidth and the machine's other work).

Run from the repository root::

    python benchmarks/thread_scaling.py                     # all builtin models
    python benchmarks/thread_scaling.py --models tmaze,grid30 --repeats 9
    python benchmarks/thread_scaling.py --callgrind         # needs valgrind
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import fa_core  # noqa: E402
from fa_core import _kernels, builtin_models  # noqa: E402

#: agents per builtin model: a step lasts some milliseconds
AGENTS = {"tmaze": 20_000, "grid10": 4_000, "grid30": 1_000, "four_factor": 1_000}


def build(name: str) -> fa_core.GenerativeModel:
    if name == "four_factor":
        return fa_core.GenerativeModel(**builtin_models.four_factor(policy_len=1))
    return fa_core.GenerativeModel(**builtin_models.get(name))


def observations(gm, n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.stack([rng.integers(0, no, n) for no in gm.num_obs], 1).astype(np.int32)
            for _ in range(k)]


def run(pop, obs, seconds: float) -> tuple[float, float]:
    """(agent-steps/s, process CPU time / wall time) of stepping for about ``seconds``."""
    pop.step(obs[0])
    c0, t0, k = time.process_time(), time.perf_counter(), 0
    while True:
        pop.step(obs[k % len(obs)])
        k += 1
        wall = time.perf_counter() - t0
        if wall >= seconds and k >= 2:
            break
    return pop.n_agents * k / wall, (time.process_time() - c0) / wall


def wall_clock(models, threads, repeats: int, seconds: float) -> None:
    print(f"fa_core {fa_core.__version__}, vector math {_kernels.simd_isa()}, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"| model | N | {' | '.join(f'{t} thread(s)' for t in threads)} | speedup "
          f"| CPU/wall at {threads[-1]} |")
    print("|---|---:|" + "---:|" * len(threads) + "---:|---:|")
    for name in models:
        gm = build(name)
        n = AGENTS[name]
        obs = observations(gm, n, 4)
        pops = {t: fa_core.Population(gm, n, seed=0, n_threads=t) for t in threads}
        rates = {t: [] for t in threads}
        util = []
        for _ in range(repeats):
            for t in threads:  # interleaved, so changes of load hit every count alike
                r, u = run(pops[t], obs, seconds)
                rates[t].append(r)
                if t == threads[-1]:
                    util.append(u)
        med = {t: statistics.median(v) for t, v in rates.items()}
        print(f"| {name} | {n:,} | " + " | ".join(f"{med[t]:,.0f}" for t in threads)
              + f" | {med[threads[-1]] / med[threads[0]]:.2f}x | {statistics.median(util):.2f} |",
              flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def child(name: str, n_threads: int) -> None:
    """Steps run under valgrind: small N, few steps."""
    gm = build(name)
    n = max(64, AGENTS[name] // 50)
    obs = observations(gm, n, 4)
    pop = fa_core.Population(gm, n, seed=0, n_threads=n_threads)
    for k in range(4):
        pop.step(obs[k % 4])


def callgrind(models, threads) -> None:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
    print(f"| model | Ir, 1 thread | Ir per thread at {threads[-1]} | balance |")
    print("|---|---:|---:|---:|")
    for name in models:
        counts = {}
        for t in (1, threads[-1]):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "cg.out")
                subprocess.run(
                    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                     "--separate-threads=yes", "--toggle-collect=*population_stages*",
                     sys.executable, os.path.abspath(__file__), "--child", name,
                     "--threads-child", str(t)],
                    check=True, capture_output=True, cwd=root,
                    # a thread that finished its share sleeps instead of spinning in the
                    # barrier, so the counts are work, not waiting
                    env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
                per = []
                for f in sorted(glob.glob(out + "*")):
                    m = re.search(r"^summary:\s+(\d+)", open(f).read(), re.M)
                    if m and int(m.group(1)) > 0:
                        per.append(int(m.group(1)))
                counts[t] = per
        one = sum(counts[1])
        busiest = max(counts[threads[-1]])
        print(f"| {name} | {one:,} | " + " / ".join(f"{c:,}" for c in counts[threads[-1]])
              + f" | {one / busiest:.2f}x |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(AGENTS), help="default %(default)s")
    p.add_argument("--threads", default="1,2", help="default %(default)s")
    p.add_argument("--repeats", type=int, default=7, help="runs per figure (default 7)")
    p.add_argument("--seconds", type=float, default=0.3, help="length of a run (default 0.3)")
    p.add_argument("--callgrind", action="store_true", help="instruction counts per thread")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--threads-child", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.threads_child)
        return
    models = [m for m in args.models.split(",") if m]
    threads = [int(t) for t in args.threads.split(",")]
    if args.callgrind:
        callgrind(models, threads)
    else:
        wall_clock(models, threads, args.repeats, args.seconds)


if __name__ == "__main__":
    main()
