"""``AgentPool(spill=PATH)``: hibernated agents on disk, reopened, compacted, crash safe.

A spilled pool must give the same numbers as one with every agent awake, find
every agent again when reopened, reclaim the space of deleted agents, and,
whatever moment a process writing it is killed at, reopen as its last commit
or raise CorruptStateError; damaged files are refused, never read as agents.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fa_core
from fa_core import Agent, AgentPool, CorruptStateError, builtin_models
from fa_core.blobformat import frame, unframe
from fa_core.agent_state import _F_RENORM, _F_ZLIB, _FIXED, _MAGIC, _VERSION, _WHAT, wake
from test_lifecycle import _run_population

N_MANY = 100_000


@pytest.fixture(scope="module")
def model():
    return fa_core.GenerativeModel(**builtin_models.tmaze())


def stamped(model, n: int, offset: int = 0) -> list[bytes]:
    """``n`` distinct valid agent blobs: one stepped agent whose time step is ``offset + i``.

    Hibernating 100,000 agents one by one takes far longer than rewriting the
    time step field of one blob (the field every blob starts its payload with).
    """
    agent = Agent(model=model, seed=3)
    agent.infer_states([0, 0, 1])
    agent.infer_policies()
    agent.sample_action()
    flags, key, body = unframe(agent.hibernate(), _MAGIC, _VERSION, _F_ZLIB | _F_RENORM, _WHAT)
    body = bytearray(body)
    rest = _FIXED.unpack_from(body)[1:]
    out = []
    for i in range(n):
        _FIXED.pack_into(body, 0, offset + i, *rest)
        out.append(frame(_MAGIC, _VERSION, flags & ~_F_ZLIB, key, bytes(body), False))
    return out


def test_many_agents_under_a_tiny_budget_lose_nothing_and_reopen(tmp_path, model):
    path = tmp_path / "many.pool"
    blobs = stamped(model, N_MANY)
    pool = AgentPool(max_awake=8, spill=path)
    for i, blob in enumerate(blobs):
        pool.set_hibernated(i, blob)
    for i in range(0, N_MANY, 997):  # wake some: they run and go back to disk
        agent = pool[i]
        assert agent.curr_timestep == i
        agent.infer_states([0, 0, 1])
        agent.infer_policies()
        agent.sample_action()  # the time step advances
    assert len(pool) == N_MANY and pool.n_awake == 8 and pool.asleep_nbytes == 0
    pool.close()
    assert pool.spill_nbytes / N_MANY < 200  # the blob (~130 bytes) and a small record head

    again = AgentPool.open(path, max_awake=8, models=[model])
    assert len(again) == N_MANY and again.n_awake == 0 and sorted(again) == list(range(N_MANY))
    for i in range(N_MANY):  # every agent's bytes, as stored, except those that ran
        if i % 997:
            assert again.get_hibernated(i) == blobs[i]
    for i in range(0, N_MANY, 997):
        agent = again[i]
        assert agent.curr_timestep == i + 1  # woken, stepped and written back
    for i in range(1, N_MANY, 4999):
        assert again[i].curr_timestep == i
    again.close()


def test_spilled_pool_run_matches_an_unbounded_run(tmp_path):
    pool = AgentPool(max_awake=7, spill=tmp_path / "run.pool")
    actions, final = _run_population(300, 20, pool)
    assert pool.n_woken >= 300 and pool.asleep_nbytes == 0
    ref_actions, ref = _run_population(300, 20, None)
    assert np.array_equal(actions, ref_actions)
    for a, b in zip(final, ref):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    pool.close()


def test_reopened_pool_continues_exactly(tmp_path, model):
    path = tmp_path / "cont.pool"
    obs = [[0, 0, 1], [3, 0, 0], [1, 1, 0]]

    def step(agent, t):
        agent.infer_states(obs[t % 3])
        agent.infer_policies()
        return agent.sample_action().copy()

    ref = [Agent(model=model, seed=i, action_selection="stochastic") for i in range(12)]
    with AgentPool(max_awake=3, spill=path) as pool:
        for i in range(12):
            pool[f"agent{i}"] = Agent(model=model, seed=i, action_selection="stochastic")
        for t in range(2):
            for i in range(12):
                np.testing.assert_array_equal(step(pool[f"agent{i}"], t), step(ref[i], t))
    # a new pool object on the file (as a new process would), awake agents flushed by close
    pool = AgentPool(max_awake=3, spill=path)
    assert len(pool) == 12
    for t in range(2, 4):
        for i in range(12):
            np.testing.assert_array_equal(step(pool[f"agent{i}"], t), step(ref[i], t))
    for i in range(12):
        np.testing.assert_array_equal(pool[f"agent{i}"].q_pi, ref[i].q_pi)
    pool.close()


def test_deleting_agents_reclaims_space(tmp_path, model):
    path = tmp_path / "del.pool"
    blobs = stamped(model, 4000)
    pool = AgentPool(max_awake=2, spill=path, garbage_ratio=1.0)  # compaction by hand only
    for i, blob in enumerate(blobs):
        pool.set_hibernated(i, blob)
    full = pool.spill_nbytes
    for i in range(0, 4000, 4):
        pool[i] = pool[i]  # woken, replaced: the old record is garbage
    for i in range(4000):
        if i % 4:
            del pool[i]
    assert len(pool) == 1000 and pool.spill_nbytes > full
    pool.compact()
    assert pool.spill_nbytes == pool.spill_live_nbytes < full // 3
    assert sorted(pool) == list(range(0, 4000, 4))
    data_files = sorted(p.name for p in tmp_path.iterdir())
    assert data_files == ["del.pool", "del.pool.1.data"]  # the old generation is gone
    pool.close()
    again = AgentPool.open(path, max_awake=2)
    assert sorted(again) == list(range(0, 4000, 4))
    assert all(again[i].curr_timestep == i for i in range(0, 4000, 400))
    again.close()


def test_compaction_starts_by_itself_past_the_garbage_ratio(tmp_path, model):
    pool = AgentPool(max_awake=1, spill=tmp_path / "auto.pool", garbage_ratio=0.5)
    blobs = stamped(model, 3000)
    for round_ in range(4):  # each round replaces every record: garbage piles up
        before = pool.n_compactions
        for i in range(3000):
            pool.set_hibernated(i, blobs[(i + round_) % 3000])
        assert pool.n_compactions == before  # compaction commits: only at flush
        pool.flush()
    assert pool.n_compactions >= 1
    assert pool.spill_nbytes - pool.spill_live_nbytes <= 0.5 * pool.spill_nbytes
    assert all(pool.get_hibernated(i) == blobs[(i + 3) % 3000] for i in range(3000))
    pool.close()


def test_uncommitted_writes_are_dropped_on_reopen(tmp_path, model):
    path = tmp_path / "tail.pool"
    blobs = stamped(model, 50)
    pool = AgentPool(max_awake=1, spill=path)
    for i in range(20):
        pool.set_hibernated(i, blobs[i])
    pool.flush()
    for i in range(20, 50):  # appended, never committed (as by a process that died now)
        pool.set_hibernated(i, blobs[i])
    del pool[0]
    pool._spill.close()
    again = AgentPool.open(path, max_awake=1)
    assert sorted(again) == list(range(20)) and again._spill.discarded > 0
    assert all(again.get_hibernated(i) == blobs[i] for i in range(20))
    again.set_hibernated(99, blobs[49])  # appends after the committed end
    again.close()
    assert sorted(AgentPool.open(path, max_awake=1)) == list(range(20)) + [99]


def _spilled(tmp_path, model, n=30):
    path = tmp_path / "bad.pool"
    pool = AgentPool(max_awake=1, spill=path)
    for i, blob in enumerate(stamped(model, n)):
        pool.set_hibernated(i, blob)
    pool.close()
    return path, path.parent / "bad.pool.0.data"


@pytest.mark.parametrize("damage, match", [
    ("flip_record", "checksum mismatch"),
    ("truncate_data", "data file of"),
    ("truncate_commit", "commit file of"),
    ("flip_commit", "commit record checksum"),
    ("remove_data", "missing"),
    ("not_a_pool", "not an AgentPool spill file"),
])
def test_corrupt_or_truncated_files_are_refused(tmp_path, model, damage, match):
    path, data = _spilled(tmp_path, model)
    if damage == "flip_record":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        data.write_bytes(bytes(raw))
    elif damage == "truncate_data":
        data.write_bytes(data.read_bytes()[:-5])
    elif damage == "truncate_commit":
        path.write_bytes(path.read_bytes()[:-1])
    elif damage == "flip_commit":
        raw = bytearray(path.read_bytes())
        raw[20] ^= 1
        path.write_bytes(bytes(raw))
    elif damage == "remove_data":
        data.unlink()
    else:
        path.write_bytes(b"x" * len(path.read_bytes()))
    with pytest.raises(CorruptStateError, match=match):
        AgentPool.open(path, max_awake=1)


def test_a_damaged_blob_is_refused_when_woken(tmp_path, model):
    """Every record is checked on open; a blob damaged in place afterwards (a bad disk
    read) is refused by wake's own checksum, never woken as another agent."""
    path, data = _spilled(tmp_path, model)
    pool = AgentPool.open(path, max_awake=1)
    entry = pool._spill.entries[7]
    with open(data, "r+b") as f:
        f.seek(entry.blob_off + entry.blob_len - 3)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 4]))
    with pytest.raises(CorruptStateError, match="checksum"):
        pool[7]  # noqa: B018
    assert 7 in pool and pool[8].curr_timestep == 8
    pool._spill.close()


def test_bad_arguments_refused(tmp_path, model):
    with pytest.raises(FileNotFoundError):
        AgentPool.open(tmp_path / "absent.pool", max_awake=1)
    with pytest.raises(ValueError, match="garbage_ratio"):
        AgentPool(max_awake=1, spill=tmp_path / "x.pool", garbage_ratio=0)
    with pytest.raises(TypeError, match="models"):
        AgentPool(max_awake=1, spill=tmp_path / "x.pool", models=["gm"])
    pool = AgentPool(max_awake=1, spill=tmp_path / "y.pool")
    with pytest.raises(CorruptStateError):
        pool.set_hibernated(0, b"not a blob")
    with pytest.raises(TypeError):
        pool.set_hibernated([1], stamped(model, 1)[0])
    assert len(pool) == 0
    pool[0] = Agent(model=model)
    pool.close()
    with pytest.raises(ValueError, match="closed"):
        pool[0]  # noqa: B018


def test_reopen_needs_the_models_and_classes(tmp_path):
    """A reopened file names each agent's model by content key: a model nobody holds
    is a clear error at open, as is waking an agent of a subclass not passed."""
    class Tagged(Agent):
        pass

    gm = fa_core.GenerativeModel(**builtin_models.tmaze(), policy_len=2)
    path = tmp_path / "models.pool"
    with AgentPool(max_awake=1, spill=path) as pool:
        pool["plain"] = Agent(model=gm)
        pool["tagged"] = Tagged(model=gm)
    key = gm.content_key()
    del gm, pool
    import gc
    gc.collect()
    if fa_core.model.model_by_key(key) is None:
        with pytest.raises(ValueError, match="models="):
            AgentPool.open(path, max_awake=1)
    gm = fa_core.GenerativeModel(**builtin_models.tmaze(), policy_len=2)
    pool = AgentPool.open(path, max_awake=1, models=[gm])
    assert pool["plain"].model.content_key() == key
    with pytest.raises(ValueError, match="classes="):
        pool["tagged"]  # noqa: B018
    pool._spill.close()
    pool = AgentPool.open(path, max_awake=1, models=[gm], classes=[Tagged])
    assert type(pool["tagged"]) is Tagged
    pool.close()


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import fa_core
    from fa_core import AgentPool, builtin_models
    from test_pool_spill import stamped
    model = fa_core.GenerativeModel(**builtin_models.tmaze())
    pool = AgentPool(max_awake=4, spill={path!r}, models=[model])
    n = {n}
    k = 0
    while True:  # commit k holds agents 0..n-1 with time steps k * n + i (k >= 1)
        k += 1
        for i, blob in enumerate(stamped(model, n, k * n)):
            pool.set_hibernated(i, blob)
        if k % 3 == 0:
            del pool[n - 1]  # a delete record, undone by the next round's put
        pool.flush()
        print(k, flush=True)
""")


def test_killed_mid_write_reopens_as_the_last_commit(tmp_path, model):
    n = 3000  # a round writes ~400 kB: auto-compaction runs every few rounds
    path = tmp_path / "crash.pool"
    script = _WRITER.format(tests=os.path.dirname(__file__), path=str(path), n=n)
    rng = np.random.default_rng(0)
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True)
        committed = int(proc.stdout.readline())  # at least one commit of this process
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read().split()
        proc.wait()
        committed = int(rest[-1]) if rest else committed
        pool = AgentPool.open(path, max_awake=4, models=[model])
        stamps = [pool.get_hibernated(i) for i in sorted(pool)]
        times = [wake(b, model).curr_timestep for b in stamps[:: max(1, len(stamps) // 50)]]
        # one whole commit: the last reported one, or the one just after if the kill came
        # between its rename and its print (each commit k is agents i with k * n + i)
        k = (times[0] // n)
        assert k in (committed, committed + 1), (k, committed, attempt)
        expected = n - 1 if k % 3 == 0 else n
        assert sorted(pool) == list(range(expected))
        assert stamps == [b for b in stamped(model, expected, k * n)]
        pool._spill.close()
        leftovers = sorted(p.name for p in tmp_path.iterdir())
        assert leftovers == ["crash.pool", f"crash.pool.{pool._spill.gen}.data"]
