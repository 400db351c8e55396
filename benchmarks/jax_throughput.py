"""Agent-steps per second and memory per agent: ``fa_core.jax.Agent`` against pymdp's JAX Agent.

Both agents are driven by the same jit-compiled step, written against pymdp
1.0's JAX API (``infer_states`` + ``infer_policies`` + ``sample_action`` +
``update_empirical_prior``), at equal batch sizes on CPU, on the builtin
models ``tmaze``, ``grid10`` and ``grid30`` (:mod:`fa_core.builtin_models`),
in one run:

- pymdp 1.0's JAX Agent (``pymdp.agent.Agent``), float32, the model arrays
  given a leading batch axis (pymdp broadcasts unbatched ones to the batch
  anyway);
- ``fa_core.jax.Agent`` built from the same, unbatched, arrays: one compiled
  model shared by the batch, the step in fa_core's kernels through
  ``jax.pure_callback``.

Compilation is excluded (one warm-up step). Every agent observes the
simulated world of ``benchmarks/throughput.py`` (outcomes sampled from the
model's own ``A``, moves under its ``B``); only the agents' step is timed;
each figure is the median over ``--repeats`` repeats.

Memory per agent: the bytes of the agent's JAX arrays plus its belief and
policy state, divided by the batch size; for fa_core.jax also the compiled
model it shares (``kmodel.nbytes``), divided by the batch size. XLA's and the
kernels' temporaries during a step are not counted.

Run from the repository root after building the extension::

    python benchmarks/jax_throughput.py            # T-maze 10,000, grid10 1,000, grid30 100
    python benchmarks/jax_throughput.py --quick    # smaller batches, one repeat
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir))
sys.path.insert(0, HERE)

import fa_core  # noqa: E402
from fa_core import builtin_models  # noqa: E402
from throughput import fmt_bytes, fmt_rate, run_jax_agent  # noqa: E402

#: (builtin model, batch size, quick batch size)
CASES = [("tmaze", 10_000, 1_000), ("grid10", 1_000, 100), ("grid30", 100, 20)]


def make_agent(cls, d: dict, n: int, batched: bool):
    gm = fa_core.GenerativeModel(**d)
    import jax.numpy as jnp

    def arr(x):
        x = jnp.asarray(x, dtype=jnp.float32)
        return jnp.broadcast_to(x[None], (n,) + x.shape) if batched else x

    return cls(
        A=[arr(a) for a in d["A"]], B=[arr(b) for b in d["B"]],
        C=[arr(c) for c in d["C"]], D=[arr(x) for x in d["D"]],
        A_dependencies=gm.A_factor_list, B_dependencies=gm.B_factor_list,
        control_fac_idx=gm.control_fac_idx, policy_len=gm.policy_len, batch_size=n,
        gamma=16.0, alpha=16.0, num_iter=10, action_selection="deterministic",
        sampling_mode="marginal", inference_algo="fpi")


def bench(agent, d: dict, n: int, args) -> tuple[float, float, int]:
    """:func:`throughput.run_jax_agent`, plus fa_core.jax's compiled models (shared by the
    batch)."""
    rate, per_agent, k = run_jax_agent(agent, d, n, args)
    if hasattr(agent, "model_id"):
        from fa_core.jax import host
        ids = set(np.asarray(agent.model_id).tolist())
        per_agent += sum(host.model(i).kmodel.nbytes for i in ids) / n
    return rate, per_agent, k


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller batches, one repeat")
    p.add_argument("--models", default=",".join(c[0] for c in CASES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.min_seconds = 1, 0.3
    import jax
    from pymdp.agent import Agent as PymdpAgent
    from fa_core.jax import Agent as FaAgent
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
          f"x64={'on' if jax.config.jax_enable_x64 else 'off (float32)'}")
    rows = []
    wanted = args.models.split(",")
    for name, n_full, n_quick in CASES:
        if name not in wanted:
            continue
        n = n_quick if args.quick else n_full
        d = builtin_models.get(name)
        print(f"{name}, batch {n:,}", flush=True)
        fa_rate, fa_mem, k1 = bench(make_agent(FaAgent, d, n, batched=False), d, n, args)
        print(f"  fa_core.jax: {fmt_rate(fa_rate)} agent-steps/s ({k1} steps/repeat)", flush=True)
        pm_rate, pm_mem, k2 = bench(make_agent(PymdpAgent, d, n, batched=True), d, n, args)
        print(f"  pymdp JAX:   {fmt_rate(pm_rate)} agent-steps/s ({k2} steps/repeat)", flush=True)
        rows.append((name, f"{n:,}", fmt_rate(fa_rate), fmt_rate(pm_rate),
                     f"{fa_rate / pm_rate:.1f}x", fmt_bytes(fa_mem), fmt_bytes(pm_mem)))
    head = ("model", "batch", "fa_core.jax steps/s", "pymdp JAX steps/s", "speed-up",
            "fa_core.jax mem/agent", "pymdp JAX mem/agent")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print()
    for r in [head] + rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
