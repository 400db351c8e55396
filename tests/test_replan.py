"""Intermittent planning: ``Population.step(obs, replan=mask)`` against equivalent Agents.

An agent not replanning acts on its previous policy posterior shifted one step (see
``Population.step``); ``shift`` below writes that definition out in numpy.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fa_core import Agent, GenerativeModel, Population
from random_models import random_model

RTOL, ATOL = 2e-4, 2e-5


def shift(q, policies, action):
    """The documented shift of ``q`` after ``action`` (reference, one agent)."""
    pol = np.stack(policies)
    if pol.shape[1] == 1:
        return q.copy()
    heads = [p[:-1].tobytes() for p in pol]
    tails = [p[1:].tobytes() for p in pol]
    count = Counter(heads)
    for conditioned in (True, False):
        mass: dict = {}
        for p in range(len(pol)):
            if conditioned and not np.array_equal(pol[p, 0], action):
                continue
            mass[tails[p]] = mass.get(tails[p], 0.0) + q[p]
        new = np.array([mass.get(h, 0.0) / count[h] for h in heads])
        if new.sum() > 0:
            return new / new.sum()
    return q.copy()


def _model(seed, policy_len, num_states=(3, 2), num_controls=(3, 2)):
    rng = np.random.default_rng(seed)
    d = random_model(rng, num_states, [3, 2], num_controls, C_scale=2.0)
    return GenerativeModel(A=d["A"], B=d["B"], C=d["C"], D=d["D"], policy_len=policy_len)



def _flat(qs):
    """Per-factor beliefs as one flat float64 vector."""
    return np.concatenate([np.array(q, dtype=np.float64) for q in qs])

def _obs(rng, gm, n):
    return np.stack([rng.integers(0, k, n) for k in gm.num_obs], axis=1).astype(np.int32)


def _state(pop):
    return [np.array(getattr(pop, k)) for k in ("qs", "q_pi", "G", "actions", "curr_timestep")]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("policy_len", [1, 2])
@pytest.mark.parametrize("num_states", [(3, 2), (12, 10)])  # blocked and per-agent kernels
def test_replan_all_is_an_ordinary_step(policy_len, n_threads, num_states):
    gm = _model(0, policy_len, num_states)
    a = Population(gm, 19, seed=1, n_threads=n_threads)
    b = Population(gm, 19, seed=1, n_threads=n_threads)
    rng = np.random.default_rng(2)
    for _t in range(4):
        obs = _obs(rng, gm, 19)
        a.step(obs)
        b.step(obs, replan=np.ones(19, bool))
        for x, y in zip(_state(a), _state(b)):
            np.testing.assert_array_equal(x, y)


def test_agents_without_a_previous_action_plan_anyway():
    gm = _model(1, 2)
    a, b = Population(gm, 10, seed=3), Population(gm, 10, seed=3)
    obs = _obs(np.random.default_rng(4), gm, 10)
    a.step(obs)
    b.step(obs, replan=np.zeros(10, bool))
    for x, y in zip(_state(a), _state(b)):
        np.testing.assert_array_equal(x, y)


def _agents_for(pop, gm, n):
    return [Agent(model=gm, seed=i) for i in range(n)]


def _agent_step(a, obs_i, replan, pop_action):
    a.infer_states(list(obs_i))
    if replan:
        a.infer_policies()
    else:
        a.q_pi = shift(np.asarray(a.q_pi), a.policies, np.asarray(a.action, dtype=int))
    a.sample_action()
    a.action = pop_action  # one trajectory when two choices are tied


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("policy_len", [1, 2, 3])
@pytest.mark.parametrize("mask", ["none", "random"])
def test_replan_masks_match_agents(mask, policy_len, n_threads):
    n = 13
    gm = _model(5 + policy_len, policy_len, num_controls=(2, 2))
    pop = Population(gm, n, seed=0, n_threads=n_threads)
    agents = _agents_for(pop, gm, n)
    rng = np.random.default_rng(6)
    G_before = None
    steps = 4 if mask == "random" or policy_len == 1 else policy_len  # the plan lasts
    for t in range(steps):
        obs = _obs(rng, gm, n)
        if t == 0:
            replan = np.ones(n, bool)
        elif mask == "none":
            replan = np.zeros(n, bool)
        else:
            replan = rng.random(n) < 0.5
        q_prev = pop.q_pi.copy()
        G_before = pop.G.copy()
        pop.step(obs, replan=replan)
        for i, a in enumerate(agents):
            _agent_step(a, obs[i], replan[i], pop.actions[i])
            np.testing.assert_allclose(pop.qs[i], _flat(a.qs), rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(pop.q_pi[i], a.q_pi, rtol=RTOL, atol=ATOL)
            if t and not replan[i]:
                np.testing.assert_array_equal(pop.G[i], G_before[i])  # G of the last plan
                if policy_len == 1:
                    np.testing.assert_array_equal(pop.q_pi[i], q_prev[i])


def test_deterministic_agents_follow_their_plan():
    """With policy_len 3 and no replanning, an agent whose plan is certain carries it out."""
    gm = _model(9, 3, num_controls=(2, 2))
    pop = Population(gm, 6, seed=0, gamma=1e4)  # a sharp posterior: one plan
    obs = _obs(np.random.default_rng(1), gm, 6)
    pop.step(obs)
    best = np.stack(gm.policies)[np.argmax(pop.q_pi, axis=1)]  # (n, T, nf)
    taken = [pop.actions.copy()]
    for _t in range(2):
        pop.step(obs, replan=np.zeros(6, bool))
        taken.append(pop.actions.copy())
    np.testing.assert_array_equal(np.stack(taken, axis=1), best)


def test_bad_masks_raise_and_change_nothing():
    gm = _model(2, 2)
    pop = Population(gm, 5, seed=0)
    obs = _obs(np.random.default_rng(0), gm, 5)
    pop.step(obs)
    before = _state(pop)
    for bad, exc, match in ((np.ones(4, bool), ValueError, "shape"),
                            (np.ones((5, 1), bool), ValueError, "shape"),
                            (np.ones(5, np.int64), TypeError, "boolean"),
                            (np.ones(5), TypeError, "boolean"),
                            ("yes", TypeError, "boolean")):
        with pytest.raises(exc, match=match):
            pop.step(obs, replan=bad)
    with pytest.raises(ValueError, match="obs"):
        pop.step(obs[:4], replan=np.ones(5, bool))
    for x, y in zip(_state(pop), before):
        np.testing.assert_array_equal(x, y)


def test_infer_policies_takes_the_mask_as_step_does():
    """Learning populations step with separate calls: the mask works there too."""
    gm = _model(3, 2)
    a, b = Population(gm, 9, seed=2), Population(gm, 9, seed=2)
    rng = np.random.default_rng(3)
    for _t in range(3):
        obs = _obs(rng, gm, 9)
        mask = rng.random(9) < 0.5
        a.step(obs, replan=mask)
        b.infer_states(obs)
        b.infer_policies(replan=mask)
        b.sample_action()
        for x, y in zip(_state(a), _state(b)):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="shape"):
        b.infer_policies(replan=np.ones(3, bool))
