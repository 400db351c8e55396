"""MMP's ``qs[p][t][f]`` trees refilled in place when nobody holds any part of them.

``fa_core.Agent(inference_algo="MMP")`` hands out float64 ``qs[p][t][f]`` (an object
array of object arrays of arrays, ~250 arrays for the T-maze) at every step. Making them
costs more than the compiled step, so a tree made at an earlier step is refilled with
the new beliefs when nothing outside the agent holds any of its arrays (reference,
weak reference, view, changed shape or entry: :func:`fa_core._views.refill_tree`).
These tests check that the refilled trees hold pymdp's values, that trees a user holds
in any way keep theirs, and the fingerprint itself.
"""

from __future__ import annotations

import copy
import gc
import weakref

import numpy as np
import pytest

from random_models import RandomEnv
from test_mmp import MMPPair, assert_window
from test_parity_pymdp import agent_kwargs, make_model

from fa_core import _views, builtin_models, mmp


@pytest.fixture(autouse=True)
def _quiet_pymdp_mmp(monkeypatch):
    mod = pytest.importorskip("pymdp.legacy.algos.mmp")
    monkeypatch.setattr(mod, "print", lambda *a, **k: None, raising=False)


def tmaze_agent(FaAgent, **kw):
    return FaAgent(**builtin_models.get("tmaze"), inference_algo="MMP", policy_len=2,
                   inference_horizon=3, seed=0, **kw)


def snapshot(qs):
    return [[[np.array(x) for x in step] for step in seq] for seq in qs]


def same(qs, snap):
    return all(np.array_equal(x, y) for seq, s_seq in zip(qs, snap)
               for step, s_step in zip(seq, s_seq) for x, y in zip(step, s_step))


OBS = [[0, 0, 1], [3, 0, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1], [2, 2, 1], [3, 0, 1],
       [0, 0, 0], [1, 2, 1], [3, 0, 0]]


@pytest.mark.parametrize("edge", [dict(), dict(use_BMA=False, policy_sep_prior=True)],
                         ids=["bma", "sep"])
def test_discarded_results_are_refilled_with_pymdps_values(edge, RefAgent, FaAgent):
    """Results dropped at once (the refilled path) equal pymdp's at every step."""
    model = make_model(4, [2, 3], [3, 2], [2, 2], None, None, C_scale=2.0)
    pair = MMPPair(RefAgent, FaAgent, **agent_kwargs(model, inference_algo="MMP", policy_len=2,
                                                     inference_horizon=2, **edge))
    env = RandomEnv(np.random.default_rng(5), model)
    obs = env.observe()
    ids = []
    for _ in range(10):
        qs_r = pair.ref.infer_states(copy.deepcopy(obs))
        pair.fa.infer_states(copy.deepcopy(obs))  # dropped: its tree is free at the next step
        ids.append(id(pair.fa.qs))
        assert_window(pair.fa.qs, qs_r, pair.num_states, pair.where("refilled qs"))
        assert_window(pair.fa.get_future_qs(), pair.ref.get_future_qs(), pair.num_states,
                      pair.where("refilled get_future_qs"))
        pair.infer_policies()
        if not pair.sample_action():
            break
        obs = env.step(pair.ref.action)
    assert pair.t == 10, "near tie split the agents; pick another seed"
    assert len(set(ids[3:])) < len(ids[3:]), "no tree was refilled"


@pytest.mark.parametrize("hold", ["top", "policy", "step", "leaf", "slice", "weakref",
                                  "memoryview", "future", "hist"])
def test_held_results_keep_their_values(hold, FaAgent):
    """A tree the user holds any part of is never refilled: it keeps its values."""
    agent = tmaze_agent(FaAgent, save_belief_hist=hold == "hist")
    fresh = tmaze_agent(FaAgent)  # the same steps, results dropped
    kept = []
    for k, o in enumerate(OBS):
        qs = agent.infer_states(o)
        kept_ref = fresh.infer_states(o)
        assert same(qs, snapshot(kept_ref))
        if k >= 3:
            held = _hold(hold, qs, agent)
            kept.append((held, snapshot(qs), qs if hold in ("weakref", "hist") else None))
        del qs
        for a in (agent, fresh):
            a.infer_policies()
        fresh.sample_action()
        agent.action = fresh.action
        agent.step_time()
    gc.collect()
    for i, (held, snap, top) in enumerate(kept):
        if hold == "hist":
            top = agent.qs_hist[i + 3]
        elif hold == "top":
            top = held
        elif hold == "weakref":
            assert held() is None or same(held(), snap)
            continue
        if top is not None:
            assert same(top, snap), f"step {i + 3}: a held tree changed"
            continue
        ref = snap
        if hold == "policy":
            ref = snap[2]
            assert all(np.array_equal(x, y) for s, r in zip(held, ref) for x, y in zip(s, r))
        elif hold == "step":
            assert all(np.array_equal(x, y) for x, y in zip(held, snap[1][3]))
        elif hold == "leaf":
            assert np.array_equal(held, snap[5][4][1])
        elif hold == "slice":
            assert np.array_equal(held, snap[5][4][1][1:])
        elif hold == "memoryview":
            assert np.array_equal(np.asarray(held), snap[3][2][0])
        elif hold == "future":
            assert all(np.array_equal(x, y) for p in range(len(held))
                       for s, r in zip(held[p], snap[p][-3:]) for x, y in zip(s, r))


def _hold(hold, qs, agent):
    """What the user keeps of this step's ``qs`` (a part of it, or a way to reach it)."""
    if hold == "top":
        return qs
    if hold == "policy":
        return qs[2]
    if hold == "step":
        return qs[1][3]
    if hold == "leaf":
        return qs[5][4][1]
    if hold == "slice":
        return qs[5][4][1][1:]
    if hold == "weakref":
        return weakref.ref(qs)
    if hold == "memoryview":
        return memoryview(qs[3][2][0])
    if hold == "future":
        return agent.get_future_qs()
    return None  # "hist": the agent's qs_hist holds it


def test_changed_tree_is_not_refilled(FaAgent):
    """An entry replaced or an array reshaped by the user: a new tree, the old one kept."""
    agent = tmaze_agent(FaAgent)
    for o in OBS[:4]:
        agent.infer_states(o)
        agent.infer_policies()
        agent.sample_action()
    qs = agent.qs
    other = np.zeros(4)
    qs[0][1][0] = other  # pymdp's qs is the user's to edit: the edit stays in that tree
    qs[1][2][1].shape = (1, 2)
    old_id = id(qs)
    del qs
    for o in OBS[4:]:
        new = agent.infer_states(o)
        assert new[0][1][0] is not other and new[1][2][1].shape == (2,)
        assert id(new) != old_id or new[0][1][0] is not other
        del new
        agent.infer_policies()
        agent.sample_action()


def test_fingerprint():
    """tree_state / refill_tree on a tree made by window_views: every kind of outside hold
    refuses the refill; without any, the values are written."""
    rng = np.random.default_rng(0)
    q = rng.random((3, 4, 5)).astype(np.float32)
    bounds = [(0, 2), (2, 5)]

    def tree():
        nodes = []
        mmp.window_views(q, 3, bounds, copy=True, nodes=nodes)
        return nodes, _views.tree_state(nodes)

    nodes, state = tree()
    q2 = rng.random((3, 4, 5)).astype(np.float32)
    assert _views.refill_tree(nodes, state, q2, 3)
    assert np.array_equal(nodes[0][2][1][1], q2[2, 1, 2:].astype(np.float64))
    assert not nodes[-1].flags.writeable
    for hold in range(6):
        nodes, state = tree()
        if hold == 0:
            x = nodes[0][1]
        elif hold == 1:
            x = nodes[0][1][2][0][1:]
        elif hold == 2:
            x = weakref.ref(nodes[0][2][0])
        elif hold == 3:
            nodes[0][0][0][0] = np.zeros(2)
            x = None
        elif hold == 4:
            nodes[0][0][0][1].shape = (3, 1)
            x = None
        else:
            x = nodes[-1]
        before = nodes[-1].copy()
        assert not _views.refill_tree(nodes, state, q2, 3), hold
        assert np.array_equal(nodes[-1], before)
        del x
    nodes, state = tree()
    assert not _views.refill_tree(nodes, state, q2, 2)  # another window length
    assert not _views.refill_tree(nodes, state[:-1], q2, 3)
    a = np.zeros(2)
    r = weakref.ref(a)
    with pytest.raises(ValueError, match="weak references"):
        _views.tree_state([a])
    del r
