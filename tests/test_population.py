"""``fa_core.Population``: many agents of one model stepped in one kernel call.

A population step must give what stepping the same agents one by one
through ``fa_core.Agent(model=gm)`` gives (beliefs, ``q_pi``, ``G``, and
actions wherever the choice is not a tie). Agents break ties and sample
stochastic actions from the global ``np.random`` while the population uses
its own per-agent streams, so the comparison feeds the population's actions
back into the agents (``agent.action = pop.actions[i]``) before each next step.

Beyond parity: results and random draws do not depend on the thread count,
seeds reproduce runs, per-agent parameters act per agent, bad observations
are refused before anything changes, membership changes keep the other
agents' state, ``pop[i]`` views work in place, and pickling / hibernation
round-trips exactly.
"""

from __future__ import annotations

import gc
import pickle

import numpy as np
import pytest

import fa_core
from fa_core import builtin_models
from fa_core.population import Population, agent_streams
from random_models import random_model

# Population and Agent run the same float32 kernels, except that a population of
# a small model evaluates policies for eight agents at once (c_infer_policies_block),
# summing in another order: allow for float32 rounding and nothing more.
ATOL = 1e-6
RTOL = 2e-5
# Action probabilities closer than this count as a tie: well above the kernels' own
# tie band (16 float32 epsilons times 1 + the largest policy logit, relative; about
# 2e-4 at the largest logits these models reach), so both sides agree on which
# choices are not ties.
TIE_GAP = 1e-3

# More agents than one OpenMP chunk (64), so two threads both get work.
N_AGENTS = 70
N_STEPS = 4

RANDOM_CONFIGS = {
    "rand-2f2m": dict(num_states=[3, 2], num_obs=[3, 2], num_controls=[3, 2]),
    "rand-factored": dict(num_states=[3, 2, 2], num_obs=[3, 2], num_controls=[3, 2, 1],
                          A_factor_list=[[0], [1, 2]], B_factor_list=[[0, 1], [1], [2]]),
    "rand-sparse": dict(num_states=[12], num_obs=[12, 3], num_controls=[4], sparsity=0.85),
    "rand-len2": dict(num_states=[3, 2], num_obs=[3, 2], num_controls=[2, 2], policy_len=2),
}


def make_model(name: str) -> fa_core.GenerativeModel:
    """A builtin model by name, or one of RANDOM_CONFIGS (seeded by its name)."""
    if name == "four_factor":
        return fa_core.GenerativeModel(**builtin_models.four_factor(policy_len=1))
    if name in builtin_models.MODELS:
        return fa_core.GenerativeModel(**builtin_models.get(name))
    cfg = dict(RANDOM_CONFIGS[name])
    policy_len = cfg.pop("policy_len", 1)
    seed = int.from_bytes(name.encode(), "little") % 2**32
    d = random_model(np.random.default_rng(seed), **cfg)
    return fa_core.GenerativeModel(A=d["A"], B=d["B"], C=d["C"], D=d["D"],
                                   A_factor_list=d["A_factor_list"],
                                   B_factor_list=d["B_factor_list"], policy_len=policy_len)


class Env:
    """True states of ``n`` agents under the model itself; observations sampled from ``A``.

    Driven by the actions the agents choose, so beliefs follow a consistent
    story (no zero-likelihood observations) and decisions vary over steps.
    """

    def __init__(self, gm: fa_core.GenerativeModel, n: int, seed: int):
        self.gm, self.n = gm, n
        self.rng = np.random.default_rng(seed)
        self.A = [np.asarray(a, dtype=np.float64) for a in gm.A]
        self.B = [np.asarray(b, dtype=np.float64) for b in gm.B]
        self.state = np.stack([self._draw(np.repeat(np.asarray(d, np.float64)[:, None], n, 1))
                               for d in gm.D], axis=1)

    def _draw(self, p: np.ndarray) -> np.ndarray:
        """One index per column of ``p`` (outcomes x agents)."""
        cdf = np.cumsum(p, axis=0)
        u = self.rng.random(p.shape[1]) * cdf[-1]
        return np.minimum((cdf < u).sum(axis=0), p.shape[0] - 1)

    def observe(self) -> np.ndarray:
        cols = [self._draw(a[(slice(None), *self.state[:, deps].T)])
                for a, deps in zip(self.A, self.gm.A_factor_list)]
        return np.stack(cols, axis=1).astype(np.int64)

    def step(self, actions: np.ndarray) -> np.ndarray:
        self.state = np.stack(
            [self._draw(b[(slice(None), *self.state[:, deps].T, actions[:, f])])
             for f, (b, deps) in enumerate(zip(self.B, self.gm.B_factor_list))], axis=1)
        return self.observe()


def split_qs(gm, row: np.ndarray) -> list[np.ndarray]:
    return np.split(row, np.cumsum(gm.num_states)[:-1])


def untied(gm, q_pi: np.ndarray, sampling_mode: str) -> np.ndarray:
    """Per factor, whether the action choice from ``q_pi`` has a unique clear winner."""
    pols = np.stack(gm.policies)[:, 0, :]  # first action of every policy
    q = np.asarray(q_pi, dtype=np.float64)
    if sampling_mode == "full":
        top = np.sort(q)[-2:] if q.size > 1 else np.array([-np.inf, q[0]])
        return np.full(gm.num_factors, top[1] - top[0] > TIE_GAP)
    out = np.zeros(gm.num_factors, dtype=bool)
    for f, nc in enumerate(gm.num_controls):
        marg = np.bincount(pols[:, f], weights=q, minlength=nc)
        top = np.sort(marg)[-2:] if nc > 1 else np.array([-np.inf, marg[0]])
        out[f] = top[1] - top[0] > TIE_GAP
    return out


def snapshot(pop: Population) -> dict:
    """Copies of every per-agent array and option of ``pop``."""
    snap = {name: getattr(pop, name).copy() for name in Population._ARRAYS}
    for name in ("lnC", "lnE"):
        arr = getattr(pop, name)
        snap[name] = None if arr is None else arr.copy()
    snap["n_agents"] = pop.n_agents
    return snap


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
            assert a[k].dtype == b[k].dtype, k
        else:
            assert a[k] == b[k], k


def lockstep(gm, pop: Population, agents: list, steps: int, env_seed: int = 0) -> int:
    """Step ``pop`` and ``agents`` on the same observations; returns actions compared."""
    env = Env(gm, len(agents), env_seed)
    obs = env.observe()
    compared = 0
    for t in range(steps):
        pop.step(obs)
        for i, agent in enumerate(agents):
            qs = agent.infer_states(list(obs[i]))
            q_pi, G = agent.infer_policies()
            action = agent.sample_action()
            where = f"agent {i}, step {t}"
            for f, (q_a, q_p) in enumerate(zip(qs, split_qs(gm, pop.qs[i]))):
                np.testing.assert_allclose(q_p, q_a, rtol=RTOL, atol=ATOL,
                                           err_msg=f"qs[{f}], {where}")
            np.testing.assert_allclose(pop.q_pi[i], q_pi, rtol=RTOL, atol=ATOL,
                                       err_msg=f"q_pi, {where}")
            np.testing.assert_allclose(pop.G[i], G, rtol=RTOL, atol=ATOL, err_msg=f"G, {where}")
            if agent.action_selection == "deterministic":
                ok = untied(gm, q_pi, agent.sampling_mode)
                np.testing.assert_array_equal(pop.actions[i][ok], action[ok].astype(np.int32),
                                              err_msg=f"action, {where}")
                compared += int(ok.sum())
            agent.action = pop.actions[i]  # both continue from the same action
        obs = env.step(pop.actions)
    assert np.all(pop.curr_timestep == steps)
    return compared


# -- parity with fa_core.Agent ----------------------------------------------------------


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("name", ["tmaze", "grid10", "four_factor", *RANDOM_CONFIGS])
def test_step_equals_agents_one_by_one(name, n_threads):
    gm = make_model(name)
    n = 12 if name == "four_factor" else N_AGENTS  # four_factor agents are slow one by one
    pop = Population(gm, n, seed=3, n_threads=n_threads)
    agents = [fa_core.Agent(model=gm) for _ in range(n)]
    compared = lockstep(gm, pop, agents, N_STEPS)
    # the comparison must actually have checked actions, not only skipped ties
    # (grid10 is symmetric enough that most of its choices are ties)
    assert compared >= n // 2


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("name", ["tmaze", "rand-2f2m", "rand-factored"])
def test_long_streams_equal_single_blocks(name, n_threads):
    # with enough agents the driver streams groups of up to 64 agents through the block
    # state inference's 8 lanes (a lane whose agent stopped takes the next agent); each
    # lane's arithmetic is its own, so every agent ends bitwise where it ends in a
    # population of one block (whose parity with Agent the tests above check)
    gm = make_model(name)  # blocked, several factors: the block fixed-point iteration
    n, b = 1203, 8  # 1203: groups of 64 and a ragged last block
    big = Population(gm, n, seed=0, n_threads=n_threads, action_selection="deterministic")
    small = [Population(gm, min(b, n - i), seed=0, action_selection="deterministic")
             for i in range(0, n, b)]
    rng = np.random.default_rng(4)
    for _ in range(4):  # random observations: agents stop after 2 to 10 sweeps
        obs = np.stack([rng.integers(0, no, n) for no in gm.num_obs], 1).astype(np.int32)
        big.step(obs)
        for k, pop in enumerate(small):
            pop.step(obs[k * b:(k + 1) * b])
        np.testing.assert_array_equal(big.qs, np.concatenate([p.qs for p in small]))
        np.testing.assert_array_equal(big.q_pi, np.concatenate([p.q_pi for p in small]))
        np.testing.assert_array_equal(big.actions, np.concatenate([p.actions for p in small]))


def test_parity_runs_cover_both_policy_kernels():
    # the parity tests above must exercise the block kernel (small models) and the
    # per-agent one (models with large joints or policy-invariant tails)
    blocked = {name: make_model(name).kmodel.blocked
               for name in ["tmaze", "grid10", "four_factor", *RANDOM_CONFIGS]}
    assert blocked["tmaze"] and blocked["rand-sparse"] and blocked["rand-len2"]
    assert not blocked["grid10"] and not blocked["four_factor"]


def test_parameter_information_gain_matches_agents():
    # pA / pB information gain is evaluated by the per-agent kernel even for small models
    gm0 = make_model("rand-2f2m")
    gm = fa_core.GenerativeModel(
        A=gm0.A, B=gm0.B, C=gm0.C, D=gm0.D,
        pA=[np.asarray(a, np.float64) * 4.0 + 0.5 for a in gm0.A],
        pB=[np.asarray(b, np.float64) * 4.0 + 0.5 for b in gm0.B])
    assert gm.kmodel.blocked
    pop = Population(gm, N_AGENTS, seed=6, n_threads=2, use_param_info_gain=True)
    agents = [fa_core.Agent(model=gm, use_param_info_gain=True) for _ in range(N_AGENTS)]
    assert lockstep(gm, pop, agents, N_STEPS) > 0
    obs = Env(gm, N_AGENTS, 0).observe()
    with_gain = Population(gm, N_AGENTS, seed=6, use_param_info_gain=True)
    plain = Population(gm, N_AGENTS, seed=6)
    with_gain.step(obs)
    plain.step(obs)
    assert not np.allclose(plain.G, with_gain.G)  # the information gain did count


def test_learned_models_match_agents():
    # learning rebuilds only the changed matrices and reuses the block kernel's row index
    # of a one-hot B whose layout it kept; a B whose one-hot pattern changed gets a new one
    gm0 = make_model("tmaze")
    pB = [np.asarray(b, np.float64) * 4.0 for b in gm0.B]
    gm = fa_core.GenerativeModel(A=gm0.A, B=gm0.B, C=gm0.C, D=gm0.D, pB=pB)
    learner = fa_core.Agent(model=gm, seed=0)
    obs = Env(gm, 1, 0).observe()[0]
    for _ in range(3):
        qs_prev = [q.copy() for q in learner.infer_states(list(obs))]
        learner.infer_policies()
        learner.sample_action()
        learner.infer_states(list(obs))
        learner.update_B(qs_prev)
    kept = learner.model
    moved = gm.with_counts(pB=[pB[0][::-1].copy(), gm.pB[1]])  # other rows, still one-hot
    np.testing.assert_array_equal(moved.B[0], pB[0][::-1] / pB[0][::-1].sum(axis=0))
    for learned in (kept, moved):
        assert learned.kmodel.blocked and learned.is_sparse["B"][0][0]
        pop = Population(learned, N_AGENTS, seed=8, n_threads=2)
        agents = [fa_core.Agent(model=learned) for _ in range(N_AGENTS)]
        assert lockstep(learned, pop, agents, N_STEPS) > 0


@pytest.mark.parametrize("options", [
    dict(sampling_mode="full"),
    dict(action_selection="stochastic", alpha=2.0),
    dict(action_selection="stochastic", sampling_mode="full", alpha=2.0),
    dict(use_utility=False),
    dict(use_states_info_gain=False),
    dict(inference_params={"num_iter": 3, "dF": 1.0, "dF_tol": 0.1, "compute_vfe": True}),
], ids=["full", "stochastic", "stochastic-full", "no-utility", "no-info-gain", "inference-params"])
def test_options_match_agent(options):
    gm = make_model("rand-factored")
    pop = Population(gm, N_AGENTS, seed=5, n_threads=2, **options)
    agents = [fa_core.Agent(model=gm, **options) for _ in range(N_AGENTS)]
    compared = lockstep(gm, pop, agents, N_STEPS)
    if options.get("action_selection") != "stochastic":
        assert compared > 0


def test_stages_separately_equal_step():
    gm = make_model("rand-factored")
    a = Population(gm, N_AGENTS, seed=1, action_selection="stochastic", alpha=1.0)
    b = pickle.loads(pickle.dumps(a))
    env = Env(gm, N_AGENTS, 0)
    obs = env.observe()
    for _ in range(3):
        acts = a.step(obs)
        assert b.infer_states(obs) is not None
        q_pi, G = b.infer_policies()
        assert np.shares_memory(q_pi, b.q_pi) and np.shares_memory(G, b.G)
        b.sample_action()
        assert_same_state(snapshot(a), snapshot(b))
        obs = env.step(acts)


# -- threads and random streams ------------------------------------------------------------


def run_population(gm, n, steps, n_threads, seed=11, env_seed=0, **options):
    pop = Population(gm, n, seed=seed, n_threads=n_threads, **options)
    env = Env(gm, n, env_seed)
    obs = env.observe()
    history = []
    for _ in range(steps):
        acts = pop.step(obs)
        history.append(acts.copy())
        obs = env.step(acts)
    return pop, np.stack(history)


@pytest.mark.parametrize("options", [
    dict(),
    dict(sampling_mode="full"),
    dict(action_selection="stochastic", alpha=1.0),
    dict(action_selection="stochastic", sampling_mode="full", alpha=1.0),
], ids=["deterministic", "full", "stochastic", "stochastic-full"])
@pytest.mark.parametrize("name", ["tmaze", "rand-factored"])
def test_results_independent_of_thread_count(name, options):
    gm = make_model(name)
    n = 300  # several OpenMP chunks of 64 agents
    ref_pop, ref_hist = run_population(gm, n, 5, 1, **options)
    for n_threads in (2, 3):
        pop, hist = run_population(gm, n, 5, n_threads, **options)
        np.testing.assert_array_equal(hist, ref_hist)
        assert_same_state(snapshot(pop), snapshot(ref_pop))


def test_same_seed_same_run_different_seed_different_actions():
    gm = make_model("tmaze")
    opts = dict(action_selection="stochastic", alpha=1.0)
    pop_a, hist_a = run_population(gm, 200, 4, 2, seed=7, **opts)
    pop_b, hist_b = run_population(gm, 200, 4, 2, seed=7, **opts)
    np.testing.assert_array_equal(hist_a, hist_b)
    assert_same_state(snapshot(pop_a), snapshot(pop_b))
    pop_c, hist_c = run_population(gm, 200, 4, 2, seed=8, **opts)
    assert not np.array_equal(hist_a, hist_c)
    # agents within one population draw from distinct streams too
    assert len(np.unique(pop_a.rng)) == 200
    assert len({tuple(h) for h in hist_a[0]}) > 1


def test_seed_sequence_accepted():
    gm = make_model("tmaze")
    opts = dict(action_selection="stochastic", alpha=1.0)
    _, hist_a = run_population(gm, 100, 3, 1, seed=np.random.SeedSequence(42), **opts)
    _, hist_b = run_population(gm, 100, 3, 1, seed=42, **opts)
    np.testing.assert_array_equal(hist_a, hist_b)


def test_ties_broken_by_each_agents_stream():
    # uniform preferences and no information gain: every policy ties, so the
    # deterministic choice is a uniform draw among all controls
    gm = make_model("tmaze").replace(C=[np.zeros(4), np.zeros(3), np.zeros(2)])
    pop = Population(gm, 4000, seed=0, use_states_info_gain=False)
    acts = pop.step(np.zeros((4000, 3), dtype=np.int64))[:, 0]
    counts = np.bincount(acts, minlength=4)
    assert np.all(np.abs(counts / 4000 - 0.25) < 0.04), counts


# -- per-agent parameters ------------------------------------------------------------------


def test_per_agent_gamma_C_E_match_agents():
    gm = make_model("rand-2f2m")
    rng = np.random.default_rng(0)
    n = N_AGENTS
    # the population stores gamma as float32: give values float32 holds exactly
    gamma = rng.uniform(0.5, 20.0, n).astype(np.float32).astype(np.float64)
    C = [rng.normal(0.0, 2.0, (n, k)) for k in gm.num_obs]
    E = rng.uniform(0.1, 1.0, (n, gm.num_policies))
    pop = Population(gm, n, gamma=gamma, C=C, E=E, seed=0, n_threads=2)
    agents = [fa_core.Agent(model=gm, gamma=float(gamma[i]), C=[c[i] for c in C], E=E[i])
              for i in range(n)]
    assert lockstep(gm, pop, agents, N_STEPS) > 0
    # the parameters did matter: the shared-default population differs
    plain = Population(gm, n, seed=0)
    plain.step(Env(gm, n, 0).observe())
    fresh = Population(gm, n, gamma=gamma, C=C, E=E, seed=0)
    fresh.step(Env(gm, n, 0).observe())
    assert not np.allclose(plain.G, fresh.G)
    assert not np.allclose(plain.q_pi, fresh.q_pi)


def test_per_agent_C_time_columns_with_policy_len_2():
    gm = make_model("rand-len2")
    rng = np.random.default_rng(1)
    C = [rng.normal(0.0, 2.0, (N_AGENTS, k)) for k in gm.num_obs]
    pop = Population(gm, N_AGENTS, C=C, seed=0)
    agents = [fa_core.Agent(model=gm, C=[c[i] for c in C]) for i in range(N_AGENTS)]
    assert lockstep(gm, pop, agents, 3) > 0


def test_gamma_zero_gives_prior_over_policies():
    gm = make_model("tmaze")
    E = np.tile([0.1, 0.2, 0.3, 0.4], (3, 1))
    pop = Population(gm, 3, gamma=[0.0, 16.0, 0.0], E=E)
    pop.step(np.zeros((3, 3), dtype=np.int64))
    np.testing.assert_allclose(pop.q_pi[0], E[0], atol=1e-6)
    np.testing.assert_allclose(pop.q_pi[2], E[0], atol=1e-6)
    assert not np.allclose(pop.q_pi[1], E[0], atol=1e-2)


def test_per_agent_alpha():
    # alpha = 0 samples controls uniformly; a huge alpha picks the most probable one
    gm = make_model("tmaze")
    n = 4000
    alpha = np.where(np.arange(n) < n // 2, 0.0, 1e4)
    pop = Population(gm, n, alpha=alpha, action_selection="stochastic", seed=0)
    det = Population(gm, n, seed=0)
    obs = np.zeros((n, 3), dtype=np.int64)
    acts, best = pop.step(obs)[:, 0], det.step(obs)[:, 0]
    assert untied(gm, det.q_pi[0], "marginal")[0]
    np.testing.assert_array_equal(acts[n // 2:], best[n // 2:])
    counts = np.bincount(acts[:n // 2], minlength=4) / (n // 2)
    assert np.all(np.abs(counts - 0.25) < 0.05), counts


@pytest.mark.parametrize("kwargs, name", [
    (dict(gamma=np.ones(3)), "gamma"),
    (dict(alpha=[1.0, np.nan, 1.0, 1.0]), "alpha"),
    (dict(C=[np.zeros((4, 4)), np.zeros((4, 3))]), "C"),
    (dict(E=np.ones((4, 5))), "E"),
    (dict(E=-np.ones((4, 4))), "E"),
])
def test_bad_per_agent_parameters(kwargs, name):
    gm = make_model("tmaze")
    with pytest.raises(ValueError, match=name):
        Population(gm, 4, **kwargs)


# -- bad observations ------------------------------------------------------------------------


STEPPED_OPTIONS = dict(action_selection="stochastic", alpha=3.0)


def stepped_population(n=N_AGENTS):
    """A population with per-agent C, two steps in; returns it, its model, next obs and C."""
    gm = make_model("rand-factored")
    rng = np.random.default_rng(0)
    C = [rng.normal(size=(n, k)) for k in gm.num_obs]
    pop = Population(gm, n, seed=2, C=C, **STEPPED_OPTIONS)
    env = Env(gm, n, 0)
    obs = env.observe()
    for _ in range(2):
        obs = env.step(pop.step(obs))
    return gm, pop, obs, C


def bad_observations(gm, good):
    n, nm = good.shape
    out_of_range = good.copy()
    out_of_range[n - 1, nm - 1] = gm.num_obs[-1]  # valid rows before it must not be processed
    negative = good.copy()
    negative[n // 2, 0] = -1
    huge = good.copy()
    huge[0, 0] = 2**40
    return {
        "too-few-modalities": (good[:, :-1], ValueError),
        "too-many-modalities": (np.hstack([good, good[:, :1]]), ValueError),
        "too-few-agents": (good[:-1], ValueError),
        "one-agent-row": (good[0], ValueError),
        "3d": (good[:, :, None], ValueError),
        "out-of-range": (out_of_range, ValueError),
        "negative": (negative, ValueError),
        "beyond-int32": (huge, ValueError),
        "float": (good.astype(np.float64), TypeError),
        "float32": (good.astype(np.float32), TypeError),
        "bool": (good.astype(bool), TypeError),
        "object": (good.astype(object), TypeError),
        "string": (good.astype(str), TypeError),
    }


@pytest.mark.parametrize("method", ["step", "infer_states"])
def test_bad_observations_refused_and_population_unchanged(method):
    gm, pop, good, _ = stepped_population()
    twin = pickle.loads(pickle.dumps(pop))
    before = snapshot(pop)
    for label, (obs, error) in bad_observations(gm, good).items():
        with pytest.raises(error, match="obs") as info:
            getattr(pop, method)(obs)
        assert_same_state(snapshot(pop), before)
        assert "obs" in str(info.value), label
    # nothing hidden changed either: both continue identically
    pop.step(good)
    twin.step(good)
    assert_same_state(snapshot(pop), snapshot(twin))


def test_observation_as_nested_list_and_small_int_dtypes():
    gm, pop, good, _ = stepped_population()
    twins = [pickle.loads(pickle.dumps(pop)) for _ in range(3)]
    pop.step(good)
    twins[0].step(good.tolist())
    twins[1].step(good.astype(np.uint8))
    twins[2].step(np.asfortranarray(good.astype(np.int16)))
    for twin in twins:
        assert_same_state(snapshot(pop), snapshot(twin))


# -- membership ------------------------------------------------------------------------------


def test_add_keeps_existing_agents_and_new_ones_start_fresh():
    gm, pop, obs, C = stepped_population(20)
    twin = pickle.loads(pickle.dumps(pop))
    before = snapshot(pop)
    new = pop.add(5)
    np.testing.assert_array_equal(new, np.arange(20, 25))
    assert pop.n_agents == len(pop) == 25
    after = snapshot(pop)
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(after[k][:20], v, err_msg=k)
    np.testing.assert_array_equal(pop.qs[20:], np.tile(pop._uniform_qs(), (5, 1)))
    np.testing.assert_array_equal(pop.has_action[20:], 0)
    np.testing.assert_array_equal(pop.curr_timestep[20:], 0)
    assert len(np.unique(pop.rng)) == 25  # fresh streams, not copies of old ones

    # old agents continue exactly as without the newcomers (their streams included)
    new_obs = Env(gm, 5, 9).observe()
    pop.step(np.vstack([obs, new_obs]))
    twin.step(obs)
    state, ref = snapshot(pop), snapshot(twin)
    for k, v in ref.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(state[k][:20], v, err_msg=k)

    # newcomers behave like fresh agents; per-agent C of a newcomer is agent 0's
    for i in range(5):
        agent = fa_core.Agent(model=gm, C=[c[0] for c in C], **STEPPED_OPTIONS)
        qs = agent.infer_states(list(new_obs[i]))
        q_pi, G = agent.infer_policies()
        np.testing.assert_allclose(pop.qs[20 + i], np.concatenate(qs), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(pop.q_pi[20 + i], q_pi, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(pop.G[20 + i], G, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("per_agent_C", [False, True], ids=["shared-C", "per-agent-C"])
def test_add_one_at_a_time_reallocates_rarely(per_agent_C):
    gm = make_model("tmaze")
    C = [np.ones((10, k)) for k in gm.num_obs] if per_agent_C else None
    pop = Population(gm, 10, C=C, seed=0)
    pop.step(np.zeros((10, 3), dtype=np.int64))
    first = pop.qs.copy()
    arrays = ["qs", "q_pi", "rng"] + (["lnC"] if per_agent_C else [])
    buffers = {name: set() for name in arrays}
    for _ in range(1000):
        pop.add(1)
        for name in arrays:
            buffers[name].add(getattr(pop, name).__array_interface__["data"][0])
    assert len(pop) == 1010
    np.testing.assert_array_equal(pop.qs[:10], first)
    for name, seen in buffers.items():
        # geometric growth: O(log n) reallocations, not a copy of every agent per add
        assert len(seen) <= 12, f"{name} was reallocated {len(seen)} times in 1000 add(1) calls"


@pytest.mark.parametrize("removed", [[1, 4], [4, 1, 1], [18, 19], [0, 5, 19, 10], [],
                                     list(range(20))],
                         ids=["two", "duplicates", "tail", "mixed", "none", "all"])
def test_remove_moves_last_agents_and_keeps_state(removed):
    gm, pop, obs, C = stepped_population(20)
    gamma = np.linspace(1.0, 20.0, 20)
    pop.gamma = gamma
    twin = pickle.loads(pickle.dumps(pop))
    before = snapshot(pop)
    moved = pop.remove(removed)
    gone = set(removed)
    survivors = [j for j in range(20) if j not in gone]
    assert pop.n_agents == len(survivors)
    new_index = {j: moved.get(j, j) for j in survivors}
    assert sorted(new_index.values()) == list(range(len(survivors)))
    assert all(src not in gone and src != dst for src, dst in moved.items())
    assert len(moved) <= len(gone)  # only as many moves as holes
    state = snapshot(pop)
    for j, k in new_index.items():
        for name, v in before.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(state[name][k], v[j], err_msg=f"{name} of agent {j}")
    if not survivors:
        return
    # the survivors continue exactly as they would have
    order = sorted(survivors, key=new_index.get)
    pop.step(obs[order])
    twin.step(obs)
    state, ref = snapshot(pop), snapshot(twin)
    for name, v in ref.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(state[name], v[order], err_msg=name)


def test_remove_out_of_range_changes_nothing():
    gm, pop, _, _ = stepped_population(10)
    before = snapshot(pop)
    for bad in ([10], [-1], [3, 10]):
        with pytest.raises(IndexError):
            pop.remove(bad)
        assert_same_state(snapshot(pop), before)


def test_add_after_remove_and_empty_population():
    gm = make_model("tmaze")
    pop = Population(gm, 0, seed=0)
    assert pop.step(np.zeros((0, 3), dtype=np.int64)).shape == (0, 2)
    pop.add(3)
    pop.step(np.zeros((3, 3), dtype=np.int64))
    pop.remove([0, 1, 2])
    pop.add(2)
    np.testing.assert_array_equal(pop.has_action, 0)
    np.testing.assert_array_equal(pop.curr_timestep, 0)
    pop.step(np.zeros((2, 3), dtype=np.int64))
    ref = Population(gm, 2, seed=0)
    ref.step(np.zeros((2, 3), dtype=np.int64))
    np.testing.assert_array_equal(pop.qs, ref.qs)
    np.testing.assert_array_equal(pop.q_pi, ref.q_pi)


def test_given_streams_make_a_slice_of_the_population():
    """Agents built apart from slices of agent_streams are the population's agents (the hook
    fa_core.distributed uses), in construction and in add()."""
    gm = make_model("tmaze")
    whole = Population(gm, 9, seed=5)
    whole.add(4)
    seq = np.random.SeedSequence(5)
    words = agent_streams(seq, 0, 9)
    np.testing.assert_array_equal(agent_streams(seq, 0, 4), words[:4])  # prefixes agree
    part = Population(gm, 3, streams=words[2:5])
    part.add(2, streams=agent_streams(seq, 1, 4)[1:3])
    np.testing.assert_array_equal(part.rng, whole.rng[[2, 3, 4, 10, 11]])
    before = snapshot(part)
    for bad in (words[:2], words[:3].astype(np.int64)):
        with pytest.raises(ValueError, match="streams"):
            part.add(3, streams=bad)
        assert_same_state(snapshot(part), before)
    with pytest.raises(ValueError, match="streams"):
        Population(gm, 3, streams=words[:4])


def test_reset_restarts_every_agent():
    gm, pop, obs, C = stepped_population()
    pop.reset()
    np.testing.assert_array_equal(pop.qs, np.tile(pop._uniform_qs(), (pop.n_agents, 1)))
    np.testing.assert_array_equal(pop.has_action, 0)
    np.testing.assert_array_equal(pop.curr_timestep, 0)
    pop.step(obs)
    fresh = Population(gm, pop.n_agents, C=C, seed=2, **STEPPED_OPTIONS)
    fresh.step(obs)
    np.testing.assert_allclose(pop.qs, fresh.qs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(pop.q_pi, fresh.q_pi, rtol=RTOL, atol=ATOL)


# -- pop[i] views ----------------------------------------------------------------------------


def test_view_shares_rows():
    gm = make_model("rand-factored")
    pop = Population(gm, 5, seed=0)
    pop.step(Env(gm, 5, 0).observe())
    v = pop[3]
    assert isinstance(v, fa_core.Agent)
    assert v.model is gm
    for q in v.qs:
        assert np.shares_memory(q, pop.qs[3])
    assert np.shares_memory(v.q_pi, pop.q_pi[3]) and np.shares_memory(v.G, pop.G[3])
    np.testing.assert_array_equal(np.concatenate(v.qs), pop.qs[3])
    np.testing.assert_array_equal(v.action, pop.actions[3])
    assert v.curr_timestep == 1
    assert np.shares_memory(pop[-2].qs[0], pop.qs[3])
    # writes through the view land in the population, and the other way round
    new = [np.eye(n)[0] for n in gm.num_states]
    v.qs = new
    np.testing.assert_array_equal(pop.qs[3], np.concatenate(new))
    pop.set("qs", pop._uniform_qs(), rows=[3])
    np.testing.assert_array_equal(np.concatenate(v.qs), pop._uniform_qs())
    for bad in (5, -6):
        with pytest.raises(IndexError):
            pop[bad]


def test_view_methods_update_the_population_row():
    gm = make_model("rand-factored")
    pop = Population(gm, 6, seed=0)
    env = Env(gm, 6, 0)
    obs = env.observe()
    pop.step(obs)
    obs = env.step(pop.actions)
    twin = pickle.loads(pickle.dumps(pop))
    twin.infer_states(obs)
    twin.infer_policies()
    before = snapshot(pop)
    v = pop[2]
    v.infer_states(list(obs[2]))
    v.infer_policies()
    np.testing.assert_allclose(pop.qs[2], twin.qs[2], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(pop.q_pi[2], twin.q_pi[2], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(pop.G[2], twin.G[2], rtol=RTOL, atol=ATOL)
    action = v.sample_action()
    np.testing.assert_array_equal(pop.actions[2], action.astype(np.int32))
    after = snapshot(pop)
    for name in ("qs", "q_pi", "G", "actions", "curr_timestep"):  # the other rows are untouched
        np.testing.assert_array_equal(np.delete(after[name], 2, 0), np.delete(before[name], 2, 0))
    assert pop.curr_timestep[2] == v.curr_timestep == 2
    v.gamma = 3.0
    assert pop.gamma[2] == 3.0 and pop.gamma[1] == 16.0


def test_view_stays_current_across_growth_and_is_not_picklable():
    gm = make_model("tmaze")
    pop = Population(gm, 2, seed=0)
    v = pop[1]
    pop.add(100)  # reallocates the storage
    pop.step(np.zeros((102, 3), dtype=np.int64))
    np.testing.assert_array_equal(np.concatenate(v.qs), pop.qs[1])
    np.testing.assert_array_equal(v.q_pi, pop.q_pi[1])
    np.testing.assert_array_equal(v.action, pop.actions[1])
    assert v.curr_timestep == 1
    with pytest.raises(TypeError):
        pickle.dumps(v)


def test_view_sample_action_is_seen_by_population_step():
    # after a reset (no previous action), an action chosen through the view must
    # be the one the population predicts from at its next step
    gm = make_model("tmaze")
    pop = Population(gm, 2, seed=0)
    pop.reset()
    v = pop[0]
    v.infer_states([0, 0, 0])
    v.infer_policies()
    v.sample_action()
    twin = Population(gm, 2, seed=0)
    twin.step(np.zeros((2, 3), dtype=np.int64))
    twin.set("actions", pop.actions[0], rows=[0])
    obs = np.array([[3, 0, 1], [3, 0, 1]])
    pop.infer_states(obs)
    twin.infer_states(obs)
    np.testing.assert_allclose(pop.qs[0], twin.qs[0], rtol=RTOL, atol=ATOL)


def test_view_taken_before_a_step_stays_current():
    # a view must read the row's state when used, not the state when it was made
    gm = make_model("tmaze")
    pop = Population(gm, 3, seed=1, n_threads=1)
    v = pop[1]
    pop.step(np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]]))
    twin = pickle.loads(pickle.dumps(pop))
    obs = np.array([[3, 0, 0], [3, 0, 1], [3, 0, 0]])
    twin.infer_states(obs)
    v.infer_states(list(obs[1]))
    np.testing.assert_allclose(pop.qs[1], twin.qs[1], rtol=RTOL, atol=ATOL)


def test_view_refused_with_per_agent_C():
    gm, pop, _, _ = stepped_population(4)
    with pytest.raises(NotImplementedError):
        pop[0]


# -- persistence -----------------------------------------------------------------------------


def _continue(pop, env_seed, steps=3):
    env = Env(pop.model, pop.n_agents, env_seed)
    obs = env.observe()
    for _ in range(steps):
        obs = env.step(pop.step(obs))
    return snapshot(pop)


@pytest.mark.parametrize("how", ["pickle", "hibernate"])
def test_round_trip_exact_and_continues_identically(how):
    gc.collect()  # an equal model from an earlier test, alive only in a cycle, would be reused
    gm, pop, _, _ = stepped_population(90)
    pop.gamma = np.linspace(1.0, 20.0, 90)
    pop.remove([3, 7])
    pop.add(4)  # capacity now exceeds n_agents; that must not leak into the copy
    pop.step(Env(gm, pop.n_agents, 4).observe())
    before = snapshot(pop)
    if how == "pickle":
        copy = pickle.loads(pickle.dumps(pop, protocol=pickle.HIGHEST_PROTOCOL))
    else:
        blob = pop.hibernate()
        assert isinstance(blob, bytes)
        copy = Population.wake(blob)
    assert isinstance(copy, Population)
    assert_same_state(snapshot(copy), before)
    for name in ("action_selection", "sampling_mode", "use_utility", "use_states_info_gain",
                 "use_param_info_gain", "inference_params", "n_threads"):
        assert getattr(copy, name) == getattr(pop, name), name
    assert copy.model.num_states == gm.num_states and copy.model.num_obs == gm.num_obs
    assert copy.model is gm  # the live equal model is reused, not duplicated
    for name in Population._ARRAYS:
        assert not np.shares_memory(getattr(copy, name), getattr(pop, name))
    assert_same_state(_continue(copy, 5), _continue(pop, 5))
    # members added after waking get the same fresh streams as in the original
    assert np.array_equal(copy.add(2), pop.add(2))
    np.testing.assert_array_equal(copy.rng, pop.rng)


def test_wake_refuses_other_objects():
    with pytest.raises(fa_core.CorruptStateError, match="corrupt or truncated"):
        Population.wake(pickle.dumps({"not": "a population"}))


def test_hibernated_size_is_per_agent_state_plus_one_model():
    gm = make_model("grid10")
    small = len(Population(gm, 10, seed=0).hibernate())
    large = len(Population(gm, 1010, seed=0).hibernate())
    per_agent = (large - small) / 1000
    state = (sum(gm.num_states) + 2 * gm.num_policies) * 4 + gm.num_factors * 4 + 1 + 8 + 8 + 4 + 4
    assert per_agent <= 1.1 * state + 16
