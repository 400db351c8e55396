"""Pickling, hibernate / wake and the AgentPool: exact round trips over episodes.

The pattern of the episode tests: one run steps an agent straight through; a
second run, from the same global RNG state, puts the agent away (pickle or
hibernate) after some steps and continues with what comes back. Every
output of every step (``qs``, ``q_pi``, ``G``, the action, the action history,
the belief history) must be bit-for-bit the same.
"""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

import fa_core
from fa_core import builtin_models
from fa_core.blobformat import HEADER_SIZE, Reader
from fa_core.lifecycle import (FLOAT16_ABS_ERROR, FLOAT16_REL_ERROR, AgentPool, _decode_floats,
                               _FIXED, blob_model_key, dumps, hibernate, loads, wake)
from fa_core.model import model_by_key
from random_models import obj_array, random_model, random_obs

N_STEPS, PUT_AWAY_AT = 7, (1, 3, 4)


def _model_kwargs(name: str) -> dict:
    if name == "tmaze":
        return builtin_models.tmaze()
    # two factors, each modality depending on both: fixed-point iterations and ties
    m = random_model(np.random.default_rng(7), num_states=[3, 4], num_obs=[4, 3, 2],
                     num_controls=[2, 3], sparsity=0.3)
    return {k: m[k] for k in ("A", "B", "C", "D")}


def _snapshot(agent) -> dict:
    out = {"qs": [q.copy() for q in agent.qs], "q_pi": agent.q_pi.copy(), "G": agent.G.copy(),
           "action": None if agent.action is None else agent.action.copy(),
           "prev_actions": [None if a is None else a.copy() for a in (agent.prev_actions or [])],
           "t": agent.curr_timestep}
    if hasattr(agent, "qs_hist"):
        out["qs_hist"] = [[q.copy() for q in e] for e in agent.qs_hist]
        out["q_pi_hist"] = [q.copy() for q in agent.q_pi_hist]
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if k in ("qs", "prev_actions", "q_pi_hist"):
            assert len(x) == len(y), k
            for u, v in zip(x, y):
                assert (u is None and v is None) or np.array_equal(u, v), k
        elif k == "qs_hist":
            assert len(x) == len(y)
            for e, f in zip(x, y):
                assert all(np.array_equal(u, v) for u, v in zip(e, f))
        elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x is not None and y is not None and np.array_equal(x, y), k
            assert x.dtype == y.dtype, k
        else:
            assert x == y, k


def _episode(make_agent, observations, put_away=None) -> list[dict]:
    """Step an agent through ``observations``; after the steps in PUT_AWAY_AT,
    replace it by ``put_away(agent)``. Returns a snapshot per step."""
    np.random.seed(1234)
    agent = make_agent()
    out = []
    for t, obs in enumerate(observations):
        agent.infer_states(obs)
        agent.infer_policies()
        agent.sample_action()
        out.append(_snapshot(agent))
        if put_away is not None and t in PUT_AWAY_AT:
            agent = put_away(agent)
            _assert_same(_snapshot(agent), out[-1])
    return out


AGENT_OPTIONS = [
    {},
    {"seed": 5, "action_selection": "stochastic", "alpha": 4.0},
    {"seed": np.random.Generator(np.random.MT19937(3)), "action_selection": "stochastic"},
    {"save_belief_hist": True, "belief_hist_len": 3, "action_hist_len": 4, "gamma": 3.5},
    {"sampling_mode": "full", "inference_params": {"num_iter": 3, "dF": 1.0, "dF_tol": 0.01,
                                                   "compute_vfe": True}},
    {"reuse_buffers": True, "use_states_info_gain": False, "seed": 11},
]


def _put_away_methods():
    return {
        "pickle": lambda a: pickle.loads(pickle.dumps(a)),
        "dumps": lambda a: loads(dumps(a)),
        "hibernate": lambda a: wake(hibernate(a)),
        "hibernate-raw": lambda a: fa_core.Agent.wake(a.hibernate(compress=False), a.model),
    }


@pytest.mark.parametrize("model_name", ["tmaze", "random2f"])
@pytest.mark.parametrize("options", AGENT_OPTIONS, ids=lambda o: ",".join(sorted(o)) or "defaults")
@pytest.mark.parametrize("method", list(_put_away_methods()))
def test_round_trip_is_exact_over_an_episode(model_name, options, method):
    kwargs = _model_kwargs(model_name)
    rng = np.random.default_rng(0)
    num_obs = [a.shape[0] for a in kwargs["A"]]
    observations = [random_obs(rng, num_obs) for _ in range(N_STEPS)]

    def make():
        opts = dict(options)
        if isinstance(opts.get("seed"), np.random.Generator):
            opts["seed"] = np.random.Generator(np.random.MT19937(3))  # a fresh stream per run
        return fa_core.Agent(**kwargs, **opts)

    straight = _episode(make, observations)
    again = _episode(make, observations, _put_away_methods()[method])
    for a, b in zip(straight, again):
        _assert_same(a, b)


def test_round_trip_keeps_user_attributes_options_and_identity():
    agent = fa_core.Agent(**builtin_models.tmaze(), gamma=2.0, lr_pA=0.5, seed=3)
    agent.note = {"id": 17}
    agent.infer_states([0, 0, 1])
    agent.infer_policies()
    agent.sample_action()
    for back in (pickle.loads(pickle.dumps(agent)), wake(hibernate(agent))):
        assert back.note == {"id": 17}
        assert back.gamma == 2.0 and back.lr_pA == 0.5
        np.testing.assert_array_equal(back.prev_actions[-1], back.action)  # as after sample_action
        assert back.model is agent.model
        assert back._rng is not agent._rng
        assert back._rng.bit_generator.state == agent._rng.bit_generator.state
    # a history with a step that had no action (pymdp stores None) round-trips too
    agent.prev_actions = [None, np.array([1.0, 0.0]), np.array([3.0, 0.0])]
    for back in (pickle.loads(pickle.dumps(agent)), wake(hibernate(agent))):
        got = back.prev_actions
        assert got[0] is None
        assert [list(a) for a in got[1:]] == [[1.0, 0.0], [3.0, 0.0]]
    # values that are not control indices are refused, not stored
    with pytest.raises(ValueError, match="prev_actions"):
        agent.prev_actions = [np.array([1.5, 0.0])]
    plain = fa_core.Agent(**builtin_models.tmaze())
    back = wake(hibernate(plain))
    assert back._rng is np.random and back.action is None and back.prev_actions is None
    with pytest.raises(AttributeError):
        back.note  # noqa: B018 - no __dict__ entry appears from nowhere


class MyAgent(fa_core.Agent):
    __slots__ = ("tag",)


def test_subclass_round_trip():
    agent = MyAgent(**builtin_models.tmaze())
    agent.tag = "x"
    for back in (pickle.loads(pickle.dumps(agent)), MyAgent.wake(hibernate(agent)),
                 wake(hibernate(agent), cls=MyAgent)):
        assert type(back) is MyAgent and back.tag == "x"
    # the blob names its class but never imports it: waking as another class is refused
    with pytest.raises(ValueError, match="MyAgent"):
        wake(hibernate(agent))
    with pytest.raises(ValueError, match="fa_core.Agent"):
        MyAgent.wake(hibernate(fa_core.Agent(**builtin_models.tmaze())))


def test_population_members_are_views_and_are_not_hibernated():
    pop = fa_core.Population(fa_core.GenerativeModel(**builtin_models.tmaze()), 3)
    with pytest.raises(TypeError, match="PopulationMember"):
        hibernate(pop[1])
    with pytest.raises(TypeError, match="PopulationMember"):
        AgentPool(max_awake=2)[0] = pop[1]
    with pytest.raises(TypeError, match="Agent"):
        hibernate("not an agent")


# -- pickles store a shared model once ---------------------------------------------------------


def test_pickle_of_many_agents_stores_the_model_once():
    kwargs = builtin_models.grid_forager(10)
    model = fa_core.GenerativeModel(**kwargs)
    agents = [fa_core.Agent(model=model) for _ in range(50)]
    one = len(pickle.dumps(agents[0]))
    many = len(pickle.dumps(agents))
    model_bytes = len(pickle.dumps(model))
    per_agent = (many - model_bytes) / 50
    assert per_agent < 2_500
    assert many < model_bytes + 50 * 2_500
    assert one < model_bytes + 2_500
    back = pickle.loads(pickle.dumps(agents))
    assert all(a.model is model for a in back)  # the live equal model is reused


def test_unpickled_model_is_shared_when_no_equal_model_is_alive():
    kwargs = builtin_models.grid_forager(10)
    model = fa_core.GenerativeModel(**kwargs)
    data = pickle.dumps([fa_core.Agent(model=model) for _ in range(3)])
    key = model.content_key()
    del model
    gc.collect()
    assert model_by_key(key) is None
    back = pickle.loads(data)
    assert back[0].model is back[1].model is back[2].model
    assert back[0].model.content_key() == key
    again = pickle.loads(data)
    assert again[0].model is back[0].model  # the first unpickled model is now the live one


def test_pickle_leaves_out_pymdp_layout_views():
    agent = fa_core.Agent(**builtin_models.grid_forager(30))
    size_before = len(pickle.dumps(agent))
    assert agent.A[0].shape == (900, 900) and agent.B[0].shape == (900, 900, 5)  # builds views
    assert len(pickle.dumps(agent)) == size_before
    assert size_before < 200_000  # the packed sparse model, not 3.2 MB of dense A


def test_dumps_leaves_models_out():
    model = fa_core.GenerativeModel(**builtin_models.grid_forager(10))
    agents = [fa_core.Agent(model=model) for _ in range(10)]
    data = dumps(agents)
    assert len(data) < 10 * 2_500
    assert len(dumps(agents, include_models=True)) > len(data) + 5_000
    back = loads(data)
    assert all(a.model is model for a in back)
    key = model.content_key()
    del agents, back, model
    gc.collect()
    assert model_by_key(key) is None
    with pytest.raises(pickle.UnpicklingError, match="not alive"):
        loads(data)
    fresh = fa_core.GenerativeModel(**builtin_models.grid_forager(10))
    assert loads(data, models=[fresh])[0].model is fresh


def test_model_pickles_to_itself_and_copies_are_itself():
    import copy
    model = fa_core.GenerativeModel(**builtin_models.tmaze())
    assert pickle.loads(pickle.dumps(model)) is model
    assert copy.copy(model) is model and copy.deepcopy(model) is model
    other = fa_core.GenerativeModel(**builtin_models.tmaze())
    assert other.content_key() == model.content_key()
    changed = model.replace(C=[np.zeros(4), np.array([0.0, 1.0, -1.0]), np.zeros(2)])
    assert changed.content_key() != model.content_key()


# -- hibernation ---------------------------------------------------------------------------------


def _grid_agent(steps: int, **kwargs):
    agent = fa_core.Agent(**builtin_models.grid_forager(30), **kwargs)
    for t in range(steps):
        agent.infer_states([(31 * t) % 900, 0])
        agent.infer_policies()
        agent.sample_action()
    return agent


def test_hibernated_grid_agent_is_small():
    agent = _grid_agent(20, seed=1)
    blob = agent.hibernate()
    assert len(blob) <= 2_048
    raw = agent.hibernate(compress=False)
    assert len(raw) > 900 * 4  # the float32 beliefs alone
    assert len(blob) < len(raw) / 4  # zlib earns its keep on beliefs
    for b in (blob, raw):
        back = fa_core.Agent.wake(b)
        _assert_same(_snapshot(back), _snapshot(agent))


def test_wake_resolves_the_model_by_content_key():
    agent = fa_core.Agent(**builtin_models.tmaze())
    blob = agent.hibernate()
    key = blob_model_key(blob)
    assert key == agent.model.content_key()
    assert wake(blob).model is agent.model
    other = fa_core.GenerativeModel(**builtin_models.grid_forager(10))
    with pytest.raises(ValueError, match="not the model"):
        wake(blob, model=other)
    with pytest.raises(TypeError, match="model"):
        wake(blob, model="tmaze")
    del agent
    gc.collect()
    with pytest.raises(ValueError, match="no live model"):
        wake(blob)
    rebuilt = fa_core.GenerativeModel(**builtin_models.tmaze())
    assert wake(blob, rebuilt).model is rebuilt
    with pytest.raises(ValueError, match="not an fa_core"):
        wake(b"XX" + blob[2:])


def test_learning_agent_hibernates_with_its_private_model():
    kwargs = builtin_models.tmaze()
    pA = obj_array([a * 4.0 + 0.5 * (a > 0) for a in kwargs["A"]])
    agent = fa_core.Agent(**kwargs, pA=pA, seed=2)
    twin = fa_core.Agent(**kwargs, pA=pA, seed=2)
    for a in (agent, twin):
        a.infer_states([3, 0, 1])
        a.update_A([3, 0, 1])
    assert agent.model is not twin.model  # learning gave each its own model
    back = wake(agent.hibernate())
    assert back.model is agent.model
    assert all(np.array_equal(x, y) for x, y in zip(back.pA, twin.pA))


@pytest.mark.parametrize("hist", [False, True])
def test_float16_error_bounds(hist):
    rng = np.random.default_rng(3)
    model = fa_core.GenerativeModel(**_model_kwargs("random2f"))
    agent = fa_core.Agent(model=model, save_belief_hist=hist)
    sizes = model.num_states
    for _trial in range(200):
        # beliefs from tiny to large entries, including float16 subnormals and underflow
        parts = [rng.dirichlet(np.full(n, 0.05)) for n in sizes]
        agent.qs = parts
        if hist:
            agent.qs_hist = [obj_array([p.astype(np.float32) for p in parts])]
        x = agent._qs_buf.astype(np.float64)
        blob = hibernate(agent, lossy="float16", compress=False)
        # before renormalisation: the float16 values the blob holds
        body = memoryview(blob)[HEADER_SIZE:]
        x16 = _decode_floats(Reader(body, "blob", _FIXED.size + 4 * model.num_factors), sum(sizes))
        err = np.abs(x16.astype(np.float64) - x)
        assert np.all(err <= np.maximum(FLOAT16_REL_ERROR * x, FLOAT16_ABS_ERROR))
        normal = x >= 2.0 ** -14
        assert np.all(err[normal] <= FLOAT16_REL_ERROR * x[normal])
        # after renormalisation: the documented L1 bound per factor
        back = wake(blob)
        y = back._qs_buf.astype(np.float64)
        off = 0
        for n in sizes:
            s = x[off:off + n].sum()
            bound = abs(1 - s) + 2 * (FLOAT16_REL_ERROR + n * FLOAT16_ABS_ERROR) + n * 2.0 ** -24
            assert np.abs(y[off:off + n] - x[off:off + n]).sum() <= bound
            assert abs(y[off:off + n].sum() - 1) < 1e-6
            off += n
        if hist:
            yh = np.concatenate(list(back.qs_hist[0]))
            assert np.array_equal(yh, back._qs_buf)


def test_prune_error_bound_and_size():
    agent = _grid_agent(6)
    x = agent._qs_buf.astype(np.float64)
    threshold = 1e-3
    blob = agent.hibernate(prune=threshold)
    y = wake(blob)._qs_buf.astype(np.float64)
    removed = x[x < threshold].sum()
    assert np.all(y[x < threshold] == 0)
    assert np.abs(y - x).sum() <= abs(1 - x.sum()) + 2 * removed + 900 * 2.0 ** -24
    kept = x >= threshold
    assert np.allclose(y[kept], x[kept] / (1 - removed), rtol=2 ** -22, atol=0)
    assert len(agent.hibernate(prune=threshold, compress=False)) < 900  # sparse, not 3600 B
    # a threshold above every entry still keeps the most probable state
    y = wake(agent.hibernate(prune=0.99))._qs_buf
    assert y[np.argmax(x)] == 1.0 and y.sum() == 1.0


def test_lossy_arguments_are_checked():
    agent = fa_core.Agent(**builtin_models.tmaze())
    with pytest.raises(ValueError, match="lossy"):
        agent.hibernate(lossy="int8")
    for bad in (0, 1.5, -0.1, "x"):
        with pytest.raises(ValueError, match="prune"):
            agent.hibernate(prune=bad)


# -- the pool ------------------------------------------------------------------------------------

POOL_AGENTS, POOL_STEPS, POOL_BURST = 10_000, 20, 10


def _run_population(n_agents: int, steps: int, pool: AgentPool | None) -> tuple[np.ndarray, list]:
    """Step ``n_agents`` T-maze agents ``steps`` times, held in ``pool`` or in a dict.

    Agents are visited in rounds, each visit running ``POOL_BURST`` steps of
    one agent (as a simulation that wakes a block of agents and advances them
    would), in alternating directions. Under a budget far below ``n_agents``
    every visit wakes a hibernated agent. Returns every action and the final
    beliefs, policy posterior, time step and action history of each agent.
    """
    model = fa_core.GenerativeModel(**builtin_models.tmaze())
    np.random.seed(99)
    holder = pool if pool is not None else {}
    for i in range(n_agents):
        # a few seeded stochastic agents, the rest deterministic on the global RNG; half
        # of them step in place (reuse_buffers), which is also quicker
        opts = {"seed": i, "action_selection": "stochastic"} if i % 10 == 0 else {}
        opts["reuse_buffers"] = i % 2 == 1
        holder[i] = fa_core.Agent(model=model, **opts)
    # the T-maze as a generative process: hidden context, 98% reliable arms, cue at location 3
    world = np.random.default_rng(5)
    context = world.integers(0, 2, n_agents).tolist()
    reliable = (world.random((n_agents, steps)) < builtin_models.TMAZE_REWARD_PROB).tolist()
    coin = world.integers(0, 2, (n_agents, steps)).tolist()
    location = [0] * n_agents
    actions = [[0] * n_agents for _ in range(steps)]
    for r, start in enumerate(range(0, steps, POOL_BURST)):
        order = range(n_agents) if r % 2 == 0 else range(n_agents - 1, -1, -1)
        for i in order:
            agent = holder[i]
            for t in range(start, min(start + POOL_BURST, steps)):
                loc = location[i]
                reward = 0 if loc in (0, 3) else (1 if (loc == context[i] + 1) == reliable[i][t]
                                                  else 2)
                cue = context[i] if loc == 3 else coin[i][t]
                agent.infer_states([loc, reward, cue])
                agent.infer_policies()
                actions[t][i] = location[i] = int(agent.sample_action()[0])
    final = []
    for i in range(n_agents):
        agent = holder[i]
        final.append((np.concatenate(list(agent.qs)), agent.q_pi.copy(), agent.curr_timestep,
                      np.array(agent.prev_actions)))
    return np.array(actions), final


def test_pool_under_a_small_budget_matches_an_unbounded_run():
    budget = POOL_AGENTS // 20
    pool = AgentPool(max_awake=budget)
    bounded_actions, bounded = _run_population(POOL_AGENTS, POOL_STEPS, pool)
    assert pool.n_awake == budget and len(pool) == POOL_AGENTS
    # every visit but those to the agents left awake by the previous round woke one
    assert pool.n_woken >= (POOL_STEPS // POOL_BURST) * (POOL_AGENTS - budget)
    free_actions, free = _run_population(POOL_AGENTS, POOL_STEPS, None)
    assert np.array_equal(bounded_actions, free_actions)
    for a, b in zip(bounded, free):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_pool_with_a_byte_budget():
    from fa_core.memory import agent_nbytes
    model = fa_core.GenerativeModel(**builtin_models.tmaze())
    one = agent_nbytes(fa_core.Agent(model=model))  # beliefs and options, the model is shared
    pool = AgentPool(max_bytes=20 * one + one // 2)
    actions, final = _run_population(200, 10, pool)
    assert 10 <= pool.n_awake <= 20  # agents grow a little as their action history does
    ref_actions, ref = _run_population(200, 10, None)
    assert np.array_equal(actions, ref_actions)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(final, ref))


def test_pool_mapping_behaviour():
    model = fa_core.GenerativeModel(**builtin_models.tmaze())
    pool = AgentPool(max_awake=2)
    for i in range(5):
        pool[f"a{i}"] = fa_core.Agent(model=model)
    assert len(pool) == 5 and pool.n_awake == 2 and pool.n_asleep == 3
    assert set(pool) == {f"a{i}" for i in range(5)}
    assert "a0" in pool and "zz" not in pool and not pool.is_awake("a0")
    pool["a0"].gamma = 3.0  # wakes a0, hibernates the least recently used
    assert pool.is_awake("a0") and pool.n_awake == 2
    for key in list(pool):
        pool[key]  # noqa: B018 - touch every agent
    assert pool["a0"].gamma == 3.0
    del pool["a0"], pool["a1"]
    assert len(pool) == 3 and "a0" not in pool
    with pytest.raises(KeyError):
        pool["a0"]  # noqa: B018
    pool["a2"] = fa_core.Agent(model=model)  # replacing an id
    assert len(pool) == 3
    pool.hibernate_all()
    assert pool.n_awake == 0 and pool.asleep_nbytes > 0
    # the pool keeps the models of hibernated agents alive
    key = model.content_key()
    del model
    gc.collect()
    assert model_by_key(key) is not None
    assert pool["a3"].model.content_key() == key
    with pytest.raises(TypeError, match="Agent"):
        pool["x"] = "not an agent"
    for bad in ({}, {"max_awake": 0}, {"max_awake": 2, "max_bytes": 10}, {"max_bytes": -1}):
        with pytest.raises(ValueError):
            AgentPool(**bad)
