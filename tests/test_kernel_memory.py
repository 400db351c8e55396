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
