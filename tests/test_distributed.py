"""``fa_core.distributed.ShardedPopulation`` on a local Ray cluster of 2 CPUs.

A sharded population must give exactly what one ``Population`` with the same
seed gives (actions, beliefs, policy posteriors, random streams), whatever the
number of shards, also across add / remove; a killed shard actor must be
reported by shard and the run must resume from a checkpoint to the same final
result as an uninterrupted run.

One Ray cluster serves the whole module (starting one takes seconds); every
population shuts its actors down at the end of its test, so CPUs never run out.
"""

from __future__ import annotations

import copy
import io
import pickle
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="fa_core.distributed needs Ray (pip install fa_core[ray])")

import fa_core  # noqa: E402
from fa_core import builtin_models  # noqa: E402
from fa_core.distributed import ShardedPopulation, ShardLostError  # noqa: E402
from fa_core.population import Population  # noqa: E402
from test_population import Env, make_model  # noqa: E402

N_AGENTS = 23  # not a multiple of 2 or 3: shards of unequal sizes
STEPS = 4
# stochastic actions at a low precision, so every agent's random stream matters
OPTIONS = dict(action_selection="stochastic", alpha=2.0)
STATE = ("qs", "q_pi", "G", "actions", "has_action", "curr_timestep", "rng", "gamma", "alpha")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local cluster of 2 CPUs for the module (or the one already running)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def kill(actor, timeout=60.0):
    """``ray.kill`` an actor and wait until calls to it fail: the kill lands asynchronously."""
    ray.kill(actor)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.get.remote("n_agents"), timeout=timeout)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    pytest.fail(f"actor still answers {timeout} s after ray.kill")


@pytest.fixture
def sharded():
    """Make ShardedPopulations (half a CPU per shard) whose actors die with the test."""
    made = []

    def make(*args, **kwargs):
        kwargs.setdefault("cpus_per_shard", 0.5)
        sp = ShardedPopulation(*args, **kwargs)
        made.append(sp)
        return sp

    yield make
    for sp in made:
        sp.shutdown()


def assert_same(pop: Population, sp: ShardedPopulation, names=STATE) -> None:
    for name in names:
        np.testing.assert_array_equal(sp.gather(name), getattr(pop, name), err_msg=name)


def run(pop, env: Env, steps: int) -> list[np.ndarray]:
    """Step ``pop`` in ``env``; the pending observation stays on ``env``, so runs can continue."""
    if not hasattr(env, "obs"):
        env.obs = env.observe()
    history = []
    for _ in range(steps):
        actions = pop.step(env.obs)
        history.append(actions.copy())
        env.obs = env.step(actions)
    return history


@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_equal_to_single_process_whatever_the_shard_count(sharded, n_shards):
    gm = make_model("rand-2f2m")
    gamma = np.linspace(1.0, 20.0, N_AGENTS)
    C = [np.random.default_rng(m).normal(size=(N_AGENTS, k)) for m, k in enumerate(gm.num_obs)]
    pop = Population(gm, N_AGENTS, seed=7, gamma=gamma, C=C, **OPTIONS)
    sp = sharded(gm, N_AGENTS, n_shards=n_shards, seed=7, gamma=gamma, C=C, **OPTIONS)
    assert sp.n_shards == n_shards and sum(sp.shard_sizes) == N_AGENTS
    assert_same(pop, sp, ("rng", "gamma", "lnC"))
    hist_pop, hist_sp = run(pop, Env(gm, N_AGENTS, 0), STEPS), run(sp, Env(gm, N_AGENTS, 0), STEPS)
    for a, b in zip(hist_pop, hist_sp):
        np.testing.assert_array_equal(b, a)
    assert_same(pop, sp)


def test_stages_separately_equal_single_process(sharded):
    gm = make_model("rand-factored")
    pop = Population(gm, N_AGENTS, seed=1, **OPTIONS)
    sp = sharded(gm, N_AGENTS, n_shards=2, seed=1, **OPTIONS)
    env = Env(gm, N_AGENTS, 3)
    for _ in range(2):
        obs = env.observe()
        np.testing.assert_array_equal(sp.infer_states(obs), pop.infer_states(obs))
        for a, b in zip(sp.infer_policies(), pop.infer_policies()):
            np.testing.assert_array_equal(a, b)
        actions = pop.sample_action()
        np.testing.assert_array_equal(sp.sample_action(), actions)
        env.step(actions)
    pop.reset()
    sp.reset()
    assert_same(pop, sp)


def test_add_and_remove_number_agents_as_one_population(sharded):
    gm = make_model("rand-2f2m")
    gamma = np.linspace(2.0, 9.0, N_AGENTS)  # newcomers copy agent 0's gamma
    pop = Population(gm, N_AGENTS, seed=4, gamma=gamma, **OPTIONS)
    sp = sharded(gm, N_AGENTS, n_shards=3, seed=4, gamma=gamma, **OPTIONS)
    run(pop, Env(gm, N_AGENTS, 1), 2)
    run(sp, Env(gm, N_AGENTS, 1), 2)
    assert sp.remove([0, 5, 22, 7]) == pop.remove([0, 5, 22, 7])
    np.testing.assert_array_equal(sp.add(6), pop.add(6))
    assert sp.remove([1, 2, 24]) == pop.remove([1, 2, 24])
    np.testing.assert_array_equal(sp.add(1), pop.add(1))
    assert sp.n_agents == pop.n_agents == N_AGENTS - 4 + 6 - 3 + 1
    assert max(sp.shard_sizes) - min(sp.shard_sizes) <= 2  # newcomers went to small shards
    for i in range(sp.n_agents):  # locate agrees with where each agent's stream is
        s, r = sp.locate(i)
        assert ray.get(sp.actors[s].get.remote("rng"))[r] == pop.rng[i]
    assert_same(pop, sp)
    hist_pop = run(pop, Env(gm, pop.n_agents, 2), 2)
    for a, b in zip(hist_pop, run(sp, Env(gm, sp.n_agents, 2), 2)):
        np.testing.assert_array_equal(b, a)
    assert_same(pop, sp)
    with pytest.raises(IndexError):
        sp.remove([sp.n_agents])
    assert_same(pop, sp, ("rng",))


def test_model_put_once_and_shared_within_a_worker(sharded):
    gm = fa_core.GenerativeModel(**builtin_models.get("grid10"))
    sp = sharded(gm, 6, n_shards=2, seed=0)
    before = ray.get([a.model_identity.remote() for a in sp.actors])
    assert {key for _, _, key in before} == {gm.content_key()}
    assert len({pid for pid, _, _ in before}) == 2  # one actor process per shard
    sp.checkpoint()
    sp.restore()  # live shards wake their blobs: the unpickled model is the one they hold
    assert ray.get([a.model_identity.remote() for a in sp.actors]) == before


def test_killed_shard_is_reported_and_run_resumes_from_checkpoint(sharded):
    gm = make_model("rand-2f2m")
    steps, at = 6, 2
    reference = run(Population(gm, N_AGENTS, seed=9, **OPTIONS), Env(gm, N_AGENTS, 5), steps)

    sp = sharded(gm, N_AGENTS, n_shards=3, seed=9, **OPTIONS)
    env = Env(gm, N_AGENTS, 5)
    history = run(sp, env, at)
    sp.checkpoint()
    saved_env = copy.deepcopy(env)
    history += run(sp, env, 1)  # progress after the checkpoint is lost with the shard
    kill(sp.actors[1])
    with pytest.raises(ShardLostError, match=r"lost shard\(s\) \[1\]") as err:
        sp.step(env.obs)
    assert err.value.shards == [1]
    with pytest.raises(ShardLostError):  # stopped until restored: nothing runs on half the agents
        sp.gather("qs")
    assert sp.restore() == [1]
    env, history = saved_env, history[:at]
    history += run(sp, env, steps - at)
    for a, b in zip(reference, history):
        np.testing.assert_array_equal(b, a)


def test_every_lost_shard_is_named(sharded):
    gm = make_model("rand-2f2m")
    sp = sharded(gm, N_AGENTS, n_shards=3, seed=0)
    obs = Env(gm, N_AGENTS, 0).observe()
    for s in (0, 2):
        kill(sp.actors[s])
    with pytest.raises(ShardLostError, match=r"\[0, 2\]") as err:
        sp.step(obs)
    assert err.value.shards == [0, 2]
    with pytest.raises(RuntimeError, match="no checkpoint"):
        sp.restore()


def test_hibernate_and_wake_from_a_pickled_checkpoint(sharded):
    gm = make_model("rand-len2")
    pop = Population(gm, N_AGENTS, seed=2, **OPTIONS)
    sp = sharded(gm, N_AGENTS, n_shards=2, seed=2, **OPTIONS)
    run(pop, Env(gm, N_AGENTS, 0), 2)
    run(sp, Env(gm, N_AGENTS, 0), 2)
    blob = pickle.dumps(sp.hibernate())
    with pytest.raises(ShardLostError):  # hibernated: the actors are gone
        sp.step(Env(gm, N_AGENTS, 0).observe())
    woken = ShardedPopulation.wake(pickle.loads(blob), cpus_per_shard=0.5)
    try:
        assert woken.shard_sizes == sp.shard_sizes
        np.testing.assert_array_equal(woken.add(2), pop.add(2))  # stream draws continue
        for a, b in zip(run(pop, Env(gm, pop.n_agents, 1), 2),
                        run(woken, Env(gm, woken.n_agents, 1), 2)):
            np.testing.assert_array_equal(b, a)
        assert_same(pop, woken)
    finally:
        woken.shutdown()


def test_restore_refuses_inconsistent_checkpoints_before_any_shard_changes(sharded):
    """Issue 13 item 10: members not matching blobs, or a truncated shard blob, raise
    CorruptStateError on the driver (not IndexError later, not a RayTaskError)."""
    import dataclasses
    from fa_core import CorruptStateError
    gm = make_model("rand-2f2m")
    sp = sharded(gm, 6, n_shards=2, seed=0)
    ckpt = sp.checkpoint()
    before = sp.gather("qs")
    bad_members = dataclasses.replace(ckpt, members=[ckpt.members[0][:-1], ckpt.members[1]])
    truncated = dataclasses.replace(ckpt, blobs=[ckpt.blobs[0], ckpt.blobs[1][:-7]])
    for bad, match in ((bad_members, "member list"), (truncated, "shard 1")):
        with pytest.raises(CorruptStateError, match=match):
            sp.restore(bad)
        np.testing.assert_array_equal(sp.gather("qs"), before)
    sp.restore(ckpt)


def test_bad_input_refused_before_anything_changes(sharded):
    gm = make_model("rand-2f2m")
    with pytest.raises(ValueError, match="gamma"):
        sharded(gm, 4, n_shards=2, gamma=np.ones(3))
    with pytest.raises(ValueError, match="action_selection"):
        sharded(gm, 4, n_shards=2, action_selection="greedy")
    with pytest.raises(ValueError, match="n_shards"):
        sharded(gm, 4, n_shards=0)
    with pytest.raises(TypeError, match="n_threads"):
        sharded(gm, 4, n_shards=2, n_threads=2)
    sp = sharded(gm, 4, n_shards=2, seed=0)
    before = sp.gather("qs")
    obs = Env(gm, 4, 0).observe()
    bad = obs.copy()
    bad[3, 0] = gm.num_obs[0]  # out of range on the second shard only
    with pytest.raises(ValueError, match=r"obs\[3, 0\]"):
        sp.step(bad)
    with pytest.raises(ValueError, match="shape"):
        sp.step(obs[:3])
    np.testing.assert_array_equal(sp.gather("qs"), before)
    np.testing.assert_array_equal(sp.gather("curr_timestep"), [0, 0, 0, 0])
    with pytest.raises(ValueError, match="name"):
        sp.gather("nothing")


def test_simulate_on_ray_matches_single_process():
    from fa_core.__main__ import main, simulate
    one = simulate("grid10", 30, 3, seed=1, threads=1, out=io.StringIO())
    out = io.StringIO()
    two = simulate("grid10", 30, 3, seed=1, out=out, workers=2)
    try:
        assert "Ray cluster" in out.getvalue() and two["bytes_per_agent"] is None
        assert two["population"].n_shards == 2
        np.testing.assert_array_equal(two["population"].gather("qs"), one["population"].qs)
        np.testing.assert_array_equal(two["env"].found, one["env"].found)
    finally:
        two["population"].shutdown()
    with pytest.raises(SystemExit):
        main(["simulate", "--workers", "0"])


def test_generator_seed_and_memory_report_follow_population():
    """One convention: a Generator seeds a sharded population as it seeds one Population,
    and fa_core.memory_report sums the shards' reports."""
    gm = fa_core.GenerativeModel(**builtin_models.get("grid10"))
    one = Population(gm, N_AGENTS, seed=np.random.default_rng(4), n_threads=1)
    sp = ShardedPopulation(gm, N_AGENTS, seed=np.random.default_rng(4), n_shards=2)
    try:
        np.testing.assert_array_equal(sp.gather("rng"), one.rng)
        report = fa_core.memory_report(sp)
        assert report == sp.memory_report()
        assert report.n_agents == N_AGENTS
        parts = [fa_core.memory_report(Population(gm, k, n_threads=1)) for k in sp.shard_sizes]
        # the same arrays, shard by shard (small objects such as seed entropy may differ)
        assert report.beliefs == pytest.approx(sum(p.beliefs for p in parts), rel=0.01)
        # one model per shard process (unpickled there, so at least the driver's model each)
        assert report.shared_model >= sum(p.shared_model for p in parts)
    finally:
        sp.shutdown()


# -- checkpoints on files (issue 15) -----------------------------------------------------------


def test_checkpoint_to_files_resumes_as_an_uninterrupted_run(sharded, tmp_path):
    gm = make_model("rand-2f2m")
    steps, at = 6, 2
    reference = run(Population(gm, N_AGENTS, seed=9, **OPTIONS), Env(gm, N_AGENTS, 5), steps)
    sp = sharded(gm, N_AGENTS, n_shards=3, seed=9, **OPTIONS)
    env = Env(gm, N_AGENTS, 5)
    history = run(sp, env, 1)
    sp.checkpoint(tmp_path)  # an earlier checkpoint: its files go when the next is written
    history += run(sp, env, at - 1)
    assert sp.checkpoint(tmp_path) == str(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 4 and files[0] == "manifest.fashard"  # one file per shard
    saved_env = copy.deepcopy(env)
    history += run(sp, env, 1)  # progress after the checkpoint is lost with the shard
    kill(sp.actors[1])
    with pytest.raises(ShardLostError):
        sp.step(env.obs)
    assert sp.restore() == [1]  # the latest checkpoint: the directory
    env, history = saved_env, history[:at]
    history += run(sp, env, steps - at)
    for a, b in zip(reference, history):
        np.testing.assert_array_equal(b, a)


def test_wake_from_a_checkpoint_directory(sharded, tmp_path):
    gm = make_model("rand-len2")
    pop = Population(gm, N_AGENTS, seed=2, **OPTIONS)
    sp = sharded(gm, N_AGENTS, n_shards=2, seed=2, **OPTIONS)
    run(pop, Env(gm, N_AGENTS, 0), 2)
    run(sp, Env(gm, N_AGENTS, 0), 2)
    sp.checkpoint(tmp_path)
    sp.shutdown()
    woken = ShardedPopulation.wake(tmp_path, model=gm, cpus_per_shard=0.5)
    try:
        assert woken.shard_sizes == sp.shard_sizes
        assert_same(pop, woken)
        np.testing.assert_array_equal(woken.add(2), pop.add(2))  # stream draws continue
        for a, b in zip(run(pop, Env(gm, pop.n_agents, 1), 2),
                        run(woken, Env(gm, woken.n_agents, 1), 2)):
            np.testing.assert_array_equal(b, a)
        assert_same(pop, woken)
    finally:
        woken.shutdown()


def test_missing_or_corrupt_checkpoint_files_refused_and_nothing_changes(sharded, tmp_path):
    from fa_core import CorruptStateError
    gm = make_model("rand-2f2m")
    sp = sharded(gm, 6, n_shards=2, seed=0)
    sp.checkpoint(tmp_path)
    run(sp, Env(gm, 6, 0), 1)
    before = sp.gather("qs")
    shard1 = sorted(tmp_path.glob("shard-00001-*.fapop"))[0]
    good = shard1.read_bytes()
    manifest = (tmp_path / "manifest.fashard").read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 8
    for damage, match in ((good[:-3], "shard 1"), (bytes(flipped), "CRC-32"), (None, "shard 1")):
        if damage is None:
            shard1.unlink()
        else:
            shard1.write_bytes(damage)
        with pytest.raises(CorruptStateError, match=match):
            sp.restore(tmp_path)
        np.testing.assert_array_equal(sp.gather("qs"), before)
    shard1.write_bytes(good)
    (tmp_path / "manifest.fashard").write_bytes(manifest[:-1])
    with pytest.raises(CorruptStateError, match="manifest|truncated"):
        sp.restore(tmp_path)
    (tmp_path / "manifest.fashard").unlink()
    with pytest.raises(FileNotFoundError, match="no sharded checkpoint"):
        sp.restore(tmp_path)
    other = fa_core.GenerativeModel(**builtin_models.tmaze())
    osp = sharded(other, 2, n_shards=1, seed=0)
    osp.checkpoint(tmp_path / "other")
    with pytest.raises(ValueError, match="another model"):
        sp.restore(tmp_path / "other")
    np.testing.assert_array_equal(sp.gather("qs"), before)


# -- learning (issue 14) ----------------------------------------------------------------------


def _learning_model():
    from random_models import dirichlet_counts, random_model
    rng = np.random.default_rng(11)
    d = random_model(rng, (3, 2), (3, 2), (2, 2), sparsity=0.4, C_scale=2.0)
    pA, pB, pD = (dirichlet_counts(rng, d[k]) for k in ("A", "B", "D"))
    return fa_core.GenerativeModel(A=d["A"], B=d["B"], C=d["C"], pA=pA, pB=pB, pD=pD)


@pytest.mark.parametrize("n_shards", [1, 3])
def test_learning_equals_one_population(sharded, n_shards):
    gm = _learning_model()
    opts = dict(OPTIONS, save_belief_hist=True, lr_pA=0.5, lr_pB=2.0)
    pop = Population(gm, N_AGENTS, seed=3, **opts)
    sp = sharded(gm, N_AGENTS, n_shards=n_shards, seed=3, **opts)
    env = Env(gm, N_AGENTS, 4)
    with pytest.raises(ValueError, match="update_D needs qs_t0: agent 0"):
        sp.update_D()
    for t in range(4):
        obs = env.observe()
        prev = pop.qs.copy()
        np.testing.assert_array_equal(sp.infer_states(obs), pop.infer_states(obs))
        if t:
            pop.update_B(prev)
            sp.update_B(prev)
        else:
            with pytest.raises(ValueError, match="update_B needs an action: agent 0"):
                sp.update_B(prev)
        pop.update_A(obs)
        sp.update_A(obs)
        for a, b in zip(sp.infer_policies(), pop.infer_policies()):
            np.testing.assert_array_equal(a, b)
        actions = pop.sample_action()
        np.testing.assert_array_equal(sp.sample_action(), actions)
        env.step(actions)
    pop.update_D()
    sp.update_D()
    pop.update_D(pop.qs)
    sp.update_D(sp.gather("qs"))
    assert_same(pop, sp)
    for i in (0, 7, N_AGENTS - 1):
        for name in ("pA", "A", "pB", "B", "pD", "D"):
            for x, y in zip(sp.member(i, name), getattr(pop[i], name)):
                np.testing.assert_array_equal(x, y, err_msg=f"{name} of agent {i}")


def test_learning_refuses_bad_input_before_any_shard_learns(sharded):
    gm = _learning_model()
    sp = sharded(gm, 4, n_shards=2, seed=0)
    obs = Env(gm, 4, 0).observe()
    sp.step(obs)
    before = sp.member(3, "pA")
    with pytest.raises(ValueError, match="shape"):
        sp.update_B(np.ones((3, 5)))
    bad = obs.copy()
    bad[3, 1] = gm.num_obs[1]
    with pytest.raises(ValueError, match=r"obs\[3, 1\]"):
        sp.update_A(bad)
    with pytest.raises(ValueError, match="save_belief_hist"):
        sp.update_D()
    for x, y in zip(sp.member(3, "pA"), before):
        np.testing.assert_array_equal(x, y)
    plain = sharded(make_model("rand-2f2m"), 2, n_shards=1, seed=0)
    with pytest.raises(ValueError, match="pA"):
        plain.update_A(Env(plain.model, 2, 0).observe())


# -- MMP and sophisticated populations on shards ------------------------------------------------

ALGORITHMS = {
    "MMP": dict(inference_algo="MMP", inference_horizon=2, use_BMA=False, policy_sep_prior=True),
    "sophisticated": dict(sophisticated=True, si_horizon=2, si_policy_prune_threshold=0.2),
}


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_algorithms_equal_one_population_and_survive_a_checkpoint(sharded, tmp_path, algo):
    gm = make_model("tmaze")
    n, opts = 5, dict(OPTIONS, **ALGORITHMS[algo])
    pop = Population(gm, n, seed=4, **opts)
    sp = sharded(gm, n, n_shards=2, seed=4, **opts)
    env_pop, env_sp = Env(gm, n, 2), Env(gm, n, 2)
    for a, b in zip(run(pop, env_pop, 2), run(sp, env_sp, 2)):
        np.testing.assert_array_equal(b, a)
    assert_same(pop, sp)
    sp.checkpoint(tmp_path)
    # shard files are Population.save files: one format for a population on disk
    parts = [Population.load(f, gm) for f in sorted(tmp_path.glob("shard-*.fapop"))]
    assert [p.n_agents for p in parts] == sp.shard_sizes
    for name in ("qs", "q_pi", "actions"):
        np.testing.assert_array_equal(np.concatenate([getattr(p, name) for p in parts]),
                                      getattr(pop, name), err_msg=name)
    for name in ("inference_algo", "sophisticated"):
        assert [getattr(p[0], name) for p in parts] == [getattr(pop[0], name)] * 2, name
    run(sp, copy.deepcopy(env_sp), 1)  # progress after the checkpoint, undone by restore
    sp.restore(tmp_path)
    assert_same(pop, sp)
    for a, b in zip(run(pop, env_pop, 2), run(sp, env_sp, 2)):
        np.testing.assert_array_equal(b, a)
    assert_same(pop, sp)
    for name in ("inference_algo", "sophisticated", "inference_horizon", "si_horizon"):
        assert sp.member(n - 1, name) == getattr(pop[n - 1], name), name


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_algorithms_refuse_per_agent_C_before_any_shard_starts(algo):
    gm = make_model("tmaze")
    C = [np.zeros((4, k)) for k in gm.num_obs]
    with pytest.raises((ValueError, NotImplementedError), match="per-agent C"):
        ShardedPopulation(gm, 4, n_shards=2, C=C, cpus_per_shard=0.5, **ALGORITHMS[algo])
    with pytest.raises(TypeError, match="storage"):
        ShardedPopulation(gm, 4, n_shards=2, storage="x.fap", cpus_per_shard=0.5)
