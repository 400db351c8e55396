"""Sparse beliefs in state inference (``fa_core._states.c_infer_states_sparse``).

A one-factor model with sparse ``B`` whose previous belief sits on fewer than a
quarter of its states (``Q``: the states above 1e-10, the rest of total mass
``delta`` <= 1e-9) infers its posterior over the states ``R`` that ``B[..., u]``
reaches from ``Q``, and writes exact zeros elsewhere. With ``eps = 1e-16``
(pymdp's ``log(x + eps)``) and ``W~`` the weight of ``R`` (the evidence of the
outcomes under the sparse prediction), the sparse posterior is within

    2 (2 delta + S eps) (1 + eps)^M / W~

in L1 of the exact one; the path is taken only when ``4 (2 delta + S eps) <= 1e-7 W~``,
else (a surprising outcome that the reached states hardly explain) the dense path
runs on the untouched beliefs. It is also taken only when a one-hot modality (the
location cue) has every state that could emit its outcome inside ``R``, so that the
states written as 0 are those where pymdp would hold ``eps^2``-sized values. These
tests check the inequality in float64, the kernel's choice and result against the
exact posterior, and episodes of ``fa_core.Agent`` and ``Population`` (1 and 2
threads) beside ``pymdp.legacy.agent.Agent`` in the same process, with a
surprising outcome that forces the fallback.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fa_core
import fa_core._states as st
from fa_core import builtin_models
from fa_core.population import Population

PROB_ATOL = 1e-4      # tests/test_parity_pymdp.py
TOL = 1e-7            # FA_SPARSE_STATES_TOL: the certified L1 distance
EPS = 1e-16
SPARSE_EPS = 1e-10
F32_SLACK = 2e-6      # float32 rounding of a posterior (logs of magnitude <= 37, softmax)


@pytest.fixture(autouse=True)
def _sparse_on():
    """Leave the sparse path on after every test, whatever it set."""
    yield
    st.sparse_states(True)


def _slippery_grid(size, slip=0.2):
    """grid_forager whose moves fail (stay put) with probability ``slip`` (CSC B)."""
    d = builtin_models.grid_forager(size)
    B = d["B"][0]
    stay = B[:, :, 0].copy()
    for a in range(1, B.shape[2]):
        B[:, :, a] = (1 - slip) * B[:, :, a] + slip * stay
    return d


# a confusable cue (not one-hot): states outside the prediction could emit it, so the
# sparse path is not taken and these models run dense (parity checked all the same)
DENSE_ONLY = {"grid8-confused"}
MODELS = {
    "grid8-onehot": lambda: builtin_models.grid_forager(8),
    "grid12-slip": lambda: _slippery_grid(12),
    "grid8-confused": lambda: builtin_models.grid_forager(8, cue_confusion=0.2),
}


def _exact(d, qs_prev, u, obs):
    """pymdp's one-factor posterior in float64 from the float32 beliefs ``qs_prev``."""
    p = d["B"][0][:, :, u] @ qs_prev.astype(np.float64)
    logw = np.log(p + EPS)
    for m, o in enumerate(obs):
        logw = logw + np.log(d["A"][m][o] + EPS)
    w = np.exp(logw - logw.max())
    return w / w.sum()


def _sparse64(d, qs_prev, u, obs):
    """The sparse computation in float64: posterior over R, its weight W~ and delta."""
    q = qs_prev.astype(np.float64)
    keep = q > SPARSE_EPS
    delta = q[~keep].sum()
    p = d["B"][0][:, :, u] @ np.where(keep, q, 0.0)
    R = p > 0
    w = (p[R] + EPS)
    for m, o in enumerate(obs):
        w = w * (d["A"][m][o][R] + EPS)
    out = np.zeros_like(q)
    out[R] = w / w.sum()
    return out, w.sum(), delta


def _beliefs(rng, S, hot, cold, cold_value=1e-10):
    q = np.zeros(S)
    h = rng.choice(S, hot, replace=False)
    q[h] = rng.dirichlet(np.ones(hot))
    c = rng.choice(np.setdiff1d(np.arange(S), h), cold, replace=False)
    q[c] = cold_value
    q[h[0]] -= cold * cold_value
    return q.astype(np.float32)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bound_holds_in_float64(name):
    """The inequality itself, in float64: concentrated beliefs with dropped mass at the
    budget, outcomes drawn from the prediction and outcomes no reached state explains."""
    d = MODELS[name]()
    S = d["B"][0].shape[0]
    M = len(d["A"])
    rng = np.random.default_rng(1)
    for trial in range(40):
        q = _beliefs(rng, S, int(rng.integers(1, 4)), int(rng.integers(0, 10)))
        u = int(rng.integers(5))
        pred = d["B"][0][:, :, u] @ q.astype(np.float64)
        loc = int(rng.integers(S)) if trial % 3 == 0 else int(rng.choice(S, p=pred / pred.sum()))
        obs = [loc, int(rng.integers(2))]
        exact = _exact(d, q, u, obs)
        sparse, W, delta = _sparse64(d, q, u, obs)
        bound = 2 * (2 * delta + S * EPS) * (1 + EPS) ** M / W
        assert np.abs(sparse - exact).sum() <= bound * (1 + 1e-9) + 1e-15


@pytest.mark.parametrize("name", sorted(MODELS))
def test_kernel_takes_the_certified_path_and_stays_within_the_bound(name):
    d = MODELS[name]()
    gm = fa_core.GenerativeModel(**d)
    km = gm.kmodel
    S = gm.num_states[0]
    rng = np.random.default_rng(2)
    sc = np.zeros(km.scratch_size, np.float32)
    took = fell = 0
    for trial in range(40):
        q = _beliefs(rng, S, int(rng.integers(1, 4)), int(rng.integers(0, 10)))
        u = int(rng.integers(5))
        pred = d["B"][0][:, :, u] @ q.astype(np.float64)
        loc = int(rng.integers(S)) if trial % 4 == 0 else int(rng.choice(S, p=pred / pred.sum()))
        obs = np.array([loc, int(rng.integers(2))], np.int32)
        _, W, delta = _sparse64(d, q, u, obs)
        crit = 4 * (2 * delta + S * EPS) / W
        out = {}
        for on in (True, False):
            st.sparse_states(on)
            qs = q.copy()
            before = st.sparse_states()[1:]
            st.infer_states(km, qs, qs, np.array([u], np.int32), 1, obs,
                            np.zeros(gm.num_obs[0] + 2, np.float32), False, 10, 1.0, 1e-3,
                            False, sc)
            out[on] = (qs, np.subtract(st.sparse_states()[1:], before))
        (qs_s, (n_s, n_f)), (qs_d, _) = out[True], out[False]
        exact = _exact(d, q, u, obs)
        if n_s:
            assert crit <= 2 * TOL  # W~ in float32 decided: only rounding away from float64
            assert np.all(qs_s[qs_d > SPARSE_EPS] > 0)
            assert np.abs(qs_s - exact).sum() <= TOL + F32_SLACK
            np.testing.assert_allclose(qs_s, qs_d, rtol=0, atol=F32_SLACK)
            took += 1
        else:
            assert n_f == (0 if name in DENSE_ONLY else 1)
            assert name in DENSE_ONLY or crit >= TOL / 2
            np.testing.assert_array_equal(qs_s, qs_d)  # the dense path on the same beliefs
            fell += 1
    if name in DENSE_ONLY:
        assert took == 0 and fell == 40  # the dense path, not even tried (n_f == 0)
    else:
        assert took >= 10 and fell >= 3


def test_dropped_mass_decides_between_paths():
    """The same unlikely outcome (a move that failed, 0.05): the sparse path without dropped
    mass, the dense one when 9e-10 dropped would make the bound exceed 1e-7."""
    d = _slippery_grid(8, slip=0.05)
    gm = fa_core.GenerativeModel(**d)
    km = gm.kmodel
    sc = np.zeros(km.scratch_size, np.float32)
    rew = int(np.argmax(d["A"][1][:, 27]))
    for cold, sparse in ((0, True), (9, False)):
        q = np.zeros(64, np.float32)
        q[27] = 1.0
        q[np.arange(40, 40 + cold)] = 1e-10
        before = st.sparse_states()[1:]
        st.infer_states(km, q, q, np.array([4], np.int32), 1, np.array([27, rew], np.int32),
                        np.zeros(66, np.float32), False, 10, 1.0, 1e-3, False, sc)
        took, fell = np.subtract(st.sparse_states()[1:], before)
        assert (took, fell) == ((1, 0) if sparse else (0, 1))


def test_wide_or_first_beliefs_run_dense():
    d = builtin_models.grid_forager(8)
    ag = fa_core.Agent(**d)
    before = st.sparse_states()[1:]
    ag.infer_states([10, 0])                     # from D: no previous beliefs
    assert tuple(np.subtract(st.sparse_states()[1:], before)) == (0, 0)
    km = fa_core.GenerativeModel(**d).kmodel
    q = np.full(64, 1 / 64, np.float32)          # every state possible
    st.infer_states(km, q, q, np.array([1], np.int32), 1, np.array([3, 0], np.int32),
                    np.zeros(66, np.float32), False, 10, 1.0, 1e-3, False,
                    np.zeros(km.scratch_size, np.float32))
    assert tuple(np.subtract(st.sparse_states()[1:], before)) == (0, 0)


def _outcome(d, rng, loc, surprise=False):
    """The cue (drawn from A; with ``surprise``, a cell on the far side of the grid) and the
    reward of a walker at ``loc``."""
    S = d["B"][0].shape[0]
    cue = (loc + S // 2 + 3) % S if surprise else int(
        rng.choice(S, p=d["A"][0][:, loc] / d["A"][0][:, loc].sum()))
    return cue, int(np.argmax(d["A"][1][:, loc]))


def _move(d, rng, loc, a):
    nxt = d["B"][0][:, loc, a]
    return int(rng.choice(nxt.size, p=nxt / nxt.sum()))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_agent_beside_pymdp_with_a_surprising_outcome(name, RefAgent):
    d = MODELS[name]()
    rng = np.random.default_rng(5)
    fa = fa_core.Agent(**copy.deepcopy(d))
    ref = RefAgent(**copy.deepcopy(d))
    before = st.sparse_states()[1:]
    loc = int(rng.integers(d["B"][0].shape[0]))
    for t in range(10):
        cue, rew = _outcome(d, rng, loc, surprise=t == 6)
        q_f = np.asarray(fa.infer_states([cue, rew])[0], np.float64)
        q_r = np.asarray(ref.infer_states([cue, rew])[0], np.float64)
        np.testing.assert_allclose(q_f, q_r, rtol=0, atol=PROB_ATOL, err_msg=f"step {t}")
        fa.infer_policies()
        ref.infer_policies()
        a = fa.sample_action()
        ref.action = np.array(a, dtype=float)   # both predict from the same action
        loc = _move(d, rng, loc, int(a[0]))
    took, fell = np.subtract(st.sparse_states()[1:], before)
    assert (took == 0) if name in DENSE_ONLY else (took >= 5 and fell >= 1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_population_beside_pymdp_and_dense(name, threads, RefAgent):
    d = MODELS[name]()
    n, steps = 5, 8
    rng = np.random.default_rng(11)
    gm = fa_core.GenerativeModel(**d)
    pops = {on: Population(gm, n, n_threads=threads, seed=3) for on in (True, False)}
    refs = [RefAgent(**copy.deepcopy(d)) for _ in range(n)]
    before = st.sparse_states()[1:]
    locs = rng.integers(d["B"][0].shape[0], size=n)
    for t in range(steps):
        obs = np.array([_outcome(d, rng, int(loc), surprise=t == 5 and i % 2 == 1)
                        for i, loc in enumerate(locs)])
        q_r = np.array([np.asarray(r.infer_states(list(o))[0], np.float64)
                        for r, o in zip(refs, obs)])
        qs = {}
        for on, pop in pops.items():
            st.sparse_states(on)
            pop.infer_states(obs)
            qs[on] = np.asarray(pop.qs_factor(0), np.float64)
        st.sparse_states(True)
        np.testing.assert_allclose(qs[True], q_r, rtol=0, atol=PROB_ATOL, err_msg=f"step {t}")
        np.testing.assert_allclose(qs[True], qs[False], rtol=0, atol=F32_SLACK)
        # the same random actions for every agent of both populations, pymdp and the world
        a = rng.integers(5, size=n)
        for pop in pops.values():
            pop.set("actions", a.reshape(n, 1))
            pop.set("has_action", 1)
        for r, ai in zip(refs, a):
            r.action = np.array([float(ai)])
        locs = [_move(d, rng, int(loc), int(ai)) for loc, ai in zip(locs, a)]
    took, fell = np.subtract(st.sparse_states()[1:], before)
    assert (took == 0) if name in DENSE_ONLY else (took >= n * (steps - 3) and fell >= 2)
