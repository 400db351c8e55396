"""``Population(..., inference_algo="MMP")`` against separate ``fa_core.Agent`` MMP agents.

A population step must give what stepping the same agents one by one through
``fa_core.Agent(model=gm, inference_algo="MMP", ...)`` gives: every policy's
window beliefs, F, q_pi, G, the window prior, and actions wherever the choice
is not a tie. As in tests/test_population.py, agents draw ties and stochastic
actions from the global ``np.random`` while the population uses its own
streams, so each agent continues from the population's action (its ``action``
and the last row of its ``prev_actions``, which the MMP window reads). One
check runs pymdp's legacy MMP agent in the same process. Also: bad options
raise; add / remove / pickle / hibernate mid-run give the same next steps.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fa_core
from fa_core import builtin_models
from fa_core.population import Population
from test_population import Env, make_model, untied

# Population and Agent run the same per-agent float32 kernels in the same order.
ATOL = 1e-6
RTOL = 1e-5
N_AGENTS = 9  # more than one chunk of four per thread with two threads

MODELS = ["tmaze-len2", "rand-2f2m", "rand-factored", "rand-len2"]
EDGE = {"bma": dict(use_BMA=True), "sep": dict(use_BMA=False, policy_sep_prior=True)}


def gm_of(name: str) -> fa_core.GenerativeModel:
    if name == "tmaze-len2":
        return fa_core.GenerativeModel(**builtin_models.tmaze(), policy_len=2)
    return make_model(name)


def mmp_options(horizon: int, edge: str, **extra) -> dict:
    return dict(inference_algo="MMP", inference_horizon=horizon, **EDGE[edge], **extra)


def agents_for(gm, n: int, opts: dict) -> list:
    agent_opts = {k: v for k, v in opts.items() if k not in ("seed", "n_threads")}
    return [fa_core.Agent(model=gm, **agent_opts) for _ in range(n)]


def follow(agent, action) -> None:
    """Make ``agent`` continue from ``action`` (the population's) instead of its own choice."""
    agent.action = action
    prev = agent.prev_actions
    prev[-1] = np.asarray(action, np.float64)
    agent.prev_actions = prev


def current_marginal(agent, q_pi) -> np.ndarray:
    """The agent's current step averaged over policies with ``q_pi`` (Population.qs)."""
    qs = agent.qs
    t = len(qs[0]) - 1 - agent.model.policy_len
    rows = np.stack([np.concatenate([np.asarray(x, np.float64) for x in qs[p][t]])
                     for p in range(len(qs))])
    return np.asarray(q_pi, np.float64) @ rows


def compare(pop, i, agent, q_pi, G, where) -> None:
    np.testing.assert_allclose(pop.q_pi[i], q_pi, rtol=RTOL, atol=ATOL, err_msg=f"q_pi, {where}")
    np.testing.assert_allclose(pop.G[i], G, rtol=RTOL, atol=ATOL, err_msg=f"G, {where}")
    np.testing.assert_allclose(pop[i].F, agent.F, rtol=RTOL, atol=1e-4, err_msg=f"F, {where}")
    np.testing.assert_allclose(pop.qs[i], current_marginal(agent, q_pi), rtol=RTOL, atol=ATOL,
                               err_msg=f"qs, {where}")
    qs_p, qs_a = pop[i].qs, agent.qs
    assert len(qs_p) == len(qs_a) and len(qs_p[0]) == len(qs_a[0]), where
    for p in range(len(qs_a)):
        for t in range(len(qs_a[p])):
            np.testing.assert_allclose(np.concatenate(list(qs_p[p][t])),
                                       np.concatenate(list(qs_a[p][t])), rtol=RTOL, atol=ATOL,
                                       err_msg=f"qs[{p}][{t}], {where}")


def flat_beliefs(x) -> np.ndarray:
    """Per-factor beliefs, or per policy then factor, as one flat vector."""
    if isinstance(x[0], np.ndarray) and x[0].dtype == object:
        return np.concatenate([np.concatenate(list(r)) for r in x])
    return np.concatenate(list(x))


def compare_prior(pop, i, agent, where) -> None:
    lb_p, lb_a = pop[i].latest_belief, agent.latest_belief
    flat = flat_beliefs
    np.testing.assert_allclose(flat(lb_p), flat(lb_a), rtol=RTOL, atol=ATOL,
                               err_msg=f"latest_belief, {where}")


def lockstep(gm, pop, agents, steps, env_seed=0, start=0) -> int:
    """Step ``pop`` and ``agents`` on the same observations; returns actions compared."""
    env = Env(gm, len(agents), env_seed)
    obs = env.observe()
    compared = 0
    for t in range(start, start + steps):
        pop.step(obs)
        for i, agent in enumerate(agents):
            agent.infer_states(list(obs[i]))
            q_pi, G = agent.infer_policies()
            action = agent.sample_action()
            where = f"agent {i}, step {t}"
            compare(pop, i, agent, q_pi, G, where)
            if agent.action_selection == "deterministic":
                ok = untied(gm, q_pi, agent.sampling_mode)
                np.testing.assert_array_equal(pop.actions[i][ok], action[ok].astype(np.int32),
                                              err_msg=f"action, {where}")
                compared += int(ok.sum())
            follow(agent, pop.actions[i])
            compare_prior(pop, i, agent, where)
        obs = env.step(pop.actions)
    return compared


# -- parity with fa_core.Agent ----------------------------------------------------------


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("horizon,edge", [(1, "bma"), (2, "sep"), (3, "bma")])
@pytest.mark.parametrize("name", MODELS)
def test_step_equals_agents_one_by_one(name, horizon, edge, n_threads):
    """Several steps, the window sliding past inference_horizon (steps > horizon)."""
    gm = gm_of(name)
    opts = mmp_options(horizon, edge)
    pop = Population(gm, N_AGENTS, seed=3, n_threads=n_threads, **opts)
    agents = agents_for(gm, N_AGENTS, opts)
    compared = lockstep(gm, pop, agents, horizon + 2)
    assert compared >= N_AGENTS // 2
    assert np.all(pop.curr_timestep == horizon + 2)


@pytest.mark.parametrize("options", [
    dict(action_selection="stochastic", alpha=2.0),
    dict(action_selection="stochastic", sampling_mode="full", alpha=2.0),
    dict(sampling_mode="full"),
    dict(use_utility=False),
    dict(use_states_info_gain=False),
    dict(inference_params={"num_iter": 4, "tau": 0.5}),
], ids=["stochastic", "stochastic-full", "full", "no-utility", "no-info-gain", "params"])
def test_options_match_agents(options):
    gm = gm_of("tmaze-len2")
    opts = mmp_options(3, "bma", **options)
    pop = Population(gm, N_AGENTS, seed=5, n_threads=2, **opts)
    lockstep(gm, pop, agents_for(gm, N_AGENTS, opts), 5)


def test_stochastic_draws_follow_the_seed_not_the_thread_count():
    gm = gm_of("rand-2f2m")
    opts = mmp_options(2, "bma", action_selection="stochastic", alpha=1.0)
    runs = []
    for threads, seed in ((1, 7), (2, 7), (2, 8)):
        pop = Population(gm, 40, seed=seed, n_threads=threads, **opts)
        env, hist = Env(gm, 40, 0), []
        obs = env.observe()
        for _ in range(4):
            hist.append(pop.step(obs).copy())
            obs = env.step(pop.actions)
        runs.append((np.stack(hist), pop.q_pi.copy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_per_agent_E_and_gamma_match_agents():
    gm = gm_of("rand-len2")
    rng = np.random.default_rng(0)
    n = 5
    E = rng.uniform(0.1, 1.0, (n, gm.num_policies))
    gamma = rng.uniform(1.0, 16.0, n).astype(np.float32).astype(np.float64)
    opts = mmp_options(2, "bma")
    pop = Population(gm, n, seed=0, E=E, gamma=gamma, **opts)
    agents = [fa_core.Agent(model=gm, E=E[i], gamma=float(gamma[i]), **opts) for i in range(n)]
    env = Env(gm, n, 0)
    obs = env.observe()
    for _ in range(3):
        pop.step(obs)
        for i, agent in enumerate(agents):
            agent.infer_states(list(obs[i]))
            q_pi, G = agent.infer_policies()
            agent.sample_action()
            np.testing.assert_allclose(pop.q_pi[i], q_pi, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(pop.G[i], G, rtol=RTOL, atol=ATOL)
            follow(agent, pop.actions[i])
        obs = env.step(pop.actions)


def test_stages_separately_equal_step_and_reset_keeps_windows():
    """infer_states / infer_policies / sample_action as step; reset as Agent.reset (the window
    and action history are kept, as pymdp keeps them; the prior goes back to D)."""
    gm = gm_of("tmaze-len2")
    opts = mmp_options(2, "sep")
    a = Population(gm, N_AGENTS, seed=1, **opts)
    b = Population(gm, N_AGENTS, seed=1, **opts)
    agents = agents_for(gm, N_AGENTS, opts)
    env = Env(gm, N_AGENTS, 2)
    obs = env.observe()
    for t in range(5):
        if t == 3:
            a.reset()
            b.reset()
            for agent in agents:
                agent.reset()
            assert np.all(a.curr_timestep == 0)
        a.step(obs)
        b.infer_states(obs)
        b.infer_policies()
        b.sample_action()
        for name in ("qs", "q_pi", "G", "actions", "curr_timestep"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        for i, agent in enumerate(agents):
            agent.infer_states(list(obs[i]))
            q_pi, G = agent.infer_policies()
            agent.sample_action()
            compare(a, i, agent, q_pi, G, f"agent {i}, step {t}")
            follow(agent, a.actions[i])
            compare_prior(a, i, agent, f"agent {i}, step {t}")
        obs = env.step(a.actions)


def test_update_D_matches_agents_and_A_B_refused():
    spec = builtin_models.tmaze()
    gm = fa_core.GenerativeModel(**spec, pD=[2.0 * d + 0.5 for d in spec["D"]],
                                 pA=[np.asarray(x) * 10 + 1 for x in spec["A"]], policy_len=2)
    opts = mmp_options(2, "bma")
    n = 4
    pop = Population(gm, n, seed=0, **opts)
    agents = agents_for(gm, n, opts)
    env = Env(gm, n, 3)
    obs = env.observe()
    for _ in range(4):
        pop.step(obs)
        for i, agent in enumerate(agents):
            agent.infer_states(list(obs[i]))
            agent.infer_policies()
            agent.sample_action()
            follow(agent, pop.actions[i])
        obs = env.step(pop.actions)
    pop.update_D()
    for i, agent in enumerate(agents):
        agent.update_D()
        np.testing.assert_allclose(np.concatenate(pop[i].pD), np.concatenate(agent.pD),
                                   rtol=1e-6, atol=1e-6)
    # the learned D is each agent's window prior after reset
    pop.reset()
    for i, agent in enumerate(agents):
        agent.reset()
        compare_prior(pop, i, agent, f"agent {i} after reset")
    lockstep(gm, pop, agents, 2, env_seed=4)
    with pytest.raises(NotImplementedError, match="update_A with inference_algo='MMP'"):
        pop.update_A(obs)
    with pytest.raises(NotImplementedError, match="update_B with inference_algo='MMP'"):
        pop.update_B(pop.qs.copy())


# -- pymdp ------------------------------------------------------------------------------


def test_population_matches_pymdp_legacy_mmp(monkeypatch):
    """Population MMP against pymdp.legacy's Agent(inference_algo="MMP") in this process."""
    legacy = pytest.importorskip("pymdp.legacy.agent")
    mod = pytest.importorskip("pymdp.legacy.algos.mmp")
    monkeypatch.setattr(mod, "print", lambda *a, **k: None, raising=False)
    from random_models import random_model
    d = random_model(np.random.default_rng(11), [3, 2], [3, 2], [3, 1])
    n, horizon = 3, 2
    gm = fa_core.GenerativeModel(A=d["A"], B=d["B"], C=d["C"], D=d["D"], policy_len=2)
    pop = Population(gm, n, seed=0, inference_algo="MMP", inference_horizon=horizon)
    refs = [legacy.Agent(A=d["A"], B=d["B"], C=d["C"], D=d["D"], policy_len=2,
                         inference_algo="MMP", inference_horizon=horizon) for _ in range(n)]
    env = Env(gm, n, 5)
    obs = env.observe()
    for t in range(horizon + 2):
        pop.step(obs)
        for i, ref in enumerate(refs):
            ref.infer_states([int(o) for o in obs[i]])
            q_pi, G = ref.infer_policies()
            ref.sample_action()
            where = f"agent {i}, step {t}"
            np.testing.assert_allclose(pop.q_pi[i], q_pi, atol=1e-4, err_msg=f"q_pi, {where}")
            np.testing.assert_allclose(pop.G[i], G, rtol=1e-4, atol=1e-4, err_msg=f"G, {where}")
            np.testing.assert_allclose(pop[i].F, ref.F, rtol=1e-4, atol=1e-3,
                                       err_msg=f"F, {where}")
            qs = pop[i].qs
            for p in range(len(ref.qs)):
                for tt in range(len(ref.qs[p])):
                    for f in range(gm.num_factors):
                        np.testing.assert_allclose(qs[p][tt][f], ref.qs[p][tt][f], atol=1e-4,
                                                   err_msg=f"qs[{p}][{tt}][{f}], {where}")
            # the population's action for both
            ref.action = pop.actions[i].astype(np.float64)
            ref.prev_actions[-1] = pop.actions[i].astype(np.float64)
        obs = env.step(pop.actions)


# -- options ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(inference_horizon=0), ValueError, "inference_horizon"),
    (dict(inference_horizon=1.5), (TypeError, ValueError), "inference_horizon"),
    (dict(inference_params={"num_iter": 0}), ValueError, "num_iter"),
    (dict(inference_params={"dF": 1.0}), ValueError, "unknown keys"),
    (dict(inference_params={"factorized": False}), ValueError, "factorized"),
    (dict(C=[np.zeros((2, 4)), np.zeros((2, 3)), np.zeros((2, 2))]), ValueError, "per-agent C"),
    (dict(save_belief_hist=True), ValueError, "save_belief_hist"),
    (dict(use_BMA=False, policy_sep_prior=False), NotImplementedError, "use_BMA"),
    (dict(use_BMA="yes"), (TypeError, ValueError), "use_BMA"),
])
def test_bad_options_raise(kwargs, err, match):
    gm = gm_of("tmaze-len2")
    with pytest.raises(err, match=match):
        Population(gm, 2, inference_algo="MMP", **kwargs)


def test_bad_algorithm_and_calls_raise():
    gm = gm_of("tmaze-len2")
    with pytest.raises(ValueError, match="inference_algo"):
        Population(gm, 2, inference_algo="FOO")
    with pytest.warns(UserWarning, match="policy_sep_prior"):
        p = Population(gm, 2, inference_algo="MMP", policy_sep_prior=True)
    assert p[0].edge_handling_params == {"use_BMA": False, "policy_sep_prior": True}
    pop = Population(gm, 2, inference_algo="MMP", inference_horizon=3, seed=0)
    with pytest.raises(ValueError, match="needs infer_states first"):
        pop.infer_policies()
    obs = np.array([[0, 0, 1]] * 2)
    with pytest.raises(ValueError, match="replan"):
        pop.step(obs, replan=np.ones(2, bool))
    assert np.all(pop.curr_timestep == 0)
    pop.infer_states(obs)
    before = pop.__getstate__()
    with pytest.raises(ValueError, match="MMP needs an action"):
        pop.infer_states(obs)  # no action between the two: the window cannot pair them
    after = pop.__getstate__()
    for name, arr in before["engine"]["rows"].items():
        np.testing.assert_array_equal(after["engine"]["rows"][name], arr, err_msg=name)
    with pytest.raises(NotImplementedError, match="view for reading"):
        pop[0].infer_states([0, 0, 1])


# -- membership and persistence ---------------------------------------------------------


def run(pop, env, steps) -> list:
    out = []
    obs = env.observe()
    for _ in range(steps):
        out.append((pop.step(obs).copy(), pop.q_pi.copy(), pop.qs.copy()))
        obs = env.step(pop.actions)
    return out


def assert_same_runs(a, b):
    for (act_a, pi_a, qs_a), (act_b, pi_b, qs_b) in zip(a, b):
        np.testing.assert_array_equal(act_a, act_b)
        np.testing.assert_array_equal(pi_a, pi_b)
        np.testing.assert_array_equal(qs_a, qs_b)


@pytest.mark.parametrize("how", ["pickle", "hibernate"])
def test_pickle_and_hibernate_mid_run_give_the_same_next_steps(how):
    gm = gm_of("tmaze-len2")
    opts = mmp_options(2, "sep", action_selection="stochastic", alpha=2.0)
    pop = Population(gm, 6, seed=4, **opts)
    env = Env(gm, 6, 1)
    run(pop, env, 3)
    state = pickle.dumps(pop) if how == "pickle" else pop.hibernate()
    again = pickle.loads(state) if how == "pickle" else Population.wake(state, model=gm)
    env_state = pickle.dumps(env)
    assert_same_runs(run(pop, env, 3), run(again, pickle.loads(env_state), 3))


def test_corrupt_mmp_state_refused():
    gm = gm_of("tmaze-len2")
    pop = Population(gm, 3, seed=0, inference_algo="MMP", inference_horizon=2)
    pop.step(np.array([[0, 0, 1]] * 3))
    state = pop.__getstate__()
    state["engine"]["rows"]["mmp_head"] = np.full_like(state["engine"]["rows"]["mmp_head"], 9)
    with pytest.raises(fa_core.CorruptStateError, match="mmp_head"):
        Population.__new__(Population).__setstate__(state)
    state = pop.__getstate__()
    state["engine"]["rows"]["mmp_q"] = state["engine"]["rows"]["mmp_q"][:2]
    with pytest.raises(fa_core.CorruptStateError, match="mmp_q"):
        Population.__new__(Population).__setstate__(state)
    state = pop.__getstate__()
    state["engine"]["options"]["inference_horizon"] = 0
    with pytest.raises(fa_core.CorruptStateError, match="inference_horizon"):
        Population.__new__(Population).__setstate__(state)


def test_add_and_remove_mid_run_carry_each_agents_window():
    """The survivors of remove() and the members before add() step as before; newcomers
    step as fresh agents."""
    gm = gm_of("rand-len2")
    opts = mmp_options(2, "bma")
    n = 6
    pop = Population(gm, n, seed=2, **opts)
    agents = agents_for(gm, n, opts)
    lockstep(gm, pop, agents, 3, env_seed=1)
    moved = pop.remove([1, 4])
    order = list(range(n))
    for src, dst in moved.items():
        order[dst] = src
    agents = [agents[order[i]] for i in range(pop.n_agents)]
    new = pop.add(3)
    assert list(new) == [4, 5, 6]
    agents += agents_for(gm, 3, opts)
    lockstep(gm, pop, agents, 3, env_seed=2, start=3)


def test_inference_params_are_mmps_and_checked_when_assigned():
    gm = gm_of("tmaze-len2")
    pop = Population(gm, 2, seed=0, inference_algo="MMP", inference_params={"num_iter": 3})
    assert pop.inference_params["num_iter"] == 3 and pop[0].inference_params["num_iter"] == 3
    with pytest.raises(ValueError, match="unknown keys"):
        pop.inference_params = {"dF": 1.0}
    assert pop.inference_params["num_iter"] == 3
    pop.inference_params = {"num_iter": 5, "tau": 0.5}
    again = pickle.loads(pickle.dumps(pop))
    assert again.inference_params["num_iter"] == 5 and again.inference_params["tau"] == 0.5
