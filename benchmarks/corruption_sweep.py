"""Corruption sweep (issue 13): single-bit flips and every truncation of hibernated agents
(compressed and raw) and of a Population checkpoint blob.

Each corrupted blob is woken in a child process (in batches), so a crash is counted
rather than ending the sweep. Every outcome is one of: a clear error
(``CorruptStateError``), a silent wrong state (woke without error but differs from the
original), a different exception, an agent that wakes and then fails its first step
with an exception, or a crash of the child (the rest of its batch runs in a new child).

With ``--crafted N`` (default 2,000) it also flips bits in the payload of the raw agent
and population blobs and recomputes the checksum, as a crafted blob would: then only
the value checks stand between the bytes and the kernels, and the outcomes are a clear
error or an agent that is valid (and steps), never a crash or another exception.

Run: ``python benchmarks/corruption_sweep.py [--flips 10000] [--crafted 2000] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 2000


def originals() -> dict[str, bytes]:
    """The blobs swept, built the same way in parent and children."""
    sys.path.insert(0, ROOT)
    import fa_core
    from fa_core import builtin_models
    model = fa_core.GenerativeModel(**builtin_models.get("tmaze"))
    ag = fa_core.Agent(model=model, seed=3, save_belief_hist=True, gamma=4.0,
                       action_selection="stochastic")
    ag.note = {"run": 7}
    for obs in ([0, 0, 0], [1, 2, 1], [0, 1, 0]):
        ag.infer_states(obs)
        ag.infer_policies()
        ag.sample_action()
    pop = fa_core.Population(model, 8, seed=2)
    for t in range(3):
        pop.step(np.full((8, model.num_modalities), t % 2, np.int32))
    return {"agent-compressed": ag.hibernate(), "agent-raw": ag.hibernate(compress=False),
            "population": pop.hibernate()}, model


def child() -> None:
    """Read jobs (kind, blob hex) from stdin, print one outcome per line."""
    blobs, model = originals()
    import fa_core
    from fa_core import CorruptStateError

    def state(kind, obj):
        return obj.hibernate() if kind == "population" else obj.hibernate(compress=False)

    def wake(kind, blob):
        return (fa_core.Population.wake(blob, model) if kind == "population"
                else fa_core.Agent.wake(blob, model))

    reference = {k: state(k, wake(k, b)) for k, b in blobs.items()}
    for line in sys.stdin:
        kind, _, hexblob = line.rstrip("\n").partition(" ")
        blob = bytes.fromhex(hexblob)
        try:
            obj = wake(kind, blob)
        except CorruptStateError as exc:
            out = "clear" if "corrupt or truncated" in str(exc) else "other-error"
        except Exception as exc:  # noqa: BLE001 - counted, reported
            out = f"other-error:{type(exc).__name__}"
        else:
            if state(kind, obj) != reference[kind]:
                out = "silent-wrong"
            else:
                # a flip that changes nothing the agent restores (e.g. none exists) is a round trip
                out = "exact"
            # step it: a wrongly restored index would crash here, a wrongly restored
            # value fail here
            try:
                if kind == "population":
                    obj.step(np.zeros((obj.n_agents, model.num_modalities), np.int32))
                else:
                    obj.infer_states([0, 0, 0])
                    obj.infer_policies()
                    obj.sample_action()
            except Exception as exc:  # noqa: BLE001 - counted, reported
                out = f"woke-then-failed:{type(exc).__name__}"
        print(out, flush=True)


def run_batch(jobs) -> list[str]:
    """Outcomes of ``jobs``; a child that dies (a signal, or an unexpected exit) is
    counted as a crash of the job it was on, and the rest run in a new child."""
    outs: list[str] = []
    while len(outs) < len(jobs):
        rest = jobs[len(outs):]
        proc = subprocess.run([sys.executable, __file__, "--child"], cwd=ROOT,
                              capture_output=True, text=True,
                              input="".join(f"{k} {b.hex()}\n" for k, b in rest))
        got = proc.stdout.split()
        outs += got
        if proc.returncode != 0 and len(outs) < len(jobs):
            outs.append("crash")
            print(f"crash (exit {proc.returncode}) on {rest[len(got)][0]} job: "
                  f"{proc.stderr.strip().splitlines()[-1:] or ''}", file=sys.stderr)
    return outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flips", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crafted", type=int, default=2000,
                    help="bit flips in the payload of raw agent and population blobs with the "
                         "checksum recomputed: the value checks alone must refuse or accept "
                         "them, never crash")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        child()
        return
    blobs, _ = originals()
    rng = np.random.default_rng(args.seed)
    kinds = sorted(blobs)
    jobs = {k: [] for k in kinds}
    for i in range(args.flips):
        k = kinds[i % len(kinds)]
        b = bytearray(blobs[k])
        bit = int(rng.integers(len(b) * 8))
        b[bit // 8] ^= 1 << (bit % 8)
        jobs[k].append(("flip", bytes(b)))
    for k in kinds:
        jobs[k] += [("truncate", blobs[k][:n]) for n in range(len(blobs[k]))]
    print("blob sizes: " + ", ".join(f"{k} {len(v)} B" for k, v in blobs.items()))
    table = {}
    crafted = {}
    if args.crafted:
        sys.path.insert(0, ROOT)
        from fa_core.blobformat import frame, unframe
        for k, magic, version in (("agent-raw", b"FA", 2), ("population", b"FP", 1)):
            flags, key, body = unframe(blobs[k], magic, version, 3, k)
            out = []
            for _ in range(args.crafted):
                b = bytearray(body)
                bit = int(rng.integers(len(b) * 8))
                b[bit // 8] ^= 1 << (bit % 8)
                out.append((k, frame(magic, version, flags, key, bytes(b), False)))
            crafted[k] = out
    for k in kinds:
        for what in ("flip", "truncate"):
            sel = [(k, b) for w, b in jobs[k] if w == what]
            outs = []
            for i in range(0, len(sel), BATCH):
                outs += run_batch(sel[i:i + BATCH])
            counts = {o: outs.count(o) for o in sorted(set(outs))}
            table[f"{k} {what}"] = (len(sel), counts)
    for k, sel in crafted.items():
        outs = []
        for i in range(0, len(sel), BATCH):
            outs += run_batch(sel[i:i + BATCH])
        outs = ["woke-valid" if o in ("exact", "silent-wrong") else o for o in outs]
        counts = {o: outs.count(o) for o in sorted(set(outs))}
        print(f"{k + ' crafted (valid CRC)':28s} n={len(sel):5d}  "
              + "  ".join(f"{o}={c}" for o, c in counts.items()))
    total = {}
    for name, (n, counts) in table.items():
        print(f"{name:28s} n={n:5d}  " + "  ".join(f"{o}={c}" for o, c in counts.items()))
        for o, c in counts.items():
            total[o] = total.get(o, 0) + c
    n = sum(v[0] for v in table.values())
    other = {k: v for k, v in total.items() if k not in ("crash", "silent-wrong", "clear")}
    print(f"{'total':28s} n={n:5d}  crashes={total.get('crash', 0)}  "
          f"silent wrong={total.get('silent-wrong', 0)}  clear errors={total.get('clear', 0)}  "
          f"other={other}")
    print(json.dumps(total))


if __name__ == "__main__":
    main()
