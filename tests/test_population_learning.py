"""Learning in a Population (update_A / update_B / update_D) against Agents and pymdp.

The agents of a population and the equivalent list of ``fa_core.Agent``s follow one
trajectory: the Agents take the population's actions (action selection itself is
compared in test_population.py), so every difference comes from inference and learning.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from fa_core import Agent, CorruptStateError, GenerativeModel, Population
from fa_core.blobformat import encode_state, frame
from random_models import dirichlet_counts, obj_array, random_model

RTOL, ATOL = 2e-4, 2e-5  # float32 beliefs; blocked populations sum in another order


def _model(seed, sparse="auto", num_states=(3, 2), num_obs=(3, 2), num_controls=(2, 2),
           B_factor_list=None, sparsity=0.4, policy_len=1):
    rng = np.random.default_rng(seed)
    d = random_model(rng, num_states, num_obs, num_controls, sparsity=sparsity,
                     B_factor_list=B_factor_list, C_scale=2.0)
    pA, pB, pD = (dirichlet_counts(rng, d[k]) for k in ("A", "B", "D"))
    kwargs = dict(A=d["A"], B=d["B"], C=d["C"], pA=pA, pB=pB, pD=pD,
                  B_factor_list=B_factor_list, policy_len=policy_len)
    return kwargs, GenerativeModel(sparse=sparse, **kwargs)



def _flat(qs):
    """Per-factor beliefs as one flat float64 vector."""
    return np.concatenate([np.array(q, dtype=np.float64) for q in qs])

def _obs(rng, gm, n):
    return np.stack([rng.integers(0, k, n) for k in gm.num_obs], axis=1).astype(np.int32)


def _run_pair(gm, n, steps, n_threads, seed=0, learn=("A", "B"), pair=None, **opts):
    """A population and its Agents through ``steps`` learning steps; compared every step.

    ``pair`` = (pop, agents, prev) continues a run (from :func:`_run_pair` with
    ``return_prev=True``) instead of starting one."""
    return_prev = opts.pop("return_prev", False)
    if pair is None:
        pop = Population(gm, n, seed=seed, n_threads=n_threads, save_belief_hist=True, **opts)
        agents = [Agent(model=gm, seed=i, save_belief_hist=True, **opts) for i in range(n)]
        prev = None
    else:
        pop, agents, prev = pair
    rng = np.random.default_rng(seed + 100)
    for _t in range(steps):
        obs = _obs(rng, gm, n)
        pop.infer_states(obs)
        for i, a in enumerate(agents):
            a.infer_states(list(obs[i]))
        if "B" in learn and prev is not None:
            pop.update_B(prev)
            for i, a in enumerate(agents):
                a.update_B(_factors(gm, prev[i]))
        if "A" in learn:
            pop.update_A(obs)
            for i, a in enumerate(agents):
                a.update_A(list(obs[i]))
        pop.infer_policies()
        for a in agents:
            a.infer_policies()
        pop.sample_action()
        for i, a in enumerate(agents):
            a.sample_action()
            a.action = pop.actions[i]  # one trajectory (see the module docstring)
        for i, a in enumerate(agents):
            np.testing.assert_allclose(pop.qs[i], _flat(a.qs), rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(pop.q_pi[i], a.q_pi, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(pop.G[i], a.G, rtol=1e-3, atol=1e-4)
        prev = pop.qs.copy()
    if "D" in learn:
        pop.update_D()
        for a in agents:
            a.update_D()
    return (pop, agents, prev) if return_prev else (pop, agents)


def _factors(gm, flat):
    return [np.asarray(flat[lo:hi], dtype=np.float64) for lo, hi in gm.state_bounds]


def _assert_params(pop, agents, names=("pA", "A", "pB", "B", "pD", "D")):
    for i, a in enumerate(agents):
        member = pop[i]
        for name in names:
            got, want = getattr(member, name), getattr(a, name)
            for k in range(len(want)):
                np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6,
                                           err_msg=f"agent {i} {name}[{k}]")


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("sparse", [True, False])
def test_learning_A_B_D_matches_agents(sparse, n_threads):
    _, gm = _model(1, sparse=sparse)
    pop, agents = _run_pair(gm, 11, 5, n_threads, learn=("A", "B", "D"))
    _assert_params(pop, agents)
    # the learned parameters are used: the next step still agrees
    rng = np.random.default_rng(7)
    obs = _obs(rng, gm, 11)
    pop.infer_states(obs)
    pop.infer_policies()
    for i, a in enumerate(agents):
        a.infer_states(list(obs[i]))
        a.infer_policies()
        np.testing.assert_allclose(pop.qs[i], _flat(a.qs), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(pop.q_pi[i], a.q_pi, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("seed", [2, 3])
def test_learning_factorised_model_with_param_info_gain(seed):
    """Several parents per transition (the joint over B_factor_list) and the learned
    information-gain weights read by policy evaluation."""
    _, gm = _model(seed, B_factor_list=[[0], [0, 1]], policy_len=2)
    pop, agents = _run_pair(gm, 9, 4, 2, learn=("A", "B"), use_param_info_gain=True)
    _assert_params(pop, agents, ("pA", "A", "pB", "B"))


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("sparse", [True, False])
def test_weight_rows_only_with_param_info_gain(sparse, n_threads):
    """Learning without use_param_info_gain keeps no information-gain weight rows (the
    kernels never read them) and still equals the Agents; turning the option on later
    derives every agent's weights from its learned counts, and policy evaluation then
    equals Agents that use it too; memory_report shows the rows saved."""
    _, gm = _model(10, sparse=sparse, B_factor_list=[[0], [0, 1]])
    n = 9
    off_pop, off_agents, prev = _run_pair(gm, n, 3, n_threads, return_prev=True)
    entries = off_pop._learned.entries
    assert entries and all(e["wval"] is None for e in entries.values())
    on_pop, _ = _run_pair(gm, n, 3, n_threads, use_param_info_gain=True)
    weights = [e["wval"] for e in on_pop._learned.entries.values()]
    assert len(weights) == len(entries) and all(w is not None for w in weights)
    saved = off_pop.memory_report().private_params - on_pop.memory_report().private_params
    assert saved == -sum(w.nbytes for w in weights)
    # the option turned on after learning: weights from each agent's own counts
    off_pop.use_param_info_gain = True
    for a in off_agents:
        a.use_param_info_gain = True
    _run_pair(gm, n, 3, n_threads, seed=1, pair=(off_pop, off_agents, prev))
    assert all(e["wval"] is not None for e in off_pop._learned.entries.values())
    _assert_params(off_pop, off_agents, ("pA", "A", "pB", "B"))


def test_learning_subset_of_modalities_and_factors_with_rates():
    _, gm = _model(4)
    opts = dict(modalities_to_learn=[1], factors_to_learn=[0], lr_pA=0.5, lr_pB=2.0)
    pop, agents = _run_pair(gm, 8, 4, 1, **opts)
    _assert_params(pop, agents, ("pA", "A", "pB", "B"))
    # unlearned components are the shared model's counts, bit for bit
    np.testing.assert_array_equal(pop[3].pA[0], gm.pA[0])
    np.testing.assert_array_equal(pop[3].pB[1], gm.pB[1])


def test_threads_give_identical_learning():
    _, gm = _model(5)
    one, _ = _run_pair(gm, 10, 4, 1, learn=("A", "B", "D"))
    two, _ = _run_pair(gm, 10, 4, 2, learn=("A", "B", "D"))
    for i in range(10):
        for name in ("pA", "pB", "pD"):
            for x, y in zip(getattr(one[i], name), getattr(two[i], name)):
                np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(one.qs, two.qs)


def test_learning_against_pymdp(RefAgent):
    """A few pymdp agents with their own counts, on the population's trajectory."""
    kwargs, gm = _model(6, sparse=False, sparsity=0.0)
    n = 3
    pop = Population(gm, n, seed=0, n_threads=1, save_belief_hist=True)
    refs = [RefAgent(**copy.deepcopy({k: v for k, v in kwargs.items() if v is not None}),
                     save_belief_hist=True) for _ in range(n)]
    rng = np.random.default_rng(8)
    prev = None
    for _t in range(4):
        obs = _obs(rng, gm, n)
        pop.infer_states(obs)
        if prev is not None:
            pop.update_B(prev)
        pop.update_A(obs)
        pop.infer_policies()
        pop.sample_action()
        for i, r in enumerate(refs):
            qs = r.infer_states(list(obs[i]))
            if prev is not None:
                r.update_B(obj_array(_factors(gm, prev[i])))
            r.update_A(list(obs[i]))
            r.infer_policies()
            r.sample_action()
            r.action = pop.actions[i].astype(np.float64)
            np.testing.assert_allclose(pop.qs[i], _flat(qs), rtol=1e-4, atol=1e-5)
        prev = pop.qs.copy()
    pop.update_D()
    for i, r in enumerate(refs):
        r.update_D()
        for name in ("pA", "A", "pB", "B", "pD", "D"):
            want = getattr(r, name)
            got = getattr(pop[i], name)
            for k in range(len(want)):
                np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5,
                                           err_msg=f"{name}[{k}] of agent {i}")


def test_counts_live_in_the_sparse_pattern():
    """A sparse model's learned rows hold its non-zeros only, never a dense copy."""
    _, gm = _model(9, sparse=True, num_states=(6,), num_obs=(6,), num_controls=(3,),
                   sparsity=0.7)
    pop = Population(gm, 4, seed=0)
    obs = np.zeros((4, 1), np.int32)
    pop.infer_states(obs)
    pop.update_A(obs)
    entry = pop._learned.entries[("A", 0)]
    nnz = np.count_nonzero(gm.pA[0])
    assert entry["counts"].shape[1] == nnz < gm.pA[0].size
    report = pop.memory_report()
    assert report.private_params >= pop._learned.nbytes > 0
    # agents that never learned read the shared model: a newcomer
    new = pop.add(1)[0]
    np.testing.assert_array_equal(pop[new].pA[0], gm.pA[0])
    assert pop[new].model is gm


def test_add_remove_keep_each_agents_counts():
    _, gm = _model(10)
    pop, agents = _run_pair(gm, 6, 3, 1)
    pop.add(20)  # grows the storage: the learned rows move
    _assert_params(pop, agents, ("pA", "pB"))
    moved = pop.remove([1])
    src = max(moved)
    assert moved == {src: 1}
    agents[1] = None
    for i in range(6):
        if agents[i] is None:
            continue
        row = moved.get(i, i)
        for name in ("pA", "pB"):
            for x, y in zip(getattr(pop[row], name), getattr(agents[i], name)):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_hibernate_wake_and_pickle_carry_learned_counts():
    _, gm = _model(11)
    pop, _ = _run_pair(gm, 7, 3, 2, learn=("A", "B", "D"))
    for copy_ in (Population.wake(pop.hibernate()), pickle.loads(pickle.dumps(pop))):
        for i in range(7):
            for name in ("pA", "A", "pB", "B", "pD", "D"):
                for x, y in zip(getattr(copy_[i], name), getattr(pop[i], name)):
                    np.testing.assert_array_equal(x, y)
        obs = _obs(np.random.default_rng(3), gm, 7)
        a, b = copy.deepcopy(pop), copy_
        for p in (a, b):
            p.step(obs)
            p.update_A(obs)
        np.testing.assert_array_equal(a.qs, b.qs)
        np.testing.assert_array_equal(a.q_pi, b.q_pi)
        np.testing.assert_array_equal(a[2].pA[0], b[2].pA[0])


@pytest.mark.parametrize("edit, message", [
    (lambda L: L["A"]["0"].__setitem__((0, 0), -1.0), "non-negative"),
    (lambda L: L["A"]["0"].__setitem__((0, 0), np.nan), "finite"),
    (lambda L: L["A"].__setitem__("0", L["A"]["0"][:, 1:].copy()), "shape"),
    (lambda L: L["A"].__setitem__("7", L["A"]["0"]), "names no learned matrix"),
    (lambda L: L["own"].__setitem__(0, 2), "own"),
    (lambda L: L["D"]["counts"].__setitem__((0, slice(None)), 0.0), "zero counts"),
])
def test_bad_learned_state_is_refused(edit, message):
    _, gm = _model(12, sparse=False)
    pop, _ = _run_pair(gm, 4, 2, 1, learn=("A", "B", "D"))
    state = pop.__getstate__()
    edit(state["learned"])
    with pytest.raises(CorruptStateError, match=message):
        Population.__new__(Population).__setstate__(state)
    state.pop("model")
    blob = frame(b"FP", 1, 0, gm.content_key(), encode_state(state, "population"), False)
    with pytest.raises(CorruptStateError, match=message):
        Population.wake(blob, gm)


def test_bad_learning_calls_raise_and_change_nothing():
    kwargs, gm = _model(13)
    pop = Population(gm, 5, seed=0)
    obs = np.zeros((5, 2), np.int32)
    before = pop.__getstate__()

    def unchanged():
        after = pop.__getstate__()
        assert after["learned"] is None
        np.testing.assert_array_equal(after["qs"], before["qs"])

    with pytest.raises(ValueError, match="needs an action"):
        pop.update_B(pop.qs)
    with pytest.raises(ValueError, match="save_belief_hist"):
        pop.update_D()
    with pytest.raises(ValueError, match="obs must have shape"):
        pop.update_A(obs[:, :1])
    with pytest.raises(ValueError, match="out of range"):
        pop.update_A(obs + 5)
    pop.step(obs)
    before = pop.__getstate__()
    with pytest.raises(ValueError, match="must sum to 1"):
        pop.update_B(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="must broadcast"):
        pop.update_B(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="must sum to 1"):
        pop.update_D(np.full((5, 5), 0.3))
    unchanged()
    no_counts = GenerativeModel(A=kwargs["A"], B=kwargs["B"])
    bare = Population(no_counts, 2)
    for call, arg in ((bare.update_A, np.zeros((2, 2), np.int32)), (bare.update_B, None),
                      (bare.update_D, None)):
        with pytest.raises(ValueError, match="needs p"):
            call(arg)
    assert bare._learned is None
    for bad, exc in (({"lr_pA": -1.0}, ValueError), ({"lr_pB": "1"}, TypeError),
                     ({"modalities_to_learn": [2]}, ValueError),
                     ({"factors_to_learn": "some"}, ValueError)):
        with pytest.raises(exc):
            Population(gm, 2, **bad)
    with pytest.raises(ValueError):
        pop.lr_pD = float("inf")
    assert pop.lr_pD == 1.0


def test_a_member_learns_in_its_population_alone():
    _, gm = _model(14)
    pop = Population(gm, 4, seed=0, save_belief_hist=True)
    agent = Agent(model=gm, seed=0, save_belief_hist=True)
    obs = _obs(np.random.default_rng(5), gm, 4)
    pop.step(obs)
    agent.infer_states(list(obs[2]))
    agent.infer_policies()
    agent.sample_action()
    agent.action = pop.actions[2]
    prev = pop.qs.copy()
    obs = _obs(np.random.default_rng(6), gm, 4)
    pop.infer_states(obs)
    agent.infer_states(list(obs[2]))
    member = pop[2]
    qA = member.update_A(list(obs[2]))
    member.update_B(_factors(gm, prev[2]))
    member.update_D()
    agent.update_A(list(obs[2]))
    agent.update_B(_factors(gm, prev[2]))
    agent.update_D()
    _assert_params(_Rows(pop, [2]), [agent])
    np.testing.assert_allclose(qA[0], agent.pA[0], rtol=1e-6)
    for i in (0, 1, 3):  # the others still read the shared model
        assert pop[i].model is gm
    pop.infer_policies()
    agent.infer_policies()
    np.testing.assert_allclose(pop.q_pi[2], agent.q_pi, rtol=RTOL, atol=ATOL)


class _Rows:
    """``pop[rows[k]]`` as item ``k`` (to compare some members with a list of agents)."""

    def __init__(self, pop, rows):
        self.pop, self.rows = pop, rows

    def __getitem__(self, k):
        return self.pop[self.rows[k]]
