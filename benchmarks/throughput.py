"""Agent-steps per second of ``fa_core.Population`` against pymdp, in one run.

One agent-step is ``infer_states`` + ``infer_policies`` + ``sample_action``
for one agent. Compared, on the builtin models of :mod:`fa_core.builtin_models`:

- ``fa_core.Population`` with 1 and 2 threads (``--threads``);
- pymdp's numpy Agent (``pymdp.legacy.agent.Agent``) stepped in a Python loop,
  each agent with its own copy of the model as users build them (a few
  agents for a few steps: it is slow);
- pymdp 1.0's JAX Agent (``pymdp.agent.Agent``), float32, one batched agent
  with ``batch_size=N`` and the model arrays given a leading batch axis, its
  step jit-compiled (compilation excluded). XLA uses every core. When the
  batched model would exceed ``--jax-mem-gb`` the JAX batch is reduced, and
  fa_core is also timed at that batch size so the ratio compares equal sizes.

Every agent observes a simulated world that samples outcomes from the model's
own ``A`` and moves under its own ``B`` and the agent's action; only the
agents' step is timed. Each figure is the median over ``--repeats`` repeats.

Memory per agent: for fa_core, what tracemalloc sees allocated by building the
population and stepping it once, divided by N (the shared model is listed
separately); for pymdp's numpy Agent, tracemalloc of building one agent from
its own model copy and stepping it once; for JAX, the bytes of the batched
agent's arrays plus its belief/policy state, divided by the batch size (XLA's
temporaries during a step are not counted).

Run from the repository root after building the extension::

    python benchmarks/throughput.py                  # everything (several minutes)
    python benchmarks/throughput.py --quick          # smaller N, fewer repeats
    python benchmarks/throughput.py --models tmaze,grid10 --threads 1,2
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

#: (label, builtin model, builder keywords, N) in table order.
CASES = [
    ("tmaze", "tmaze", {}, 100_000),
    ("grid10", "grid10", {}, 10_000),
    ("grid30", "grid30", {}, 1_000),
    ("grid30", "grid30", {}, 10_000),
    ("four_factor", "four_factor", {"policy_len": 1}, 1_000),
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


# -- the table ---------------------------------------------------------------------------------


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_bytes(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unavailable"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(dict.fromkeys(c[0] for c in CASES)),
                   help="comma-separated subset of: %(default)s")
    p.add_argument("--threads", default="1,2", help="fa_core thread counts (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="N / 10, 2 repeats, shorter runs: a smoke test, not a measurement")
    p.add_argument("--repeats", type=int, default=None, help="repeats per figure (default 5)")
    p.add_argument("--jax-mem-gb", type=float, default=8.0,
                   help="memory budget of one batched JAX agent; N is reduced to fit "
                        "(default %(default)s)")
    p.add_argument("--no-jax", action="store_true", help="skip pymdp's JAX Agent")
    p.add_argument("--no-numpy", action="store_true", help="skip pymdp's numpy Agent")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(args.models) - {c[0] for c in CASES}
    if unknown:
        names = list(dict.fromkeys(c[0] for c in CASES))
        p.error(f"--models: unknown {sorted(unknown)}; choose from {names}")
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        p.error(f"--threads must be comma-separated integers, got {args.threads!r}")
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
    print(f"fa_core {fa_core.__version__}, {os.cpu_count()} CPUs, {load()}")
    if not args.no_jax:
        import jax

        print(f"jax {jax.__version__} on {jax.devices()[0].platform}, "
              f"x64={'on' if jax.config.jax_enable_x64 else 'off (float32)'}")
    print(f"agent-steps/s: median of {args.repeats} repeats; vs JAX at equal batch size")
    rows, notes = [], []
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

    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"\n{load()}")
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    print()
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
