"""Drop-in fidelity: pymdp's in-place parameter edits, result types and histories.

Every edit form is applied to a pymdp agent and an fa_core agent built from the
same arrays; both then run the same episode and must agree. Siblings sharing
the fa_core model, and agents built after the edit, must keep the original
parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

from random_models import random_model

N_STATES, N_OBS, N_CONTROLS = [3, 2], [3, 2], [3, 2]


def arrays(seed=0):
    return random_model(np.random.default_rng(seed), N_STATES, N_OBS, N_CONTROLS, None, None)


def pair(RefAgent, FaAgent, **kw):
    m = arrays()
    return (RefAgent(A=m["A"], B=m["B"], **kw), FaAgent(A=m["A"], B=m["B"], **kw),
            FaAgent(A=m["A"], B=m["B"], **kw))


def episode(agent, steps=4):
    np.random.seed(3)
    out = []
    for t in range(steps):
        qs = agent.infer_states([t % 3, (t // 2) % 2])
        q_pi, G = agent.infer_policies()
        out.append((np.concatenate(list(qs)), np.asarray(q_pi), np.asarray(G),
                    np.asarray(agent.sample_action())))
    return out


def assert_same_run(a, b):
    for (qa, pa, ga, aa), (qb, pb, gb, ab) in zip(episode(a), episode(b)):
        np.testing.assert_allclose(qa, qb, atol=1e-4)
        np.testing.assert_allclose(pa, pb, atol=1e-4)
        np.testing.assert_allclose(ga, gb, rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(aa, ab)


def _copyto(x, name, i):
    np.copyto(getattr(x, name)[i], getattr(x, name)[i][::-1].copy())


EDITS = {
    "element": lambda x: x.C[1].__setitem__(1, 3.0),
    "chained-element": lambda x: x.C[0].__setitem__(slice(None), [0.0, 1.0, 2.0]),
    "item": lambda x: x.D.__setitem__(0, np.array([1.0, 0.0, 0.0])),
    "augmented": lambda x: _iadd(x.C, 1),
    "ufunc-out": lambda x: np.multiply(x.C[0], 2.0, out=x.C[0]),
    "copyto": lambda x: _copyto(x, "C", 0),
    "fill": lambda x: x.C[0].fill(0.5),
    "A-column": lambda x: x.A[0].__setitem__((slice(None), 0, 0), [0.8, 0.1, 0.1]),
    "B-slice": lambda x: x.B[1].__setitem__((slice(None), slice(None), 0), np.eye(2)),
    "E": lambda x: x.E.__setitem__(slice(None), np.linspace(1, 2, len(x.policies))
                                   / np.linspace(1, 2, len(x.policies)).sum()),
    "whole": lambda x: setattr(x, "C", _obj([np.array([0.0, 2.0, 0.0]), np.array([1.0, 0.0])])),
    "gamma": lambda x: setattr(x, "gamma", 2.0),
}


def _iadd(container, i):
    container[i] += 1  # the tutorial form: an augmented assignment through the object array


def _obj(items):
    out = np.empty(len(items), dtype=object)
    for i, v in enumerate(items):
        out[i] = v
    return out


@pytest.mark.parametrize("form", sorted(EDITS))
def test_edit_form_matches_pymdp_and_stays_private(RefAgent, FaAgent, form):
    ref, fa, sibling = pair(RefAgent, FaAgent)
    before = {n: [np.array(a) for a in getattr(fa, n)] if n != "E" else np.array(fa.E)
              for n in ("A", "B", "C", "D", "E")}
    EDITS[form](ref)
    EDITS[form](fa)
    assert_same_run(ref, fa)
    # the shared model is untouched: a sibling and an agent built afterwards see the originals
    m = arrays()
    later = FaAgent(A=m["A"], B=m["B"])
    for other in (sibling, later):
        for n, v in before.items():
            got = getattr(other, n)
            if n == "E":
                np.testing.assert_array_equal(got, v)
            else:
                for g, w in zip(got, v):
                    np.testing.assert_array_equal(g, w)
    assert sibling.model is later.model


def test_edits_are_private_to_the_edited_agent(FaAgent):
    _, fa, sibling = pair(FaAgent, FaAgent)
    held = fa.C[1]
    held[1] = 3.0
    assert fa.C[1] is held and fa.C[1][1] == 3.0  # the user's array is the agent's own
    fa.infer_states([0, 0])
    assert fa.model is not sibling.model
    assert sibling.C[1][1] == 0.0 and sibling.model.C[1][1] == 0.0


def test_undetectable_writes_raise(FaAgent):
    _, fa, _ = pair(FaAgent, FaAgent)
    with pytest.raises(ValueError, match="read-only"):
        np.asarray(fa.C[0])[0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        fa.A[0].flat[0] = 1.0


def test_invalid_edit_raises_naming_it_and_keeps_the_model(FaAgent):
    _, fa, _ = pair(FaAgent, FaAgent)
    model = fa.model
    fa.A[0][:, 0, 0] = [5.0, 0.0, 0.0]  # columns must sum to 1
    with pytest.raises(ValueError, match="agent.A was edited"):
        fa.infer_states([0, 0])
    assert fa.model is model


def test_pA_edit_keeps_A_until_reset_as_pymdp(RefAgent, FaAgent):
    m = arrays()
    pA = [a * 10 + 0.1 for a in m["A"]]
    ref = RefAgent(A=m["A"], B=m["B"], pA=_obj(pA))
    fa = FaAgent(A=m["A"], B=m["B"], pA=_obj(pA))
    for x in (ref, fa):
        x.pA[0][0] += 50.0
    np.testing.assert_allclose(fa.A[0], ref.A[0], atol=1e-6)  # A unchanged by the edit
    for x in (ref, fa):
        x.reset()
    np.testing.assert_allclose(fa.A[0], ref.A[0], atol=1e-6)  # reset: A = E[pA]
    np.testing.assert_allclose(fa.pA[0], ref.pA[0])


def test_results_have_pymdps_types(RefAgent, FaAgent):
    ref, fa, _ = pair(RefAgent, FaAgent)
    init = fa.qs
    assert all(q.dtype == np.float64 for q in init)
    assert all((fa.qs[f] == ref.qs[f]).all() for f in range(2))  # exact uniform, as pymdp
    for x in (ref, fa):
        qs = x.infer_states([0, 1])
        q_pi, G = x.infer_policies()
        assert qs.dtype == object and all(q.dtype == np.float64 for q in qs)
        assert q_pi.dtype == np.float64 and G.dtype == np.float64
        for name in ("A", "B", "C", "D"):
            assert all(a.dtype == np.float64 for a in getattr(x, name)), name
        assert x.E.dtype == np.float64


def test_numpy_functions_on_object_arrays_behave_as_pymdps(RefAgent, FaAgent):
    """numpy functions given pymdp's object arrays (qs, A, B) work as on pymdp's: they
    iterate the per-factor arrays (this once recursed without end in ParamArray's
    __array_function__)."""
    ref, fa, _ = pair(RefAgent, FaAgent)
    for x in (ref, fa):
        x.infer_states([0, 1])
    np.testing.assert_allclose(np.concatenate(fa.qs), np.concatenate(ref.qs), atol=1e-6)
    np.testing.assert_allclose(np.stack(list(fa.qs)[:1]), np.stack(list(ref.qs)[:1]),
                               atol=1e-6)
    for name in ("qs", "A", "B"):
        got, want = np.copy(getattr(fa, name)), np.copy(getattr(ref, name))
        assert got.dtype == want.dtype == object and got.shape == want.shape, name
        assert all(type(g) is np.ndarray for g in got), name  # plain copies, not views
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-6)


def test_writes_into_qs_and_q_pi_take_effect(RefAgent, FaAgent):
    ref, fa, _ = pair(RefAgent, FaAgent)
    for x in (ref, fa):
        x.infer_states([0, 1])
        x.infer_policies()
        x.sample_action()
        x.qs[0][:] = [0.0, 0.0, 1.0]
    np.testing.assert_allclose(np.concatenate(list(fa.infer_states([1, 0]))),
                               np.concatenate(list(ref.infer_states([1, 0]))), atol=1e-4)
    for x in (ref, fa):
        q_pi, _ = x.infer_policies()
        q_pi[:] = 0.0
        q_pi[-1] = 1.0
    np.testing.assert_array_equal(fa.sample_action(), ref.sample_action())


def test_histories_grow_as_pymdps(RefAgent, FaAgent):
    ref, fa, _ = pair(RefAgent, FaAgent, save_belief_hist=True)
    for x in (ref, fa):
        for t in range(1_100):
            x.infer_states([t % 3, t % 2])
            if t < 5:
                x.infer_policies()
            x.sample_action()
    assert len(fa.prev_actions) == len(ref.prev_actions) == 1_100
    assert len(fa.qs_hist) == len(ref.qs_hist) == 1_100
    assert len(fa.q_pi_hist) == len(ref.q_pi_hist) == 5
    np.testing.assert_array_equal(np.stack(fa.prev_actions), np.stack(ref.prev_actions))
    bounded = FaAgent(A=arrays()["A"], B=arrays()["B"], action_hist_len=10)
    for _ in range(30):
        bounded.infer_states([0, 0])
        bounded.sample_action()
    assert len(bounded.prev_actions) == 10


def test_sample_action_test_returns_pymdps_distribution(RefAgent, FaAgent):
    for kw in (dict(), dict(action_selection="stochastic", alpha=2.0), dict(sampling_mode="full"),
               dict(sampling_mode="full", action_selection="stochastic")):
        ref, fa, _ = pair(RefAgent, FaAgent, **kw)
        for x in (ref, fa):
            x.infer_states([0, 1])
            x.infer_policies()
        np.random.seed(5)
        a_ref, p_ref = ref._sample_action_test()
        np.random.seed(5)
        a_fa, p_fa = fa._sample_action_test()
        np.testing.assert_array_equal(a_fa, a_ref)
        if kw.get("sampling_mode") == "full":
            np.testing.assert_allclose(p_fa, p_ref, atol=1e-5)
        else:
            for f in range(2):
                np.testing.assert_allclose(p_fa[f], p_ref[f], atol=1e-5)


def test_infer_states_test_records_mmp_iterations(RefAgent, FaAgent):
    m = random_model(np.random.default_rng(7), [3], [3], [2], None, None)
    kw = dict(A=m["A"], B=m["B"], C=m["C"], inference_algo="MMP", inference_horizon=3,
              use_BMA=False, policy_sep_prior=True)
    ref, fa = RefAgent(**kw), FaAgent(**kw)
    for t in range(4):
        out = [x._infer_states_test((t % 3,)) for x in (ref, fa)]
        (q_r, xn_r, vn_r), (q_f, xn_f, vn_f) = out
        for p in range(len(xn_r)):
            assert len(xn_f[p]) == len(xn_r[p])
            for it in range(len(xn_r[p])):
                np.testing.assert_allclose(xn_f[p][it][0], xn_r[p][it][0], atol=1e-5)
                np.testing.assert_allclose(vn_f[p][it][0], vn_r[p][it][0], atol=1e-5)
        for x in (ref, fa):
            x.infer_policies()
        np.random.seed(t)
        a = ref.sample_action()
        np.random.seed(t)
        np.testing.assert_array_equal(fa.sample_action(), a)
    assert len(fa.prev_obs) == len(ref.prev_obs) == 4


@pytest.mark.parametrize("name,value", [("gamma", float("nan")), ("gamma", 1e39),
                                        ("alpha", "2"), ("alpha", float("inf"))])
def test_assigned_precision_is_checked_before_use(FaAgent, name, value):
    _, fa, _ = pair(FaAgent, FaAgent)
    fa.infer_states([0, 1])
    setattr(fa, name, value)
    with pytest.raises((ValueError, TypeError), match=name):
        fa.infer_policies()
    setattr(fa, name, 4)  # pymdp accepts ints
    fa.infer_policies()
    assert np.all(np.isfinite(fa.q_pi))
