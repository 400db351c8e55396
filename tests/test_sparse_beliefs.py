"""Sparse beliefs in policy evaluation (``fa_core._policies``).

A factor whose belief sits on fewer than a quarter of its states is rolled
forward, and its outcomes predicted, over those states only. States at or below
``SPARSE_EPS`` (1e-10) are dropped when the support is listed, and only while
their total mass ``delta`` is at most ``SPARSE_BUDGET`` (1e-9); otherwise the
dense path runs. Every predicted belief and outcome then moves by at most
``delta`` in L1, so each policy's G by at most

    policy_len * delta * (max |ln C| + max column entropy of A + 38)

(38 > |log 1e-16| + 1 bounds the change of ``q log(q + 1e-16)`` terms), plus
float32 rounding. These tests compare the two paths in the same process
(``sparse_beliefs(False)`` turns the sparse one off) and check, through the
call counter, that the sparse path is the one taken.
"""

from __future__ import annotations

import numpy as np
import pytest

import fa_core
import fa_core._policies as pol
from fa_core import builtin_models
from fa_core.population import Population

EPS_SPARSE = 1e-10
BUDGET = 1e-9


@pytest.fixture(autouse=True)
def _sparse_on():
    """Leave the sparse path on after every test, whatever it set."""
    yield
    pol.sparse_beliefs(True)


def _slippery_grid(size):
    """grid_forager whose moves fail (stay put) with probability 0.2: B has two stored
    values in most columns (CSC, not one-hot)."""
    d = builtin_models.grid_forager(size)
    B = d["B"][0]
    stay = B[:, :, 0]
    for a in range(1, B.shape[2]):
        B[:, :, a] = 0.8 * B[:, :, a] + 0.2 * stay
    return d


MODELS = {
    "grid8-onehot": lambda: builtin_models.grid_forager(8),
    "grid12-slip": lambda: _slippery_grid(12),
}


def _kernel_G(gm, qs, sparse):
    """G and q_pi from the policy kernel on beliefs ``qs`` (flat float32), sparse or dense."""
    km = gm.kmodel
    n = gm.num_policies
    G = np.zeros(n, np.float32)
    q_pi = np.zeros(n, np.float32)
    sc = np.zeros(km.scratch_size, np.float32)
    pol.sparse_beliefs(sparse)
    before = pol.sparse_beliefs()[1]
    pol.infer_policies(km, np.ascontiguousarray(qs, np.float32), 16.0, True, True, False,
                       False, False, G, q_pi, sc)
    took = pol.sparse_beliefs()[1] - before
    return G.astype(np.float64), q_pi.astype(np.float64), took


def _bound(gm, delta):
    lnC = max(np.max(np.abs(np.log(np.exp(c - c.max()) / np.exp(c - c.max()).sum())))
              for c in gm.C)
    Hmax = max(np.log(a.shape[0]) for a in gm.A)
    return gm.policy_len * delta * (lnC + Hmax + 38.0)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("policy_len", [1, 2])
def test_sparse_matches_dense_within_bound(name, policy_len):
    gm = fa_core.GenerativeModel(**MODELS[name](), policy_len=policy_len)
    S = gm.num_states[0]
    rng = np.random.default_rng(3)
    for _ in range(4):
        qs = np.zeros(S)
        hot = rng.choice(S, 3, replace=False)
        qs[hot] = rng.dirichlet(np.ones(3))
        cold = rng.choice(np.setdiff1d(np.arange(S), hot), 8, replace=False)
        qs[cold] = 1e-10           # dropped: 8e-10 <= budget
        qs[rng.choice(hot)] -= 8e-10
        qs32 = qs.astype(np.float32)
        delta = float(qs32[cold].astype(np.float64).sum())
        Gs, qs_pi, took = _kernel_G(gm, qs32, True)
        Gd, qd_pi, took_d = _kernel_G(gm, qs32, False)
        assert took == 1 and took_d == 0
        tol = _bound(gm, delta) + 1e-6 * np.abs(Gd)
        assert np.all(np.abs(Gs - Gd) <= tol), np.max(np.abs(Gs - Gd))
        np.testing.assert_allclose(qs_pi, qd_pi, rtol=0, atol=1e-5)


def test_dense_path_when_dropped_mass_exceeds_budget_or_support_is_wide():
    gm = fa_core.GenerativeModel(**builtin_models.grid_forager(8))
    S = gm.num_states[0]
    qs = np.zeros(S, np.float32)
    qs[5] = 1.0
    qs[10:30] = 1e-10           # 2e-9 would be dropped: more than the budget
    assert _kernel_G(gm, qs, True)[2] == 0
    qs = np.full(S, 1.0 / S, np.float32)   # every state possible
    assert _kernel_G(gm, qs, True)[2] == 0
    qs = np.zeros(S, np.float32)
    qs[5] = 1.0
    assert _kernel_G(gm, qs, True)[2] == 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_agent_actions_equal_and_population_matches_agent(name):
    """After location cues beliefs are concentrated: Agent with and without the sparse
    path chooses the same actions, and a Population (sparse path) matches the Agents."""
    d = MODELS[name]()
    S = d["B"][0].shape[0]
    n, steps = 3, 4
    rng = np.random.default_rng(7)
    obs = [[(int(rng.integers(S)), 0) for _ in range(n)] for _ in range(steps)]

    agents = [fa_core.Agent(**d, policy_len=2, action_selection="deterministic")
              for _ in range(n)]
    G_s, acts = [], []
    before = pol.sparse_beliefs()[1]
    for t in range(steps):
        for i, ag in enumerate(agents):
            ag.infer_states(list(obs[t][i]))
            pol.sparse_beliefs(False)  # the same beliefs, both paths
            q_d, g_d = ag.infer_policies()
            pol.sparse_beliefs(True)
            q_s, g_s = ag.infer_policies()
            np.testing.assert_allclose(g_s, g_d, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(q_s, q_d, rtol=0, atol=1e-5)
            top = np.sort(g_d)[-2:]
            if top[1] - top[0] > 1e-4:  # not tied: the same best policy
                assert np.argmax(g_s) == np.argmax(g_d)
            G_s.append(np.array(g_s, np.float64))
            acts.append(int(np.asarray(ag.sample_action())[0]))
    assert pol.sparse_beliefs()[1] - before == steps * n

    # a Population (sparse path, per agent) matches the Agents while their histories agree
    # (tied policies may be broken differently by Agent and Population, dense path too)
    gm = fa_core.GenerativeModel(**d, policy_len=2)
    pop = Population(gm, n, action_selection="deterministic", n_threads=1)
    before = pol.sparse_beliefs()[1]
    same = np.ones(n, bool)
    for t in range(steps):
        a = np.asarray(pop.step(np.array(obs[t]))).reshape(n, -1)[:, 0]
        G = np.asarray(pop.G, np.float64)
        for i in range(n):
            if same[i]:
                np.testing.assert_allclose(G[i], G_s[t * n + i], rtol=1e-5, atol=1e-6)
            same[i] &= a[i] == acts[t * n + i]
    assert pol.sparse_beliefs()[1] - before == steps * n
