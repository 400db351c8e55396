"""A steady-state step works in the agent's own buffers.

One step is ``infer_states`` + ``infer_policies`` + ``sample_action``. With
``reuse_buffers=True`` after warm-up it must not accumulate memory
(tracemalloc, 1,000 steps), must not allocate state- or policy-sized
temporaries, and must leave its results in the same arrays a user already
holds (``agent.qs`` entries, ``agent.q_pi``, ``agent.G`` are rewritten in
place). By default (pymdp's semantics) each call returns new arrays instead,
which must not accumulate memory either.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from random_models import random_distr_obs, random_model, random_obs

# pymdp keeps every past action in ``prev_actions`` (fa_core too, by default); the
# bounded histories (``action_hist_len`` / ``belief_hist_len`` of 1,000 here) reach,
# once warmed up past the bound, the steady state where each step frees what it adds.
WARMUP_STEPS = 1_100
MEASURED_STEPS = 1_000
# Constant slack for interpreter bookkeeping (free lists, small caches). Growth
# proportional to steps would show as >= 1,000 x (one 8-byte pointer) = 8 KB.
GROWTH_SLACK_BYTES = 1_024
# Per-call Python overhead (frames, argument tuples, the returned action) is a
# constant ~1.4 KB whatever the model size, plus the conversion of an observation
# distribution (distr_obs) of at most 20 outcomes; the models in the peak test
# make any state- or policy-sized temporary at least 4 KB.
PEAK_SLACK_BYTES = 3_072

CONFIGS = {
    "2f2m": dict(num_states=[3, 2], num_obs=[3, 2], num_controls=[3, 2]),
    "3f-factored-len2": dict(num_states=[3, 2, 2], num_obs=[3, 2], num_controls=[3, 2, 1],
                             A_factor_list=[[0], [1, 2]], B_factor_list=[[0, 1], [1], [2]],
                             agent=dict(policy_len=2)),
    "sparse": dict(num_states=[12], num_obs=[12, 3], num_controls=[4], sparsity=0.85),
    "stochastic-full": dict(num_states=[3, 2], num_obs=[3, 2], num_controls=[3, 2],
                            agent=dict(action_selection="stochastic", sampling_mode="full",
                                       alpha=2.0, seed=0)),
    "stochastic-marginal-global-rng": dict(num_states=[3, 2], num_obs=[3, 2],
                                           num_controls=[3, 2],
                                           agent=dict(action_selection="stochastic", alpha=2.0)),
    "belief-hist": dict(num_states=[3, 2], num_obs=[3, 2], num_controls=[3, 2],
                        agent=dict(save_belief_hist=True)),
    "distr-obs": dict(num_states=[3, 2], num_obs=[3, 2], num_controls=[3, 2], distr_obs=True),
}


def build(FaAgent, cfg, seed=0, reuse_buffers=True):
    model = random_model(np.random.default_rng(seed), cfg["num_states"], cfg["num_obs"],
                         cfg["num_controls"], cfg.get("A_factor_list"), cfg.get("B_factor_list"),
                         sparsity=cfg.get("sparsity", 0.0))
    kw = dict(A=model["A"], B=model["B"], C=model["C"], D=model["D"], reuse_buffers=reuse_buffers,
              action_hist_len=1000, belief_hist_len=1000, **cfg.get("agent", {}))
    for name in ("A_factor_list", "B_factor_list"):
        if cfg.get(name) is not None:
            kw[name] = cfg[name]
    return FaAgent(**kw)


def observations(cfg, n, seed=1):
    """All observations up front, so the measured loop itself allocates nothing."""
    rng = np.random.default_rng(seed)
    make = random_distr_obs if cfg.get("distr_obs") else random_obs
    return [make(rng, cfg["num_obs"]) for _ in range(n)]


def run(agent, obs_list, distr_obs):
    for obs in obs_list:
        agent.infer_states(obs, distr_obs=distr_obs)
        agent.infer_policies()
        agent.sample_action()


def _traced_bytes(snapshot):
    ignore = tracemalloc.Filter(False, tracemalloc.__file__)
    return sum(s.size for s in snapshot.filter_traces([ignore]).statistics("filename"))


@pytest.mark.parametrize("reuse_buffers", [True, False], ids=["reuse", "fresh-results"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_memory_growth_over_1000_steps(name, reuse_buffers, FaAgent):
    cfg = CONFIGS[name]
    distr = bool(cfg.get("distr_obs"))
    agent = build(FaAgent, cfg, reuse_buffers=reuse_buffers)
    obs = observations(cfg, WARMUP_STEPS + MEASURED_STEPS)
    np.random.seed(0)
    # trace from before warm-up, so history entries freed later were traced when made
    tracemalloc.start()
    try:
        run(agent, obs[:WARMUP_STEPS], distr)
        gc.collect()
        before = tracemalloc.take_snapshot()
        run(agent, obs[WARMUP_STEPS:], distr)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = _traced_bytes(after) - _traced_bytes(before)
    top = "\n".join(str(s) for s in after.compare_to(before, "lineno")[:5])
    assert growth <= GROWTH_SLACK_BYTES, f"{growth} B over {MEASURED_STEPS} steps:\n{top}"


PEAK_MODELS = {
    # qs is 1,000 float32 = 4 KB
    "many-states": dict(num_states=[1000], num_obs=[50], num_controls=[4]),
    # q_pi and G are 1,024 float32 = 4 KB each
    "many-policies": dict(num_states=[10, 10], num_obs=[8, 8], num_controls=[32, 32]),
    "many-policies-full": dict(num_states=[10, 10], num_obs=[8, 8], num_controls=[32, 32],
                               agent=dict(sampling_mode="full")),
    "many-states-distr-obs": dict(num_states=[1000], num_obs=[20, 10], num_controls=[4],
                                  distr_obs=True),
}


@pytest.mark.parametrize("name", list(PEAK_MODELS))
def test_step_allocates_no_state_or_policy_sized_temporaries(name, FaAgent):
    cfg = PEAK_MODELS[name]
    distr = bool(cfg.get("distr_obs"))
    agent = build(FaAgent, cfg)
    obs = observations(cfg, 10)
    run(agent, obs[:5], distr)
    peaks = []
    tracemalloc.start()
    try:
        for o in obs[5:]:
            gc.collect()
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            run(agent, [o], distr)
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    assert max(peaks) <= PEAK_SLACK_BYTES, f"transient allocation per step: {peaks} B"


def _held(agent):
    """What a user holding the agent's results has: the arrays themselves."""
    return [q for q in agent.qs], agent.q_pi, agent.G


@pytest.mark.parametrize("name", list(CONFIGS))
def test_results_rewritten_in_place(name, FaAgent):
    cfg = CONFIGS[name]
    distr = bool(cfg.get("distr_obs"))
    agent = build(FaAgent, cfg)
    obs = observations(cfg, 6)
    run(agent, obs[:2], distr)
    qs_k, q_pi_k, G_k = _held(agent)
    for o in obs[2:]:
        qs_ret = agent.infer_states(o, distr_obs=distr)
        q_pi_ret, G_ret = agent.infer_policies()
        agent.sample_action()
        qs_now, q_pi_now, G_now = _held(agent)
        for f, (old, new) in enumerate(zip(qs_k, qs_now)):
            assert np.shares_memory(old, new), f"agent.qs[{f}] is a new array"
            np.testing.assert_array_equal(old, new)
            assert np.shares_memory(qs_ret[f], new), f"returned qs[{f}] is not agent.qs[{f}]"
        assert np.shares_memory(q_pi_k, q_pi_now), "agent.q_pi is a new array"
        assert np.shares_memory(G_k, G_now), "agent.G is a new array"
        assert np.shares_memory(q_pi_ret, q_pi_now) and np.shares_memory(G_ret, G_now)
        np.testing.assert_array_equal(q_pi_k, q_pi_now)
        np.testing.assert_array_equal(G_k, G_now)


def test_in_place_results_do_change(FaAgent):
    """Guard against a vacuous pass: the shared arrays really take the new values."""
    cfg = CONFIGS["2f2m"]
    agent = build(FaAgent, cfg)
    qs_k, q_pi_k, G_k = _held(agent)
    agent.infer_states([0, 0])
    agent.infer_policies()
    first = [q.copy() for q in qs_k], q_pi_k.copy(), G_k.copy()
    agent.sample_action()
    agent.infer_states([2, 1])
    agent.infer_policies()
    assert any(not np.allclose(a, b) for a, b in zip(first[0], qs_k))
    assert not np.allclose(first[1], q_pi_k) or not np.allclose(first[2], G_k)


@pytest.mark.parametrize("name", ["2f2m", "3f-factored-len2", "distr-obs"])
def test_default_returns_fresh_results_held_references_keep_values(name, FaAgent):
    """Without reuse_buffers (pymdp's semantics) a result a user keeps is never overwritten."""
    cfg = CONFIGS[name]
    distr = bool(cfg.get("distr_obs"))
    agent = build(FaAgent, cfg, reuse_buffers=False)
    obs = observations(cfg, 5)
    run(agent, obs[:1], distr)
    for o in obs[1:]:
        qs_k, q_pi_k, G_k = _held(agent)
        kept = [q.copy() for q in qs_k], q_pi_k.copy(), G_k.copy()
        qs_ret = agent.infer_states(o, distr_obs=distr)
        q_pi_ret, G_ret = agent.infer_policies()
        agent.sample_action()
        for f, q in enumerate(qs_k):
            assert not np.shares_memory(q, agent.qs[f]), f"qs[{f}] overwrote a held result"
            np.testing.assert_array_equal(q, kept[0][f])
            assert np.shares_memory(qs_ret[f], agent.qs[f])
        assert not np.shares_memory(q_pi_k, agent.q_pi)
        assert not np.shares_memory(G_k, agent.G)
        np.testing.assert_array_equal(q_pi_k, kept[1])
        np.testing.assert_array_equal(G_k, kept[2])
        assert np.shares_memory(q_pi_ret, agent.q_pi) and np.shares_memory(G_ret, agent.G)
