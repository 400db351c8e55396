"""The shared math of ``fa_core/_math.pxd``: every per-agent function against its 8-agent
block twin, and every fused function in float against double, on random models.

The hooks are ``fa_core._math_probes`` (test-only wrappers): each runs the per-agent
function on each of the BL agents and the block twin on all of them at once. Block
twins sum in another order, so results agree to float32 rounding, not bit for bit.
"""

import numpy as np
import pytest

from fa_core import _math_probes as probes
from fa_core.model import GenerativeModel

from random_models import random_model

BL = probes.BLOCK

# small random models: one factor, two factors with every modality reading both (sorted
# parents, so the block fixed-point iteration runs), and a sparse three-factor one
SHAPES = [
    dict(num_states=[4], num_obs=[3, 2], num_controls=[3]),
    dict(num_states=[3, 2], num_obs=[4, 3], num_controls=[3, 2]),
    dict(num_states=[2, 3, 2], num_obs=[3, 2], num_controls=[2, 3, 2],
         A_factor_list=[[0, 1], [1, 2]], sparsity=0.5),
]


def _model(seed, shape):
    rng = np.random.default_rng(seed)
    shape = dict(shape)
    d = random_model(rng, **shape)
    kw = {k: d[k] for k in ("A", "B", "C", "D")}
    if shape.get("A_factor_list") is not None:
        kw["A_factor_list"] = shape["A_factor_list"]
    gm = GenerativeModel(**kw, policy_len=2)
    return rng, gm, d


def _beliefs(rng, num_states, floor=0.0):
    """(BL, S) float32 beliefs, each factor's row a distribution."""
    rows = []
    for _ in range(BL):
        parts = [rng.dirichlet(np.full(n, 0.7)) + floor for n in num_states]
        rows.append(np.concatenate([p / p.sum() for p in parts]))
    return np.asarray(rows, np.float32)


def _close(a, b, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=rtol, atol=atol)


@pytest.fixture(params=[(seed, i) for seed in (0, 1) for i in range(len(SHAPES))],
                ids=lambda p: f"seed{p[0]}-model{p[1]}")
def case(request):
    seed, i = request.param
    return _model(seed, SHAPES[i])


@pytest.fixture(params=[(seed, i) for seed in (0, 1) for i in (1, 2)],
                ids=lambda p: f"seed{p[0]}-model{p[1]}")
def blocked_case(request):
    """The models with several factors, which the block fixed-point iteration runs."""
    seed, i = request.param
    rng, gm, d = _model(seed, SHAPES[i])
    assert probes.layout(gm.kmodel)["fpi_blocked"]
    return rng, gm, d


def test_joint_of_and_its_block_twin(case):
    rng, gm, d = case
    lay = probes.layout(gm.kmodel)
    qs = _beliefs(rng, d["num_states"])
    for mm in range(lay["nm"]):
        one, blk = probes.joint_pair(gm.kmodel, mm, qs)
        assert one.shape == (BL, lay["a_K"][mm])
        np.testing.assert_array_equal(one, blk)  # the same products
        # and the joint is the outer product of the parents' marginals
        deps = d["A_deps"][mm]
        bounds = np.cumsum([0] + d["num_states"])
        for b in range(BL):
            margs = [qs[b, bounds[f]:bounds[f + 1]].astype(np.float64) for f in deps]
            outer = margs[0]
            for q in margs[1:]:
                outer = np.multiply.outer(outer, q)
            _close(one[b], outer.ravel())


def test_mat_vec_and_its_block_twin(case):
    rng, gm, d = case
    lay = probes.layout(gm.kmodel)
    for i, (rows, cols, _sparse, _onehot) in enumerate(lay["mats"]):
        x = rng.dirichlet(np.ones(cols), size=BL).astype(np.float32)
        one, blk = probes.mat_vec_pair(gm.kmodel, i, x)
        assert one.shape == (BL, rows)
        _close(one, blk)


def test_softmax_and_its_block_twin():
    rng = np.random.default_rng(3)
    x = (4 * rng.standard_normal((BL, 7))).astype(np.float32)
    one, blk, logq = probes.softmax_pair(x)
    want = np.exp(x - x.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    _close(one, want)
    _close(blk, one)
    _close(logq, np.log(one), rtol=1e-4, atol=1e-5)


def test_messages_and_their_block_twin(blocked_case):
    rng, gm, d = blocked_case
    lay = probes.layout(gm.kmodel)
    ll = np.log(rng.uniform(0.05, 1.0, size=(BL, lay["nll"]))).astype(np.float32)
    qs = _beliefs(rng, d["num_states"])
    one, ell1, blk, ellb = probes.messages_pair(gm.kmodel, ll, qs)
    _close(one, blk, rtol=1e-4, atol=1e-5)
    _close(ell1, ellb, rtol=1e-5, atol=1e-5)


def test_free_energy_and_its_block_twin(blocked_case):
    rng, gm, d = blocked_case
    lay = probes.layout(gm.kmodel)
    ll = np.log(rng.uniform(0.05, 1.0, size=(BL, lay["nll"]))).astype(np.float32)
    qs = _beliefs(rng, d["num_states"], floor=0.01)
    lp = np.log(_beliefs(rng, d["num_states"], floor=0.01))
    one, blk = probes.free_energy_pair(gm.kmodel, ll, qs, lp)
    _close(one, blk, rtol=1e-5, atol=1e-5)


def test_fpi_sweep_and_its_block_twin(case):
    rng, gm, d = case
    lay = probes.layout(gm.kmodel)
    lp = np.log(_beliefs(rng, d["num_states"], floor=0.01))
    qL = (2 * rng.standard_normal((BL, lay["S"]))).astype(np.float32)
    one, blk, logq = probes.fpi_sweep_pair(gm.kmodel, lp, qL)
    _close(one, blk)
    _close(logq, np.log(one), rtol=1e-4, atol=1e-5)
    bounds = np.cumsum([0] + d["num_states"])
    for f in range(len(d["num_states"])):
        _close(one[:, bounds[f]:bounds[f + 1]].sum(axis=1), np.ones(BL))


def test_utility_and_its_block_twin(case):
    rng, gm, d = case
    lay = probes.layout(gm.kmodel)
    for mm in range(lay["nm"]):
        qo = rng.dirichlet(np.ones(lay["no"][mm]), size=BL).astype(np.float32)
        for t in range(lay["T"]):
            one, blk = probes.utility_pair(gm.kmodel, mm, t, qo)
            _close(one, blk)
            assert np.all(one <= 1e-6)  # log softmax preferences are <= 0


@pytest.mark.parametrize("peaked", [False, True])
def test_state_info_gain_and_its_block_twin(case, peaked):
    rng, gm, d = case
    lay = probes.layout(gm.kmodel)
    for mm in range(lay["nm"]):
        K = lay["a_K"][mm]
        qx = rng.dirichlet(np.full(K, 0.05 if peaked else 1.0), size=BL)
        if peaked:  # some joint states at or below exp(-16), a few of them nonzero
            qx[:, 0] = 1e-9
            qx /= qx.sum(axis=1, keepdims=True)
        one, blk = probes.info_gain_pair(gm.kmodel, mm, qx.astype(np.float32))
        _close(one, blk, rtol=1e-4, atol=1e-5)
        assert np.all(one >= -1e-5)  # mutual information


def test_fixed_point_iteration_and_its_block_twin(blocked_case):
    rng, gm, d = blocked_case
    qs = _beliefs(rng, d["num_states"])
    action = np.array([[rng.integers(n) for n in d["num_controls"]] for _ in range(BL)],
                      np.int32)
    has_action = (np.arange(BL) % 2).astype(np.uint8)
    obs = np.array([[rng.integers(n) for n in d["num_obs"]] for _ in range(BL)], np.int32)
    one, blk = probes.infer_states_pair(gm.kmodel, qs, action, has_action, obs, 10, 0.001)
    _close(one, blk, rtol=1e-4, atol=1e-5)


def test_policy_evaluation_and_its_block_twin(case):
    rng, gm, d = case
    assert probes.layout(gm.kmodel)["blocked"]  # small models: the block kernel runs them
    qs = _beliefs(rng, d["num_states"])
    G1, q1, Gb, qb = probes.infer_policies_pair(gm.kmodel, qs, 16.0)
    _close(G1, Gb, rtol=1e-4, atol=1e-4)
    _close(q1, qb, rtol=1e-3, atol=1e-5)


# -- fused functions: the float path against the double path ---------------------------------

def test_softmax_in_both_precisions():
    x = np.random.default_rng(4).standard_normal(9) * 5
    f, d = probes.softmax_precisions(x)
    assert f.dtype == np.float32 and d.dtype == np.float64
    _close(f, d, rtol=1e-6, atol=1e-7)
    _close(d, np.exp(x - x.max()) / np.exp(x - x.max()).sum(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("skip", [-1, 0, 1])
def test_joint_in_both_precisions(skip):
    rng = np.random.default_rng(5)
    ns = np.array([2, 3, 4], np.int32)
    s_off = np.array([0, 2, 5, 9], np.int32)
    q = np.concatenate([rng.dirichlet(np.ones(n)) for n in ns])
    dep = np.array([2, 0, 1], np.int32)
    f, d = probes.joint_precisions(ns, s_off, q, dep, skip)
    margs = [np.ones(ns[g]) if i == skip else q[s_off[g]:s_off[g + 1]] for i, g in enumerate(dep)]
    want = np.multiply.outer(np.multiply.outer(margs[0], margs[1]), margs[2]).ravel()
    _close(d, want, rtol=1e-12, atol=0)
    _close(f, d, rtol=1e-6, atol=1e-8)


def test_joint_of_float_beliefs_in_double_is_spm_cross_order():
    # learning's joint: float32 marginals, each entry their double product in factor order
    rng = np.random.default_rng(8)
    ns = np.array([3, 2, 4], np.int32)
    s_off = np.array([0, 3, 5, 9], np.int32)
    q = np.concatenate([rng.dirichlet(np.ones(n)) for n in ns]).astype(np.float32)
    dep = np.array([1, 2, 0], np.int32)
    got = probes.joint_float_to_double(ns, s_off, q, dep)
    m = [q[s_off[g]:s_off[g + 1]].astype(np.float64) for g in dep]
    want = np.multiply.outer(np.multiply.outer(m[0], m[1]), m[2]).ravel()
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)


def test_inductive_cost_in_both_precisions():
    rng = np.random.default_rng(6)
    I = (rng.uniform(size=(4, 5)) < 0.4).astype(np.float64)
    I[-1] = 1.0
    q_now = rng.dirichlet(np.ones(5))
    q_next = rng.dirichlet(np.ones(5))
    (rf, cf), (rd, cd) = probes.inductive_precisions(I, q_now, q_next)
    k = int(np.argmax(q_now))
    row = int(np.argmax(I[:, k] == 1.0))
    row = max(row - 1, 0)
    assert rf == rd == row
    _close(cd, np.log(1e-3) * ((1.0 - I[row]) @ q_next), rtol=1e-12, atol=1e-15)
    _close(cf, cd, rtol=1e-6, atol=1e-7)


def test_dense_efe_terms_in_both_precisions():
    rng = np.random.default_rng(7)
    A = np.ascontiguousarray(rng.dirichlet(np.ones(3), size=6).T, np.float32)  # (3, 6)
    A64 = A.astype(np.float64)
    aH = (A64 * np.log(A64 + np.exp(-16))).sum(axis=0).astype(np.float32)
    qx = rng.dirichlet(np.ones(6))
    lnC = np.log(rng.dirichlet(np.ones(3)))
    (uf, sf), (ud, sd) = probes.dense_terms_precisions(A, aH, qx, lnC)
    qo = A64 @ qx
    _close(ud, qo @ lnC, rtol=1e-6, atol=1e-9)
    _close(sd, qx @ aH.astype(np.float64) - qo @ np.log(qo + 1e-16), rtol=1e-6, atol=1e-9)
    _close(uf, ud, rtol=1e-6, atol=1e-7)
    _close(sf, sd, rtol=1e-5, atol=1e-7)


# -- the vector polynomials (_simd.h) against double precision --------------------------------

def _ulps(got, want):
    """|got - want| in units of the float32 spacing at ``want`` (want in double)."""
    spacing = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return np.abs(np.asarray(got, np.float64) - want) / spacing


# every ISA body this CPU can run: 1 SSE2; 2 AVX2+FMA when the module chose it
ISAS = sorted({1, probes.simd_level()} - {0})


@pytest.mark.parametrize("isa", ISAS)
def test_vector_polynomials_within_one_ulp(isa):
    rng = np.random.default_rng(7)
    # exp: softmax's arguments (x - max x <= 0) and the range up to overflow
    x = np.concatenate([np.linspace(-87.0, 88.0, 100_001),
                        rng.uniform(-40.0, 0.0, 50_000)]).astype(np.float32)
    assert _ulps(probes.vector_exp(x, isa), np.exp(x.astype(np.float64))).max() <= 1.0
    # log of x + 1e-16 for beliefs, likelihoods and predictions: 1e-16 up to counts
    y = np.concatenate([np.geomspace(1e-16, 1e6, 100_001),
                        rng.uniform(0.5, 2.0, 50_000)]).astype(np.float32)
    assert _ulps(probes.vector_log(y, isa), np.log(y.astype(np.float64))).max() <= 1.0
    # far below the float range exp flushes to 0 (libm would give a subnormal or 0)
    tiny = probes.vector_exp(np.array([-88.5, -100.0, -1e4, -np.inf], np.float32), isa)
    np.testing.assert_array_equal(tiny, 0.0)


@pytest.mark.parametrize("n", [1, 3, 4, 7, 8, 9, 17, 100])
def test_array_math_full_vectors_and_tails(n):
    rng = np.random.default_rng(n)
    x = rng.dirichlet(np.full(n, 0.5)).astype(np.float32)
    x[rng.random(n) < 0.2] = 0.0  # exact zeros: 0 log 0 = 0
    y = rng.normal(size=n).astype(np.float32)
    e, tot, lg, xlx, diff, dot, mx = probes.array_math(x, y)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    assert mx == x.max()
    _close(e, np.exp(xd - x.max()), rtol=3e-7, atol=0)
    _close(tot, np.exp(xd - x.max()).sum(), rtol=1e-6, atol=0)
    _close(lg, np.log(xd + np.float32(1e-16)), rtol=3e-7, atol=0)
    pos = x > 0
    _close(xlx, (xd[pos] * np.log(xd[pos] + 1e-16)).sum(), rtol=1e-6, atol=1e-7)
    _close(diff, (xd * (np.log(xd + np.float32(1e-16)) - yd)).sum(), rtol=1e-6, atol=1e-7)
    _close(dot, xd @ yd, rtol=1e-12, atol=1e-15)
