"""Inductive inference (``H``, ``ii_depth``, ``ii_threshold``) against pymdp.legacy.

pymdp builds the reachability matrix ``I`` by backwards induction from the
goal prior ``H`` through every transition above ``ii_threshold`` and adds, per
policy and step, ``(1 - I[m]) . log(1e-3) . qs_pi`` where ``m`` is the depth
before the most likely current state first becomes reachable. fa_core must
give the same ``I``, ``G``, ``q_pi`` and actions (its sophisticated search
uses the same ``I``: see ``test_sophisticated``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from fa_core import builtin_models, envs
from random_models import RandomEnv, dirichlet_counts, obj_array, random_obs
from test_parity_pymdp import Pair, agent_kwargs, assert_obj_close, make_model


def grid_goal(size, cells, soft=False):
    h = np.zeros(size * size)
    h[list(cells)] = 1.0
    if soft:  # pymdp puts H itself in row 0 of I; non-binary goals are taken as they are
        h = 0.9 * h + 0.1 / h.size
    return obj_array([h])


def random_goals(rng, num_states):
    """One goal state per factor (one-hot H)."""
    return obj_array([np.eye(n)[rng.integers(n)] for n in num_states])


def assert_same_I(pair):
    assert len(pair.fa.I) == len(pair.ref.I)
    for f, (i_f, i_r) in enumerate(zip(pair.fa.I, pair.ref.I)):
        assert i_f.shape == i_r.shape, f"I[{f}] shape"
        np.testing.assert_allclose(i_f, i_r, rtol=0, atol=1e-7, err_msg=f"I[{f}]")


@pytest.mark.parametrize("ii_depth,ii_threshold", [(1, 1 / 16), (3, 1 / 16), (10, 1 / 16),
                                                   (10, 0.5)])
@pytest.mark.parametrize("policy_len", [1, 2])
def test_grid_episode(policy_len, ii_depth, ii_threshold, RefAgent, FaAgent):
    kw = builtin_models.grid_forager(4)
    pair = Pair(RefAgent, FaAgent, **kw, H=grid_goal(4, [15]), policy_len=policy_len,
                ii_depth=ii_depth, ii_threshold=ii_threshold)
    assert_same_I(pair)
    env = envs.GridWorld(4, seed=ii_depth)
    obs = env.reset()[0]
    for _ in range(6):
        assert pair.step([int(o) for o in obs]), "near tie split the agents"
        obs = env.step(np.array([pair.ref.action[0]]))[0]


def test_grid_soft_goal_two_cells(RefAgent, FaAgent):
    pair = Pair(RefAgent, FaAgent, **builtin_models.grid_forager(3), H=grid_goal(3, [2, 6], True),
                ii_depth=4)
    assert_same_I(pair)
    env = envs.GridWorld(3, seed=1)
    obs = env.reset()[0]
    for _ in range(5):
        assert pair.step([int(o) for o in obs])
        obs = env.step(np.array([pair.ref.action[0]]))[0]


# (num_states, num_obs, num_controls, A_factor_list)
RANDOM_CASES = [
    pytest.param([4], [3], [3], None, id="1f1m"),
    pytest.param([5], [3, 2], [4], None, id="1f2m"),
    pytest.param([3, 4], [3, 2], [2, 3], [[0], [0, 1]], id="2f2m-Afl"),
    pytest.param([3, 2, 3], [4, 2], [3, 1, 2], [[0, 2], [1]], id="3f2m-Afl"),
]


@pytest.mark.parametrize("ii_depth,ii_threshold,near_onehot",
                         [(2, 1 / 16, True), (5, 0.2, True), (10, 1 / 16, False),
                          (4, 0.4, False)])
@pytest.mark.parametrize("num_states,num_obs,num_controls,A_factor_list", RANDOM_CASES)
def test_random_models(num_states, num_obs, num_controls, A_factor_list, ii_depth, ii_threshold,
                       near_onehot, RefAgent, FaAgent):
    model = make_model(81, num_states, num_obs, num_controls, A_factor_list, None,
                       near_onehot_B=near_onehot, C_scale=1.0, sparsity=0.3)
    rng = np.random.default_rng(82)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(
        model, H=random_goals(rng, num_states), ii_depth=ii_depth, ii_threshold=ii_threshold,
        policy_len=2 if len(num_states) < 3 else 1))
    assert_same_I(pair)
    env = RandomEnv(np.random.default_rng(83), model)
    obs = env.observe()
    for _ in range(4):
        assert pair.step(obs), "near tie split the agents"
        obs = env.step(pair.ref.action)


def test_inductive_cost_moves_G(FaAgent):
    """The cost is really added: G differs from the same agent without H."""
    kw = builtin_models.grid_forager(4)
    with_h = FaAgent(**kw, H=grid_goal(4, [15]), ii_depth=10)
    without = FaAgent(**kw)
    for agent in (with_h, without):
        agent.infer_states([0, 0])
        agent.infer_policies()
    assert not np.allclose(with_h.G, without.G)


def test_learning_B_keeps_pymdp_I(RefAgent, FaAgent):
    """pymdp computes I once, at construction; update_B does not change it."""
    model = make_model(91, [4], [3], [3], None, None, near_onehot_B=True)
    rng = np.random.default_rng(92)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(
        model, H=random_goals(rng, [4]), ii_depth=4, ii_threshold=0.3,
        pB=dirichlet_counts(rng, model["B"], scale=0.5)))
    for _ in range(4):
        qs_prev_r, qs_prev_f = copy.deepcopy(pair.ref.qs), copy.deepcopy(pair.fa.qs)
        assert pair.step(random_obs(rng, [3]))
        pair.ref.update_B(qs_prev_r)
        pair.fa.update_B(qs_prev_f)
        assert_obj_close(pair.fa.B, pair.ref.B, "B")
        assert_same_I(pair)


def test_interacting_B_factor_list_is_refused(RefAgent, FaAgent):
    model = make_model(93, [2, 3], [3], [2, 2], None, [[0], [0, 1]])
    kw = agent_kwargs(model, H=random_goals(np.random.default_rng(94), [2, 3]))
    with pytest.raises(ValueError):
        RefAgent(**copy.deepcopy(kw))
    with pytest.raises(ValueError, match="H"):
        FaAgent(**kw)


def test_bad_H_shape(FaAgent):
    with pytest.raises(ValueError, match="H"):
        FaAgent(**builtin_models.grid_forager(3), H=obj_array([np.ones(4)]))
