"""fa_core.Agent against pymdp.legacy.agent.Agent (VANILLA inference), in one process.

Both agents are built from deep copies of the same arguments and fed the same
observations; after every call the beliefs (qs per factor), the policy
posterior (q_pi), the negative expected free energies (G) and the action are
compared. Models are random (seeded) and small, because pymdp's reference
path is slow with several factors.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from random_models import (RandomEnv, dirichlet_counts, obj_array, random_distr_obs,
                           random_model, random_obs, random_policies)

# --- Tolerances --------------------------------------------------------------
# fa_core computes in float32 (relative epsilon 1.2e-7), pymdp in float64. Over
# ten fixed-point iterations, logs and softmaxes the float32 error on a
# probability stays around 1e-6; 1e-4 leaves headroom without hiding real bugs
# (a wrong term or a missed iteration moves probabilities by 1e-2 or more).
PROB_ATOL = 1e-4
# G sums logs of probabilities over modalities and steps (magnitudes ~1-30);
# float32 logs of small numbers carry ~1e-6 relative error each.
G_RTOL = 1e-3
G_ATOL = 1e-3
# Model arrays (A, B, D, learned Dirichlet counts) are stored in float32.
MODEL_RTOL = 1e-5
MODEL_ATOL = 1e-6
# pymdp treats action probabilities within 1e-8 of the maximum as an exact tie
# and breaks it with the global np.random. When the winning margin is below
# twice PROB_ATOL, float32 rounding may legitimately reorder the candidates, so
# the choice is only required to be one of the near-tied candidates.
EXACT_TIE = 1e-8
NEAR_TIE = 2 * PROB_ATOL


# --- Model shapes ------------------------------------------------------------
# (num_states, num_obs, num_controls, A_factor_list, B_factor_list, policy_len)
CASES = [
    pytest.param([3], [4], [3], None, None, 1, id="1f1m"),
    pytest.param([3], [3, 2], [2], None, None, 3, id="1f2m-len3"),
    pytest.param([3, 2], [4], [3, 2], None, None, 1, id="2f1m"),
    pytest.param([2, 3], [3, 2], [2, 2], None, None, 2, id="2f2m-len2"),
    pytest.param([3, 2], [3, 2, 2], [2, 1], [[0], [1], [0, 1]], None, 2, id="2f3m-Afl-len2"),
    pytest.param([2, 3, 2], [3, 3], [2, 2, 1], [[0, 1], [1, 2]], [[0], [0, 1], [2]], 1,
                 id="3f2m-Afl-Bfl"),
    pytest.param([2, 2, 2], [2, 3, 2], [2, 1, 2], None, None, 2, id="3f3m-len2"),
    pytest.param([2, 2, 2, 2], [3, 2], [2, 1, 2, 1], [[0, 1], [2, 3]], None, 1, id="4f2m-Afl"),
    pytest.param([2, 3, 2, 2], [2, 3, 2], [2, 2, 1, 1], [[0], [1, 2], [0, 3]],
                 [[1, 0], [1], [3, 2], [3]], 2, id="4f3m-Afl-Bfl-len2"),
]
CASE_ARGS = "num_states,num_obs,num_controls,A_factor_list,B_factor_list,policy_len"


def make_model(seed, num_states, num_obs, num_controls, A_factor_list, B_factor_list, **kw):
    return random_model(np.random.default_rng(seed), num_states, num_obs, num_controls,
                        A_factor_list, B_factor_list, **kw)


def agent_kwargs(model, **extra):
    """Constructor arguments for both agents from a :func:`random_model` dict."""
    kw = dict(A=model["A"], B=model["B"], C=model["C"], D=model["D"])
    if model["A_factor_list"] is not None:
        kw["A_factor_list"] = model["A_factor_list"]
    if model["B_factor_list"] is not None:
        kw["B_factor_list"] = model["B_factor_list"]
    kw.update(extra)
    return kw


# --- Comparison helpers ------------------------------------------------------

def assert_qs(qs_f, qs_r, num_states, where=""):
    """``qs`` is an object array of per-factor 1-D float arrays matching pymdp's."""
    assert isinstance(qs_f, np.ndarray) and qs_f.dtype == object, f"{where}: qs type"
    assert qs_f.shape == (len(num_states),), f"{where}: qs shape {qs_f.shape}"
    for f, ns in enumerate(num_states):
        q = qs_f[f]
        assert isinstance(q, np.ndarray) and q.shape == (ns,), f"{where}: qs[{f}] shape"
        assert np.issubdtype(q.dtype, np.floating), f"{where}: qs[{f}] dtype {q.dtype}"
        np.testing.assert_allclose(q, qs_r[f], rtol=0, atol=PROB_ATOL,
                                   err_msg=f"{where}: qs[{f}]")


def assert_policy_posterior(q_pi_f, G_f, q_pi_r, G_r, where=""):
    n = len(q_pi_r)
    for name, x in (("q_pi", q_pi_f), ("G", G_f)):
        assert isinstance(x, np.ndarray) and x.shape == (n,), f"{where}: {name} shape"
        assert np.issubdtype(x.dtype, np.floating), f"{where}: {name} dtype {x.dtype}"
    np.testing.assert_allclose(G_f, G_r, rtol=G_RTOL, atol=G_ATOL, err_msg=f"{where}: G")
    np.testing.assert_allclose(q_pi_f, q_pi_r, rtol=0, atol=PROB_ATOL, err_msg=f"{where}: q_pi")


def assert_obj_close(x_f, x_r, name, rtol=MODEL_RTOL, atol=MODEL_ATOL):
    assert len(x_f) == len(x_r), f"{name}: length"
    for i, (a, b) in enumerate(zip(x_f, x_r)):
        assert np.shape(a) == np.shape(b), f"{name}[{i}] shape {np.shape(a)} != {np.shape(b)}"
        np.testing.assert_allclose(np.asarray(a, dtype=np.float64), b, rtol=rtol, atol=atol,
                                   err_msg=f"{name}[{i}]")


def action_marginals(q_pi, policies, num_controls):
    """pymdp's per-factor marginal posterior over the first action."""
    marg = [np.zeros(n) for n in num_controls]
    for p, pol in zip(q_pi, policies):
        for f, a in enumerate(pol[0]):
            marg[f][int(a)] += p
    return [m / m.sum() for m in marg]


def deterministic_decisions(ref):
    """What fa_core may choose where pymdp chose deterministically.

    One entry per factor (marginal mode) or one for the joint first action (full
    mode): ``(candidates, unambiguous)``. ``candidates`` are the choices within
    ``NEAR_TIE`` of the best. The decision is unambiguous when a single choice is
    possible, or when every near-best entry is tied with the best to within
    ``EXACT_TIE`` (an exact tie that pymdp breaks with the global RNG, which
    fa_core must break identically); otherwise float32 may legitimately order
    the near-best entries differently from pymdp.
    """
    q_pi = np.asarray(ref.q_pi, dtype=np.float64)
    if ref.sampling_mode == "marginal":
        blocks = [(m, list(range(len(m))))
                  for m in action_marginals(q_pi, ref.policies, ref.num_controls)]
    else:
        blocks = [(q_pi, [tuple(int(a) for a in pol[0]) for pol in ref.policies])]
    out = []
    for values, choice_of in blocks:
        top = values.max()
        near = np.flatnonzero(values >= top - NEAR_TIE)
        exact = np.flatnonzero(values >= top - EXACT_TIE)
        cands = {choice_of[i] for i in near}
        out.append((cands, len(cands) == 1 or len(near) == len(exact)))
    return out


class Pair:
    """A pymdp agent and an fa_core agent driven in lockstep and compared after every call."""

    def __init__(self, RefAgent, FaAgent, fa_only=None, **kwargs):
        self.ref = RefAgent(**copy.deepcopy(kwargs))
        self.fa = FaAgent(**copy.deepcopy(kwargs), **(fa_only or {}))
        self.num_states = self.ref.num_states
        self.t = 0

    def where(self, what):
        return f"step {self.t} {what}"

    def infer_states(self, obs, distr_obs=False):
        kw = {"distr_obs": True} if distr_obs else {}
        qs_r = self.ref.infer_states(copy.deepcopy(obs), **kw)
        qs_f = self.fa.infer_states(copy.deepcopy(obs), **kw)
        assert_qs(qs_f, qs_r, self.num_states, self.where("infer_states return"))
        assert_qs(self.fa.qs, qs_r, self.num_states, self.where("agent.qs"))
        return qs_f

    def infer_policies(self):
        q_pi_r, G_r = self.ref.infer_policies()
        out = self.fa.infer_policies()
        assert isinstance(out, tuple) and len(out) == 2
        assert_policy_posterior(*out, q_pi_r, G_r, self.where("infer_policies return"))
        assert_policy_posterior(self.fa.q_pi, self.fa.G, q_pi_r, G_r, self.where("agent.q_pi/G"))
        return out

    def sample_action(self):
        """Sample with identical global RNG state; return True if both chose the same action.

        Where pymdp's deterministic choice is unambiguous (see
        :func:`deterministic_decisions`) fa_core must make the same choice. If any
        choice in this step is ambiguous, fa_core's draws from the shared RNG may
        legitimately differ from pymdp's, so every choice of the step is then only
        required to be one of its near-best candidates.
        """
        decisions = deterministic_decisions(self.ref)
        state = np.random.get_state()
        a_r = self.ref.sample_action()
        np.random.set_state(state)
        a_f = self.fa.sample_action()
        nf = len(self.num_states)
        assert isinstance(a_f, np.ndarray) and a_f.shape == (nf,), self.where("action shape")
        assert np.issubdtype(a_f.dtype, np.floating), self.where(f"action dtype {a_f.dtype}")
        np.testing.assert_array_equal(self.fa.action, a_f, err_msg=self.where("agent.action"))
        if self.ref.action_selection == "deterministic":
            if self.ref.sampling_mode == "marginal":
                picks = [(int(a_f[f]), int(a_r[f])) for f in range(nf)]
            else:
                picks = [(tuple(int(a) for a in a_f), tuple(int(a) for a in a_r))]
            in_sync = all(unambiguous for _, unambiguous in decisions)
            for (cands, _), (pf, pr) in zip(decisions, picks):
                if in_sync:
                    assert pf == pr, self.where(f"action {a_f} != pymdp {a_r}")
                else:
                    assert pf in cands, self.where(f"action {a_f} not near-tied with {a_r}")
        self.t += 1
        return bool(np.array_equal(a_f, a_r))

    def step(self, obs, distr_obs=False):
        self.infer_states(obs, distr_obs)
        self.infer_policies()
        return self.sample_action()


def run_random_obs(pair, rng, num_obs, n_steps, distr_obs=False):
    """Feed ``n_steps`` random observations; stop early if a near tie split the agents."""
    for _ in range(n_steps):
        obs = random_distr_obs(rng, num_obs) if distr_obs else random_obs(rng, num_obs)
        if not pair.step(obs, distr_obs):
            break
    return pair.t


# --- Core parity over shapes and EFE options ----------------------------------

FLAGS = {
    "default": {},
    "utility-only": dict(use_states_info_gain=False),
    "info-only": dict(use_utility=False),
    "param-info": dict(use_param_info_gain=True, pA=True, pB=True),
    "gamma-E": dict(gamma=3.0, E=True),
    "full-mode": dict(sampling_mode="full"),
}


@pytest.mark.parametrize("flags", list(FLAGS), ids=list(FLAGS))
@pytest.mark.parametrize(CASE_ARGS, CASES)
def test_steps_parity(num_states, num_obs, num_controls, A_factor_list, B_factor_list,
                      policy_len, flags, RefAgent, FaAgent):
    model = make_model(11, num_states, num_obs, num_controls, A_factor_list, B_factor_list)
    rng = np.random.default_rng(12)
    extra = dict(FLAGS[flags], policy_len=policy_len)
    if extra.pop("pA", False):
        extra["pA"] = dirichlet_counts(rng, model["A"])
    if extra.pop("pB", False):
        extra["pB"] = dirichlet_counts(rng, model["B"])
    if extra.pop("E", False):
        n_pol = int(np.prod(num_controls)) ** policy_len
        extra["E"] = rng.dirichlet(np.ones(n_pol))
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, **extra))
    assert run_random_obs(pair, rng, num_obs, 4) == 4


@pytest.mark.parametrize(CASE_ARGS, CASES)
def test_episode_parity(num_states, num_obs, num_controls, A_factor_list, B_factor_list,
                        policy_len, RefAgent, FaAgent):
    """25 steps in a closed loop: the env advances under the agents' own (shared) action."""
    model = make_model(21, num_states, num_obs, num_controls, A_factor_list, B_factor_list,
                       near_onehot_B=True, C_scale=2.0)
    env = RandomEnv(np.random.default_rng(22), model)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, policy_len=policy_len))
    obs = env.observe()
    for _ in range(25):
        if not pair.step(obs):
            break
        obs = env.step(pair.ref.action)
    assert pair.t == 25, f"near tie split the agents after {pair.t} steps; pick another seed"
    assert pair.fa.curr_timestep == pair.ref.curr_timestep == 25
    assert len(pair.fa.prev_actions) == 25
    for a_f, a_r in zip(pair.fa.prev_actions, pair.ref.prev_actions):
        np.testing.assert_array_equal(a_f, a_r)


EPISODE_OPTIONS = {
    "full-mode": dict(sampling_mode="full"),
    "param-info": dict(use_param_info_gain=True, pA=True, pB=True),
    "gamma-E": dict(gamma=4.0, E=True),
    "C-2d": dict(C_len=True),
    "no-utility": dict(use_utility=False),
}


@pytest.mark.parametrize("option", list(EPISODE_OPTIONS))
def test_episode_parity_options(option, RefAgent, FaAgent):
    """25-step closed loops on the factored 2-factor, 3-modality case under each option."""
    extra = dict(EPISODE_OPTIONS[option], policy_len=2)
    model = make_model(25, [3, 2], [3, 2, 2], [2, 1], [[0], [1], [0, 1]], None,
                       near_onehot_B=True, C_scale=2.0, C_len=2 if extra.pop("C_len", 0) else None)
    rng = np.random.default_rng(26)
    if extra.pop("pA", False):
        extra["pA"] = dirichlet_counts(rng, model["A"])
    if extra.pop("pB", False):
        extra["pB"] = dirichlet_counts(rng, model["B"])
    if extra.pop("E", False):
        extra["E"] = rng.dirichlet(np.ones(4))
    env = RandomEnv(np.random.default_rng(27), model)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, **extra))
    obs = env.observe()
    for _ in range(25):
        if not pair.step(obs):
            break
        obs = env.step(pair.ref.action)
    assert pair.t == 25, f"near tie split the agents after {pair.t} steps; pick another seed"


def test_plain_ndarray_single_factor_model(RefAgent, FaAgent):
    """One factor, one modality passed as plain arrays (A 2-D, B 3-D, C and D 1-D)."""
    model = make_model(28, [4], [3], [3], None, None)
    kw = dict(A=model["A"][0], B=model["B"][0], C=model["C"][0], D=model["D"][0])
    pair = Pair(RefAgent, FaAgent, **kw)
    assert_attributes(pair.fa, pair.ref)
    rng = np.random.default_rng(29)
    for _ in range(4):
        assert pair.step([int(rng.integers(3))])


def test_reassigning_C_D_E_gamma_mid_run(RefAgent, FaAgent):
    """Users change preferences, priors and precision between steps by assignment."""
    model = make_model(30, [3, 2], [3, 2], [3, 2], None, None)
    rng = np.random.default_rng(31)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model))
    assert run_random_obs(pair, rng, [3, 2], 2) == 2
    new_C = obj_array([3.0 * rng.standard_normal(3), 3.0 * rng.standard_normal(2)])
    new_E = rng.dirichlet(np.ones(6))
    for agent in (pair.ref, pair.fa):
        agent.C = copy.deepcopy(new_C)
        agent.E = new_E.copy()
        agent.gamma = 4.0
    assert run_random_obs(pair, rng, [3, 2], 2) == 4
    new_D = random_distr_obs(rng, [3, 2])
    for agent in (pair.ref, pair.fa):
        agent.D = copy.deepcopy(new_D)
        agent.reset()
        agent.action = None  # start from D again rather than from the last action
        agent.prev_actions = None
    assert run_random_obs(pair, rng, [3, 2], 2) == 6


def test_in_place_edit_of_C_is_not_silently_ignored(RefAgent, FaAgent):
    """``agent.C[m][i] = v`` is common pymdp usage: it must take effect or raise, never be lost."""
    model = make_model(32, [3, 2], [3, 2], [3, 2], None, None)
    rng = np.random.default_rng(33)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model))
    assert run_random_obs(pair, rng, [3, 2], 1) == 1
    pair.ref.C[0][1] = 6.0
    try:
        pair.fa.C[0][1] = 6.0
    except (ValueError, TypeError):
        return  # refused loudly (read-only): acceptable
    assert run_random_obs(pair, rng, [3, 2], 2) == 3


def random_configuration(seed):
    """A random small model and option set: 1-4 factors, 1-3 modalities, random
    (possibly unsorted) factor lists, policy_len 1-3, random EFE terms and priors."""
    r = np.random.default_rng(seed)
    nf, nm = int(r.integers(1, 5)), int(r.integers(1, 4))
    ns = [int(n) for n in r.integers(2, 4, nf)]
    no = [int(n) for n in r.integers(2, 5, nm)]
    nc = [int(n) for n in r.integers(1, 4, nf)]
    k = int(r.integers(nf))
    nc[k] = max(2, nc[k])  # at least one controllable factor
    afl = None if r.random() < 0.3 else [
        [int(f) for f in r.permutation(nf)[:int(r.integers(1, nf + 1))]] for _ in range(nm)]
    bfl = None if r.random() < 0.4 else [
        [f] + [int(g) for g in r.permutation([g for g in range(nf) if g != f])
               [:int(r.integers(0, min(2, nf - 1) + 1))]] for f in range(nf)]
    n_pol1 = int(np.prod(nc))
    policy_len = max(L for L in (1, 2, 3) if n_pol1 ** L <= 27 or L == 1)
    policy_len = int(r.integers(1, policy_len + 1))
    model = random_model(r, ns, no, nc, afl, bfl, sparsity=float(r.choice([0.0, 0.3])),
                         C_scale=float(r.uniform(0.5, 3.0)),
                         C_len=policy_len if r.random() < 0.3 else None)
    extra = dict(policy_len=policy_len, gamma=float(r.choice([2.0, 16.0])),
                 use_utility=bool(r.random() < 0.8), use_states_info_gain=bool(r.random() < 0.8),
                 sampling_mode=str(r.choice(["marginal", "full"])))
    if r.random() < 0.4:
        extra.update(use_param_info_gain=True, pA=dirichlet_counts(r, model["A"]),
                     pB=dirichlet_counts(r, model["B"]))
    if r.random() < 0.3:
        extra["E"] = r.dirichlet(np.ones(n_pol1 ** policy_len))
    return model, extra


@pytest.mark.parametrize("seed", range(24))
def test_random_configurations(seed, RefAgent, FaAgent):
    """Closed loops on random shapes and options. Each step is compared in full; a
    near tie that splits the agents ends the episode early (after being checked)."""
    model, extra = random_configuration(seed)
    env = RandomEnv(np.random.default_rng(seed + 1000), model)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, **extra))
    assert_attributes(pair.fa, pair.ref)
    np.random.seed(seed)
    obs = env.observe()
    for _ in range(6):
        if not pair.step(obs):
            break
        obs = env.step(pair.ref.action)
    assert pair.t >= 1


def test_unsorted_A_factor_list(RefAgent, FaAgent):
    """A modality listing its factors out of order (``[3, 0]``).

    pymdp's fixed-point iteration stops when the free energy changes by less than
    ``dF_tol``, and computes that free energy from each modality's log-likelihood
    reshaped (not transposed) into the joint state space. For an unsorted entry
    the stopping rule therefore sees a scrambled likelihood and may stop at a
    different iteration than a correct free energy would; the marginal updates
    themselves respect the order. A drop-in must stop where pymdp stops.
    """
    model = make_model(11, [2, 3, 2, 2], [2, 3, 2], [2, 2, 1, 1], [[0], [1, 2], [3, 0]],
                       [[0, 1], [1], [2, 3], [3]])
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, policy_len=2))
    assert run_random_obs(pair, np.random.default_rng(12), [2, 3, 2], 6) == 6


def test_sparse_model_episode(RefAgent, FaAgent):
    """Zeros in A and B (log(0 + 1e-16) terms, masked learning) along a closed loop."""
    model = make_model(31, [4, 3], [5, 3], [3, 2], [[0], [0, 1]], None, sparsity=0.5)
    rng = np.random.default_rng(32)
    env = RandomEnv(np.random.default_rng(33), model)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(
        model, pA=dirichlet_counts(rng, model["A"]), pB=dirichlet_counts(rng, model["B"]),
        use_param_info_gain=True))
    obs = env.observe()
    qs_prev = None
    for _t in range(20):
        pair.infer_states(obs)
        assert_obj_close(pair.fa.update_A(obs), pair.ref.update_A(obs), "qA",
                         rtol=1e-5, atol=1e-4)
        if qs_prev is not None:
            assert_obj_close(pair.fa.update_B(copy.deepcopy(qs_prev)),
                             pair.ref.update_B(copy.deepcopy(qs_prev)), "qB",
                             rtol=1e-5, atol=1e-4)
        qs_prev = copy.deepcopy(pair.ref.qs)
        pair.infer_policies()
        if not pair.sample_action():
            break
        obs = env.step(pair.ref.action)
    assert pair.t == 20
    assert_obj_close(pair.fa.A, pair.ref.A, "A", atol=PROB_ATOL)
    assert_obj_close(pair.fa.B, pair.ref.B, "B", atol=PROB_ATOL)
    # structural zeros stay zero
    for a_f, a0 in zip(pair.fa.A, model["A"]):
        assert np.all(np.asarray(a_f)[a0 == 0] == 0)


@pytest.mark.parametrize("distr_obs", [False, True])
def test_dense_A_without_log_cache(distr_obs, RefAgent, FaAgent, monkeypatch):
    """Large dense likelihoods take log(A) of the observed row each step instead of caching it."""
    fa_model = pytest.importorskip("fa_core.model")
    monkeypatch.setattr(fa_model, "LOG_CACHE_MAX_ENTRIES", 0)
    model = make_model(35, [4, 3], [5, 3], [3, 2], [[0], [0, 1]], None, sparsity=0.3)
    fa_only = None if FaAgent is RefAgent else {"sparse": False}
    pair = Pair(RefAgent, FaAgent, fa_only=fa_only, **agent_kwargs(model))
    if fa_only:
        assert all(spec.logval is None for spec in pair.fa.model._A_specs)
    assert run_random_obs(pair, np.random.default_rng(36), [5, 3], 8, distr_obs=distr_obs) == 8


# --- Options -------------------------------------------------------------------

@pytest.mark.parametrize("policy_len", [1, 2, 3])
def test_custom_policies_with_E(policy_len, RefAgent, FaAgent):
    model = make_model(41, [3, 2], [3, 2], [3, 2], None, None)
    rng = np.random.default_rng(42)
    policies = random_policies(rng, [3, 2], policy_len, 5)
    E = rng.dirichlet(np.ones(len(policies)))
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, policies=policies, E=E,
                                                  policy_len=policy_len))
    assert len(pair.fa.policies) == 5
    for p_f, p_r in zip(pair.fa.policies, pair.ref.policies):
        np.testing.assert_array_equal(p_f, p_r)
    np.testing.assert_allclose(pair.fa.E, E, rtol=MODEL_RTOL)
    assert run_random_obs(pair, rng, [3, 2], 4) == 4


def test_custom_policies_fixed_factor(RefAgent, FaAgent):
    """Policies that never move factor 1 (its marginal is one-hot on action 0)."""
    model = make_model(43, [3, 3], [4], [3, 3], None, None)
    policies = [np.array([[a, 0]]) for a in range(3)]
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, policies=policies))
    assert run_random_obs(pair, np.random.default_rng(44), [4], 4) == 4
    assert all(a[1] == 0 for a in pair.fa.prev_actions)


def test_control_fac_idx(RefAgent, FaAgent):
    """pymdp stores control_fac_idx but still builds policies over every control of B."""
    model = make_model(51, [3, 2], [3], [3, 2], None, None)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, control_fac_idx=[0]))
    assert pair.fa.control_fac_idx == [0]
    assert len(pair.fa.policies) == len(pair.ref.policies)
    assert run_random_obs(pair, np.random.default_rng(52), [3], 4) == 4


def test_uncontrolled_factor_default_control_fac_idx(RefAgent, FaAgent):
    model = make_model(53, [2, 3], [3, 2], [1, 3], None, None)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model))
    assert pair.fa.control_fac_idx == pair.ref.control_fac_idx == [1]
    assert run_random_obs(pair, np.random.default_rng(54), [3, 2], 4) == 4


@pytest.mark.parametrize("policy_len", [1, 2, 3])
def test_C_two_dimensional(policy_len, RefAgent, FaAgent):
    """C[m] of shape (num_obs[m], policy_len): one preference vector per future step."""
    model = make_model(61, [3, 2], [3, 2], [2, 2], None, None, C_len=policy_len, C_scale=2.0)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, policy_len=policy_len))
    assert run_random_obs(pair, np.random.default_rng(62), [3, 2], 4) == 4


def test_C_mixed_one_and_two_dimensional(RefAgent, FaAgent):
    model = make_model(63, [3, 2], [3, 2], [2, 2], None, None, C_scale=2.0)
    model["C"][1] = np.random.default_rng(64).standard_normal((2, 2)) * 2.0
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, policy_len=2))
    assert run_random_obs(pair, np.random.default_rng(65), [3, 2], 4) == 4


def test_C_and_D_default(RefAgent, FaAgent):
    model = make_model(66, [3, 2], [3, 2], [2, 2], None, None)
    pair = Pair(RefAgent, FaAgent, A=model["A"], B=model["B"])
    assert_obj_close(pair.fa.C, pair.ref.C, "C")
    assert_obj_close(pair.fa.D, pair.ref.D, "D")
    assert run_random_obs(pair, np.random.default_rng(67), [3, 2], 4) == 4


@pytest.mark.parametrize("gamma", [0.5, 16.0, 64.0])
def test_gamma(gamma, RefAgent, FaAgent):
    model = make_model(71, [3, 2], [3, 2], [3, 2], None, None)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, gamma=gamma))
    assert run_random_obs(pair, np.random.default_rng(72), [3, 2], 4) == 4


@pytest.mark.parametrize("utility,states_ig", [(True, True), (True, False), (False, True)])
def test_param_info_gain_pA_only_and_pB_only(utility, states_ig, RefAgent, FaAgent):
    model = make_model(83, [3, 3], [3, 2], [2, 2], [[0], [0, 1]], [[0, 1], [1]], sparsity=0.2)
    rng = np.random.default_rng(84)
    for which in ("pA", "pB"):
        counts = dirichlet_counts(rng, model[which[1]])
        pair = Pair(RefAgent, FaAgent, **agent_kwargs(
            model, use_param_info_gain=True, use_utility=utility,
            use_states_info_gain=states_ig, policy_len=2, **{which: counts}))
        assert run_random_obs(pair, rng, [3, 2], 4) == 4, which


@pytest.mark.parametrize(CASE_ARGS, [CASES[0], CASES[3], CASES[5], CASES[8]])
def test_distr_obs(num_states, num_obs, num_controls, A_factor_list, B_factor_list,
                   policy_len, RefAgent, FaAgent):
    model = make_model(91, num_states, num_obs, num_controls, A_factor_list, B_factor_list)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, policy_len=policy_len))
    assert run_random_obs(pair, np.random.default_rng(92), num_obs, 4, distr_obs=True) == 4


def test_distr_obs_onehot_equals_index(FaAgent):
    """A one-hot distribution is the same evidence as the index."""
    model = make_model(93, [3, 2], [3, 2], [2, 2], None, None)
    a = FaAgent(**agent_kwargs(model))
    b = FaAgent(**agent_kwargs(model))
    qa = a.infer_states([2, 1])
    qb = b.infer_states(obj_array([np.eye(3)[2], np.eye(2)[1]]), distr_obs=True)
    for f in range(2):
        np.testing.assert_allclose(qa[f], qb[f], atol=1e-6)


@pytest.mark.parametrize("form", ["list", "tuple", "np-ints", "ndarray"])
def test_observation_formats(form, RefAgent, FaAgent):
    model = make_model(95, [3, 2], [3, 2], [2, 2], None, None)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model))
    rng = np.random.default_rng(96)
    for _ in range(3):
        obs = random_obs(rng, [3, 2])
        obs = {"list": obs, "tuple": tuple(obs), "np-ints": [np.int64(o) for o in obs],
               "ndarray": np.array(obs)}[form]
        assert pair.step(obs)


# --- Learning ------------------------------------------------------------------

@pytest.mark.parametrize("modalities,lr", [("all", 1.0), ([1], 0.5)])
def test_update_A(modalities, lr, RefAgent, FaAgent):
    model = make_model(101, [3, 2], [3, 2, 2], [2, 2], [[0], [1], [0, 1]], None, sparsity=0.2)
    rng = np.random.default_rng(102)
    pA = dirichlet_counts(rng, model["A"])
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, pA=pA, modalities_to_learn=modalities,
                                                  lr_pA=lr, use_param_info_gain=True))
    assert_obj_close(pair.fa.A, pair.ref.A, "A after construction (normalised pA)")
    for _ in range(6):
        obs = random_obs(rng, [3, 2, 2])
        pair.infer_states(obs)
        qA_r = pair.ref.update_A(obs)
        qA_f = pair.fa.update_A(obs)
        assert_obj_close(qA_f, qA_r, "qA returned", atol=1e-4)
        assert_obj_close(pair.fa.pA, qA_r, "agent.pA", atol=1e-4)
        assert_obj_close(pair.fa.A, pair.ref.A, "agent.A", atol=PROB_ATOL)
        pair.infer_policies()
        assert pair.sample_action()
    if modalities != "all":
        assert_obj_close(pair.fa.pA[0:1], pA[0:1], "unlearned modality pA", atol=1e-4)


def _run_update_B(pair, rng, num_obs, n_steps, held_reference):
    """Steps with ``update_B`` after each ``infer_states``; the previous beliefs are either
    deep copies or, as pymdp users write it, references kept from the previous step."""
    prev_f = prev_r = None
    for _ in range(n_steps):
        qs_f = pair.infer_states(random_obs(rng, num_obs))
        if prev_f is not None:
            qB_r = pair.ref.update_B(prev_r)
            qB_f = pair.fa.update_B(prev_f)
            assert_obj_close(qB_f, qB_r, "qB returned", atol=1e-4)
            assert_obj_close(pair.fa.pB, qB_r, "agent.pB", atol=1e-4)
            assert_obj_close(pair.fa.B, pair.ref.B, "agent.B", atol=PROB_ATOL)
        if held_reference:
            prev_f, prev_r = qs_f, pair.ref.qs
        else:
            prev_f, prev_r = copy.deepcopy(pair.fa.qs), copy.deepcopy(pair.ref.qs)
        pair.infer_policies()
        if not pair.sample_action():
            break
    return pair.t


@pytest.mark.parametrize("factors,lr", [("all", 1.0), ([0], 2.0)])
def test_update_B(factors, lr, RefAgent, FaAgent):
    """B learning with B_factor_list (factor 0's transitions depend on factors 0 and 1)."""
    model = make_model(111, [3, 2], [3, 2], [2, 2], None, [[0, 1], [1]], sparsity=0.2)
    rng = np.random.default_rng(112)
    pB = dirichlet_counts(rng, model["B"])
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, pB=pB, factors_to_learn=factors,
                                                  lr_pB=lr, use_param_info_gain=True))
    assert _run_update_B(pair, rng, [3, 2], 8, held_reference=False) == 8


def test_update_B_with_held_reference_to_previous_qs(RefAgent, FaAgent):
    """``qs_prev = qs`` before the next ``infer_states`` must still mean the previous beliefs.

    This is how pymdp's examples and users call ``update_B``; with pymdp every
    ``infer_states`` returns a fresh object, so the held reference is unchanged.
    """
    model = make_model(113, [3, 2], [3, 2], [2, 2], None, None)
    rng = np.random.default_rng(114)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, pB=dirichlet_counts(rng, model["B"])))
    assert _run_update_B(pair, rng, [3, 2], 6, held_reference=True) == 6


def test_update_D_from_history_and_explicit(RefAgent, FaAgent):
    model = make_model(121, [3, 2], [3, 2], [2, 2], None, None)
    rng = np.random.default_rng(122)
    pD = dirichlet_counts(rng, model["D"])
    kw = agent_kwargs(model, pD=pD, save_belief_hist=True, lr_pD=0.7)
    del kw["D"]  # D comes from pD, as pymdp users do when learning D
    pair = Pair(RefAgent, FaAgent, **kw)
    assert_obj_close(pair.fa.D, pair.ref.D, "D from pD")
    assert run_random_obs(pair, rng, [3, 2], 5) == 5
    assert len(pair.fa.qs_hist) == len(pair.ref.qs_hist) == 5
    for t, (h_f, h_r) in enumerate(zip(pair.fa.qs_hist, pair.ref.qs_hist)):
        assert_qs(h_f, h_r, [3, 2], f"qs_hist[{t}]")
    assert len(pair.fa.q_pi_hist) == len(pair.ref.q_pi_hist)
    for h_f, h_r in zip(pair.fa.q_pi_hist, pair.ref.q_pi_hist):
        np.testing.assert_allclose(h_f, h_r, atol=PROB_ATOL)
    assert_obj_close(pair.fa.update_D(), pair.ref.update_D(), "qD from qs_hist[0]", atol=1e-4)
    assert_obj_close(pair.fa.D, pair.ref.D, "D", atol=PROB_ATOL)
    qs_t0 = random_distr_obs(rng, [3, 2])
    assert_obj_close(pair.fa.update_D(copy.deepcopy(qs_t0)), pair.ref.update_D(qs_t0),
                     "qD explicit", atol=1e-4)
    assert_obj_close(pair.fa.pD, pair.ref.pD, "pD", atol=1e-4)
    pair.fa.reset()
    pair.ref.reset()
    assert run_random_obs(pair, rng, [3, 2], 3) == 8  # the learned D is the new prior


def test_learning_closed_loop(RefAgent, FaAgent):
    """A, B and D learning together over a 20-step closed loop, then a second episode."""
    model = make_model(131, [3, 2], [3, 2], [3, 2], [[0], [0, 1]], [[0, 1], [1]],
                       near_onehot_B=True, C_scale=2.0)
    rng = np.random.default_rng(132)
    env = RandomEnv(np.random.default_rng(133), model)
    kw = agent_kwargs(model, pA=dirichlet_counts(rng, model["A"], 1.0),
                      pB=dirichlet_counts(rng, model["B"], 1.0),
                      pD=dirichlet_counts(rng, model["D"], 1.0),
                      use_param_info_gain=True, save_belief_hist=True)
    pair = Pair(RefAgent, FaAgent, **kw)
    for episode in range(2):
        obs = env.observe()
        qs_prev = None
        for _ in range(20):
            pair.infer_states(obs)
            pair.ref.update_A(obs)
            pair.fa.update_A(obs)
            if qs_prev is not None:
                pair.ref.update_B(copy.deepcopy(qs_prev))
                pair.fa.update_B(copy.deepcopy(qs_prev))
            qs_prev = copy.deepcopy(pair.ref.qs)
            pair.infer_policies()
            assert pair.sample_action(), f"episode {episode}: split at step {pair.t}"
            obs = env.step(pair.ref.action)
        assert_obj_close(pair.fa.A, pair.ref.A, "A", atol=PROB_ATOL)
        assert_obj_close(pair.fa.B, pair.ref.B, "B", atol=PROB_ATOL)
        assert_obj_close(pair.fa.update_D(), pair.ref.update_D(), "qD", atol=1e-4)
        pair.ref.reset()
        pair.fa.reset()


# --- Agent lifecycle and attributes -------------------------------------------

def assert_attributes(fa, ref):
    """The attributes pymdp users read exist on fa_core's agent with pymdp's values."""
    for name in ("num_states", "num_obs", "num_controls", "control_fac_idx",
                 "A_factor_list", "B_factor_list"):
        v = getattr(fa, name)
        assert isinstance(v, list), f"{name} is {type(v).__name__}, pymdp gives a list"
        assert v == getattr(ref, name), name
    for name in ("num_factors", "num_modalities", "policy_len", "inference_horizon",
                 "inference_algo", "inference_params", "mb_dict", "curr_timestep",
                 "gamma", "alpha", "action_selection", "sampling_mode", "use_utility",
                 "use_states_info_gain", "use_param_info_gain", "modalities_to_learn",
                 "factors_to_learn", "lr_pA", "lr_pB", "lr_pD", "H"):
        assert getattr(fa, name) == getattr(ref, name), name
    assert isinstance(fa.policies, list) and len(fa.policies) == len(ref.policies)
    for p_f, p_r in zip(fa.policies, ref.policies):
        assert np.issubdtype(np.asarray(p_f).dtype, np.integer)
        np.testing.assert_array_equal(p_f, p_r)
    for name in ("A", "B", "C", "D"):
        x = getattr(fa, name)
        assert isinstance(x, np.ndarray) and x.dtype == object, name
        assert_obj_close(x, getattr(ref, name), name)
    np.testing.assert_allclose(fa.E, ref.E, rtol=MODEL_RTOL)
    for name in ("pA", "pB", "pD"):
        if getattr(ref, name) is None:
            assert getattr(fa, name) is None, name
        else:
            assert_obj_close(getattr(fa, name), getattr(ref, name), name)
    if ref.prev_actions is None:
        assert fa.prev_actions is None
    else:
        assert len(fa.prev_actions) == len(ref.prev_actions)
        for a_f, a_r in zip(fa.prev_actions, ref.prev_actions):
            np.testing.assert_array_equal(a_f, a_r)
    if ref.action is None:
        assert fa.action is None
    else:
        np.testing.assert_array_equal(fa.action, ref.action)


@pytest.mark.parametrize(CASE_ARGS, CASES)
def test_attributes(num_states, num_obs, num_controls, A_factor_list, B_factor_list,
                    policy_len, RefAgent, FaAgent):
    model = make_model(141, num_states, num_obs, num_controls, A_factor_list, B_factor_list)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, policy_len=policy_len))
    assert_attributes(pair.fa, pair.ref)
    assert_qs(pair.fa.qs, pair.ref.qs, num_states, "initial qs")
    run_random_obs(pair, np.random.default_rng(142), num_obs, 2)
    assert_attributes(pair.fa, pair.ref)


def test_attributes_with_learning_priors(RefAgent, FaAgent):
    model = make_model(143, [3, 2], [3, 2], [2, 2], None, None)
    rng = np.random.default_rng(144)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(
        model, pA=dirichlet_counts(rng, model["A"]), pB=dirichlet_counts(rng, model["B"]),
        pD=dirichlet_counts(rng, model["D"]), modalities_to_learn=[0], factors_to_learn=[1],
        lr_pA=0.5, lr_pB=0.25, lr_pD=2.0, gamma=8.0, alpha=4.0))
    assert_attributes(pair.fa, pair.ref)


def test_reset(RefAgent, FaAgent):
    model = make_model(151, [3, 2], [3, 2], [2, 2], None, None)
    rng = np.random.default_rng(152)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model))
    assert run_random_obs(pair, rng, [3, 2], 3) == 3
    qs_f = pair.fa.reset()
    qs_r = pair.ref.reset()
    assert_qs(qs_f, qs_r, [3, 2], "reset return")
    assert_qs(pair.fa.qs, qs_r, [3, 2], "qs after reset")
    assert pair.fa.curr_timestep == 0
    assert_attributes(pair.fa, pair.ref)  # includes pymdp's quirk: action is kept
    assert run_random_obs(pair, rng, [3, 2], 3) == 6


def test_reset_with_init_qs(RefAgent, FaAgent):
    model = make_model(153, [3, 2], [3, 2], [2, 2], None, None)
    rng = np.random.default_rng(154)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model))
    assert run_random_obs(pair, rng, [3, 2], 2) == 2
    init = random_distr_obs(rng, [3, 2])
    pair.ref.reset(copy.deepcopy(init))
    pair.fa.reset(copy.deepcopy(init))
    assert_qs(pair.fa.qs, init, [3, 2], "qs after reset(init_qs)")
    assert run_random_obs(pair, rng, [3, 2], 2) == 4


def test_reset_renormalises_learned_parameters(RefAgent, FaAgent):
    """reset() sets A = normalised pA and B = normalised pB, as pymdp does."""
    model = make_model(155, [3, 2], [3, 2], [2, 2], None, None)
    rng = np.random.default_rng(156)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(
        model, pA=dirichlet_counts(rng, model["A"]), pB=dirichlet_counts(rng, model["B"])))
    obs = random_obs(rng, [3, 2])
    pair.infer_states(obs)
    pair.ref.update_A(obs)
    pair.fa.update_A(obs)
    pair.ref.reset()
    pair.fa.reset()
    assert_obj_close(pair.fa.A, pair.ref.A, "A", atol=PROB_ATOL)
    assert_obj_close(pair.fa.B, pair.ref.B, "B", atol=PROB_ATOL)


def test_step_time(RefAgent, FaAgent):
    model = make_model(157, [3, 2], [3, 2], [2, 2], None, None)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model))
    run_random_obs(pair, np.random.default_rng(158), [3, 2], 2)
    assert pair.fa.step_time() == pair.ref.step_time() == 3
    assert_attributes(pair.fa, pair.ref)


# --- Action selection ------------------------------------------------------------

@pytest.mark.parametrize("sampling_mode", ["marginal", "full"])
def test_exact_ties_follow_global_rng(sampling_mode, RefAgent, FaAgent):
    """G = 0 for every policy gives exact ties, broken with the global np.random as pymdp does."""
    model = make_model(161, [3, 2], [3, 2], [3, 2], None, None)
    pair = Pair(RefAgent, FaAgent, **agent_kwargs(model, use_utility=False,
                                                  use_states_info_gain=False,
                                                  sampling_mode=sampling_mode))
    rng = np.random.default_rng(162)
    np.random.seed(163)
    chosen = set()
    for _ in range(12):
        pair.infer_states(random_obs(rng, [3, 2]))
        pair.infer_policies()
        np.testing.assert_allclose(pair.fa.q_pi, 1 / 6, atol=1e-7)
        assert pair.sample_action()
        chosen.add(tuple(pair.fa.action))
    assert len(chosen) > 1  # ties really were broken at random


@pytest.mark.parametrize("sampling_mode", ["marginal", "full"])
@pytest.mark.parametrize("gap", [4e-6, 2e-5])
def test_decided_choices_are_not_treated_as_ties(gap, sampling_mode, RefAgent, FaAgent):
    """A lead far above float32 resolution decides the action, as it does in pymdp.

    With G = 0 for every policy, q_pi = E. Policy 0 leads by ``gap`` (float32
    represents q_pi ~ 0.25 to ~3e-8 and computes it to ~1e-7), so pymdp, whose
    tie tolerance is 1e-8, always picks it. A much wider tie tolerance would turn
    this decided choice into a coin flip.
    """
    model = make_model(163, [3], [3], [4], None, None)
    E = np.array([0.25 + gap, 0.25, 0.25, 0.25 - gap])
    kw = agent_kwargs(model, E=E, use_utility=False, use_states_info_gain=False,
                      sampling_mode=sampling_mode)
    for seed in range(20):
        pair = Pair(RefAgent, FaAgent, **kw)
        np.random.seed(seed)
        pair.infer_states([0])
        pair.infer_policies()
        pair.sample_action()
        assert pair.ref.action[0] == 0
        assert pair.fa.action[0] == 0, (f"global seed {seed}: fa_core picked action "
                                        f"{int(pair.fa.action[0])}, pymdp 0; q_pi {pair.fa.q_pi}")


def _spread_agent(FaAgent, seed=None, **kw):
    model = make_model(171, [3, 2], [3, 2], [3, 2], None, None, C_scale=0.3)
    agent = FaAgent(**agent_kwargs(model, gamma=1.0, alpha=1.0, **kw),
                    **({} if seed is None else {"seed": seed}))
    agent.infer_states([0, 1])
    agent.infer_policies()
    return agent


def _empirical(agent, n):
    return np.array([agent.sample_action() for _ in range(n)], dtype=np.int64)


def _assert_frequencies(samples, probs, what):
    n = len(samples)
    freq = np.bincount(samples, minlength=len(probs)) / n
    bound = 5 * np.sqrt(probs * (1 - probs) / n) + 1e-3
    assert np.all(np.abs(freq - probs) <= bound), f"{what}: freq {freq} vs p {probs}"


@pytest.mark.parametrize("seed", [None, 5])
def test_stochastic_marginal_distribution(seed, FaAgent):
    """Each factor's action ~ softmax(alpha * log marginal), as pymdp's control.sample_action."""
    agent = _spread_agent(FaAgent, seed, action_selection="stochastic")
    np.random.seed(0)
    q_pi = np.asarray(agent.q_pi, dtype=np.float64)
    marg = action_marginals(q_pi, agent.policies, agent.num_controls)
    samples = _empirical(agent, 4000)
    for f, m in enumerate(marg):
        p = np.exp(agent.alpha * np.log(m + 1e-16))
        _assert_frequencies(samples[:, f], p / p.sum(), f"factor {f}")
    assert len(set(map(tuple, samples))) > 1


@pytest.mark.parametrize("seed", [None, 6])
def test_stochastic_full_distribution(seed, FaAgent):
    """The joint first action ~ softmax(alpha * log q_pi) over policies (sampling_mode="full")."""
    agent = _spread_agent(FaAgent, seed, action_selection="stochastic", sampling_mode="full",
                          policy_len=2)
    np.random.seed(0)
    q_pi = np.asarray(agent.q_pi, dtype=np.float64)
    p_pol = np.exp(agent.alpha * np.log(q_pi + 1e-16))
    p_pol /= p_pol.sum()
    p_joint = np.zeros(6)
    for p, pol in zip(p_pol, agent.policies):
        p_joint[int(pol[0, 0]) * 2 + int(pol[0, 1])] += p
    samples = _empirical(agent, 4000)
    _assert_frequencies(samples[:, 0] * 2 + samples[:, 1], p_joint, "joint action")


@pytest.mark.parametrize("sampling_mode", ["marginal", "full"])
def test_seed_reproducible(sampling_mode, FaAgent):
    kw = dict(action_selection="stochastic", sampling_mode=sampling_mode)
    runs = [_empirical(_spread_agent(FaAgent, 1234, **kw), 50) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    gen = [_empirical(_spread_agent(FaAgent, np.random.default_rng(1234), **kw), 50)
           for _ in range(2)]
    np.testing.assert_array_equal(gen[0], gen[1])
    other = _empirical(_spread_agent(FaAgent, 4321, **kw), 50)
    assert not np.array_equal(runs[0], other)


def test_seed_does_not_touch_global_rng(FaAgent):
    agent = _spread_agent(FaAgent, 7, action_selection="stochastic")
    np.random.seed(99)
    before = np.random.get_state()[1].copy()
    _empirical(agent, 20)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_seed_none_uses_global_rng(FaAgent):
    kw = dict(action_selection="stochastic")
    runs = []
    for _ in range(2):
        agent = _spread_agent(FaAgent, **kw)
        np.random.seed(2024)
        runs.append(_empirical(agent, 50))
    np.testing.assert_array_equal(runs[0], runs[1])


# --- Pruned joint states in the information gain ------------------------------------

@pytest.mark.parametrize("beliefs", ["few-kept", "many-kept", "zero-pruned"])
def test_state_info_gain_pruning(beliefs, RefAgent, FaAgent):
    """spm_MDP_G leaves joint states at or below exp(-16) out of the information gain.

    Identity transitions keep the set beliefs through the policy roll-out, so
    the pruned joint states are tiny but nonzero (the kept states are summed
    afresh when few, the pruned share subtracted when many) or exactly zero;
    one modality reads a policy-invariant tail (factor 2, 64 joint states:
    the reduced path), one does not.
    """
    rng = np.random.default_rng(7)
    ns, nc = [4, 4, 4], [2, 2, 1]
    A = obj_array([np.moveaxis(rng.dirichlet(np.ones(3), size=(4, 4, 4)), -1, 0),
                   np.moveaxis(rng.dirichlet(np.ones(2), size=(4, 4)), -1, 0)])
    B = obj_array([np.repeat(np.eye(n)[:, :, None], c, axis=2) for n, c in zip(ns, nc)])
    C = obj_array([rng.normal(size=3), rng.normal(size=2)])
    tiny, rest = 1e-8, (1 - 1e-8) / 3
    init = {"few-kept": [[1 - 3 * tiny, tiny, tiny, tiny]] * 2 + [[0.25] * 4],
            "many-kept": [[tiny, rest, rest, rest], [0.25] * 4, [0.25] * 4],
            "zero-pruned": [[0.0, 1 / 3, 1 / 3, 1 / 3], [0.25] * 4, [0.25] * 4]}[beliefs]
    pair = Pair(RefAgent, FaAgent, A=A, B=B, C=C, A_factor_list=[[0, 1, 2], [0, 1]])
    for agent in (pair.ref, pair.fa):
        agent.reset(init_qs=obj_array([np.array(q) for q in init]))
    pair.infer_policies()
