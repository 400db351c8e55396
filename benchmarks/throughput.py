"""Agent-steps per second of ``fa_core.Population`` against pymdp, in one run.

One agent-step is ``infer_states`` + ``infer_policies`` + ``sample_action``
for one agent. Three parts, all in one run:

1. The table, on the builtin models of :mod:`fa_core.builtin_models`
   (``tmaze_dense``: the T-maze's shapes with dense random ``A`` and ``B``; ``tmaze``;
   ``grid10``; ``grid30`` at two population sizes; ``grid30_confused``, whose location
   cue names a neighbouring cell one time in five; ``four_factor``):

   - ``fa_core.Population`` with 1 and 2 threads (``--threads``);
   - pymdp's numpy Agent (``pymdp.legacy.agent.Agent``) stepped in a Python loop,
     each agent with its own copy of the model as users build them (a few
     agents for a few steps: it is slow);
   - with ``--jax``, pymdp 1.0's JAX Agent (``pymdp.agent.Agent``), float32, one batched
     agent with ``batch_size=N`` and the model arrays given a leading batch axis, its
     step jit-compiled (compilation excluded). XLA uses every core. When the
     batched model would exceed ``--jax-mem-gb`` the JAX batch is reduced, and
     fa_core is also timed at that batch size so the ratio compares equal sizes.

2. The grid-side scaling table: grid foragers (``builtin_models.grid_forager(side)``)
   of side 10, 30, 50 and 100 (``--sides``), each population stepped
   ``SCALING_WARMUP`` steps before timing so that the agents' beliefs are concentrated
   (after a location cue the exact-cue forager knows its cell), then per side: states,
   agent-steps/s (1 and 2 threads), microseconds per agent-step per core (threads /
   rate), the states the agents believe possible (belief above 1e-10, the sparse-belief
   threshold of ``fa_core/_math.pxd``) and how the cost grows against the number of
   states (ratios to the smallest side). pymdp is not run there: one pymdp step of a
   100x100 forager multiplies 10,000 x 10,000 matrices, and its own copy of the model
   is 4.8 GB. Grids of side 50 and more are built in a child process and cached (see
   :func:`grid_model`): building the 100x100 forager's dense arrays and their
   ``GenerativeModel`` takes about 2.5 minutes and 13 GB at peak, once.

3. The targets of issue 17, each marked met / not met with the figure measured at 2
   threads: >= 3,000,000 agent-steps/s on ``tmaze_dense``, >= 4,000,000 on the builtin
   ``tmaze``, >= 250,000 on ``grid30`` (the larger N) and on ``grid30_confused``, and
   per-agent-step cost growing clearly slower than the number of states, where
   "clearly" is :data:`SCALING_CLEARLY`: from the smallest to the largest side the cost
   grows by less than half as much as the number of states (grid10 -> grid100: cost
   ratio < 50 for 100x the states).

Every agent of the table observes a simulated world that samples outcomes from the
model's own ``A`` and moves under its own ``B`` and the agent's action; the scaling
table's agents live in ``fa_core.envs.GridWorld`` (the exact-cue forager's world). Only
the agents' step is timed. Each figure is the median over ``--repeats`` repeats.

Memory per agent: for fa_core, what tracemalloc sees allocated by building the
population and stepping it once, divided by N (the shared model is listed
separately); for pymdp's numpy Agent, tracemalloc of building one agent from
its own model copy and stepping it once; for JAX, the bytes of the batched
agent's arrays plus its belief/policy state, divided by the batch size (XLA's
temporaries during a step are not counted).

Run from the repository root after building the extension::

    python benchmarks/throughput.py                  # everything (several minutes)
    python benchmarks/throughput.py --quick          # smaller N, fewer repeats (~1.5 min)
    python benchmarks/throughput.py --models tmaze,grid10 --threads 1,2 --sides 10,30
    python benchmarks/throughput.py --jax            # also pymdp's JAX Agent (slow)
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import fa_core  # noqa: E402
from fa_core import builtin_models  # noqa: E402
from fa_core.envs import GridWorld  # noqa: E402

#: (label, builtin model, builder keywords, N) in table order; ``--quick`` uses N / 10.
CASES = [
    ("tmaze_dense", "tmaze_dense", {}, 100_000),
    ("tmaze", "tmaze", {}, 100_000),
    ("grid10", "grid10", {}, 10_000),
    ("grid30", "grid30", {}, 1_000),
    ("grid30", "grid30", {}, 10_000),
    ("grid30_confused", "grid30_confused", {}, 10_000),
    ("four_factor", "four_factor", {"policy_len": 1}, 1_000),
]

#: Grid sides of the scaling table and the population per side (``--quick``: a quarter):
#: a step of each lasts tens of milliseconds on one core, long beside the Python call.
SCALING_AGENTS = {10: 10_000, 30: 4_000, 50: 2_000, 100: 400}
#: Untimed steps before the scaling table's timing: the first observation (a location
#: cue) concentrates a forager's belief, later steps keep it so.
SCALING_WARMUP = 4
#: "Clearly slower than the number of states": from the smallest side to the largest,
#: cost per agent-step grows by less than this fraction of the growth of the states.
SCALING_CLEARLY = 0.5
#: States held above this belief count as believed possible (fa_core/_math.pxd's
#: SPARSE_EPS, below which the sparse-belief path leaves a state out).
BELIEF_EPS = 1e-10

#: Issue 17's throughput targets at 2 threads: (label, agent-steps/s, what).
TARGETS = [
    ("tmaze_dense", 3_000_000, "T-maze-sized, dense random A and B (tmaze_dense)"),
    ("tmaze", 4_000_000, "builtin tmaze"),
    ("grid30", 250_000, "grid30 (30x30 forager)"),
    ("grid30_confused", 250_000, "grid30_confused (30x30, confusing location cue)"),
]

#: The JAX batch is capped so that this many times the batched model fits the
#: memory budget: intermediates of a vmapped step (expected outcomes per policy,
#: one-hot observations, ...) come on top of the stored model.
JAX_MEMORY_FACTOR = 3.0


def build_model(name: str, kwargs: dict) -> dict:
    if name == "four_factor":
        return builtin_models.four_factor(**kwargs)
    return builtin_models.get(name)


class World:
    """True states of N agents under the model; outcomes drawn from ``A``, moves from ``B``."""

    def __init__(self, d: dict, n: int, seed: int):
        gm = fa_core.GenerativeModel(**d)
        self.rng = np.random.default_rng(seed)
        self.A = [np.asarray(a, dtype=np.float64) for a in d["A"]]
        self.B = [np.asarray(b, dtype=np.float64) for b in d["B"]]
        self.a_deps, self.b_deps = gm.A_factor_list, gm.B_factor_list
        self.state = np.stack([self._draw(np.repeat(np.asarray(x, np.float64)[:, None], n, 1))
                               for x in d["D"]], axis=1)

    def _draw(self, p: np.ndarray) -> np.ndarray:
        cdf = np.cumsum(p, axis=0)
        u = self.rng.random(p.shape[1]) * cdf[-1]
        return np.minimum((cdf < u).sum(axis=0), p.shape[0] - 1)

    def observe(self) -> np.ndarray:
        """(N, num_modalities) outcome indices."""
        return np.stack([self._draw(a[(slice(None), *self.state[:, deps].T)])
                         for a, deps in zip(self.A, self.a_deps)], axis=1)

    def step(self, actions) -> np.ndarray:
        actions = np.asarray(actions).astype(np.int64)
        self.state = np.stack(
            [self._draw(b[(slice(None), *self.state[:, deps].T, actions[:, f])])
             for f, (b, deps) in enumerate(zip(self.B, self.b_deps))], axis=1)
        return self.observe()


def timed_steps(step, obs, world: World, min_seconds: float, max_steps: int, repeats: int):
    """Median agent-steps per second of ``step(obs) -> actions`` (times N by the caller).

    One warm-up step; then each repeat runs enough steps to last about
    ``min_seconds`` (at least 2, at most ``max_steps``). Returns steps per
    second of the whole batch and the step count per repeat.
    """
    t0 = time.perf_counter()
    actions = step(obs)
    warm = time.perf_counter() - t0
    obs = world.step(actions)
    k = int(min(max_steps, max(2, math.ceil(min_seconds / max(warm, 1e-9)))))
    rates = []
    for _ in range(repeats):
        total = 0.0
        for _ in range(k):
            t0 = time.perf_counter()
            actions = step(obs)
            total += time.perf_counter() - t0
            obs = world.step(actions)
        rates.append(k / total)
    return statistics.median(rates), k


# -- fa_core ---------------------------------------------------------------------------------


def fa_memory_per_agent(gm, d: dict, n: int) -> float:
    obs = World(d, n, 0).observe()
    gc.collect()
    tracemalloc.start()
    try:
        pop = fa_core.Population(gm, n, seed=0, n_threads=1)
        pop.step(obs)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del pop
    return current / n


def bench_fa(gm, d: dict, n: int, n_threads: int, args) -> tuple[float, int]:
    pop = fa_core.Population(gm, n, seed=0, n_threads=n_threads)
    world = World(d, n, 1)
    rate, k = timed_steps(pop.step, world.observe(), world, args.min_seconds, 200, args.repeats)
    return rate * n, k


# -- pymdp numpy Agent -----------------------------------------------------------------------


def numpy_agent(d: dict):
    from pymdp.legacy.agent import Agent

    return Agent(**copy.deepcopy(d))  # its own model copy, as users build agents


def numpy_memory_per_agent(d: dict) -> float:
    obs = [int(o) for o in World(d, 1, 0).observe()[0]]
    gc.collect()
    tracemalloc.start()
    try:
        agent = numpy_agent(d)
        agent.infer_states(obs)
        agent.infer_policies()
        agent.sample_action()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del agent
    return current


def bench_numpy(d: dict, args) -> tuple[float, int, int]:
    n = args.numpy_agents
    agents = [numpy_agent(d) for _ in range(n)]
    world = World(d, n, 1)

    def step(obs):
        out = np.zeros((n, len(d["B"])), dtype=np.int64)
        for i, agent in enumerate(agents):
            agent.infer_states([int(o) for o in obs[i]])
            agent.infer_policies()
            out[i] = agent.sample_action()
        return out

    # numpy agents are slow: a fixed, small number of steps per repeat
    rate, k = timed_steps(step, world.observe(), world, 0.0, args.numpy_steps, args.repeats)
    return rate * n, n, k


# -- pymdp JAX Agent ---------------------------------------------------------------------------


def jax_model_bytes_per_agent(d: dict) -> int:
    """float32 bytes of one batch member's copy of A, B, C, D."""
    return 4 * sum(np.asarray(x).size for key in ("A", "B", "C", "D") for x in d[key])


def bench_jax(d: dict, n: int, args) -> tuple[float, float, int]:
    import jax.numpy as jnp
    from pymdp.agent import Agent as JaxAgent

    def batched(x):
        x = jnp.asarray(x, dtype=jnp.float32)
        return jnp.broadcast_to(x[None], (n,) + x.shape)

    gm = fa_core.GenerativeModel(**d)
    agent = JaxAgent(
        A=[batched(a) for a in d["A"]], B=[batched(b) for b in d["B"]],
        C=[batched(c) for c in d["C"]], D=[batched(x) for x in d["D"]],
        A_dependencies=gm.A_factor_list, B_dependencies=gm.B_factor_list,
        control_fac_idx=gm.control_fac_idx, policy_len=gm.policy_len, batch_size=n,
        gamma=16.0, alpha=16.0, num_iter=10, action_selection="deterministic",
        sampling_mode="marginal", inference_algo="fpi")

    return run_jax_agent(agent, d, n, args)


def run_jax_agent(agent, d: dict, n: int, args) -> tuple[float, float, int]:
    """Step a pymdp-1.0-API agent (pymdp's JAX Agent or fa_core.jax.Agent) of batch ``n`` in
    one jit-compiled step per call; agent-steps/s, bytes per agent of its arrays and state,
    repeats."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import jax.tree_util as jtu

    @eqx.filter_jit
    def jstep(agent, prior, obs, key):
        qs = agent.infer_states(obs, prior)
        q_pi, neg_efe = agent.infer_policies(qs)
        keys = jr.split(key, agent.batch_size + 1)
        action = agent.sample_action(q_pi, rng_key=keys[1:])
        return agent.update_empirical_prior(action, qs), action, qs, q_pi, neg_efe, keys[0]

    carry = {"prior": agent.D, "key": jr.PRNGKey(0), "out": None}

    def step(obs):
        out = jstep(agent, carry["prior"], [jnp.asarray(o, dtype=jnp.int32) for o in obs.T],
                    carry["key"])
        jax.block_until_ready(out)
        carry["prior"], carry["key"], carry["out"] = out[0], out[5], out
        return np.asarray(out[1])

    world = World(d, n, 1)
    obs = world.observe()
    step(obs)  # compile
    rate, k = timed_steps(step, world.observe(), world, args.min_seconds, 100, args.repeats)
    state = carry["out"][2:5]  # qs, q_pi, neg_efe
    nbytes = sum(x.nbytes for x in jtu.tree_leaves((agent, state)) if hasattr(x, "nbytes"))
    return rate * n, nbytes / n, k


# -- the grid-side scaling table ---------------------------------------------------------------


#: Grids of at least this side are built in a child process and cached on disk.
CACHE_FROM_SIDE = 50


def _cache_path(side: int) -> str:
    """Where the ``GenerativeModel`` of ``grid_forager(side)`` is cached: keyed by fa_core's
    version and the sources that build and pack it, so an edit of either rebuilds it."""
    import hashlib
    import inspect

    from fa_core import model as fa_model

    h = hashlib.sha256(fa_core.__version__.encode())
    for fn in (builtin_models.grid_forager, builtin_models.default_reward_locations,
               builtin_models._obj_array):  # the builder, not the whole module
        h.update(inspect.getsource(fn).encode())
    with open(fa_model.__file__, "rb") as f:   # validation and packing
        h.update(f.read())
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "fa_core", "benchmarks",
                        f"grid_forager-{side}-{h.hexdigest()[:16]}.pickle")


def _build_and_save(side: int, path: str) -> None:
    """In a child process: build ``grid_forager(side)``'s GenerativeModel, pickle it to
    ``path`` (written to a temporary name first, so a killed build leaves no cache)."""
    import pickle

    gm = fa_core.GenerativeModel(**builtin_models.grid_forager(side))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(gm, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _available_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return math.inf


def grid_model(side: int, use_cache: bool = True) -> tuple[fa_core.GenerativeModel | None, str]:
    """The ``GenerativeModel`` of ``builtin_models.grid_forager(side)`` and how it was got.

    Small grids are built here. From side :data:`CACHE_FROM_SIDE` on, the dense
    pymdp-layout arrays (``B`` alone is ``side**4 * 5`` float64s: 4 GB at side 100) are
    built in a child process, whose ``GenerativeModel`` (about 1 MB packed) is pickled
    to :func:`_cache_path` and loaded here, so later runs take it from the cache; the
    child needs about ``130 * side**4`` bytes at peak, and when the machine has less
    available the grid is skipped (None) rather than risk the out-of-memory killer.
    """
    if side < CACHE_FROM_SIDE:
        return fa_core.GenerativeModel(**builtin_models.grid_forager(side)), "built"
    import pickle
    import subprocess

    path = _cache_path(side)
    if use_cache and os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f), f"cached ({path})"  # a file this script wrote
    need = 130.0 * side ** 4
    if need > 0.8 * _available_bytes():
        return None, (f"skipped: building it needs about {need / 2**30:.0f} GiB, "
                      f"{_available_bytes() / 2**30:.0f} GiB available")
    t0 = time.perf_counter()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import throughput; "
            "throughput._build_and_save(int(sys.argv[2]), sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)),
                    str(side), path], check=True)
    with open(path, "rb") as f:
        gm = pickle.load(f)
    return gm, f"built in a child process in {time.perf_counter() - t0:.0f} s, cached ({path})"


def believed_states(pop) -> np.ndarray:
    """Per agent, the states it believes possible (belief above :data:`BELIEF_EPS`)."""
    return (np.asarray(pop.qs) > BELIEF_EPS).sum(axis=1)


def sparse_evaluations() -> int | None:
    """Policy evaluations so far that took the sparse-belief path (None if not exposed)."""
    try:
        from fa_core import _policies
        return int(_policies.sparse_beliefs()[1])
    except (ImportError, AttributeError):
        return None


def bench_grid(gm, side: int, n: int, n_threads: int, args) -> dict:
    """Agent-steps/s of ``n`` exact-cue foragers on a ``side`` grid after the warm-up,
    with the states they believe possible and the share of sparse policy evaluations."""
    pop = fa_core.Population(gm, n, seed=0, n_threads=n_threads)
    env = GridWorld(side, n, seed=1)
    obs = env.reset()
    for _ in range(SCALING_WARMUP):
        obs = env.step(pop.step(obs))
    before = sparse_evaluations()
    rate, k = timed_steps(pop.step, obs, env, args.min_seconds, 100, args.repeats)
    after = sparse_evaluations()
    steps = (1 + k * args.repeats) * n  # timed_steps' warm-up step and its repeats
    believed = believed_states(pop)
    return {"rate": rate * n, "k": k, "believed_mean": float(believed.mean()),
            "believed_max": int(believed.max()),
            "sparse_share": None if before is None else (after - before) / steps}


def run_scaling(args) -> list[dict]:
    """The grid-side scaling rows (one per side that could be built)."""
    rows = []
    print(f"\nGrid-side scaling: grid_forager(side), {SCALING_WARMUP} untimed steps before "
          f"timing ({load()})", flush=True)
    for side in args.sides:
        t0 = time.perf_counter()
        gm, how = grid_model(side, use_cache=not args.no_model_cache)
        if gm is None:
            print(f"  side {side}: {how}", flush=True)
            continue
        n = SCALING_AGENTS.get(side, min(10_000, max(100, 4_000_000 // (side * side))))
        if args.quick:
            n = max(50, n // 4)
        print(f"  side {side}: {side * side:,} states, N={n:,}; model {how} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        row = {"side": side, "states": side * side, "n": n, "fa": {}}
        for t in args.threads:
            r = bench_grid(gm, side, n, t, args)
            row["fa"][t] = r
            share = ("" if r["sparse_share"] is None
                     else f", sparse policy evaluation {r['sparse_share']:.0%}")
            print(f"    {t} thread(s): {fmt_rate(r['rate'])} agent-steps/s "
                  f"({r['k']} steps/repeat); believed states mean {r['believed_mean']:.2f}, "
                  f"max {r['believed_max']}{share}", flush=True)
        rows.append(row)
        del gm
        gc.collect()
    return rows


def us_per_core(rate: float, threads: int) -> float:
    """Microseconds per agent-step per core: ``threads`` cores deliver ``rate``."""
    return 1e6 * threads / rate


def scaling_table(rows: list[dict], threads: list[int]) -> tuple[list[str], dict | None]:
    """Lines of the scaling table and its growth verdict (None with fewer than 2 sides)."""
    main_t = 2 if 2 in threads else max(threads)
    head = (["side", "states", "N"] + [f"agent-steps/s, {t} thr" for t in threads]
            + [f"us/agent-step/core, {t} thr" for t in threads]
            + ["believed states (mean)", "state growth", f"cost growth ({main_t} thr)",
               "cost growth / state growth"])
    base = rows[0] if rows else None
    table = []
    for r in rows:
        cost = us_per_core(r["fa"][main_t]["rate"], main_t)
        base_cost = us_per_core(base["fa"][main_t]["rate"], main_t)
        sg, cg = r["states"] / base["states"], cost / base_cost
        table.append([str(r["side"]), f"{r['states']:,}", f"{r['n']:,}"]
                     + [fmt_rate(r["fa"][t]["rate"]) for t in threads]
                     + [f"{us_per_core(r['fa'][t]['rate'], t):.2f}" for t in threads]
                     + [f"{r['fa'][main_t]['believed_mean']:.2f}", f"{sg:,.0f}x",
                        f"{cg:,.1f}x", f"{cg / sg:.3f}"])
    lines = markdown(head, table)
    verdict = None
    if len(rows) >= 2:
        last = rows[-1]
        sg = last["states"] / base["states"]
        cg = (us_per_core(last["fa"][main_t]["rate"], main_t)
              / us_per_core(base["fa"][main_t]["rate"], main_t))
        verdict = {"from": base["side"], "to": last["side"], "state_growth": sg,
                   "cost_growth": cg, "threads": main_t,
                   "met": cg < SCALING_CLEARLY * sg}
    return lines, verdict


# -- the tables --------------------------------------------------------------------------------


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def markdown(header, rows) -> list[str]:
    """A Markdown table, columns padded for reading in a terminal."""
    widths = [max(len(str(r[i])) for r in list(rows) + [header]) for i in range(len(header))]
    out = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return out


def load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unavailable"


def targets_block(measured: dict, verdict: dict | None, threads: list[int]) -> list[str]:
    """Issue 17's targets, each met / not met with the figure measured at 2 threads."""
    lines = ["Targets (issue 17), 2 threads:"]

    def mark(ok):
        return "met    " if ok else "NOT MET"

    for label, target, what in TARGETS:
        rate = measured.get(label)
        if 2 not in threads or rate is None:
            lines.append(f"  -       {what}: >= {target:,} agent-steps/s: not measured "
                         f"(needs the model and 2 in --threads)")
            continue
        n, r = rate
        lines.append(f"  {mark(r >= target)} {what}: >= {target:,} agent-steps/s; measured "
                     f"{r:,.0f} (N={n:,}, {r / target:.2f}x the target)")
    if verdict is None:
        lines.append("  -       grid-side scaling: not measured (needs two sides or more)")
    else:
        v = verdict
        lines.append(
            f"  {mark(v['met'])} per-agent-step cost grows clearly slower than the states "
            f"(grid{v['from']} -> grid{v['to']}: cost growth < {SCALING_CLEARLY:g} x state "
            f"growth = {SCALING_CLEARLY * v['state_growth']:,.3g}x); measured cost growth "
            f"{v['cost_growth']:,.1f}x for {v['state_growth']:,.0f}x the states "
            f"({v['threads']} thread(s))")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(dict.fromkeys(c[0] for c in CASES)),
                   help="comma-separated subset of: %(default)s ('none': no table)")
    p.add_argument("--sides", default=",".join(str(s) for s in SCALING_AGENTS),
                   help="grid sides of the scaling table (default %(default)s; 'none': "
                        "no scaling table)")
    p.add_argument("--threads", default="1,2", help="fa_core thread counts (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="N / 10 (scaling: N / 4), 2 repeats, shorter runs: a smoke test and a "
                        "first look, under about 3 minutes once the large grids are cached")
    p.add_argument("--repeats", type=int, default=None, help="repeats per figure (default 5)")
    p.add_argument("--jax", action="store_true", help="also pymdp's JAX Agent (slow: compiles "
                                                      "per model and batch)")
    p.add_argument("--jax-mem-gb", type=float, default=8.0,
                   help="memory budget of one batched JAX agent; N is reduced to fit "
                        "(default %(default)s)")
    # the former opt-out, now the default: still accepted so scripts using it keep working
    p.add_argument("--no-jax", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-numpy", action="store_true", help="skip pymdp's numpy Agent")
    p.add_argument("--no-model-cache", action="store_true",
                   help="rebuild the large grids of the scaling table instead of loading "
                        "them from the cache (and cache the new build)")
    args = p.parse_args(argv)
    args.no_jax = args.no_jax or not args.jax
    names = list(dict.fromkeys(c[0] for c in CASES))
    args.models = [m.strip() for m in args.models.split(",") if m.strip() and m != "none"]
    unknown = set(args.models) - set(names)
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; choose from {names}")
    try:
        args.sides = ([] if args.sides.strip() == "none"
                      else [int(x) for x in args.sides.split(",") if x.strip()])
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        p.error("--sides and --threads must be comma-separated integers")
    if any(s < 2 for s in args.sides):
        p.error("--sides must be at least 2")
    if not args.threads or min(args.threads) < 1:
        p.error("--threads must be positive")
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    args.min_seconds = 0.1 if args.quick else 0.5
    args.numpy_agents = 1 if args.quick else 2
    args.numpy_steps = 2 if args.quick else 3
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    print(f"fa_core {fa_core.__version__}, {os.cpu_count()} CPUs, {load()}")
    if not args.no_jax:
        import jax

        print(f"jax {jax.__version__} on {jax.devices()[0].platform}, "
              f"x64={'on' if jax.config.jax_enable_x64 else 'off (float32)'}")
    print(f"agent-steps/s: median of {args.repeats} repeats"
          + ("; vs JAX at equal batch size" if not args.no_jax else ""))
    rows, notes, measured = [], [], {}
    header = ("model", "N", "implementation", "agent-steps/s", "mem/agent", "vs numpy", "vs JAX")
    for label, name, kwargs, n in CASES:
        if label not in args.models:
            continue
        if args.quick:
            n = max(100, n // 10)
        d = build_model(name, kwargs)
        gm = fa_core.GenerativeModel(**d)
        print(f"\n{label} N={n:,}: {gm!r}  ({load()})", flush=True)

        n_jax = n
        if not args.no_jax:
            per_agent = JAX_MEMORY_FACTOR * jax_model_bytes_per_agent(d)
            n_jax = max(1, min(n, int(args.jax_mem_gb * 2**30 // per_agent)))
            if n_jax < n:
                print(f"  JAX batch reduced to {n_jax:,}: {n:,} batched copies of the model "
                      f"would need about {n * per_agent / 2**30:.1f} GiB "
                      f"(budget --jax-mem-gb {args.jax_mem_gb:g})")

        fa_mem = fa_memory_per_agent(gm, d, n)
        fa = {}
        for t in args.threads:
            fa[t], k = bench_fa(gm, d, n, t, args)
            print(f"  fa_core {t} thread(s): {fmt_rate(fa[t])} agent-steps/s ({k} steps/repeat)",
                  flush=True)
        if 2 in fa and (label not in measured or n >= measured[label][0]):
            measured[label] = (n, fa[2])  # the targets read the largest N of a model
        fa_at_jax = None
        if not args.no_jax and n_jax < n:
            t = max(args.threads)
            fa_at_jax, _ = bench_fa(gm, d, n_jax, t, args)
            print(f"  fa_core {t} thread(s) at N={n_jax:,}: {fmt_rate(fa_at_jax)}", flush=True)

        np_rate = np_mem = None
        if not args.no_numpy:
            np_rate, n_np, k = bench_numpy(d, args)
            np_mem = numpy_memory_per_agent(d)
            print(f"  pymdp numpy Agent ({n_np} agent(s), {k} steps): {fmt_rate(np_rate)}",
                  flush=True)
        jax_rate = jax_mem = None
        if not args.no_jax:
            try:
                jax_rate, jax_mem, k = bench_jax(d, n_jax, args)
                print(f"  pymdp JAX Agent (batch {n_jax:,}, {k} steps/repeat): "
                      f"{fmt_rate(jax_rate)}", flush=True)
            except Exception as exc:  # report it in the table, keep measuring the rest
                print(f"  pymdp JAX Agent failed at batch {n_jax:,}: "
                      f"{type(exc).__name__}: {str(exc)[:200]}", flush=True)
            gc.collect()

        def ratio(x, ref):
            return "-" if x is None or ref is None else f"{x / ref:,.1f}x"

        same_n = fa_at_jax if fa_at_jax is not None else fa[max(args.threads)]
        for t in args.threads:
            rows.append((label, f"{n:,}", f"fa_core Population, {t} thread(s)", fmt_rate(fa[t]),
                         fmt_bytes(fa_mem), ratio(fa[t], np_rate),
                         ratio(fa[t], jax_rate) if n_jax == n else "-"))
        if fa_at_jax is not None:
            rows.append((label, f"{n_jax:,}", f"fa_core Population, {max(args.threads)} thread(s)",
                         fmt_rate(fa_at_jax), fmt_bytes(fa_mem), ratio(fa_at_jax, np_rate),
                         ratio(fa_at_jax, jax_rate)))
        notes.append(f"{label} N={n:,}: fa_core model, shared by all agents: "
                     f"{fmt_bytes(gm.nbytes)}")
        if not args.no_numpy:
            rows.append((label, f"{args.numpy_agents}", "pymdp numpy Agent, Python loop",
                         fmt_rate(np_rate), fmt_bytes(np_mem), "1.0x", ratio(np_rate, jax_rate)))
        if not args.no_jax:
            rows.append((label, f"{n_jax:,}", "pymdp JAX Agent, jit, batched", fmt_rate(jax_rate),
                         fmt_bytes(jax_mem), ratio(jax_rate, np_rate), "1.0x"))
        if jax_rate is not None:
            notes.append(f"{label} N={n:,}: fa_core ({max(args.threads)} thread(s)) / JAX at "
                         f"N={n_jax:,}: {ratio(same_n, jax_rate)} agent-steps/s; memory per "
                         f"agent JAX / fa_core: {ratio(jax_mem, fa_mem)}")
        del d, gm
        gc.collect()

    scaling = run_scaling(args) if args.sides else []

    print(f"\n{load()}")
    if rows:
        print("\n".join(markdown(header, rows)))
        print()
        for note in notes:
            print(note)
    verdict = None
    if scaling:
        lines, verdict = scaling_table(scaling, args.threads)
        print("\nGrid-side scaling (exact-cue grid foragers, concentrated beliefs; cost = "
              "threads / rate; growth against the smallest side):")
        print("\n".join(lines))
    print()
    print("\n".join(targets_block(measured, verdict, args.threads)))
    print(f"\n{load()}; {time.perf_counter() - t_start:.0f} s in all")


if __name__ == "__main__":
    main()
