"""Bad input is refused with a ValueError or TypeError that names the argument.

Constructor arguments are checked one defect at a time against a valid base
model. For per-step inputs (observations, ``qs_prev``, ``qs_t0``, ``init_qs``)
the agent is snapshotted before the failing call and compared after it: a
refused call must leave the agent exactly as it was, and the agent must then
behave exactly like an identical twin that never saw the bad call.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from random_models import dirichlet_counts, obj_array, random_model, random_obs

BAD_INPUT = (ValueError, TypeError)


def assert_rejects(fn, pattern, exc=BAD_INPUT):
    """``fn()`` raises ``exc`` and the message matches ``pattern`` (names the argument)."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    assert re.search(pattern, msg), f"message {msg!r} does not name {pattern!r}"


def base_kwargs(factored=False):
    """A valid model: factors [3, 2], modalities [3, 2], controls [3, 2] (6 policies)."""
    afl = [[0], [0, 1]] if factored else None
    bfl = [[0, 1], [1]] if factored else None
    model = random_model(np.random.default_rng(0), [3, 2], [3, 2], [3, 2], afl, bfl)
    kw = dict(A=model["A"], B=model["B"], C=model["C"], D=model["D"])
    if factored:
        kw.update(A_factor_list=afl, B_factor_list=bfl)
    return copy.deepcopy(kw)


def _set(kw, name, index, value):
    arr = kw[name].copy()
    arr[index] = value
    kw[name] = arr
    return kw


def _scaled(a, where, factor):
    a = a.copy()
    a[where] *= factor
    return a


def _with(a, where, value, dtype=None):
    a = a.astype(dtype) if dtype is not None else a.copy()
    a[where] = value
    return a


def _column_negative(a):
    """Columns still sum to one, but with a negative entry."""
    a = a.copy()
    a[0, 0] = 1.5
    a[1:, 0] = -0.5 / (a.shape[0] - 1)
    return a


def _norm(x):
    return x / x.sum(axis=0, keepdims=True)


# Each case: (id, function building constructor kwargs, pattern the message must contain).
CONSTRUCTOR_CASES = [
    # normalisation and values
    ("A-unnormalised", lambda: _set(base_kwargs(), "A", 1, _scaled(base_kwargs()["A"][1],
                                                                   (slice(None), 0, 1), 1.1)),
     r"A\[1\]"),
    ("A-negative-entry", lambda: _set(base_kwargs(), "A", 0, _column_negative(
        base_kwargs()["A"][0][:, :, 0])[..., None].repeat(2, axis=-1)), r"A\[0\]"),
    ("B-unnormalised", lambda: _set(base_kwargs(), "B", 0, _scaled(base_kwargs()["B"][0],
                                                                   (slice(None), 0, 1), 0.5)),
     r"B\[0\]"),
    ("A-nan", lambda: _set(base_kwargs(), "A", 0, _with(base_kwargs()["A"][0], (0, 0, 0),
                                                        np.nan)), r"A\[0\]"),
    ("A-inf", lambda: _set(base_kwargs(), "A", 1, _with(base_kwargs()["A"][1], (0, 0, 0),
                                                        np.inf)), r"A\[1\]"),
    ("B-nan", lambda: _set(base_kwargs(), "B", 1, _with(base_kwargs()["B"][1], (0, 0, 0),
                                                        np.nan)), r"B\[1\]"),
    ("B-inf", lambda: _set(base_kwargs(), "B", 0, _with(base_kwargs()["B"][0], (0, 0, 0),
                                                        np.inf)), r"B\[0\]"),
    ("C-nan", lambda: _set(base_kwargs(), "C", 1, _with(base_kwargs()["C"][1], 0, np.nan)),
     r"C\[1\]"),
    ("C-inf", lambda: _set(base_kwargs(), "C", 0, _with(base_kwargs()["C"][0], 2, -np.inf)),
     r"C\[0\]"),
    ("D-nan", lambda: _set(base_kwargs(), "D", 0, np.array([np.nan, 0.5, 0.5])), r"D\[0\]"),
    ("D-unnormalised", lambda: _set(base_kwargs(), "D", 0, np.array([0.5, 0.5, 0.5])),
     r"D\[0\]"),
    ("D-negative", lambda: _set(base_kwargs(), "D", 1, np.array([1.5, -0.5])), r"D\[1\]"),
    # dtypes
    ("A-strings", lambda: _set(base_kwargs(), "A", 0, base_kwargs()["A"][0].astype(str)),
     r"A\[0\]"),
    ("A-complex", lambda: _set(base_kwargs(), "A", 1, base_kwargs()["A"][1].astype(complex)),
     r"A\[1\]"),
    ("B-complex", lambda: _set(base_kwargs(), "B", 0, base_kwargs()["B"][0].astype(complex)),
     r"B\[0\]"),
    ("C-strings", lambda: _set(base_kwargs(), "C", 0, np.array(["a", "b", "c"])), r"C\[0\]"),
    ("D-strings", lambda: _set(base_kwargs(), "D", 1, np.array(["a", "b"])), r"D\[1\]"),
    # shapes
    ("A-state-dims", lambda: _set(base_kwargs(), "A", 1, _norm(np.ones((2, 3, 3)))),
     r"A\[1\]|A_factor_list"),
    ("B-not-square", lambda: _set(base_kwargs(), "B", 0, _norm(np.ones((3, 2, 3)))),
     r"B\[0\]|B_factor_list"),
    ("C-wrong-num-obs", lambda: _set(base_kwargs(), "C", 0, np.zeros(4)), r"C\[0\]"),
    ("C-wrong-count", lambda: dict(base_kwargs(), C=obj_array([np.zeros(3)] * 3)), r"\bC\b"),
    ("C-2d-too-short", lambda: dict(_set(base_kwargs(), "C", 0, np.zeros((3, 1))),
                                    policy_len=2), r"C\[0\]|\bC\b"),
    ("D-wrong-length", lambda: _set(base_kwargs(), "D", 1, np.ones(3) / 3), r"D\[1\]|\bD\b"),
    ("D-wrong-count", lambda: dict(base_kwargs(), D=obj_array([np.ones(3) / 3])), r"\bD\b"),
    ("pA-shape", lambda: dict(base_kwargs(), pA=obj_array([np.ones((3, 3)), np.ones((2, 3))])),
     r"pA"),
    ("pA-negative", lambda: dict(base_kwargs(), pA=obj_array(
        [-np.ones((3, 3, 2)), np.ones((2, 3, 2))])), r"pA"),
    ("pB-shape", lambda: dict(base_kwargs(), pB=obj_array([np.ones((3, 3, 2)),
                                                           np.ones((2, 2, 2))])), r"pB"),
    ("num_controls-mismatch", lambda: dict(base_kwargs(), num_controls=[2, 2]), r"num_controls"),
    ("control_fac_idx-out-of-range", lambda: dict(base_kwargs(), control_fac_idx=[2]),
     r"control_fac_idx"),
    # factor lists
    ("A_factor_list-out-of-range", lambda: dict(base_kwargs(True), A_factor_list=[[0], [0, 2]]),
     r"A_factor_list"),
    ("A_factor_list-negative", lambda: dict(base_kwargs(True), A_factor_list=[[0], [-1, 1]]),
     r"A_factor_list"),
    ("A_factor_list-too-short", lambda: dict(base_kwargs(True), A_factor_list=[[0]]),
     r"A_factor_list"),
    ("A_factor_list-mismatch-A", lambda: dict(base_kwargs(True), A_factor_list=[[1], [0, 1]]),
     r"A_factor_list|A\[0\]"),
    ("B_factor_list-out-of-range", lambda: dict(base_kwargs(True), B_factor_list=[[0, 1], [2]]),
     r"B_factor_list"),
    ("B_factor_list-mismatch-B", lambda: dict(base_kwargs(True), B_factor_list=[[0], [1]]),
     r"B_factor_list|B\[0\]"),
    # policies and priors over them
    ("E-wrong-length", lambda: dict(base_kwargs(), E=np.ones(5) / 5), r"\bE\b"),
    ("E-nan", lambda: dict(base_kwargs(), E=np.array([np.nan] + [0.2] * 5)), r"\bE\b"),
    ("policies-action-too-large", lambda: dict(base_kwargs(), policies=[
        np.array([[0, 0]]), np.array([[3, 1]])]), r"policies"),
    ("policies-negative-action", lambda: dict(base_kwargs(), policies=[
        np.array([[0, 0]]), np.array([[-1, 1]])]), r"policies"),
    ("policies-wrong-num-factors", lambda: dict(base_kwargs(), policies=[
        np.array([[0]]), np.array([[1]])]), r"policies"),
    ("policies-non-integer", lambda: dict(base_kwargs(), policies=[
        np.array([[0.5, 0.0]]), np.array([[1.0, 1.0]])]), r"policies"),
    # option strings
    ("action_selection", lambda: dict(base_kwargs(), action_selection="greedy"),
     r"action_selection"),
    ("sampling_mode", lambda: dict(base_kwargs(), sampling_mode="joint"), r"sampling_mode"),
]


@pytest.mark.parametrize("build,pattern", [pytest.param(b, p, id=i)
                                           for i, b, p in CONSTRUCTOR_CASES])
def test_constructor_rejects(build, pattern, FaAgent):
    kwargs = build()
    assert_rejects(lambda: FaAgent(**kwargs), pattern)


def test_base_model_is_valid(FaAgent):
    """The cases above fail because of their one defect, not because the base is bad."""
    FaAgent(**base_kwargs())
    FaAgent(**base_kwargs(True))


def test_unknown_inference_algo(FaAgent):
    assert_rejects(lambda: FaAgent(**base_kwargs(), inference_algo="VMPX"), r"inference_algo",
                   exc=(ValueError, NotImplementedError))


# --- Per-step inputs: refused calls change nothing ----------------------------------

def _copy_or_none(x):
    if x is None:
        return None
    if isinstance(x, np.ndarray) and x.dtype == object or isinstance(x, list):
        return [np.array(v, copy=True) for v in x]
    return np.array(x, copy=True)


STATE_ATTRS = ("qs", "q_pi", "G", "action", "prev_actions", "A", "B", "D", "pA", "pB", "pD")


def snapshot(agent):
    snap = {name: _copy_or_none(getattr(agent, name, None)) for name in STATE_ATTRS}
    snap["curr_timestep"] = agent.curr_timestep
    return snap


def assert_unchanged(agent, snap):
    assert agent.curr_timestep == snap["curr_timestep"]
    for name in STATE_ATTRS:
        now = _copy_or_none(getattr(agent, name, None))
        before = snap[name]
        if before is None:
            assert now is None, f"{name} changed from None"
            continue
        assert now is not None and len(now) == len(before), f"{name} changed"
        for a, b in zip(now, before):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} changed by a refused call")


def _agent_pair(FaAgent):
    """Two identical agents after two steps, with learnable A, B and D."""
    base = base_kwargs()
    rng = np.random.default_rng(1)
    extra = dict(pA=dirichlet_counts(rng, base["A"]), pB=dirichlet_counts(rng, base["B"]),
                 pD=dirichlet_counts(rng, base["D"]))
    agents = [FaAgent(**copy.deepcopy(base), **copy.deepcopy(extra)) for _ in range(2)]
    for obs in ([0, 1], [2, 0]):
        for a in agents:
            a.infer_states(obs)
            a.infer_policies()
            a.sample_action()
    return agents


def _assert_twins_agree(agent, twin):
    """After the refused call, a valid step gives exactly what the untouched twin gives."""
    rng = np.random.default_rng(2)
    for _ in range(2):
        obs = random_obs(rng, [3, 2])
        qs = [q.copy() for q in agent.infer_states(obs)]
        qs_t = [q.copy() for q in twin.infer_states(obs)]
        for a, b in zip(qs, qs_t):
            np.testing.assert_array_equal(a, b)
        agent.update_A(obs)
        twin.update_A(obs)
        q_pi, G = (np.array(x, copy=True) for x in agent.infer_policies())
        q_pi_t, G_t = twin.infer_policies()
        np.testing.assert_array_equal(q_pi, q_pi_t)
        np.testing.assert_array_equal(G, G_t)
        np.testing.assert_array_equal(agent.sample_action(), twin.sample_action())


BAD_OBSERVATIONS = [
    ("out-of-range", [3, 0]),
    ("out-of-range-last", [0, 2]),
    ("negative", [-1, 0]),
    ("too-short", [0]),
    ("too-long", [0, 0, 0]),
    ("non-integer", [1.5, 0]),
    ("integral-float", [1.0, 0]),
    ("string", ["a", 0]),
    ("string-whole", "01"),
    ("none", None),
    ("scalar-for-two-modalities", 1),
    ("nan", [np.nan, 0]),
]


@pytest.mark.parametrize("obs", [pytest.param(o, id=i) for i, o in BAD_OBSERVATIONS])
def test_infer_states_rejects_observation(obs, FaAgent):
    agent, twin = _agent_pair(FaAgent)
    snap = snapshot(agent)
    assert_rejects(lambda: agent.infer_states(obs), r"observation")
    assert_unchanged(agent, snap)
    _assert_twins_agree(agent, twin)


BAD_DISTRIBUTIONS = [
    ("nan", lambda: obj_array([np.array([np.nan, 0.5, 0.5]), np.array([0.5, 0.5])])),
    ("inf", lambda: obj_array([np.array([np.inf, 0.5, 0.5]), np.array([0.5, 0.5])])),
    ("negative", lambda: obj_array([np.array([1.5, -0.5, 0.0]), np.array([0.5, 0.5])])),
    ("wrong-length", lambda: obj_array([np.ones(4) / 4, np.array([0.5, 0.5])])),
    ("wrong-count", lambda: obj_array([np.ones(3) / 3])),
    ("strings", lambda: obj_array([np.array(["a", "b", "c"]), np.array([0.5, 0.5])])),
    ("complex", lambda: obj_array([np.ones(3, dtype=complex) / 3, np.array([0.5, 0.5])])),
]


@pytest.mark.parametrize("build", [pytest.param(b, id=i) for i, b in BAD_DISTRIBUTIONS])
def test_infer_states_rejects_distribution(build, FaAgent):
    agent, twin = _agent_pair(FaAgent)
    snap = snapshot(agent)
    assert_rejects(lambda: agent.infer_states(build(), distr_obs=True), r"observation")
    assert_unchanged(agent, snap)
    _assert_twins_agree(agent, twin)


@pytest.mark.parametrize("obs", [pytest.param(o, id=i) for i, o in BAD_OBSERVATIONS[:8]])
def test_update_A_rejects_observation(obs, FaAgent):
    agent, twin = _agent_pair(FaAgent)
    snap = snapshot(agent)
    assert_rejects(lambda: agent.update_A(obs), r"obs")
    assert_unchanged(agent, snap)
    _assert_twins_agree(agent, twin)


BAD_BELIEFS = [
    ("too-few-factors", lambda: obj_array([np.ones(3) / 3])),
    ("wrong-length", lambda: obj_array([np.ones(3) / 3, np.ones(3) / 3])),
    ("nan", lambda: obj_array([np.array([np.nan, 0.5, 0.5]), np.ones(2) / 2])),
    ("strings", lambda: obj_array([np.array(["a", "b", "c"]), np.ones(2) / 2])),
]


@pytest.mark.parametrize("build", [pytest.param(b, id=i) for i, b in BAD_BELIEFS])
@pytest.mark.parametrize("method,name", [("update_B", "qs_prev"), ("update_D", "qs_t0"),
                                         ("reset", "init_qs")])
def test_belief_arguments_rejected(method, name, build, FaAgent):
    agent, twin = _agent_pair(FaAgent)
    snap = snapshot(agent)
    assert_rejects(lambda: getattr(agent, method)(build()), name)
    assert_unchanged(agent, snap)
    _assert_twins_agree(agent, twin)
