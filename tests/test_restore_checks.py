"""Issue 13, items 1, 4, 5 and 10 (checkpoints): restored state is checked, blobs carry a
checksum, and waking never unpickles.

Probes that segfaulted before the fix run in a subprocess, so a crash fails the
test instead of killing pytest.
"""

from __future__ import annotations

import pickle
import struct
import subprocess

import numpy as np
import pytest

import fa_core
from probes import run_probe
from fa_core import CorruptStateError, Population, builtin_models
from fa_core.blobformat import HEADER_SIZE, frame, unframe
from fa_core.lifecycle import _FIXED, hibernate, wake


def _run(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter importing the fa_core under test."""
    return run_probe(code)


def _stepped_tmaze(**options):
    options.setdefault("seed", 1)
    ag = fa_core.Agent(**builtin_models.get("tmaze"), **options)
    for obs in ([0, 0, 0], [1, 1, 0], [0, 2, 1]):
        ag.infer_states(obs)
        ag.infer_policies()
        ag.sample_action()
    return ag


def _reframe(blob: bytes, edit) -> bytes:
    """``blob`` with its body passed through ``edit`` and a valid checksum again (a
    crafted blob, not a corrupted one: the value checks must catch it)."""
    flags, key, body = unframe(blob, b"FA", 2, 3, "blob")
    body = bytearray(body)
    edit(body)
    return frame(b"FA", 2, flags & ~1, key, bytes(body), compress=False)


# -- item 1: out-of-range restored values -----------------------------------------------------

def test_issue_reproducer_is_refused_not_a_segfault():
    res = _run("""
        import struct; from fa_core import Agent, CorruptStateError, builtin_models
        ag = Agent(**builtin_models.get("tmaze"), seed=1)
        ag.infer_states([0,0,0]); ag.infer_policies(); ag.sample_action()
        b = bytearray(ag.hibernate(compress=False)); struct.pack_into("<i", b, 34, 1 << 24)
        try:
            Agent.wake(bytes(b)).infer_states([0,0,0])
        except CorruptStateError as exc:
            print("refused:", exc)
    """)
    assert res.returncode == 0, res.stderr
    assert "refused: corrupt or truncated" in res.stdout


@pytest.mark.parametrize("value", [1 << 24, 4, -1, -(1 << 30)])
def test_crafted_action_index_with_valid_checksum_is_refused(value):
    blob = hibernate(_stepped_tmaze(), compress=False)
    bad = _reframe(blob, lambda b: struct.pack_into("<i", b, _FIXED.size, value))
    res = _run(f"""
        import fa_core
        from fa_core import builtin_models, CorruptStateError
        model = fa_core.GenerativeModel(**builtin_models.get("tmaze"))
        try:
            fa_core.Agent.wake({bad!r}, model).infer_states([0, 0, 0])
        except CorruptStateError as exc:
            print("refused:", exc)
    """)
    assert res.returncode == 0, res.stderr
    assert "refused:" in res.stdout and "num_controls" in res.stdout


def test_crafted_blob_checks_name_the_value():
    ag = _stepped_tmaze(save_belief_hist=True)
    blob = hibernate(ag, compress=False)
    # time step -1
    bad = _reframe(blob, lambda b: struct.pack_into("<q", b, 0, -1))
    with pytest.raises(CorruptStateError, match="curr_timestep"):
        wake(bad)
    # NaN in the beliefs (dense float32 section after the action indices)
    qs_at = _FIXED.size + 4 * ag.model.num_factors + 1
    bad = _reframe(blob, lambda b: struct.pack_into("<f", b, qs_at, float("nan")))
    with pytest.raises(CorruptStateError, match="qs holds NaN"):
        wake(bad)
    bad = _reframe(blob, lambda b: struct.pack_into("<f", b, qs_at, -0.5))
    with pytest.raises(CorruptStateError, match="negative"):
        wake(bad)


@pytest.mark.parametrize("slots", [
    {"_act_i": np.array([9, 0], np.int32)},
    {"_act_i": np.array([0, 1 << 20], np.int32)},
    {"_prev_actions": np.array([[0, 0], [7, 0]], np.int8)},
    {"_qs_buf": np.ones(3, np.float32)},
    {"_q_pi": np.full(5, 0.2, np.float32)},
    {"curr_timestep": -3},
    {"gamma": float("nan")},
    {"_fpi": (-1, 1.0, 0.001, True)},
], ids=lambda s: next(iter(s)))
def test_unpickling_checks_restored_values(slots):
    agent = _stepped_tmaze()
    state = agent.__getstate__()
    state.update(slots)
    blank = fa_core.Agent.__new__(fa_core.Agent)
    with pytest.raises(CorruptStateError, match="corrupt or truncated unpickled agent"):
        blank.__setstate__(state)


def test_unpickled_out_of_range_action_is_refused_in_subprocess():
    res = _run("""
        import pickle, numpy as np, fa_core
        from fa_core import builtin_models, CorruptStateError
        ag = fa_core.Agent(**builtin_models.get("tmaze"), seed=1)
        ag.infer_states([0, 0, 0]); ag.infer_policies(); ag.sample_action()
        ag._act_i[0] = 1 << 24                    # what a tampered pickle would hold
        data = pickle.dumps(ag)
        try:
            pickle.loads(data).infer_states([0, 0, 0])
        except CorruptStateError as exc:
            print("refused:", exc)
    """)
    assert res.returncode == 0, res.stderr
    assert "refused:" in res.stdout


# -- item 4: integrity ---------------------------------------------------------------------------

@pytest.mark.parametrize("blob", [b"", b"FA", b"\0" * 10, b"x" * 100])
def test_empty_and_short_blobs_say_corrupt_or_truncated(blob):
    with pytest.raises(CorruptStateError, match="corrupt or truncated"):
        fa_core.Agent.wake(blob)
    with pytest.raises(CorruptStateError, match="corrupt or truncated"):
        Population.wake(blob)


@pytest.mark.parametrize("compress", [True, False])
def test_truncation_junk_and_bit_flips_are_refused(compress):
    blob = _stepped_tmaze().hibernate(compress=compress)
    assert isinstance(CorruptStateError("x"), ValueError)
    for bad, what in [(blob[:-1], "header gives"), (blob + b"\0", "header gives"),
                      (blob[:HEADER_SIZE], "header gives")]:
        with pytest.raises(CorruptStateError, match=what):
            wake(bad)
    for i in range(len(blob)):
        flipped = bytearray(blob)
        flipped[i] ^= 1 << (i % 8)
        with pytest.raises(CorruptStateError, match="corrupt or truncated"):
            wake(bytes(flipped))


def test_other_versions_are_refused_by_name():
    blob = bytearray(_stepped_tmaze().hibernate())
    blob[2] = 1
    with pytest.raises(CorruptStateError, match="version 1"):
        wake(bytes(blob))


# -- item 5: no pickle on the wake path -----------------------------------------------------

class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['PWNED']).touch()",))


def test_version1_blob_with_pickled_extras_never_runs_code(tmp_path, monkeypatch):
    target = tmp_path / "pwned"
    monkeypatch.setenv("PWNED", str(target))
    ag = _stepped_tmaze()
    # the version-1 layout: magic, version, flags, key, then the body whose last section
    # was a pickle of the extras
    body = _FIXED.pack(0, 0, 0) + b"\0" * 64
    payload = pickle.dumps({"gamma": _Exploit()})
    v1 = struct.pack("<2sBB20s", b"FA", 1, 0, ag.model.content_key()) + body + \
        struct.pack("<I", len(payload)) + payload
    with pytest.raises(CorruptStateError):
        wake(v1)
    assert not target.exists()


@pytest.mark.parametrize("options", [
    {"gamma": 3.0, "lr_pA": 0.5, "action_selection": "stochastic", "alpha": 2.0},
    {"seed": np.random.Generator(np.random.MT19937(4)), "save_belief_hist": True},
    {"inference_algo": "MMP", "inference_horizon": 2, "save_belief_hist": True},
    {"sophisticated": True, "si_horizon": 2},
], ids=["options", "mt19937", "mmp", "sophisticated"])
def test_wake_does_not_unpickle(options, monkeypatch):
    ag = _stepped_tmaze(**options)
    ag.note = {"id": 3, "tags": ("a", "b"), "w": np.arange(3.0)}
    ag.prev_actions = [None] + ag.prev_actions  # an odd history form goes to the extras
    blob = ag.hibernate()

    def no_pickle(*args, **kwargs):
        raise AssertionError("wake unpickled")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    back = fa_core.Agent.wake(blob)
    assert back.note["tags"] == ("a", "b") and np.array_equal(back.note["w"], np.arange(3.0))
    assert back.prev_actions[0] is None
    np.testing.assert_array_equal(back.q_pi, ag.q_pi)
    for obs in ([1, 0, 0], [0, 1, 1]):
        back.infer_states(obs)
        ag.infer_states(obs)
        np.testing.assert_array_equal(back.infer_policies()[0], ag.infer_policies()[0])
        np.testing.assert_array_equal(back.sample_action(), ag.sample_action())


def test_unstorable_attributes_are_refused_at_hibernate():
    ag = _stepped_tmaze()
    ag.callback = print
    with pytest.raises(TypeError, match="callback.*pickle it instead"):
        ag.hibernate()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histories_keep_their_dtype(dtype):
    ag = _stepped_tmaze(save_belief_hist=True)
    exact = [np.array([0.5, 0.25, 0.25, 0.0], dtype), np.array([0.25, 0.75], dtype)]
    inexact = [np.array([0.3, 0.3, 0.2, 0.2], dtype), np.array([0.1, 0.9], dtype)]
    ag.qs_hist = [np.array(exact + [None], dtype=object)[:2], np.array(inexact + [None],
                                                                       dtype=object)[:2]]
    ag.q_pi_hist = [np.full(len(ag.q_pi), 1 / 3, dtype) for _ in range(2)]
    for lossless in (True, False):
        back = wake(hibernate(ag) if lossless else hibernate(ag, lossy="float16"))
        for e, f in zip(ag.qs_hist, back.qs_hist):
            for u, v in zip(e, f):
                assert v.dtype == u.dtype
                if lossless:
                    np.testing.assert_array_equal(u, v)
        for u, v in zip(ag.q_pi_hist, back.q_pi_hist):
            assert v.dtype == u.dtype
            np.testing.assert_array_equal(u, v)


# -- populations -----------------------------------------------------------------------------

def _stepped_population(n=6):
    gm = fa_core.GenerativeModel(**builtin_models.get("tmaze"))
    pop = Population(gm, n, seed=3, gamma=np.linspace(1, 8, n))
    obs = np.zeros((n, gm.num_modalities), np.int32)
    pop.step(obs)
    pop.step(obs + 1)
    return gm, pop


def test_population_wake_checks_and_never_unpickles(monkeypatch):
    gm, pop = _stepped_population()
    blob = pop.hibernate()
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    back = Population.wake(blob)
    for name in Population._ARRAYS:
        np.testing.assert_array_equal(getattr(back, name), getattr(pop, name))
    for bad in (blob[:-3], blob + b"x", b""):
        with pytest.raises(CorruptStateError, match="corrupt or truncated"):
            Population.wake(bad)


def test_population_pickle_and_wake_refuse_out_of_range_actions():
    res = _run("""
        import pickle, numpy as np, fa_core
        from fa_core import builtin_models, CorruptStateError, Population
        gm = fa_core.GenerativeModel(**builtin_models.get("tmaze"))
        pop = Population(gm, 4, seed=0)
        pop.step(np.zeros((4, 3), np.int32))
        # corrupt the storage behind the read-only public array, as a bad byte in memory would
        pop.__dict__["_actions"][1, 0] = 1 << 24
        for how, wake in (("pickle", lambda: pickle.loads(pickle.dumps(pop))),
                          ("hibernate", lambda: Population.wake(pop.hibernate()))):
            try:
                wake().step(np.zeros((4, 3), np.int32))
            except CorruptStateError as exc:
                print(how, "refused:", exc)
    """)
    assert res.returncode == 0, res.stderr
    assert "pickle refused" in res.stdout and "hibernate refused" in res.stdout
    assert "num_controls" in res.stdout


# -- checkpoints (item 10): checked on the driver before any shard changes -------------------

def _checkpoint_parts():
    gm = fa_core.GenerativeModel(**builtin_models.get("tmaze"))
    shards = [Population(gm, 3, seed=1), Population(gm, 2, seed=2)]
    blobs = [p.hibernate() for p in shards]
    members = [np.array([0, 2, 4]), np.array([1, 3])]
    return gm, blobs, members, np.random.SeedSequence(0), 1


def test_consistent_checkpoint_is_accepted():
    from fa_core.population import check_checkpoint
    assert check_checkpoint(*_checkpoint_parts()) == [3, 2]


@pytest.mark.parametrize("case", ["members-short", "members-count", "members-duplicate",
                                  "truncated-blob", "flipped-blob", "other-model"])
def test_inconsistent_checkpoint_is_refused_by_name(case):
    from fa_core.population import check_checkpoint
    gm, blobs, members, ss, n_seeded = _checkpoint_parts()
    match = "corrupt or truncated checkpoint"
    if case == "members-short":
        members = members[:1]
    elif case == "members-count":
        members[1] = np.array([1, 3, 5])
    elif case == "members-duplicate":
        members[1] = np.array([1, 1])
    elif case == "truncated-blob":
        blobs[1] = blobs[1][:-10]
        match = "checkpoint shard 1"
    elif case == "flipped-blob":
        b = bytearray(blobs[0])
        b[len(b) // 2] ^= 4
        blobs[0] = bytes(b)
        match = "checkpoint shard 0"
    else:
        gm = fa_core.GenerativeModel(**builtin_models.get("grid10"))
        match = "not the model"
    with pytest.raises(ValueError, match=match):
        check_checkpoint(gm, blobs, members, ss, n_seeded)


def test_values_beyond_float32_and_unnormalised_q_pi_are_refused():
    """Found by the crafted sweep: a finite gamma beyond float32 (inf in the kernel) or a
    q_pi that is no distribution woke, then the first stochastic step failed."""
    agent = _stepped_tmaze()
    for slots, match in (({"gamma": 1e39}, "gamma"), ({"alpha": -1e300}, "alpha"),
                         ({"_q_pi": np.full(len(agent.q_pi), 1e30, np.float32)}, "q_pi sums")):
        state = agent.__getstate__()
        state.update(slots)
        with pytest.raises(CorruptStateError, match=match):
            fa_core.Agent.__new__(fa_core.Agent).__setstate__(state)
