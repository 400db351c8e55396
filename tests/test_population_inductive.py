"""Inductive inference (``H``, ``ii_depth``, ``ii_threshold``) in ``fa_core.Population``.

A population whose model has a goal prior ``H`` adds pymdp's inductive cost to
every policy's ``G``, as each ``fa_core.Agent`` given the same ``H`` does (and
``test_inductive`` checks those agents against pymdp). Compared over several
steps with ``lockstep`` of ``test_population`` (actions fed back into the agents),
on 1 and 2 threads, for VANILLA policy evaluation and the sophisticated search.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fa_core
from fa_core import builtin_models
from fa_core.population import Population
from random_models import obj_array, random_model
from test_population import Env, lockstep

N = 24


def grid_case(policy_len):
    kw = builtin_models.grid_forager(4)
    H = obj_array([np.eye(16)[15]])
    return kw, dict(H=H, ii_depth=5, ii_threshold=1 / 16), dict(policy_len=policy_len)


def random_case(policy_len):
    rng = np.random.default_rng(21)
    d = random_model(rng, [4, 3], [4, 3], [3, 2], [[0], [0, 1]], None, near_onehot_B=True)
    kw = dict(A=d["A"], B=d["B"], C=d["C"], D=d["D"], A_factor_list=d["A_factor_list"])
    H = obj_array([np.eye(n)[rng.integers(n)] for n in (4, 3)])
    return kw, dict(H=H, ii_depth=3, ii_threshold=0.2), dict(policy_len=policy_len)


CASES = {"grid4": grid_case, "random": random_case}


def build(case, policy_len):
    kw, ind, extra = CASES[case](policy_len)
    gm = fa_core.GenerativeModel(**copy.deepcopy(kw), **ind, **extra)
    # the agents take H, ii_depth and ii_threshold as Agent's keywords, not a shared model
    agents = [fa_core.Agent(**copy.deepcopy(kw), **copy.deepcopy(ind), **extra)
              for _ in range(N)]
    return gm, kw, agents


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("policy_len", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_population_with_H_equals_agents(case, policy_len, n_threads):
    gm, _, agents = build(case, policy_len)
    assert gm.has_H and all(a._model.has_H for a in agents)
    pop = Population(gm, N, seed=1, n_threads=n_threads)
    assert lockstep(gm, pop, agents, 4) > 0


def test_inductive_cost_changes_the_population_G():
    """The comparison above is not vacuous: without H the same population scores otherwise."""
    gm, kw, _ = build("grid4", 1)
    plain = fa_core.GenerativeModel(**copy.deepcopy(kw))
    obs = Env(gm, N, 0).observe()
    with_H, without = Population(gm, N, seed=0), Population(plain, N, seed=0)
    with_H.step(obs)
    without.step(obs)
    np.testing.assert_array_equal(with_H.qs, without.qs)
    assert np.abs(with_H.G - without.G).max() > 1.0


@pytest.mark.parametrize("n_threads", [1, 2])
def test_sophisticated_population_with_H_equals_agents(n_threads):
    kw, ind, _ = grid_case(1)
    gm = fa_core.GenerativeModel(**copy.deepcopy(kw), **ind)
    agents = [fa_core.Agent(**copy.deepcopy(kw), **copy.deepcopy(ind), sophisticated=True,
                            si_horizon=2) for _ in range(N)]
    pop = Population(gm, N, seed=2, n_threads=n_threads, sophisticated=True, si_horizon=2)
    assert lockstep(gm, pop, agents, 3) > 0
