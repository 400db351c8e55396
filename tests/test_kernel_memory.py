"""Regressions for memory errors the checked build (FA_CORE_CHECKED_BUILD=1, ASan + UBSan) found.

Each test fails in a normal build too where it can (a size it checks), and in the checked build
the overflow itself aborts the run with a sanitizer report.
"""

from __future__ import annotations

import numpy as np
import pytest

from fa_core import Agent
from fa_core.population import Population
from random_models import random_model


def many_policies_model():
    """Two one-state factors with three controls, policy_len 3: 729 policies on a tiny model,
    so the policy posterior is longer than everything else the kernels keep in scratch."""
    m = random_model(np.random.default_rng(0), [1, 1], [2], [3, 3])
    return Agent(A=m["A"], B=m["B"], C=m["C"], D=m["D"], policy_len=3).model


@pytest.mark.parametrize("sampling_mode", ["full", "marginal"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_stochastic_selection_fits_in_scratch(sampling_mode, n_threads):
    # c_sample_action softmaxes the policy posterior (full) or a factor's action marginal
    # (marginal) into the scratch after the action marginals; the scratch was sized for
    # inference only and the full-mode softmax wrote up to n_pol floats past its end.
    gm = many_policies_model()
    km = gm.kmodel
    assert gm.num_policies == 729
    assert km.scratch_size >= km.sum_controls + max(gm.num_policies, max(gm.num_controls))
    pops = [Population(gm, 20, seed=3, n_threads=t, action_selection="stochastic",
                       sampling_mode=sampling_mode) for t in (n_threads, 1)]
    obs = np.zeros((20, 1), dtype=np.int32)
    for _ in range(5):
        acts = [p.step(obs) for p in pops]
        np.testing.assert_array_equal(acts[0], acts[1])
        assert ((acts[0] >= 0) & (acts[0] < 3)).all()
    np.testing.assert_array_equal(pops[0].q_pi, pops[1].q_pi)


@pytest.mark.parametrize("seed", range(12))
def test_random_models_through_every_kernel(seed):
    """Small random models (one-state factors, sparse and one-hot matrices, factor lists,
    policy_len up to 3) through Agent and Population in every selection mode: in the checked
    build a sanitizer report or failed bounds check here is a kernel memory error."""
    rng = np.random.default_rng(1000 + seed)
    nf, nm = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    ns = [int(rng.integers(1, 6)) for _ in range(nf)]
    no = [int(rng.integers(1, 6)) for _ in range(nm)]
    nc = [int(rng.integers(1, 4)) for _ in range(nf)]
    afl = [sorted(rng.choice(nf, int(rng.integers(1, nf + 1)), replace=False).tolist())
           for _ in range(nm)]
    m = random_model(rng, ns, no, nc, afl, sparsity=float(rng.choice([0.0, 0.5, 0.9])),
                     near_onehot_B=bool(seed % 2))
    policy_len = 1 + seed % 3
    for mode in ("full", "marginal"):
        for selection in ("stochastic", "deterministic"):
            ag = Agent(A=m["A"], B=m["B"], C=m["C"], D=m["D"], A_factor_list=afl,
                       policy_len=policy_len, action_selection=selection, sampling_mode=mode,
                       seed=seed)
            pop = Population(ag.model, 9, seed=seed, n_threads=2, action_selection=selection,
                             sampling_mode=mode)
            for _ in range(3):
                obs = [int(rng.integers(k)) for k in no]
                ag.infer_states(obs)
                ag.infer_policies()
                a = ag.sample_action()
                assert ((a >= 0) & (a < nc)).all()
                acts = pop.step(np.tile(np.array(obs, dtype=np.int32), (9, 1)))
                assert ((acts >= 0) & (acts < np.array(nc))).all()
            np.testing.assert_allclose(pop.q_pi.sum(axis=1), 1.0, rtol=1e-4)
