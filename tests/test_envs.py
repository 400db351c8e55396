"""The vectorised environments: layout, dynamics, tallies, and agreement with the builtin models."""

from __future__ import annotations

import numpy as np
import pytest

from fa_core import builtin_models as bm
from fa_core.envs import GridWorld, TMaze


def _assert_possible_under(A, obs, states):
    """Every observation has nonzero probability under the model's ``A`` given the true states."""
    for m, A_m in enumerate(A):
        p = A_m[(obs[:, m], *states)]
        assert np.all(p > 0), f"modality {m}: impossible outcome under the model"


# ---------------------------------------------------------------- GridWorld

def test_grid_reset_layout():
    env = GridWorld(size=10, n_agents=50, seed=1)
    obs = env.reset()
    assert obs.shape == (50, 2) and obs.dtype == np.int64
    np.testing.assert_array_equal(obs[:, 0], env.location)
    assert not env.food[env.location].any()  # agents start off food
    assert not env.found.any() and not env.food_steps.any()


def test_grid_seed_reproducible():
    a = GridWorld(10, 20, seed=3).reset()
    b = GridWorld(10, 20, seed=3).reset()
    c = GridWorld(10, 20, seed=4).reset()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_grid_step_follows_model_B_and_A():
    size, n = 6, 200
    model = bm.grid_forager(size)
    env = GridWorld(size, n, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    for _ in range(10):
        before = env.location.copy()
        actions = rng.integers(0, 5, size=n)
        obs = env.step(actions.astype(float))  # floats, as Agent.sample_action returns
        np.testing.assert_array_equal(model["B"][0][env.location, before, actions], 1.0)
        _assert_possible_under(model["A"], obs, (env.location,))


def test_grid_walls_and_action_shapes():
    env = GridWorld(3, 2, seed=0)
    env.reset()
    env.location[:] = [0, 8]  # top-left and bottom-right corners
    np.testing.assert_array_equal(env.step(np.array([[1], [2]]))[:, 0], [0, 8])  # up / down: walls
    np.testing.assert_array_equal(env.step([4, 3])[:, 0], [1, 7])  # right / left


def test_grid_tracks_food():
    env = GridWorld(5, 3, reward_locations=[(0, 1)], seed=0)
    env.reset()
    env.location[:] = [0, 0, 24]
    env.step([4, 0, 0])  # agent 0 steps onto the food
    env.step([0, 0, 0])  # and stays there
    np.testing.assert_array_equal(env.found, [True, False, False])
    np.testing.assert_array_equal(env.food_steps, [2, 0, 0])
    env.reset()
    assert not env.found.any() and not env.food_steps.any()


@pytest.mark.parametrize("actions, match", [
    (np.zeros(3), "shape"),
    (np.full(2, 5), r"\[0, 5\)"),
    (np.full(2, -1), r"\[0, 5\)"),
    (np.full(2, 0.5), "whole"),
])
def test_grid_rejects_bad_actions(actions, match):
    env = GridWorld(3, 2, seed=0)
    env.reset()
    with pytest.raises(ValueError, match=match):
        env.step(actions)


def test_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_agents"):
        GridWorld(5, 0)
    with pytest.raises(ValueError, match="reward_locations"):
        GridWorld(5, 1, reward_locations=[(5, 5)])


# ---------------------------------------------------------------- TMaze

def test_tmaze_reset_layout():
    env = TMaze(n_agents=400, seed=0)
    obs = env.reset()
    assert obs.shape == (400, 3) and obs.dtype == np.int64
    np.testing.assert_array_equal(obs[:, :2], 0)  # centre, no reward
    assert 0.4 < env.context.mean() < 0.6  # contexts are drawn at random


def test_tmaze_outcomes_follow_model_A():
    n = 20_000
    A = bm.tmaze()["A"]
    env = TMaze(n, seed=2)
    env.reset()
    for loc in range(4):
        obs = env.step(np.full((n, 2), [loc, 0]))
        _assert_possible_under(A, obs, (env.location, env.context))
        if loc == 3:
            np.testing.assert_array_equal(obs[:, 2], env.context)
        else:
            assert 0.48 < obs[:, 2].mean() < 0.52  # uninformative cue: a fair coin
        if loc in (1, 2):
            good = env.context == loc - 1
            p_reward_good = np.mean(obs[good, 1] == 1)
            p_loss_bad = np.mean(obs[~good, 1] == 2)
            assert abs(p_reward_good - bm.TMAZE_REWARD_PROB) < 0.01
            assert abs(p_loss_bad - bm.TMAZE_REWARD_PROB) < 0.01


def test_tmaze_tallies_and_uncontrolled_context():
    env = TMaze(4, seed=0)
    env.reset()
    ctx = env.context.copy()
    env.step(ctx + 1)  # every agent into its rewarding arm
    np.testing.assert_array_equal(env.context, ctx)
    assert env.rewards.sum() + env.losses.sum() == 4
    with pytest.raises(ValueError, match="uncontrolled"):
        env.step(np.array([[0, 1]] * 4))


@pytest.mark.parametrize("which", ["RefAgent", "FaAgent"])
def test_tmaze_closed_loop(which, request):
    """Agents with the matching model look at the cue, then mostly collect reward."""
    Agent = request.getfixturevalue(which)
    n = 6
    np.random.seed(0)
    env = TMaze(n, seed=0)
    agents = [Agent(**bm.tmaze()) for _ in range(n)]
    obs = env.reset()
    for _ in range(3):
        actions = []
        for agent, o in zip(agents, obs):
            agent.infer_states(list(o))
            agent.infer_policies()
            actions.append(agent.sample_action())
        obs = env.step(np.array(actions))
    assert env.rewards.sum() > env.losses.sum()
