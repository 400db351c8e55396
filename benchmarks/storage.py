"""A grid30 ``Population`` kept on a memory-mapped state file, against the same in RAM.

Each mode runs in a child process of its own (so peak resident memory is its own):

- ``storage``: ``Population(grid30, N, storage=PATH)`` (built, flushed), ``--steps``
  steps in a :class:`fa_core.envs.GridWorld`, ``flush()``, ``close()`` and
  ``Population.open(PATH)`` with its verifying pass;
- ``ram``: the same population in RAM (skipped with ``--no-ram`` or when its
  arrays would not fit in the available memory), and ``save(PATH)`` of it;
- ``--resume-test``: a child builds the file, steps, flushes and kills itself
  (SIGKILL) right after the flush; the driver reopens it, checks the time step and
  steps it on. A second child opens it and kills itself in the middle of a step;
  reopening that file gives ``UnflushedStateError`` (the last flushed state was
  overwritten in place: see :mod:`fa_core.storage`).

Printed: agent-steps/s, peak resident memory (``VmHWM``) and the largest anonymous
(``RssAnon``: the process's own) and file-backed (``RssFile``: mapped pages of the
state file, which the kernel may evict) resident sizes seen, bytes per agent on
disk, and the times of create / flush / open / save. Progress goes to stderr.

Run from the repository root after building the extension::

    python benchmarks/storage.py --agents 1000000 --steps 2 --resume-test
    python benchmarks/storage.py --agents 8000000 --steps 1 --no-ram   # > 23 GiB of RAM

The state file is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, ROOT)

from fa_core import GenerativeModel, Population, builtin_models  # noqa: E402
from fa_core.envs import GridWorld  # noqa: E402


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    """Samples /proc/self/status every second; keeps the largest values and prints
    progress every ``every`` seconds."""

    def __init__(self, label: str, every: float = 15.0):
        super().__init__(daemon=True)
        self.label, self.every, self.peak = label, every, {}
        self.what = "starting"
        self.t0 = time.perf_counter()

    def run(self):
        last = 0.0
        while True:
            s = _status()
            for k, v in s.items():
                self.peak[k] = max(self.peak.get(k, 0), v)
            now = time.perf_counter() - self.t0
            if now - last >= self.every:
                last = now
                log(f"[{self.label}] {now:7.1f} s {self.what}: RSS {s.get('VmRSS', 0) / 2**30:.2f}"
                    f" GiB (anon {s.get('RssAnon', 0) / 2**30:.2f}, file "
                    f"{s.get('RssFile', 0) / 2**30:.2f})")
            time.sleep(1.0)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _model():
    return GenerativeModel(**builtin_models.grid30())


def _steps(pop, env, obs, steps, sampler, label):
    times = []
    for t in range(steps):
        sampler.what = f"step {t + 1}/{steps}"
        t0 = time.perf_counter()
        actions = pop.step(obs)
        times.append(time.perf_counter() - t0)
        obs = env.step(actions)
        log(f"[{label}] step {t + 1}/{steps}: {times[-1]:.1f} s "
            f"({pop.n_agents / times[-1]:,.0f} agent-steps/s)")
    return obs, times


def mode_storage(args) -> dict:
    gm = _model()
    sampler = Sampler("storage")
    sampler.start()
    sampler.what = "create"
    t0 = time.perf_counter()
    pop = Population(gm, args.agents, seed=0, n_threads=args.threads, storage=args.path)
    create = time.perf_counter() - t0
    env = GridWorld(30, args.agents, seed=1)
    obs, times = _steps(pop, env, env.reset(), args.steps, sampler, "storage")
    sampler.what = "flush"
    t0 = time.perf_counter()
    pop.flush()
    flush = time.perf_counter() - t0
    ts = int(pop.curr_timestep[0])
    pop.close()
    del pop
    sampler.what = "open"
    t0 = time.perf_counter()
    again = Population.open(args.path, gm)
    open_s = time.perf_counter() - t0
    assert int(again.curr_timestep[0]) == ts
    size = os.path.getsize(args.path)
    return {"mode": "storage", "agents": args.agents, "step_s": times,
            "agent_steps_per_s": args.agents * len(times) / sum(times) if times else None,
            "create_s": create, "flush_s": flush, "open_s": open_s, "file_bytes": size,
            "bytes_per_agent": size / args.agents, **{"peak_" + k: v for k, v in
                                                      sampler.peak.items()},
            "VmHWM": _status()["VmHWM"]}


def mode_ram(args) -> dict:
    gm = _model()
    sampler = Sampler("ram")
    sampler.start()
    t0 = time.perf_counter()
    pop = Population(gm, args.agents, seed=0, n_threads=args.threads)
    create = time.perf_counter() - t0
    env = GridWorld(30, args.agents, seed=1)
    obs, times = _steps(pop, env, env.reset(), args.steps, sampler, "ram")
    save = None
    if args.save:
        sampler.what = "save"
        t0 = time.perf_counter()
        pop.save(args.path + ".saved")
        save = time.perf_counter() - t0
        os.unlink(args.path + ".saved")
    return {"mode": "ram", "agents": args.agents, "step_s": times,
            "agent_steps_per_s": args.agents * len(times) / sum(times) if times else None,
            "create_s": create, "save_s": save, "bytes_in_ram": pop.memory_report().total,
            **{"peak_" + k: v for k, v in sampler.peak.items()}, "VmHWM": _status()["VmHWM"]}


def mode_resume_child(args) -> None:
    """Build, step, flush, then SIGKILL itself right after the flush."""
    gm = _model()
    pop = Population(gm, args.agents, seed=0, n_threads=args.threads, storage=args.path)
    env = GridWorld(30, args.agents, seed=1)
    _steps(pop, env, env.reset(), args.steps, Sampler("resume child", 1e9), "resume child")
    pop.flush()
    log(f"[resume child] flushed at time step {int(pop.curr_timestep[0])}; kill -9 self")
    os.kill(os.getpid(), signal.SIGKILL)


def mode_midstep_child(args) -> None:
    """Open the file, and SIGKILL itself during the kernel call of a step."""
    gm = _model()
    pop = Population.open(args.path, gm)
    env = GridWorld(30, args.agents, seed=2)
    obs = env.reset()
    threading.Timer(args.kill_after, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    log(f"[mid-step child] stepping; kill -9 self after {args.kill_after} s")
    pop.step(obs)
    log("[mid-step child] the step ended before the kill")
    time.sleep(60)


def _child(args, mode: str) -> tuple[int, dict | None]:
    cmd = [sys.executable, os.path.abspath(__file__), "--_mode", mode,
           "--agents", str(args.agents), "--steps", str(args.steps), "--threads",
           str(args.threads), "--path", args.path, "--kill-after", str(args.kill_after)]
    if args.save:
        cmd.append("--save")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    out = None
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            out = json.loads(line)
    return proc.returncode, out


def _avail_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _gib(x):
    return f"{x / 2**30:.2f} GiB"


def resume_test(args) -> dict:
    if os.path.exists(args.path):
        os.unlink(args.path)
    rc, _ = _child(args, "resume-child")
    log(f"[resume] child exit status {rc} (-9: killed)")
    gm = _model()
    t0 = time.perf_counter()
    pop = Population.open(args.path, gm)
    open_s = time.perf_counter() - t0
    ts = int(pop.curr_timestep[0])
    env = GridWorld(30, args.agents, seed=3)
    t0 = time.perf_counter()
    pop.step(env.reset())
    step_s = time.perf_counter() - t0
    pop.flush()
    resumed = int(pop.curr_timestep[0])
    pop.close()
    del pop
    log(f"[resume] reopened at time step {ts} in {open_s:.1f} s; stepped to {resumed}")
    rc2, _ = _child(args, "midstep-child")
    from fa_core.errors import UnflushedStateError
    try:
        Population.open(args.path, gm).close()
        midstep = "opened (the kill landed after the step: raise --kill-after's precision)"
    except UnflushedStateError as exc:
        midstep = f"UnflushedStateError: {str(exc)[:90]}..."
    return {"killed_status": rc, "reopened_at": ts, "expected": args.steps, "open_s": open_s,
            "step_after_resume_s": step_s, "stepped_to": resumed, "midstep_status": rc2,
            "midstep_reopen": midstep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=200_000)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--path", default="/tmp/fa_core_storage_bench.fap")
    ap.add_argument("--no-ram", action="store_true", help="skip the in-RAM comparison")
    ap.add_argument("--save", action="store_true", help="time save() of the in-RAM population")
    ap.add_argument("--resume-test", action="store_true")
    ap.add_argument("--kill-after", type=float, default=1.0,
                    help="seconds into a step at which the mid-step child kills itself")
    ap.add_argument("--keep", action="store_true", help="keep the state file")
    ap.add_argument("--_mode", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._mode:
        if args._mode == "storage":
            print(json.dumps(mode_storage(args)))
        elif args._mode == "ram":
            print(json.dumps(mode_ram(args)))
        elif args._mode == "resume-child":
            mode_resume_child(args)
        elif args._mode == "midstep-child":
            mode_midstep_child(args)
        return
    per_agent = 3669  # grid30's state arrays per agent (memory_report of a small population)
    log(f"grid30, {args.agents:,} agents, {args.steps} steps, {args.threads} threads; state "
        f"~{_gib(per_agent * args.agents)}; RAM available {_gib(_avail_bytes())}")
    results = []
    try:
        if os.path.exists(args.path):
            os.unlink(args.path)
        rc, res = _child(args, "storage")
        if res is None:
            raise SystemExit(f"storage run failed (exit status {rc})")
        results.append(res)
        if not args.no_ram and per_agent * args.agents < 0.7 * _avail_bytes():
            rc, res = _child(args, "ram")
            if res is not None:
                results.append(res)
        else:
            log("in-RAM run skipped (would not fit, or --no-ram)")
        resume = resume_test(args) if args.resume_test else None
    finally:
        if not args.keep and os.path.exists(args.path):
            os.unlink(args.path)
    print(f"\n## grid30 Population, {args.agents:,} agents, {args.steps} steps, "
          f"{args.threads} threads\n")
    print("| mode | agent-steps/s | peak RSS (VmHWM) | peak RssAnon | peak RssFile | "
          "bytes/agent | create s | flush / save s | open s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        bpa = (f"{r['bytes_per_agent']:,.0f} on disk" if r["mode"] == "storage"
               else f"{r['bytes_in_ram'] / r['agents']:,.0f} in RAM")
        fs = r.get("flush_s") if r["mode"] == "storage" else r.get("save_s")
        print(f"| {r['mode']} | {r['agent_steps_per_s']:,.0f} | {_gib(r['VmHWM'])} | "
              f"{_gib(r.get('peak_RssAnon', 0))} | {_gib(r.get('peak_RssFile', 0))} | {bpa} | "
              f"{r['create_s']:.1f} | {'-' if fs is None else f'{fs:.1f}'} | "
              f"{r.get('open_s', 0) or '-' if r['mode'] != 'storage' else round(r['open_s'], 1)} |")
    if resume:
        print(f"\nresume test: child killed with status {resume['killed_status']} after its "
              f"flush at step {resume['expected']}; reopened at step {resume['reopened_at']} "
              f"in {resume['open_s']:.1f} s, stepped on to {resume['stepped_to']} "
              f"({resume['step_after_resume_s']:.1f} s). Killed mid-step (status "
              f"{resume['midstep_status']}): {resume['midstep_reopen']}")


if __name__ == "__main__":
    main()
