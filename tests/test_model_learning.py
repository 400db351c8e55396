"""GenerativeModel.with_counts: the incremental rebuild learning uses.

A learned model must equal a model built from scratch from the same counts
(matrices, log cache, column entropies, info-gain weights, and the numbers the
kernels compute from them), keep the original model untouched, reject bad
counts by name, and not keep the arrays it replaced alive.
"""

from __future__ import annotations

import numpy as np
import pytest

from fa_core import _kernels
from fa_core import model as fa_model
from fa_core.model import GenerativeModel, _unpack
from random_models import dirichlet_counts, random_model


def _model(sparse, seed=0):
    rng = np.random.default_rng(seed)
    d = random_model(rng, [4, 3], [5, 3], [3, 2], [[0], [0, 1]], None, sparsity=0.4)
    pA = [np.asarray(p) for p in dirichlet_counts(rng, d["A"])]
    pB = [np.asarray(p) for p in dirichlet_counts(rng, d["B"])]
    gm = GenerativeModel(A=d["A"], B=d["B"], C=d["C"], D=d["D"], pA=pA, pB=pB,
                         A_factor_list=d["A_factor_list"], sparse=sparse)
    return gm, rng


def _policy_numbers(gm):
    """G and q_pi the kernels compute from a model, with every EFE term on."""
    qs = np.concatenate([np.full(n, 1.0 / n, dtype=np.float32) for n in gm.num_states])
    G = np.empty(gm.num_policies, np.float32)
    q_pi = np.empty(gm.num_policies, np.float32)
    scratch = np.empty(gm.kmodel.scratch_size, np.float32)
    _kernels.infer_policies(gm.kmodel, qs, 16.0, True, True, True, True, False, G, q_pi, scratch)
    return G, q_pi


def _assert_same_model(got, want):
    for name in ("A", "B", "pA", "pB"):
        for x, y in zip(getattr(got, name), getattr(want, name)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=name)
    for specs_got, specs_want, name in ((got._A_specs, want._A_specs, "A"),
                                        (got._wA_specs, want._wA_specs, "wA")):
        for m, (s, t) in enumerate(zip(specs_got, specs_want)):
            np.testing.assert_allclose(_unpack(s), _unpack(t), rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name}[{m}]")
            assert (s.logval is None) == (t.logval is None)
            if s.logval is not None and s.sparse == t.sparse:
                np.testing.assert_allclose(s.logval, t.logval, rtol=1e-6, atol=1e-5)
    for f, (bs, ws) in enumerate(zip(got._wB_specs, want._wB_specs)):
        for s, t in zip(bs, ws):
            np.testing.assert_allclose(_unpack(s), _unpack(t), rtol=1e-5, atol=1e-7,
                                       err_msg=f"wB[{f}]")
    for h, k in zip(got._a_H, want._a_H):
        np.testing.assert_allclose(h, k, rtol=1e-5, atol=1e-6)
    for x, y in zip(_policy_numbers(got), _policy_numbers(want)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sparse", ["auto", True, False])
@pytest.mark.parametrize("cache_log", [True, False])
def test_learned_model_equals_model_built_from_the_counts(sparse, cache_log, monkeypatch):
    if not cache_log:
        monkeypatch.setattr(fa_model, "LOG_CACHE_MAX_ENTRIES", 0)
    gm, rng = _model(sparse)
    pA = [p + rng.uniform(0, 2, p.shape) * (p > 0) for p in gm.pA]  # same zeros, as learning
    pB = [p.copy() for p in gm.pB]
    pB[1][..., 1] += rng.uniform(0, 2, pB[1][..., 1].shape) * (pB[1][..., 1] > 0)
    learned = gm.with_counts(pA=pA, pB=pB, pB_controls={1: [1]})
    fresh = GenerativeModel(A=gm.A, B=gm.B, C=gm.C, D=gm.D, pA=pA, pB=pB,
                            A_factor_list=gm.A_factor_list, sparse=sparse)
    _assert_same_model(learned, fresh)
    assert learned.is_sparse == fresh.is_sparse


@pytest.mark.parametrize("sparse", ["auto", True])
def test_counts_with_new_zeros_get_a_new_sparsity_pattern(sparse):
    gm, rng = _model(sparse)
    pA = [p.copy() for p in gm.pA]
    pA[0][0, 0] = 0.0                  # one stored entry gone ...
    pA[0][pA[0] == 0] = 0.0
    zero = np.argwhere(gm.pA[0] == 0)
    if len(zero):                      # ... and one new entry: same count, other places
        pA[0][tuple(zero[0])] = 3.0
    learned = gm.with_counts(pA=pA)
    fresh = GenerativeModel(A=gm.A, B=gm.B, C=gm.C, D=gm.D, pA=pA, pB=gm.pB,
                            A_factor_list=gm.A_factor_list, sparse=sparse)
    _assert_same_model(learned, fresh)


@pytest.mark.parametrize("bad, message", [(-1.0, "finite and non-negative"),
                                          (np.nan, "finite and non-negative"),
                                          (np.inf, "finite and non-negative")])
def test_bad_counts_are_named_and_leave_the_model_unchanged(bad, message):
    gm, _ = _model("auto")
    before = [a.copy() for a in gm.A], _policy_numbers(gm)
    pA = [p.copy() for p in gm.pA]
    pA[1][0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"pA\[1\].*" + message):
        gm.with_counts(pA=pA)
    pB = [p.copy() for p in gm.pB]
    pB[0][:, 0, 0] = 0.0
    with pytest.raises(ValueError, match=r"pB\[0\].*column of zero counts"):
        gm.with_counts(pB=pB)
    for a, b in zip(gm.A, before[0]):
        np.testing.assert_array_equal(a, b)
    for x, y in zip(_policy_numbers(gm), before[1]):
        np.testing.assert_array_equal(x, y)


def test_repeated_learning_does_not_keep_replaced_arrays():
    gm, rng = _model("auto")
    sizes = []
    model = gm
    for _ in range(30):
        pA = [p + rng.uniform(0, 1, p.shape) * (p > 0) for p in model.pA]
        pB = [p + rng.uniform(0, 1, p.shape) * (p > 0) for p in model.pB]
        model = model.with_counts(pA=pA, pB=pB)
        sizes.append(model.nbytes)
    assert len(set(sizes)) == 1
    assert sizes[0] == GenerativeModel(A=model.A, B=model.B, C=model.C, D=model.D, pA=model.pA,
                                       pB=model.pB, A_factor_list=model.A_factor_list).nbytes
