"""Marginal message passing (``inference_algo="MMP"``).

Parity with pymdp.legacy's MMP agent (same process, lockstep, randomised small
models and multi-step episodes fed with the agents' own actions), reproduction
of MATLAB SPM's outputs (``tests/data/spm``, see its README) and bad input.
pymdp's MMP prints debug lines for every step and iteration; the tests
silence them (it is slow enough without formatting arrays).
"""

from __future__ import annotations

import copy
import os
import pickle

import numpy as np
import pytest

from random_models import RandomEnv, dirichlet_counts, random_distr_obs
from test_parity_pymdp import PROB_ATOL, Pair, agent_kwargs, make_model

DATA = os.path.join(os.path.dirname(__file__), "data", "spm")
# F sums logs over the window (magnitudes ~1-50): float32 carries ~1e-6 relative per term
F_RTOL, F_ATOL = 1e-4, 1e-3


@pytest.fixture(autouse=True)
def _quiet_pymdp_mmp(monkeypatch):
    """pymdp's run_mmp(_factorized) print every lnA; make print a no-op in that module."""
    mod = pytest.importorskip("pymdp.legacy.algos.mmp")
    monkeypatch.setattr(mod, "print", lambda *a, **k: None, raising=False)


def assert_window(qs_f, qs_r, num_states, where):
    """``qs[p][t][f]``: same policies, window length and beliefs as pymdp."""
    assert isinstance(qs_f, np.ndarray) and qs_f.dtype == object, f"{where}: qs type"
    assert len(qs_f) == len(qs_r), f"{where}: number of policies"
    for p in range(len(qs_r)):
        assert len(qs_f[p]) == len(qs_r[p]), f"{where}: window length of policy {p}"
        for t in range(len(qs_r[p])):
            for f, ns in enumerate(num_states):
                q = qs_f[p][t][f]
                assert q.shape == (ns,), f"{where}: qs[{p}][{t}][{f}] shape"
                np.testing.assert_allclose(q, qs_r[p][t][f], rtol=0, atol=PROB_ATOL,
                                           err_msg=f"{where}: qs[{p}][{t}][{f}]")


def assert_beliefs(x_f, x_r, where):
    """Per-factor beliefs, or per-policy then per-factor (``latest_belief``)."""
    assert len(x_f) == len(x_r), f"{where}: length"
    for i, (a, b) in enumerate(zip(x_f, x_r)):
        if isinstance(b, np.ndarray) and b.dtype == object:
            assert_beliefs(a, b, f"{where}[{i}]")
        else:
            np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=0, atol=PROB_ATOL,
                                       err_msg=f"{where}[{i}]")


class MMPPair(Pair):
    """Pair for MMP agents: compares the policy-conditioned window, F and the window prior."""

    def infer_states(self, obs, distr_obs=False):
        kw = {"distr_obs": True} if distr_obs else {}
        qs_r = self.ref.infer_states(copy.deepcopy(obs), **kw)
        qs_f = self.fa.infer_states(copy.deepcopy(obs), **kw)
        where = self.where("infer_states")
        assert_window(qs_f, qs_r, self.num_states, where)
        assert_window(self.fa.qs, qs_r, self.num_states, where + " agent.qs")
        np.testing.assert_allclose(self.fa.F, self.ref.F, rtol=F_RTOL, atol=F_ATOL,
                                   err_msg=f"{where}: F")
        assert_window(self.fa.get_future_qs(), self.ref.get_future_qs(), self.num_states,
                      where + " get_future_qs")
        return qs_f

    def sample_action(self):
        same = super().sample_action()
        # the window prior moves with time (set_latest_beliefs in step_time)
        assert_beliefs(self.fa.latest_belief, self.ref.latest_belief,
                       self.where("latest_belief"))
        # pymdp's whole observation history, as pymdp keeps it
        assert len(self.fa.prev_obs) == len(self.ref.prev_obs)
        for o_f, o_r in zip(self.fa.prev_obs, self.ref.prev_obs):
            assert_beliefs(o_f, o_r, self.where("prev_obs"))
        return same


# (num_states, num_obs, num_controls, A_factor_list, B_factor_list, policy_len, horizon, edge)
BMA, SEP = dict(use_BMA=True), dict(use_BMA=False, policy_sep_prior=True)
CASES = [
    pytest.param([3], [4], [3], None, None, 1, 1, BMA, id="1f1m-len1-h1-bma"),
    pytest.param([3], [4], [3], None, None, 1, 3, SEP, id="1f1m-len1-h3-sep"),
    pytest.param([3], [3, 2], [2], None, None, 2, 2, BMA, id="1f2m-len2-h2-bma"),
    pytest.param([3, 2], [4], [3, 2], None, None, 1, 2, SEP, id="2f1m-len1-h2-sep"),
    pytest.param([2, 3], [3, 2], [2, 1], None, None, 2, 3, BMA, id="2f2m-len2-h3-bma"),
    pytest.param([3, 2], [3, 2], [2, 2], [[0], [0, 1]], None, 1, 3, SEP,
                 id="2f2m-Afl-len1-h3-sep"),
    pytest.param([2, 3], [3, 2], [1, 2], [[0, 1], [1]], [[0], [0, 1]], 2, 2, BMA,
                 id="2f2m-Afl-Bfl-len2-h2-bma"),
    pytest.param([2, 2], [3], [2, 2], None, [[0, 1], [1]], 1, 1, SEP, id="2f1m-Bfl-len1-h1-sep"),
]
ARGS = "num_states,num_obs,num_controls,A_factor_list,B_factor_list,policy_len,horizon,edge"


def run_episode(pair, model, seed, n_steps, distr_obs=False):
    """Drive both agents through an environment with their (shared) actions."""
    env = RandomEnv(np.random.default_rng(seed), model)
    rng = np.random.default_rng(seed + 1)
    obs = env.observe()
    for _ in range(n_steps):
        o = random_distr_obs(rng, model["num_obs"]) if distr_obs else obs
        if not pair.step(o, distr_obs):
            break  # a near tie split the agents (checked by Pair.sample_action)
        obs = env.step(pair.ref.action)
    return pair.t


@pytest.mark.parametrize(ARGS, CASES)
def test_episode_parity(num_states, num_obs, num_controls, A_factor_list, B_factor_list,
                        policy_len, horizon, edge, RefAgent, FaAgent):
    model = make_model(21, num_states, num_obs, num_controls, A_factor_list, B_factor_list,
                       C_scale=2.0)
    np.random.seed(3)
    pair = MMPPair(RefAgent, FaAgent, **agent_kwargs(
        model, inference_algo="MMP", policy_len=policy_len, inference_horizon=horizon, **edge))
    assert run_episode(pair, model, 5, 10) == 10, "near tie split the agents; pick another seed"


@pytest.mark.parametrize("seed", range(4))
def test_random_options_parity(seed, RefAgent, FaAgent):
    """Random model and options: gamma, E, EFE terms, sampling mode, stochastic actions."""
    r = np.random.default_rng(100 + seed)
    nf = int(r.integers(1, 3))
    num_states = [int(x) for x in r.integers(2, 4, nf)]
    num_obs = [int(x) for x in r.integers(2, 4, int(r.integers(1, 3)))]
    num_controls = [int(x) for x in r.integers(1, 3, nf)]
    num_controls[0] = 2
    model = make_model(200 + seed, num_states, num_obs, num_controls, None, None)
    n_pol_len = int(r.integers(1, 3))
    n_pol = int(np.prod(num_controls)) ** n_pol_len
    kw = dict(inference_algo="MMP", policy_len=n_pol_len, inference_horizon=int(r.integers(1, 4)),
              gamma=float(r.uniform(1, 16)), E=r.dirichlet(np.ones(n_pol)),
              use_utility=bool(seed != 1), use_states_info_gain=bool(seed != 2),
              sampling_mode=["marginal", "full"][seed % 2],
              action_selection=["deterministic", "stochastic"][seed // 2 % 2],
              **[BMA, SEP][seed % 2])
    np.random.seed(seed)
    pair = MMPPair(RefAgent, FaAgent, **agent_kwargs(model, **kw))
    assert run_episode(pair, model, 300 + seed, 8) == 8


def test_time_dependent_C_parity(RefAgent, FaAgent):
    """A 2-D C has one column per scored step: the current one and policy_len future ones."""
    model = make_model(32, [3], [3, 2], [3], None, None, C_len=3, C_scale=2.0)
    np.random.seed(4)
    pair = MMPPair(RefAgent, FaAgent, **agent_kwargs(model, inference_algo="MMP", policy_len=2,
                                                     inference_horizon=2))
    assert run_episode(pair, model, 12, 6) == 6


def test_distribution_observations(RefAgent, FaAgent):
    model = make_model(31, [3, 2], [3, 2], [2, 2], None, None)
    np.random.seed(0)
    pair = MMPPair(RefAgent, FaAgent, **agent_kwargs(model, inference_algo="MMP",
                                                     inference_horizon=2))
    assert run_episode(pair, model, 7, 6, distr_obs=True) == 6


def test_reset_and_learning_parity(RefAgent, FaAgent):
    """reset keeps pymdp's window history; update_D learns from the window's first step
    and the next episode starts from the learned D."""
    model = make_model(41, [3], [3], [3], None, None)
    rng = np.random.default_rng(1)
    for edge in (BMA, SEP):
        np.random.seed(1)
        pair = MMPPair(RefAgent, FaAgent, **agent_kwargs(
            model, inference_algo="MMP", inference_horizon=2, pD=dirichlet_counts(rng, model["D"]),
            **edge))
        assert run_episode(pair, model, 8, 4) == 4
        for agent in (pair.ref, pair.fa):
            agent.update_D()
        assert_beliefs(pair.fa.pD, pair.ref.pD, "pD")
        assert_beliefs(pair.fa.D, pair.ref.D, "D")
        for agent in (pair.ref, pair.fa):
            agent.reset()
        assert_beliefs(pair.fa.latest_belief, pair.ref.latest_belief, "latest_belief after reset")
        assert run_episode(pair, model, 9, 4) == 8


def test_set_latest_beliefs_and_future_qs(RefAgent, FaAgent):
    model = make_model(51, [3, 2], [3], [2, 1], None, None)
    np.random.seed(2)
    pair = MMPPair(RefAgent, FaAgent, **agent_kwargs(model, inference_algo="MMP",
                                                     inference_horizon=3, policy_len=2, **SEP))
    assert run_episode(pair, model, 10, 3) == 3
    last = pair.ref.latest_belief
    pair.fa.set_latest_beliefs(copy.deepcopy(last))
    pair.ref.set_latest_beliefs(copy.deepcopy(last))
    assert_beliefs(pair.fa.latest_belief, pair.ref.latest_belief, "latest_belief")
    assert run_episode(pair, model, 11, 3) == 6
    fut = pair.fa.get_future_qs()
    assert all(len(fut[p]) == 3 for p in range(len(fut)))


def test_inference_params_are_honoured(FaAgent):
    """pymdp ignores inference_params for MMP; fa_core applies num_iter and tau."""
    model = make_model(61, [3], [3], [2], None, None)
    kw = agent_kwargs(model, inference_algo="MMP", inference_horizon=2)
    outs = []
    for params in (None, {"num_iter": 10, "tau": 0.25}, {"num_iter": 3}, {"tau": 0.5}):
        agent = FaAgent(**kw, inference_params=params)
        agent.infer_states([0])
        agent.infer_policies()
        agent.sample_action()
        outs.append(np.concatenate([np.concatenate(list(x)) for x in agent.infer_states([1])[0]]))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2], atol=1e-4)
    assert not np.allclose(outs[0], outs[3], atol=1e-4)


def test_work_stays_bounded(FaAgent):
    """Buffers and bookkeeping are sized by the window, not the episode (the user-facing
    histories too, when bounded by ``action_hist_len``)."""
    model = make_model(71, [3], [3], [2], None, None)
    agent = FaAgent(**agent_kwargs(model, inference_algo="MMP", inference_horizon=3), seed=0,
                    action_hist_len=3)
    for t in range(40):
        qs = agent.infer_states([t % 3])
        agent.infer_policies()
        agent.sample_action()
    assert len(qs[0]) == 3 + 1
    assert len(agent.prev_obs) == 3
    assert agent._engine.window.lh.shape[0] == 3


def test_agents_share_compiled_model(FaAgent):
    """Agents of one model share MMP's compiled arrays; each owns only its window."""
    model = make_model(74, [3], [3], [2], None, None)
    a, b = (FaAgent(**agent_kwargs(model, inference_algo="MMP", inference_horizon=2))
            for _ in range(2))
    assert a._engine.window._km is b._engine.window._km


def test_reuse_buffers_writes_in_place(FaAgent):
    model = make_model(72, [3], [3], [2], None, None)
    agent = FaAgent(**agent_kwargs(model, inference_algo="MMP", inference_horizon=2),
                    reuse_buffers=True)
    a = agent.infer_states([0])
    agent.infer_policies()
    agent.sample_action()
    b = agent.infer_states([1])
    assert np.shares_memory(a[0][0][0], b[0][0][0])


def test_pickle_roundtrip(FaAgent):
    model = make_model(73, [3], [3], [2], None, None)
    agent = FaAgent(**agent_kwargs(model, inference_algo="MMP", inference_horizon=2), seed=1)
    for o in ([0], [1]):
        agent.infer_states(o)
        agent.infer_policies()
        agent.sample_action()
    clone = pickle.loads(pickle.dumps(agent))
    for x in (agent, clone):
        x.infer_states([2])
        x.infer_policies()
    np.testing.assert_array_equal(clone.q_pi, agent.q_pi)
    np.testing.assert_array_equal(clone.F, agent.F)


# --- Bad input ----------------------------------------------------------------

@pytest.mark.parametrize("kw,err,match", [
    (dict(inference_horizon=0), ValueError, "inference_horizon"),
    (dict(inference_horizon=1.5), ValueError, "inference_horizon"),
    (dict(inference_params={"num_iter": 0}), ValueError, "num_iter"),
    (dict(inference_params={"tau": -1.0}), ValueError, "tau"),
    (dict(inference_params={"dF": 1.0}), ValueError, "unknown keys"),
    (dict(inference_params={"grad_descent": False}), NotImplementedError, "grad_descent"),
    (dict(use_BMA=False, policy_sep_prior=False), NotImplementedError, "use_BMA"),
])
def test_bad_options(kw, err, match, FaAgent):
    model = make_model(81, [3], [3], [2], None, None)
    with pytest.raises(err, match=match):
        FaAgent(**agent_kwargs(model, inference_algo="MMP", **kw))


def test_two_dimensional_C_needs_a_column_per_scored_step(FaAgent):
    """MMP scores the current step and policy_len future ones (pymdp fails on fewer columns)."""
    model = make_model(85, [3], [3], [2], None, None, C_len=1)
    with pytest.raises(ValueError, match=r"C\[0\] has 1 time columns"):
        FaAgent(**agent_kwargs(model, inference_algo="MMP"))
    model = make_model(85, [3], [3], [2], None, None, C_len=2)
    FaAgent(**agent_kwargs(model, inference_algo="MMP")).infer_states([0])


def test_bad_call_leaves_agent_unchanged(FaAgent):
    model = make_model(82, [3], [3], [2], None, None)
    agent = FaAgent(**agent_kwargs(model, inference_algo="MMP", inference_horizon=3))
    agent.infer_states([0])
    qs, F = agent.qs, agent.F.copy()
    with pytest.raises(ValueError, match="prev_actions"):
        agent.infer_states([1])  # no action between the two observations
    with pytest.raises(ValueError, match="observation"):
        agent.infer_states([7])
    assert agent.qs is qs and np.array_equal(agent.F, F) and len(agent.prev_obs) == 1
    agent.infer_policies()
    agent.sample_action()
    agent.infer_states([1])


def test_learning_A_B_refused(FaAgent):
    """pymdp's update_A / update_B read MMP's per-policy qs as per-factor beliefs."""
    model = make_model(84, [3], [3], [2], None, None)
    rng = np.random.default_rng(0)
    agent = FaAgent(**agent_kwargs(model, inference_algo="MMP",
                                   pA=dirichlet_counts(rng, model["A"]),
                                   pB=dirichlet_counts(rng, model["B"])))
    agent.infer_states([0])
    with pytest.raises(NotImplementedError, match="update_A"):
        agent.update_A([0])
    with pytest.raises(NotImplementedError, match="update_B"):
        agent.update_B(agent.D)


def test_vanilla_agent_has_no_window(FaAgent):
    model = make_model(83, [3], [3], [2], None, None)
    agent = FaAgent(**agent_kwargs(model))
    with pytest.raises(NotImplementedError, match="MMP"):
        agent.get_future_qs()
    with pytest.raises(AttributeError):
        _ = agent.latest_belief


# --- MATLAB SPM ---------------------------------------------------------------

def _loadmat(name):
    io = pytest.importorskip("scipy.io")
    return io.loadmat(os.path.join(DATA, name))


def _joint_likelihoods(A, obs_idx, num_states):
    """Likelihood of the hidden states (jointly) for each observed step (MATLAB indices)."""
    out = []
    for t in range(obs_idx.shape[1]):
        ll = np.ones(num_states)
        for m, a in enumerate(A):
            ll = ll * a[obs_idx[m, t] - 1]
        out.append(ll)
    return out


@pytest.mark.parametrize("name", ["a", "b", "c", "d"])
def test_spm_single_mmp_call(name):
    """SPM's marginal message passing in one call (as pymdp's test_mmp.py feeds it)."""
    from fa_core.mmp import run_mmp
    mc = _loadmat(f"mmp_{name}.mat")
    A, B = mc["A"][0], mc["B"][0]
    policy = mc["policy"].astype(int) - 1
    t = int(mc["t"][0, 0]) - 1
    lo = max(0, t - int(mc["t_horizon"][0, 0]))
    num_states = [b.shape[0] for b in B]
    lh = _joint_likelihoods(A, mc["obs_idx"].astype(int)[:, lo:t + 1], num_states)
    if name in ("a", "d"):  # mid-run / last step: prior is the previous action's prediction
        prev = (mc["previous_actions"].astype(int) - 1)[lo - 1:]
        prior = [B[f][:, :, prev[0, f]].dot(np.full(n, 1.0 / n)) for f, n in enumerate(num_states)]
        qs, _ = run_mmp(lh, B, policy, prev[1:], prior=prior, num_iter=5,
                        last_timestep=name == "d")
    elif name == "b":
        qs, _ = run_mmp(lh, B, policy, (mc["previous_actions"].astype(int) - 1)[lo:], num_iter=5)
    else:  # first step of the process: no past actions
        qs, _ = run_mmp(lh, B, policy, None, num_iter=5)
    for f in range(len(num_states)):
        np.testing.assert_allclose(qs[-1][f], mc["qs"][0][f].squeeze(), rtol=0, atol=1e-6)


def test_spm_vbx_run(FaAgent):
    """SPM's spm_MDP_VB_X.m over 10 steps: every step's window beliefs under every policy
    (SPM's last iteration) and the actions SPM took. SPM's message passing is pymdp's
    run_mmp (joint likelihood, full future messages): ``factorized=False``."""
    mc = _loadmat("vbx_test_1a.mat")
    A, B = mc["A"][0], mc["B"][0]
    C = np.empty(1, dtype=object)
    C[0] = mc["C"][0][0][:, 0]
    obs = mc["obs"].astype(int) - 1
    horizon = int(mc["t_horizon"][0, 0])
    xn = mc["xn"][0][0]  # (iteration, state, window time, trial step, policy)
    T = obs.shape[1]
    agent = FaAgent(A=A, B=B, C=C, inference_algo="MMP", policy_len=1, inference_horizon=horizon,
                    use_BMA=False, policy_sep_prior=True, inference_params={"factorized": False})
    actions = []
    for t in range(T):
        qs = agent.infer_states([int(obs[0, t])])
        agent.infer_policies()
        actions.append(int(agent.sample_action()[0]))
        lo, hi = max(0, agent.curr_timestep - horizon), min(agent.curr_timestep + 1, T)
        for p in range(len(agent.policies)):
            mine = np.stack([qs[p][k][0] for k in range(hi - lo)], axis=1)
            np.testing.assert_allclose(mine, xn[-1][:, lo:hi, t, p], rtol=0, atol=1e-6,
                                       err_msg=f"step {t} policy {p}")
    np.testing.assert_array_equal(actions[:-1], mc["actions"][0].astype(int) - 1)


def test_factorized_default_differs_from_spm_as_pymdp(RefAgent, FaAgent):
    """pymdp's Agent.infer_states (factorized, half-weighted future messages) is not
    SPM's form; fa_core's default follows pymdp's agent, ``factorized=False`` SPM."""
    mc = _loadmat("vbx_test_1a.mat")
    A, B = mc["A"][0], mc["B"][0]
    kw = dict(A=A, B=B, inference_algo="MMP", inference_horizon=3, use_BMA=False,
              policy_sep_prior=True)
    ref, fa = RefAgent(**kw), FaAgent(**kw)
    spm = FaAgent(**kw, inference_params={"factorized": False})
    for o in (2, 3, 1):
        out = [x.infer_states([o]) for x in (ref, fa, spm)]
        for x in (ref, fa, spm):
            x.infer_policies()
            x.action = np.array([1.0])
            x.step_time()
    assert_window(out[1], out[0], [3], "factorized")
    assert not np.allclose(out[2][0][0][0], out[0][0][0][0], atol=1e-4)
