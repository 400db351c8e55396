"""Sophisticated inference (``sophisticated=True``) against pymdp.legacy, in one process.

Both agents see the same observations; after every call ``qs``, ``q_pi``, ``G``
and the action are compared (the harness of ``test_parity_pymdp``). pymdp's
search is an exponential Python recursion, so models are small (T-maze, a
3x3 grid, random models of a few states) and episodes short.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from fa_core import builtin_models, envs
from fa_core import sophisticated as si
from random_models import RandomEnv, dirichlet_counts, obj_array, random_policies
from test_parity_pymdp import Pair, agent_kwargs, make_model


def tmaze_episode(pair, n_steps, seed):
    env = envs.TMaze(seed=seed)
    obs = env.reset()[0]
    for _ in range(n_steps):
        assert pair.step([int(o) for o in obs]), "near tie split the agents"
        obs = env.step(np.array([pair.ref.action[0]]))[0]


def grid_episode(pair, size, n_steps, seed):
    env = envs.GridWorld(size, seed=seed)
    obs = env.reset()[0]
    for _ in range(n_steps):
        assert pair.step([int(o) for o in obs]), "near tie split the agents"
        obs = env.step(np.array([pair.ref.action[0]]))[0]


def goal(num_states, cells):
    """H: a prior over states with mass on the goal ``cells`` (one factor)."""
    h = np.zeros(num_states)
    h[list(cells)] = 1.0
    return obj_array([h])


# --- Parity on the builtin models ---------------------------------------------------------

@pytest.mark.parametrize("horizon", [1, 2, 3])
def test_tmaze_parity(horizon, RefAgent, FaAgent):
    pair = Pair(RefAgent, FaAgent, **builtin_models.tmaze(), sophisticated=True,
                si_horizon=horizon)
    tmaze_episode(pair, 3, seed=horizon)


THRESHOLDS = {
    "none-pruned": dict(si_policy_prune_threshold=0.0, si_state_prune_threshold=0.0),
    "coarse": dict(si_policy_prune_threshold=0.3, si_state_prune_threshold=0.2,
                   si_prune_penalty=64.0),
    "fine": dict(si_policy_prune_threshold=0.01, si_state_prune_threshold=0.001,
                 si_prune_penalty=1000),
}


@pytest.mark.parametrize("thresholds", list(THRESHOLDS))
def test_tmaze_thresholds(thresholds, RefAgent, FaAgent):
    pair = Pair(RefAgent, FaAgent, **builtin_models.tmaze(), sophisticated=True, si_horizon=2,
                **THRESHOLDS[thresholds])
    tmaze_episode(pair, 3, seed=7)


@pytest.mark.parametrize("horizon", [1, 2, 3])
def test_grid_parity(horizon, RefAgent, FaAgent):
    pair = Pair(RefAgent, FaAgent, **builtin_models.grid_forager(3), sophisticated=True,
                si_horizon=horizon)
    grid_episode(pair, 3, 4, seed=horizon)


@pytest.mark.parametrize("thresholds", ["coarse", "fine"])
def test_grid4_thresholds(thresholds, RefAgent, FaAgent):
    pair = Pair(RefAgent, FaAgent, **builtin_models.grid_forager(4), sophisticated=True,
                si_horizon=2, **THRESHOLDS[thresholds])
    grid_episode(pair, 4, 3, seed=11)


@pytest.mark.parametrize("horizon,ii_depth", [(2, 3), (3, 10)])
def test_grid_with_inductive_inference(horizon, ii_depth, RefAgent, FaAgent):
    """pymdp passes the inductive matrix I into the search: every node adds its cost."""
    pair = Pair(RefAgent, FaAgent, **builtin_models.grid_forager(3), H=goal(9, [8]),
                ii_depth=ii_depth, sophisticated=True, si_horizon=horizon)
    grid_episode(pair, 3, 4, seed=5)


def test_deep_narrow_search(RefAgent, FaAgent):
    """A 40-deep search (thresholds keep the tree a path): no recursion in fa_core."""
    pair = Pair(RefAgent, FaAgent, **builtin_models.grid_forager(3), sophisticated=True,
                si_horizon=40, si_policy_prune_threshold=0.5, si_state_prune_threshold=0.5)
    grid_episode(pair, 3, 2, seed=3)


def test_very_deep_search_runs(FaAgent):
    """Far deeper than any C or Python stack would allow a recursion to go."""
    agent = FaAgent(**builtin_models.grid_forager(3), sophisticated=True, si_horizon=20000,
                    si_policy_prune_threshold=0.5, si_state_prune_threshold=0.5)
    agent.infer_states([4, 0])
    q_pi, G = agent.infer_policies()
    assert np.all(np.isfinite(G)) and np.isclose(q_pi.sum(), 1.0, atol=1e-5)


# --- Parity on random models -----------------------------------------------------------------

# (num_states, num_obs, num_controls, A_factor_list, B_factor_list)
RANDOM_CASES = [
    pytest.param([3], [3], [3], None, None, id="1f1m"),
    pytest.param([3], [2, 3], [2], None, None, id="1f2m"),
    pytest.param([2, 3], [3, 2], [2, 1], None, None, id="2f2m"),
    pytest.param([3, 2], [2, 2, 2], [2, 2], [[0], [1], [1, 0]], None, id="2f3m-Afl-unsorted"),
    pytest.param([2, 3], [3, 2], [2, 2], [[0, 1], [1]], [[0], [0, 1]], id="2f2m-Bfl"),
]


@pytest.mark.parametrize("horizon,thresholds", [(2, "default"), (2, "coarse"), (3, "coarse")])
@pytest.mark.parametrize("num_states,num_obs,num_controls,A_factor_list,B_factor_list",
                         RANDOM_CASES)
def test_random_models(num_states, num_obs, num_controls, A_factor_list, B_factor_list, horizon,
                       thresholds, RefAgent, FaAgent):
    model = make_model(31, num_states, num_obs, num_controls, A_factor_list, B_factor_list,
                       near_onehot_B=True, C_scale=2.0)
    env = RandomEnv(np.random.default_rng(32), model)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, sophisticated=True, si_horizon=horizon,
                                                   **THRESHOLDS.get(thresholds, {})))
    obs = env.observe()
    for _ in range(3):
        assert pair.step(obs), "near tie split the agents"
        obs = env.step(pair.ref.action)


def test_random_model_ignored_options(RefAgent, FaAgent):
    """pymdp's search uses gamma=1 and neither E nor the EFE switches; so does fa_core."""
    model = make_model(41, [3, 2], [3, 2], [3, 2], None, None, C_scale=2.0)
    rng = np.random.default_rng(42)
    with pytest.warns(UserWarning, match="E, use_utility=False, use_states_info_gain=False, "
                                         "use_param_info_gain=True"):
        pair = Pair(RefAgent, FaAgent, **agent_kwargs(
            model, sophisticated=True, si_horizon=2, gamma=4.0, E=rng.dirichlet(np.ones(6)),
            use_utility=False, use_states_info_gain=False, use_param_info_gain=True,
            pA=dirichlet_counts(rng, model["A"])))
    env = RandomEnv(np.random.default_rng(43), model)
    obs = env.observe()
    for _ in range(3):
        assert pair.step(obs)
        obs = env.step(pair.ref.action)


def test_two_dimensional_C(RefAgent, FaAgent):
    """C with one column per future step: every node of the search reads column 0, as pymdp."""
    model = make_model(45, [3, 2], [3, 2], [3, 1], None, None, C_scale=2.0, C_len=3)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, sophisticated=True, si_horizon=2))
    env = RandomEnv(np.random.default_rng(46), model)
    obs = env.observe()
    for _ in range(3):
        assert pair.step(obs)
        obs = env.step(pair.ref.action)


def test_custom_one_step_policies_and_full_sampling(RefAgent, FaAgent):
    model = make_model(51, [3, 2], [3, 2], [3, 2], None, None, near_onehot_B=True, C_scale=2.0)
    policies = random_policies(np.random.default_rng(52), [3, 2], 1, 4)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, sophisticated=True, si_horizon=2,
                                                   policies=policies, sampling_mode="full"))
    env = RandomEnv(np.random.default_rng(53), model)
    obs = env.observe()
    for _ in range(3):
        assert pair.step(obs)
        obs = env.step(pair.ref.action)


def test_learning_between_searches(RefAgent, FaAgent):
    """update_A / update_B change the model the next search reads."""
    model = make_model(61, [3], [3, 2], [2], None, None, C_scale=2.0)
    rng = np.random.default_rng(62)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(
        model, sophisticated=True, si_horizon=2, pA=dirichlet_counts(rng, model["A"]),
        pB=dirichlet_counts(rng, model["B"])))
    env = RandomEnv(np.random.default_rng(63), model)
    obs = env.observe()
    for _ in range(3):
        qs_prev_r, qs_prev_f = copy.deepcopy(pair.ref.qs), copy.deepcopy(pair.fa.qs)
        assert pair.step(obs)
        pair.ref.update_A(obs), pair.fa.update_A(obs)
        pair.ref.update_B(qs_prev_r), pair.fa.update_B(qs_prev_f)
        obs = env.step(pair.ref.action)


# --- Errors and bookkeeping ------------------------------------------------------------------

def test_policy_len_above_one_is_refused_as_by_pymdp(RefAgent, FaAgent):
    kw = builtin_models.grid_forager(3)
    with pytest.raises(AssertionError):
        RefAgent(**copy.deepcopy(kw), sophisticated=True, policy_len=2)
    with pytest.raises(ValueError, match="policy_len"):
        FaAgent(**kw, sophisticated=True, policy_len=2)


def test_policy_len_keyword_is_checked_as_by_pymdp(RefAgent, FaAgent):
    """One-step custom policies with policy_len=2: pymdp's assert fires, so does fa_core's check."""
    model = make_model(73, [3], [3], [2], None, None)
    policies = random_policies(np.random.default_rng(74), [2], 1, 2)
    kw = agent_kwargs(model, sophisticated=True, policies=policies, policy_len=2)
    with pytest.raises(AssertionError):
        RefAgent(**copy.deepcopy(kw))
    with pytest.raises(ValueError, match="policy_len"):
        FaAgent(**kw)


def test_multi_step_custom_policies_are_refused(FaAgent):
    """pymdp's assert reads the policy_len keyword only; fa_core checks the policies."""
    model = make_model(71, [3], [3], [2], None, None)
    policies = random_policies(np.random.default_rng(72), [2], 2, 3)
    with pytest.raises(ValueError, match="policy_len"):
        FaAgent(**agent_kwargs(model, sophisticated=True, policies=policies))


@pytest.mark.parametrize("bad,match", [
    (dict(si_horizon=0), "si_horizon"),
    (dict(si_horizon=2.5), "si_horizon"),
    (dict(si_policy_prune_threshold=1.5), "si_policy_prune_threshold"),
    (dict(si_state_prune_threshold=-0.1), "si_state_prune_threshold"),
    (dict(si_state_prune_threshold=float("nan")), "si_state_prune_threshold"),
    (dict(si_prune_penalty=float("inf")), "si_prune_penalty"),
    (dict(inference_algo="MMP"), "sophisticated"),
])
def test_bad_options(bad, match, FaAgent):
    with pytest.raises((ValueError, TypeError), match=match):
        FaAgent(**builtin_models.grid_forager(3), sophisticated=True, **bad)


def test_scratch_grows_linearly_with_horizon(FaAgent):
    agent = FaAgent(**builtin_models.tmaze(), sophisticated=True)
    sm = si.si_model(agent.model)
    sizes = [sm.scratch_sizes(h) for h in (1, 2, 3, 50)]
    step = (sizes[1][0] - sizes[0][0], sizes[1][1] - sizes[0][1])
    assert step[0] > 0 and step[1] > 0
    assert sizes[2] == (sizes[1][0] + step[0], sizes[1][1] + step[1])
    assert sizes[3] == (sizes[0][0] + 49 * step[0], sizes[0][1] + 49 * step[1])
    assert si.si_model(agent.model) is sm  # one dense copy per model


def test_hibernate_wake_keeps_sophisticated(FaAgent):
    agent = FaAgent(**builtin_models.tmaze(), sophisticated=True, si_horizon=2)
    agent.infer_states([0, 0, 0])
    q_pi, G = agent.infer_policies()
    woken = FaAgent.wake(agent.hibernate())
    assert woken.sophisticated and woken.si_horizon == 2
    q_pi2, G2 = woken.infer_policies()
    np.testing.assert_array_equal(G2, G)
    np.testing.assert_array_equal(q_pi2, q_pi)
