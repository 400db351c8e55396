"""``Population(sophisticated=True)``: the tree search for every agent, as ``Agent``'s.

The population runs the same compiled search (``_sophisticated.c_search``) as
``fa_core.Agent(sophisticated=True)``, from beliefs its own fixed-point
iteration gave; so after every step beliefs, ``q_pi``, ``G`` and (untied)
deterministic actions must be what the same agents stepped one by one give.
Agents break ties and sample from the global ``np.random`` and the population
from its per-agent streams, so the population's actions are fed back into the
agents (``lockstep`` of ``test_population``). One test compares with pymdp's
own search in the same process.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import fa_core
from fa_core import _sophisticated, builtin_models
from fa_core import sophisticated as si
from fa_core.population import Population
from test_parity_pymdp import assert_policy_posterior, deterministic_decisions
from test_population import Env, assert_same_state, lockstep, make_model, snapshot

N = 20
STEPS = 4
SI_MODELS = ["tmaze", "rand-2f2m", "rand-factored", "rand-sparse"]
OPTIONS = {
    "defaults": dict(si_horizon=2),
    "h3": dict(si_horizon=3),
    "coarse": dict(si_horizon=2, si_policy_prune_threshold=0.3, si_state_prune_threshold=0.2,
                   si_prune_penalty=64.0),
    "unpruned": dict(si_horizon=2, si_policy_prune_threshold=0.0, si_state_prune_threshold=0.0),
}


def agents_for(gm, n, **kw):
    return [fa_core.Agent(model=gm, sophisticated=True, **kw) for _ in range(n)]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("name", SI_MODELS)
def test_population_equals_agents(name, n_threads):
    gm = make_model(name)
    pop = Population(gm, N, seed=3, n_threads=n_threads, sophisticated=True, si_horizon=2)
    compared = lockstep(gm, pop, agents_for(gm, N, si_horizon=2), STEPS)
    assert compared >= N // 2  # actions really compared, not only skipped as ties


@pytest.mark.parametrize("option", list(OPTIONS))
def test_options_equal_agents(option):
    gm = make_model("tmaze")
    kw = OPTIONS[option]
    pop = Population(gm, N, seed=4, n_threads=2, sophisticated=True, **kw)
    assert lockstep(gm, pop, agents_for(gm, N, **kw), 3) > 0


@pytest.mark.parametrize("selection", [dict(action_selection="stochastic", alpha=2.0),
                                       dict(sampling_mode="full"),
                                       dict(action_selection="stochastic", sampling_mode="full",
                                            alpha=1.0)],
                         ids=["stochastic", "full", "stochastic-full"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_selection_modes_equal_agents(selection, n_threads):
    gm = make_model("rand-factored")
    pop = Population(gm, N, seed=5, n_threads=n_threads, sophisticated=True, si_horizon=2,
                     **selection)
    lockstep(gm, pop, agents_for(gm, N, si_horizon=2, **selection), STEPS)


def test_inductive_inference_in_the_search_equals_agents():
    """A model with H: every node of the search adds the inductive cost, in both."""
    kw = builtin_models.grid_forager(3)
    H = np.empty(1, dtype=object)
    H[0] = np.eye(9)[8]
    gm = fa_core.GenerativeModel(**kw, H=H, ii_depth=4)
    assert gm.has_H
    pop = Population(gm, N, seed=6, n_threads=2, sophisticated=True, si_horizon=2)
    lockstep(gm, pop, agents_for(gm, N, si_horizon=2), STEPS)


def run(pop, gm, steps, env_seed=0):
    env = Env(gm, pop.n_agents, env_seed)
    obs = env.observe()
    hist = []
    for _ in range(steps):
        acts = pop.step(obs)
        hist.append(acts.copy())
        obs = env.step(acts)
    return np.stack(hist)


@pytest.mark.parametrize("selection", ["deterministic", "stochastic"])
def test_results_independent_of_thread_count(selection):
    gm = make_model("rand-factored")
    opts = dict(sophisticated=True, si_horizon=2, action_selection=selection, alpha=1.0)
    ref = Population(gm, 40, seed=11, n_threads=1, **opts)
    ref_hist = run(ref, gm, 4)
    for threads in (2, 3):
        pop = Population(gm, 40, seed=11, n_threads=threads, **opts)
        np.testing.assert_array_equal(run(pop, gm, 4), ref_hist)
        assert_same_state(snapshot(pop), snapshot(ref))


def test_stages_separately_equal_step():
    gm = make_model("tmaze")
    opts = dict(sophisticated=True, si_horizon=2, action_selection="stochastic", alpha=1.0)
    a = Population(gm, N, seed=1, **opts)
    b = Population(gm, N, seed=1, **opts)
    env = Env(gm, N, 0)
    obs = env.observe()
    for _ in range(3):
        acts = a.step(obs)
        b.infer_states(obs)
        b.infer_policies()
        b.sample_action()
        assert_same_state(snapshot(a), snapshot(b))
        obs = env.step(acts)


def test_member_view_runs_the_agents_search():
    """pop[i] is an Agent(sophisticated=True) on row i: its own search gives the row's values."""
    gm = make_model("rand-2f2m")
    pop = Population(gm, 5, seed=2, sophisticated=True, si_horizon=3,
                     si_policy_prune_threshold=0.1, si_prune_penalty=100)
    env = Env(gm, 5, 1)
    pop.step(env.observe())
    q_pi, G = pop.q_pi.copy(), pop.G.copy()
    member = pop[3]
    assert member.sophisticated and member.si_horizon == 3
    assert member.si_policy_prune_threshold == 0.1 and member.si_prune_penalty == 100
    q_m, G_m = member.infer_policies()
    # the same compiled search from the same float32 beliefs: the same numbers
    np.testing.assert_array_equal(q_m, q_pi[3])
    np.testing.assert_array_equal(G_m, G[3])
    np.testing.assert_array_equal(pop.q_pi, q_pi)


def test_compiled_tie_band_is_the_agents():
    rng = np.random.default_rng(0)
    for _ in range(20):
        G = rng.normal(0, 5, 7).astype(np.float32)
        G[rng.integers(7)] = -512.0
        q = np.exp(G - G.max())
        q = (q / q.sum()).astype(np.float32)
        assert _sophisticated.tie_rtol(G, q) == si.tie_rtol(G, q)


# -- intermittent planning ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["all", "none", "random"])
def test_replan_mask_equals_agents(which):
    """Agents outside the mask keep q_pi and G (one-step plans) and choose again from them."""
    gm = make_model("rand-2f2m")
    n = 12
    pop = Population(gm, n, seed=7, n_threads=2, sophisticated=True, si_horizon=2)
    agents = agents_for(gm, n, si_horizon=2)
    env = Env(gm, n, 3)
    obs = env.observe()
    mask_rng = np.random.default_rng(9)
    for t in range(STEPS):
        mask = {"all": np.ones(n, bool), "none": np.zeros(n, bool),
                "random": mask_rng.random(n) < 0.5}[which]
        pop.step(obs, replan=mask)
        for i, agent in enumerate(agents):
            agent.infer_states(list(obs[i]))
            # an agent without a previous action has no plan: it evaluates whatever the mask
            if mask[i] or t == 0:
                agent.infer_policies()
            np.testing.assert_allclose(pop.q_pi[i], agent.q_pi, rtol=2e-5, atol=1e-6)
            np.testing.assert_allclose(pop.G[i], agent.G, rtol=2e-5, atol=1e-6)
            agent.sample_action()
            agent.action = pop.actions[i]
        obs = env.step(pop.actions)


# -- against pymdp itself ----------------------------------------------------------------


def test_population_equals_pymdp_agents(RefAgent):
    """Each agent of the population against pymdp's own sophisticated agent, same inputs."""
    kw = builtin_models.tmaze()
    n, horizon = 3, 2
    gm = fa_core.GenerativeModel(**copy.deepcopy(kw))
    pop = Population(gm, n, seed=0, sophisticated=True, si_horizon=horizon)
    refs = [RefAgent(**copy.deepcopy(kw), sophisticated=True, si_horizon=horizon)
            for _ in range(n)]
    env = Env(gm, n, 5)
    obs = env.observe()
    decided = 0
    for t in range(3):
        pop.step(obs)
        for i, ref in enumerate(refs):
            qs_r = ref.infer_states([int(o) for o in obs[i]])
            for f, (lo, hi) in enumerate(gm.state_bounds):
                np.testing.assert_allclose(pop.qs[i, lo:hi], qs_r[f], atol=1e-4,
                                           err_msg=f"qs[{f}] agent {i} step {t}")
            q_r, G_r = ref.infer_policies()
            assert_policy_posterior(pop.q_pi[i].astype(np.float64), pop.G[i].astype(np.float64),
                                    q_r, G_r, f"agent {i} step {t}")
            for f, (cands, unambiguous) in enumerate(deterministic_decisions(ref)):
                if unambiguous and len(cands) == 1:
                    assert int(pop.actions[i, f]) in cands, f"action agent {i} step {t}"
                    decided += 1
            ref.action = pop.actions[i].astype(np.float64)  # both continue from one action
        obs = env.step(pop.actions)
    assert decided > 0


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(si_horizon=0), ValueError, "si_horizon"),
    (dict(si_horizon=2.5), TypeError, "si_horizon"),
    (dict(si_horizon=True), TypeError, "si_horizon"),
    (dict(si_policy_prune_threshold=1.5), ValueError, "si_policy_prune_threshold"),
    (dict(si_state_prune_threshold=-0.1), ValueError, "si_state_prune_threshold"),
    (dict(si_prune_penalty=float("nan")), ValueError, "si_prune_penalty"),
    (dict(si_prune_penalty="big"), ValueError, "si_prune_penalty"),
    (dict(sophisticated="yes"), TypeError, "sophisticated"),
])
def test_bad_options_raise(kwargs, exc, match):
    gm = make_model("tmaze")
    kw = dict(sophisticated=True)
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        Population(gm, 3, **kw)


def test_refused_models_and_options():
    gm2 = make_model("rand-len2")
    with pytest.raises(ValueError, match="one-step policies"):
        Population(gm2, 3, sophisticated=True)
    gm = make_model("rand-2f2m")
    C = [np.zeros((3, k)) for k in gm.num_obs]
    with pytest.raises(NotImplementedError, match="per-agent C"):
        Population(gm, 3, sophisticated=True, C=C)
    with pytest.warns(UserWarning, match="does not use E"):
        Population(gm, 3, sophisticated=True, E=np.ones((3, gm.num_policies)))
    with pytest.warns(UserWarning, match="use_utility=False"):
        Population(gm, 3, sophisticated=True, use_utility=False)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_learning_agents_search_their_own_models(n_threads):
    """update_A / update_B between steps: each agent's next search reads its learned model."""
    spec = builtin_models.tmaze()
    rng = np.random.default_rng(3)
    pA = [np.asarray(a, dtype=float) * 10 + rng.uniform(0.5, 1.5, np.shape(a)) for a in spec["A"]]
    pB = [np.asarray(b, dtype=float) * 10 + rng.uniform(0.5, 1.5, np.shape(b)) for b in spec["B"]]
    gm = fa_core.GenerativeModel(**spec, pA=pA, pB=pB)
    n = 6
    pop = Population(gm, n, seed=0, n_threads=n_threads, sophisticated=True, si_horizon=2)
    agents = agents_for(gm, n, si_horizon=2)
    env = Env(gm, n, 1)
    obs = env.observe()
    for t in range(4):
        qs_prev = pop.qs.copy()
        prev = [copy.deepcopy(a.qs) for a in agents]
        pop.infer_states(obs)
        if t:
            pop.update_B(qs_prev)
        pop.update_A(obs)
        pop.infer_policies()
        pop.sample_action()
        for i, agent in enumerate(agents):
            agent.infer_states(list(obs[i]))
            if t:
                agent.update_B(prev[i])
            agent.update_A(list(obs[i]))
            q_pi, G = agent.infer_policies()
            np.testing.assert_allclose(pop.q_pi[i], q_pi, rtol=2e-5, atol=1e-6,
                                       err_msg=f"q_pi agent {i} step {t}")
            np.testing.assert_allclose(pop.G[i], G, rtol=2e-5, atol=1e-6,
                                       err_msg=f"G agent {i} step {t}")
            agent.sample_action()
            agent.action = pop.actions[i]
        obs = env.step(pop.actions)
    # the learned models really differ from the shared one's search
    shared = Population(gm, n, seed=0, sophisticated=True, si_horizon=2)
    shared.qs = pop.qs
    shared.infer_policies()
    assert np.abs(shared.G - pop.G).max() > 1e-3
    # and pop[i] (its learned model) searches to the same numbers
    G_row = pop.G[2].copy()
    _, G_m = pop[2].infer_policies()
    np.testing.assert_array_equal(G_m, G_row)


# -- membership and persistence mid-run ------------------------------------------------------


def stepped(gm, n, steps, **kw):
    pop = Population(gm, n, seed=8, n_threads=2, sophisticated=True, si_horizon=2,
                     action_selection="stochastic", alpha=2.0, **kw)
    env = Env(gm, n, 2)
    obs = env.observe()
    for _ in range(steps):
        obs = env.step(pop.step(obs))
    return pop, env, obs


@pytest.mark.parametrize("how", ["pickle", "hibernate"])
def test_round_trip_mid_run_continues_identically(how):
    gm = make_model("rand-factored")
    pop, env, obs = stepped(gm, N, 2)
    again = pickle.loads(pickle.dumps(pop)) if how == "pickle" else \
        Population.wake(pop.hibernate(), model=gm)
    assert again._engine is not None and again._engine.options == pop._engine.options
    assert again[0].sophisticated
    for _ in range(3):
        acts = pop.step(obs)
        again.step(obs)
        assert_same_state(snapshot(again), snapshot(pop))
        obs = env.step(acts)


def test_corrupt_engine_state_refused():
    gm = make_model("tmaze")
    pop = Population(gm, 2, seed=0, sophisticated=True, si_horizon=2)
    state = pop.__getstate__()
    state["engine"] = dict(state["engine"], si_horizon=-1)
    with pytest.raises(fa_core.errors.CorruptStateError, match="si_horizon"):
        Population.__new__(Population).__setstate__(state)


def test_add_and_remove_mid_run_keep_results_equal():
    """Survivors and newcomers stepped on as the same agents one by one would be."""
    gm = make_model("rand-2f2m")
    n = 10
    pop = Population(gm, n, seed=9, n_threads=2, sophisticated=True, si_horizon=2)
    agents = agents_for(gm, n, si_horizon=2)
    lockstep(gm, pop, agents, 2)
    moved = pop.remove([1, 4])
    order = list(range(n))
    for src, dst in moved.items():
        order[dst] = src
    agents = [agents[order[i]] for i in range(pop.n_agents)]
    pop.add(3)
    agents += agents_for(gm, 3, si_horizon=2)  # no action yet: they start from D, as newcomers
    pop.curr_timestep = 0  # lockstep counts its own steps
    assert lockstep(gm, pop, agents, 3, env_seed=4) > 0


def test_memory_report_counts_the_search_scratch():
    gm = make_model("tmaze")
    pop = Population(gm, 4, seed=0, n_threads=2, sophisticated=True, si_horizon=3)
    before = pop.memory_report().scratch
    pop.step(np.array([[0, 0, 0]] * 4))
    engine = pop._engine.scratch_nbytes
    assert engine > 0
    assert pop.memory_report().scratch >= before + engine
    assert pop.memory_report(include_scratch=False).scratch == 0
