"""Population state files (fa_core.storage): save / load, storage-backed populations,
crash safety (kill -9 of a child process), corrupt, truncated and mismatched files.

Every comparison is against the same population kept in RAM in this process, step for step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fa_core

from fa_core import CorruptStateError, GenerativeModel, Population, builtin_models
from fa_core.errors import LayoutMismatchError, ModelMismatchError, UnflushedStateError
from fa_core.storage import DATA_START

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _counts(arrays):
    return [np.asarray(x, dtype=float) * 10 + (x > 0) for x in arrays]


def _model(learning=True, **kw):
    spec = builtin_models.tmaze()
    if learning:
        spec.update(pA=_counts(spec["A"]), pB=_counts(spec["B"]), pD=_counts(spec["D"]))
    return GenerativeModel(**spec, policy_len=2, **kw)


def _obs(gm, n, t):
    """A fixed observation schedule: the same in every process."""
    i = np.arange(n)[:, None]
    return ((i * 7 + t * 3 + np.arange(gm.num_modalities)) % np.asarray(gm.num_obs)).astype(
        np.int32)


def _step(pop, t, learn=True):
    """One step at time ``t``; learns A, B (with a previous action) and, at t == 1, D."""
    obs = _obs(pop.model, pop.n_agents, t)
    prev = pop.qs.copy()
    had = bool(pop.has_action.all()) and pop.n_agents > 0
    pop.infer_states(obs)
    if learn:
        if had:
            pop.update_B(prev)
        pop.update_A(obs)
        if t == 1:
            pop.update_D()
    pop.infer_policies()
    return pop.sample_action().copy()


def _opts(n, stochastic=True):
    rng = np.random.default_rng(5)
    gm = _model()
    C = [rng.normal(size=(n, k)) for k in gm.num_obs]
    return dict(gamma=rng.uniform(1, 16, n), alpha=rng.uniform(1, 16, n), C=C,
                action_selection="stochastic" if stochastic else "deterministic",
                save_belief_hist=True, seed=11)


def _assert_same(a, b):
    assert a.n_agents == b.n_agents
    for name in a._array_specs():
        x, y = a.__dict__["_" + name], b.__dict__["_" + name]
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x[:a.n_agents], y[:b.n_agents], err_msg=name)
    la, lb = a._small_state()["learned"], b._small_state()["learned"]
    assert (la is None) == (lb is None)
    if la is not None:
        assert la.keys() == lb.keys()
        np.testing.assert_array_equal(la["own"], lb["own"])
        for kind in ("A", "B"):
            assert la[kind].keys() == lb[kind].keys()
            for k in la[kind]:
                np.testing.assert_array_equal(la[kind][k], lb[kind][k])
        assert (la["D"] is None) == (lb["D"] is None)
        if la["D"] is not None:
            np.testing.assert_array_equal(la["D"]["counts"], lb["D"]["counts"])
    for opt in ("action_selection", "use_utility", "lr_pA", "_n_seeded", "_params"):
        assert a.__dict__[opt] == b.__dict__[opt], opt


# ---------------------------------------------------------------------------
# equal to in-RAM populations, step for step
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_threads", [1, 2])
def test_save_load_resumes_exactly_with_learning(tmp_path, n_threads):
    n = 13
    ref = Population(_model(), n, n_threads=n_threads, **_opts(n))
    for t in range(3):
        _step(ref, t)
    path = tmp_path / "pop.fap"
    ref.save(path)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    got = Population.load(path, _model())
    assert got.storage is None and got.n_threads == ref.n_threads
    _assert_same(ref, got)
    ref.save(tmp_path / "copy.fap")
    mapped = Population.open(tmp_path / "copy.fap", _model())  # a saved file, memory-mapped
    for t in range(3, 7):
        actions = _step(ref, t)
        np.testing.assert_array_equal(actions, _step(got, t))
        np.testing.assert_array_equal(actions, _step(mapped, t))
        _assert_same(ref, got)
        _assert_same(ref, mapped)
    mapped.close()
    for i in (0, 5):  # learned models agree too
        np.testing.assert_array_equal(ref._agent_model(i).pA[0], got._agent_model(i).pA[0])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_storage_backed_population_steps_as_in_ram_and_reopens_mid_run(tmp_path, n_threads):
    n = 11
    path = tmp_path / "pop.fap"
    ref = Population(_model(), n, n_threads=n_threads, **_opts(n))
    pop = Population(_model(), n, n_threads=n_threads, storage=path, **_opts(n))
    assert pop.storage == os.fspath(path)
    for t in range(3):
        np.testing.assert_array_equal(_step(ref, t), _step(pop, t))
    _assert_same(ref, pop)
    pop.flush()
    pop.close()
    again = Population.open(path, _model())
    _assert_same(ref, again)
    for t in range(3, 6):
        np.testing.assert_array_equal(_step(ref, t), _step(again, t))
        _assert_same(ref, again)
    again.flush()
    again.close()
    third = Population.open(path, _model())
    third.n_threads = 3 - n_threads  # threads do not change results
    for t in range(6, 8):
        np.testing.assert_array_equal(_step(ref, t), _step(third, t))
    _assert_same(ref, third)
    # a file flushed by a storage-backed population loads into RAM, and back
    third.flush()
    ram = Population.load(path, _model())
    _assert_same(ref, ram)
    third.close()


@pytest.mark.parametrize("n_threads", [1, 2])
def test_chunked_stepping_of_a_state_file_equals_one_call(tmp_path, monkeypatch, n_threads):
    """A storage-backed population is stepped in chunks of 64 rows here (whole SIMD
    blocks): identical to the population in RAM, stepped in one call, with learned
    models, per-agent C and intermittent replanning."""
    from fa_core import storage
    monkeypatch.setattr(storage, "CHUNK_BYTES", 1)
    n = 200
    ref = Population(_model(), n, n_threads=n_threads, **_opts(n))
    pop = Population(_model(), n, n_threads=n_threads, storage=tmp_path / "p.fap", **_opts(n))
    assert len(pop.__dict__["_store"].spans(n)) == 4
    _assert_same(ref, pop)
    for t in range(4):
        np.testing.assert_array_equal(_step(ref, t), _step(pop, t))
    replan = np.arange(n) % 3 == 0
    for t in range(4, 6):
        obs = _obs(ref.model, n, t)
        np.testing.assert_array_equal(ref.step(obs, replan=replan), pop.step(obs, replan=replan))
    _assert_same(ref, pop)
    pop.close()


def test_storage_arrays_are_file_mappings_handed_to_the_kernels(tmp_path):
    path = tmp_path / "pop.fap"
    pop = Population(_model(), 40, storage=path, seed=1)
    mapped = {name for name, (mm, _, _) in pop.__dict__["_store"].maps.items()
              if mm is not None}
    assert mapped == set(pop._array_specs())
    _step(pop, 0, learn=False)
    pop.flush()
    # the bytes of the file are the population's rows
    rec_off = pop.__dict__["_store"].maps["curr_timestep"][1]
    with open(path, "rb") as f:
        f.seek(rec_off)
        raw = np.frombuffer(f.read(8 * 40), np.int64)
    np.testing.assert_array_equal(raw, np.ones(40))
    pop.close()


def test_add_and_remove_resize_a_storage_backed_population(tmp_path):
    path = tmp_path / "pop.fap"
    ref = Population(_model(), 5, seed=2, save_belief_hist=True)
    pop = Population(_model(), 5, seed=2, save_belief_hist=True, storage=path)
    for t in range(2):
        np.testing.assert_array_equal(_step(ref, t), _step(pop, t))
    np.testing.assert_array_equal(ref.add(30), pop.add(30))  # beyond capacity: new regions
    assert ref.remove([0, 3, 9]) == pop.remove([0, 3, 9])
    for t in range(2, 4):
        np.testing.assert_array_equal(_step(ref, t), _step(pop, t))
    assert ref.remove([1]) == pop.remove([1])
    pop.add(4), ref.add(4)
    pop.flush()
    size = os.path.getsize(path)
    pop.close()
    again = Population.open(path, _model())
    _assert_same(ref, again)
    for t in range(4, 6):
        np.testing.assert_array_equal(_step(ref, t), _step(again, t))
    again.add(200), ref.add(200)  # reuses the regions growth freed
    np.testing.assert_array_equal(_step(ref, 6), _step(again, 6))
    again.flush()
    assert os.path.getsize(path) >= size
    again.close()
    _assert_same(ref, Population.open(path, _model()))


def test_a_new_registry_array_is_stored_without_changes_to_storage(tmp_path, monkeypatch):
    """An engine adding a row array to Population._array_specs gets it saved, mapped,
    grown and reopened; a file without it is refused as another layout."""
    path_old = tmp_path / "old.fap"
    Population(_model(), 3, seed=0).save(path_old)
    specs = Population._array_specs
    monkeypatch.setattr(Population, "_array_specs",
                        lambda self: dict(specs(self), extra=(4, np.float64)))
    pop = Population(_model(), 3, seed=0, storage=tmp_path / "new.fap")
    pop.__dict__["_extra"][:3] = np.arange(12).reshape(3, 4)
    pop.add(20)
    np.testing.assert_array_equal(pop.__dict__["_extra"][:3], np.arange(12).reshape(3, 4))
    pop.flush()
    pop.save(tmp_path / "saved.fap")
    pop.close()
    again = Population.open(tmp_path / "new.fap", _model())
    np.testing.assert_array_equal(again.__dict__["_extra"][:3], np.arange(12).reshape(3, 4))
    loaded = Population.load(tmp_path / "saved.fap", _model())
    np.testing.assert_array_equal(loaded.__dict__["_extra"][:3], np.arange(12).reshape(3, 4))
    with pytest.raises(LayoutMismatchError, match="extra"):
        Population.load(path_old, _model())
    with pytest.raises(LayoutMismatchError, match="extra"):
        Population.open(path_old, _model())


def test_reading_does_not_dirty_the_file(tmp_path):
    path = tmp_path / "pop.fap"
    pop = Population(_model(), 4, seed=0, storage=path)
    _ = pop.qs.sum(), pop.q_pi, pop.actions, pop.memory_report()
    del pop  # no close, no flush: nothing was written since the constructor's flush
    Population.open(path, _model()).close()


def test_storage_api_errors(tmp_path):
    path = tmp_path / "pop.fap"
    Population(_model(), 2, storage=path).close()
    with pytest.raises(FileExistsError, match="Population.open"):
        Population(_model(), 2, storage=path)
    with pytest.raises(ValueError, match="save"):
        Population(_model(), 2).flush()
    with pytest.raises(TypeError, match="GenerativeModel"):
        Population.open(path, "tmaze")
    with pytest.raises(FileNotFoundError):
        Population.load(tmp_path / "missing.fap", _model())


# ---------------------------------------------------------------------------
# refused files
# ---------------------------------------------------------------------------


def _saved(tmp_path, storage=False):
    path = tmp_path / "pop.fap"
    if storage:
        pop = Population(_model(), 6, seed=0, storage=path)
        _step(pop, 0)
        pop.flush()
        pop.close()
    else:
        pop = Population(_model(), 6, seed=0)
        _step(pop, 0)
        pop.save(path)
    return path


def _array_offset(path, name):
    from fa_core.storage import _read_head
    fd = os.open(path, os.O_RDONLY)
    try:
        _, layout, _ = _read_head(path, fd, _model())
    finally:
        os.close(fd)
    return next(r["offset"] for r in layout["arrays"] if r["name"] == name)


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x10]))


@pytest.mark.parametrize("storage", [False, True])
@pytest.mark.parametrize("where, message", [
    ("magic", "not an fa_core"), ("superblock", "superblock checksum"),
    ("metadata", "metadata checksum"), ("qs", "array 'qs' checksum"),
    ("rng", "array 'rng' checksum"), ("actions", "array 'actions' checksum")])
def test_flipped_bytes_are_refused(tmp_path, storage, where, message):
    path = _saved(tmp_path, storage)
    if where == "magic":
        offset = 0
    elif where == "superblock":
        offset = 30
    elif where == "metadata":
        offset = os.path.getsize(path) - 5
    else:
        offset = _array_offset(path, where) + 3
    _flip(path, offset)
    for opener in (Population.load, Population.open):
        with pytest.raises(CorruptStateError, match=message):
            opener(path, _model())


@pytest.mark.parametrize("cut", [1, 100, "meta", "data", "head"])
def test_truncated_and_extended_files_are_refused(tmp_path, cut):
    path = _saved(tmp_path)
    size = os.path.getsize(path)
    new = {"meta": size - 100, "data": DATA_START + 10, "head": 20}.get(cut, None)
    with open(path, "r+b") as f:
        if new is None:
            f.truncate(size - cut)
        else:
            f.truncate(new)
    for opener in (Population.load, Population.open):
        with pytest.raises(CorruptStateError, match="corrupt or truncated"):
            opener(path, _model())


def test_appended_bytes_are_refused(tmp_path):
    path = _saved(tmp_path)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(CorruptStateError, match="superblock puts the metadata"):
        Population.load(path, _model())


def test_wrong_model_and_other_options_are_refused(tmp_path):
    path = _saved(tmp_path, storage=True)
    with pytest.raises(ModelMismatchError, match="another model"):
        Population.open(path, _model(learning=False))
    with pytest.raises(ModelMismatchError, match="another model"):
        Population.load(path, GenerativeModel(**builtin_models.tmaze(), policy_len=1))
    # a file that is no population state file at all
    other = tmp_path / "other.bin"
    other.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(CorruptStateError, match="not an fa_core"):
        Population.load(other, _model())


def test_out_of_range_values_with_good_checksums_are_refused(tmp_path):
    """A crafted file (good checksums) with an action beyond num_controls."""
    pop = Population(_model(), 3, seed=0)
    pop.__dict__["_actions"][1, 0] = 9  # bypassing the validated setters, as a crafted file
    pop.save(tmp_path / "bad.fap")
    with pytest.raises(CorruptStateError, match="control index 9"):
        Population.load(tmp_path / "bad.fap", _model())
    with pytest.raises(CorruptStateError, match="control index 9"):
        Population.open(tmp_path / "bad.fap", _model())


# ---------------------------------------------------------------------------
# kill -9 of a child process
# ---------------------------------------------------------------------------

_CHILD_PRELUDE = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from test_storage import _model, _step, _opts
    from fa_core import Population
    path, n = {path!r}, {n}
    def say(msg):
        sys.stdout.write(msg + "\\n")
        sys.stdout.flush()
""")


def _child(tmp_path, body, n=9):
    # the child imports the fa_core these tests import: the checkout's, or an installed
    # wheel's when the tests run against one (the checkout then has no compiled modules)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fa_core.__file__)))
    code = _CHILD_PRELUDE.format(root=root, tests=os.path.join(ROOT, "tests"),
                                 path=os.fspath(tmp_path / "pop.fap"), n=n) + \
        textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=root)


def _wait_for(proc, line):
    """Read the child's output up to ``line``; an AssertionError if it ends first."""
    while True:
        got = proc.stdout.readline()
        if not got:
            proc.wait()
            raise AssertionError(f"child ended early: {proc.stderr.read()}")
        if got.strip() == line:
            return


def _kill_when(proc, line):
    """Wait for the child to print ``line``, then kill -9 it."""
    _wait_for(proc, line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _reference(n, steps):
    ref = Population(_model(), n, **_opts(n))
    for t in range(steps):
        _step(ref, t)
    return ref


def test_kill_during_save_leaves_the_previous_file(tmp_path):
    """The child saves after step 2, then is killed half-way through writing the next
    save (its writes hang after the first array); the file is the step-2 state."""
    proc = _child(tmp_path, """
        pop = Population(_model(), n, **_opts(n))
        for t in range(3):
            _step(pop, t)
        pop.save(path)
        _step(pop, 3)
        real = os.pwrite
        calls = []
        def slow(fd, data, off):
            calls.append(off)
            if len(calls) == 2:
                say("mid-write")
                time.sleep(60)
            return real(fd, data, off)
        os.pwrite = slow
        pop.save(path)
    """)
    _kill_when(proc, "mid-write")
    leftovers = [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    assert leftovers  # the kill did land inside the second save
    got = Population.load(tmp_path / "pop.fap", _model())
    ref = _reference(9, 3)
    _assert_same(ref, got)
    np.testing.assert_array_equal(_step(ref, 3), _step(got, 3))


def test_kill_after_unflushed_steps_is_a_clear_error(tmp_path):
    proc = _child(tmp_path, """
        pop = Population(_model(), n, storage=path, **_opts(n))
        for t in range(4):
            _step(pop, t)
        pop.flush()
        _step(pop, 4)
        say("stepped")
        time.sleep(60)
    """)
    _kill_when(proc, "stepped")
    # the step wrote rows after the flush: the file says so
    with pytest.raises(UnflushedStateError, match="after its last flush"):
        Population.open(tmp_path / "pop.fap", _model())
    with pytest.raises(UnflushedStateError):
        Population.load(tmp_path / "pop.fap", _model())


def test_kill_after_flush_gives_the_flushed_state(tmp_path):
    proc = _child(tmp_path, """
        pop = Population(_model(), n, storage=path, **_opts(n))
        for t in range(4):
            _step(pop, t)
            if t == 2:
                pop.flush()
        pop.flush()
        pop.n_threads = 1          # an option changed in RAM only
        say("flushed")
        time.sleep(60)
    """)
    _kill_when(proc, "flushed")
    got = Population.open(tmp_path / "pop.fap", _model())
    ref = _reference(9, 4)
    _assert_same(ref, got)
    for t in range(4, 6):
        np.testing.assert_array_equal(_step(ref, t), _step(got, t))
    got.close()


def test_kill_mid_flush_is_a_clear_error(tmp_path):
    proc = _child(tmp_path, """
        pop = Population(_model(), n, storage=path, **_opts(n))
        _step(pop, 0)
        pop.flush()
        _step(pop, 1)
        real = os.pwrite
        def hang(fd, data, off):
            if off > 0:            # the metadata, before the commit record
                say("mid-flush")
                time.sleep(60)
            return real(fd, data, off)
        os.pwrite = hang
        pop.flush()
    """)
    _kill_when(proc, "mid-flush")
    with pytest.raises(UnflushedStateError):
        Population.open(tmp_path / "pop.fap", _model())


def test_kill_at_a_random_moment_of_a_stepping_run(tmp_path):
    """Steps and flushes in a loop, killed at whatever point it has reached: the file
    is the state of a flushed time step, exactly, or refuses to open."""
    proc = _child(tmp_path, """
        pop = Population(_model(), n, storage=path, **_opts(n))
        say("go")
        for t in range(10_000):
            _step(pop, t)
            if t % 2:
                pop.flush()
    """)
    _wait_for(proc, "go")
    import time
    time.sleep(0.5 + np.random.default_rng().uniform(0, 0.5))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        got = Population.open(tmp_path / "pop.fap", _model())
    except UnflushedStateError:
        return
    steps = int(got.curr_timestep[0])
    assert steps % 2 == 0  # flushed by the constructor and after odd t: t + 1 steps done
    ref = _reference(9, steps)
    _assert_same(ref, got)
    np.testing.assert_array_equal(_step(ref, steps), _step(got, steps))


@pytest.mark.parametrize("algo", [dict(inference_algo="MMP", inference_horizon=3),
                                  dict(sophisticated=True, si_horizon=2)],
                         ids=["MMP", "sophisticated"])
@pytest.mark.parametrize("threads", [1, 2])
def test_engine_populations_save_load_and_open_step_as_in_ram(tmp_path, algo, threads):
    """MMP's window rows and the search's options travel in save files and state files."""
    from fa_core import builtin_models
    gm = GenerativeModel(**builtin_models.tmaze(), policy_len=1 if "si_horizon" in algo else 2)
    obs = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 1], [0, 2, 1], [0, 0, 1]])
    ram = Population(gm, 5, seed=3, n_threads=threads, **algo)
    disk = Population(gm, 5, seed=3, n_threads=threads, storage=tmp_path / "s.fap", **algo)
    for _ in range(2):
        ram.step(obs)
        disk.step(obs)
    ram.save(tmp_path / "r.fap")
    disk.flush()
    disk.close()
    loaded = Population.load(tmp_path / "r.fap", gm)
    reopened = Population.open(tmp_path / "s.fap", gm)
    for _ in range(3):  # past the MMP window's horizon
        want = ram.step(obs).copy()
        for other in (loaded, reopened):
            np.testing.assert_array_equal(other.step(obs), want)
            np.testing.assert_array_equal(other.q_pi, ram.q_pi)
            np.testing.assert_array_equal(other.qs, ram.qs)
    reopened.close()


def test_a_closed_population_refuses_every_use_and_reopens(tmp_path):
    gm = GenerativeModel(**builtin_models.tmaze())
    pop = Population(gm, 3, seed=0, storage=tmp_path / "c.fap")
    pop.close()
    pop.close()  # twice: nothing
    for use in (lambda: pop.step(np.zeros((3, 3), np.int64)), lambda: pop.qs,
                lambda: pop.add(1), lambda: pop.save(tmp_path / "d.fap"), lambda: pop[0],
                lambda: setattr(pop, "gamma", 1.0)):
        with pytest.raises(ValueError, match="state file is closed"):
            use()
    assert repr(pop) == "<closed fa_core.Population>"
    assert Population.open(tmp_path / "c.fap", gm).n_agents == 3
