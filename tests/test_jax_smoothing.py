"""fa_core.jax.Agent with inference_algo="ovf" / "exact" against pymdp 1.0's JAX Agent."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")  # the optional [jax] extra
eqx = pytest.importorskip("equinox")
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402

from pymdp import utils as putils  # noqa: E402
from pymdp.agent import Agent as PymdpAgent  # noqa: E402
from pymdp.envs import TMaze  # noqa: E402
from pymdp.envs.rollout import rollout  # noqa: E402

from fa_core.jax import Agent  # noqa: E402

ATOL = 1e-5


def close(a, b, atol=ATOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)


def learning_agents(algo, seed, num_obs, num_states, num_controls, A_deps, batch_size):
    ka, kb = jr.split(jr.PRNGKey(seed))
    B_deps = [[f] for f in range(len(num_states))]
    A = putils.random_A_array(ka, num_obs, num_states, A_dependencies=A_deps)
    B = putils.random_B_array(kb, num_states, num_controls, B_dependencies=B_deps)
    kw = dict(A_dependencies=A_deps, B_dependencies=B_deps, num_controls=num_controls,
              pA=[a * 4.0 + 0.5 for a in A], pB=[b * 3.0 + 0.25 for b in B], learn_A=True,
              learn_B=True, batch_size=batch_size, inference_algo=algo, num_iter=4)
    return PymdpAgent(A, B, **kw), Agent(A, B, **kw), (A, B, kw)


def assert_same_params(ref, sub):
    for name in ("pA", "A", "pB", "B"):
        for a, b in zip(getattr(ref, name), getattr(sub, name)):
            close(a, b)


def run_window(ref, sub, actions, seed):
    """Filter step by step (as fpi) and learn from the whole growing history each step.

    ``actions`` (batch, T-1, num_factors) may hold -1 (no action: padding). Returns the
    agents after the last step and the filtered histories of ``sub``.
    """
    n, T = ref.batch_size, actions.shape[1] + 1
    keys = jr.split(jr.PRNGKey(seed), T)
    obs_hist = [jnp.zeros((n, 0), jnp.int32) for _ in ref.num_obs]
    hist_r = hist_s = None
    prior_r, prior_s = ref.D, sub.D
    for t in range(T):
        obs = [jr.randint(k, (n, 1), 0, m)
               for k, m in zip(jr.split(keys[t], ref.num_modalities), ref.num_obs)]
        obs_hist = [jnp.concatenate([h, o], 1) for h, o in zip(obs_hist, obs)]
        hist_r = ref.infer_states(obs, prior_r, qs_hist=hist_r)
        hist_s = sub.infer_states(obs, prior_s, qs_hist=hist_s)
        for a, b in zip(hist_r, hist_s):
            close(a, b)
        acts = actions[:, :t]
        new_r = ref.infer_parameters(hist_r, obs_hist, acts, beliefs_B=hist_r)
        new_s = sub.infer_parameters(hist_s, obs_hist, acts, beliefs_B=hist_s)
        assert_same_params(new_r, new_s)
        if t < T - 1:  # the prior of the next step from the action taken (row 0's if none)
            a = jnp.where(actions[:, t] < 0, 0, actions[:, t])
            prior_r = ref.update_empirical_prior(a, hist_r)
            prior_s = sub.update_empirical_prior(a, hist_s)
    return new_r, new_s, hist_s, obs_hist


def test_ovf_learning_matches_pymdp_two_factors():
    # modality 1 sees both factors; row 1 has no action at its first transition (padding)
    ref, sub, (A, B, kw) = learning_agents("ovf", 3, [3, 4], [3, 2], [2, 3], [[0], [0, 1]],
                                           batch_size=2)
    actions = jnp.array([[[1, 2], [0, 1], [1, 0]], [[-1, -1], [1, 2], [0, 0]]], jnp.int32)
    new_r, new_s, hist, obs_hist = run_window(ref, sub, actions, seed=7)
    # smoothing mattered: learning from the filtered history (as fpi does) gives other counts
    fpi = Agent(A, B, **{**kw, "inference_algo": "fpi"})
    plain = fpi.infer_parameters(hist, obs_hist, actions, beliefs_B=hist)
    assert not np.allclose(plain.pA[0], new_s.pA[0], atol=1e-3)
    assert not np.allclose(plain.pB[0], new_s.pB[0], atol=1e-3)


def test_ovf_first_step_and_no_valid_transition_learn_A_from_filtered_beliefs():
    ref, sub, _ = learning_agents("ovf", 5, [3, 4], [3, 2], [2, 3], [[0], [0, 1]], batch_size=2)
    obs = [jnp.array([[0], [2]]), jnp.array([[3], [1]])]
    q_r, q_s = ref.infer_states(obs, ref.D), sub.infer_states(obs, sub.D)
    # the first step: one belief, actions of the (T-1 = 0) past transitions
    none = jnp.full((2, 2), -1, jnp.int32)
    assert_same_params(ref.infer_parameters(q_r, obs, none, beliefs_B=q_r),
                       sub.infer_parameters(q_s, obs, none, beliefs_B=q_s))
    # two beliefs but only invalid actions: no smoothing, B unchanged
    two_r = [jnp.concatenate([q, q], 1) for q in q_r]
    two_s = [jnp.concatenate([q, q], 1) for q in q_s]
    obs2 = [jnp.concatenate([o, o], 1) for o in obs]
    new_r = ref.infer_parameters(two_r, obs2, none[:, None], beliefs_B=two_r)
    new_s = sub.infer_parameters(two_s, obs2, none[:, None], beliefs_B=two_s)
    assert_same_params(new_r, new_s)
    for a, b in zip(new_s.pB, sub.pB):
        np.testing.assert_array_equal(a, b)


def test_exact_learning_matches_pymdp_one_factor():
    ref, sub, _ = learning_agents("exact", 9, [3, 2], [4], [3], [[0], [0]], batch_size=1)
    actions = jnp.array([[[2], [0], [1]]], jnp.int32)
    run_window(ref, sub, actions, seed=2)


def test_smoothing_errors_as_pymdp():
    ka, kb = jr.split(jr.PRNGKey(1))
    A = putils.random_A_array(ka, [2], [2, 2], A_dependencies=[[0, 1]])
    B = putils.random_B_array(kb, [2, 2], [2, 2], B_dependencies=[[0], [1]])
    for cls in (PymdpAgent, Agent):
        with pytest.raises(ValueError, match="single hidden-state factor"):
            cls(A, B, A_dependencies=[[0, 1]], inference_algo="exact")
    with pytest.raises(NotImplementedError, match="supported: fpi, ovf, exact"):
        Agent(A, B, A_dependencies=[[0, 1]], inference_algo="mmp")
    # ovf smooths each factor through its own transitions
    Bc = putils.random_B_array(kb, [2, 2], [2, 2], B_dependencies=[[0], [0, 1]])
    sub = Agent(A, Bc, A_dependencies=[[0, 1]], B_dependencies=[[0], [0, 1]],
                pA=[a + 1.0 for a in A], learn_A=True, inference_algo="ovf")
    q = [jnp.full((1, 2, 2), 0.5)] * 2
    with pytest.raises(ValueError, match="B_dependencies"):
        sub.infer_parameters(q, [jnp.zeros((1, 2), jnp.int32)], jnp.zeros((1, 1, 2), jnp.int32))


def test_pymdp_rollout_with_ovf_learning_gives_pymdp_trajectories():
    # rollout keeps a window of beliefs, observations and actions (padded with -1) for smoothing
    env = TMaze()
    n = 2
    params = env.generate_env_params(batch_size=n)
    pA = [a * 5.0 + 1.0 for a in params["A"]]
    pB = [b * 5.0 + 1.0 for b in params["B"]]
    A = [p / p.sum(1, keepdims=True) for p in pA]
    B = [p / p.sum(1, keepdims=True) for p in pB]
    kw = dict(D=params["D"], A_dependencies=env.A_dependencies, B_dependencies=env.B_dependencies,
              batch_size=n, pA=pA, pB=pB, learn_A=True, learn_B=True, inference_algo="ovf",
              action_selection="stochastic")
    ref, sub = PymdpAgent(A, B, **kw), Agent(A, B, **kw)
    last_r, info_r = rollout(ref, env, 3, jr.PRNGKey(4), env_params=params)
    last_s, info_s = rollout(sub, env, 3, jr.PRNGKey(4), env_params=params)
    np.testing.assert_array_equal(info_r["action"], info_s["action"])
    for a, b in zip(info_r["qs"], info_s["qs"]):
        close(a, b)
    assert_same_params(last_r["agent"], last_s["agent"])
