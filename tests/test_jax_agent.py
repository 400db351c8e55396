"""fa_core.jax.Agent against pymdp 1.0's JAX Agent (pymdp.agent.Agent), in the same process."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")  # the optional [jax] extra
eqx = pytest.importorskip("equinox")
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import jax.tree_util as jtu  # noqa: E402

from pymdp import utils as putils  # noqa: E402
from pymdp.agent import Agent as PymdpAgent  # noqa: E402
from pymdp.envs import GridWorld, TMaze  # noqa: E402
from pymdp.envs.rollout import rollout  # noqa: E402

import fa_core.jax as fj  # noqa: E402
from fa_core.jax import Agent  # noqa: E402
from fa_core.jax import host  # noqa: E402

ATOL = 2e-5  # probabilities, float32 both sides
RTOL_G = 1e-4


def close(a, b, atol=ATOL, rtol=0.0):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


def random_model(seed, num_obs=(3, 4), num_states=(3, 2), num_controls=(2, 3),
                 A_deps=((0,), (0, 1)), B_deps=((0,), (0, 1))):
    """A small random model in which modality 1 and factor 1 depend on both factors."""
    ka, kb, kc = jr.split(jr.PRNGKey(seed), 3)
    A_deps, B_deps = [list(d) for d in A_deps], [list(d) for d in B_deps]
    A = putils.random_A_array(ka, list(num_obs), list(num_states), A_dependencies=A_deps)
    B = putils.random_B_array(kb, list(num_states), list(num_controls), B_dependencies=B_deps)
    C = [jr.normal(k, (n,)) for k, n in zip(jr.split(kc, len(num_obs)), num_obs)]
    kw = dict(A_dependencies=A_deps, B_dependencies=B_deps, num_controls=list(num_controls))
    return A, B, C, kw


def both(A, B, **kw):
    return PymdpAgent(A, B, **kw), Agent(A, B, **kw)


def random_obs(key, agent):
    keys = jr.split(key, agent.num_modalities)
    return [jr.randint(k, (agent.batch_size, 1), 0, n) for k, n in zip(keys, agent.num_obs)]


# every sampling mode, each batch size with both selections (four cases keep compile time down)
@pytest.mark.parametrize("batch_size,selection,mode", [
    (1, "deterministic", "full"), (3, "deterministic", "marginal"),
    (3, "stochastic", "full"), (1, "stochastic", "marginal")])
def test_steps_match_pymdp(batch_size, selection, mode):
    A, B, C, kw = random_model(batch_size * 10 + len(selection) + len(mode))
    ref, sub = both(A, B, C=C, policy_len=2, gamma=3.0, alpha=2.0, batch_size=batch_size,
                    action_selection=selection, sampling_mode=mode, num_iter=5, **kw)

    @eqx.filter_jit  # one compilation per agent for all steps (pymdp's eager path is slow)
    def step(agent, obs, prior, keys):
        qs = agent.infer_states(obs, prior)
        q_pi, G = agent.infer_policies(qs)
        act = agent.sample_action(q_pi, rng_key=keys)
        return qs, q_pi, G, act, agent.update_empirical_prior(act, qs)

    prior_r, prior_s = ref.D, sub.D
    key = jr.PRNGKey(7)
    for _t in range(3):
        key, ko, ks = jr.split(key, 3)
        obs = random_obs(ko, ref)
        keys = jr.split(ks, batch_size)
        qs_r, q_pi_r, G_r, act_r, prior_r = step(ref, obs, prior_r, keys)
        qs_s, q_pi_s, G_s, act_s, prior_s = step(sub, obs, prior_s, keys)
        for a, b in zip(qs_r, qs_s):
            close(a, b)
        close(q_pi_r, q_pi_s)
        close(G_r, G_s, atol=1e-4, rtol=RTOL_G)
        assert act_s.shape == (batch_size, ref.num_factors)
        np.testing.assert_array_equal(act_r, act_s)
        for a, b in zip(prior_r, prior_s):
            close(a, b)


def test_qs_hist_matches_pymdp():
    A, B, C, kw = random_model(3)
    ref, sub = both(A, B, C=C, batch_size=2, **kw)
    obs = random_obs(jr.PRNGKey(1), ref)
    hist = [jnp.broadcast_to(d[:, None], (2, 1, d.shape[-1])) for d in ref.D]
    qs_r = ref.infer_states(obs, ref.D, qs_hist=hist)
    qs_s = sub.infer_states(obs, sub.D, qs_hist=hist)
    for a, b in zip(qs_r, qs_s):
        assert b.shape == (2, 2, a.shape[-1])
        close(a, b)
    for a, b in zip(ref.infer_policies(qs_r), sub.infer_policies(qs_s)):
        close(a, b, atol=1e-4, rtol=RTOL_G)


def test_learning_A_and_B_matches_pymdp():
    A, B, C, kw = random_model(11)
    pA = [a * 4.0 + 0.5 for a in A]
    pB = [b * 3.0 + 0.25 for b in B]
    ref, sub = both(A, B, C=C, pA=pA, pB=pB, learn_A=True, learn_B=True, batch_size=2,
                    **kw)
    key = jr.PRNGKey(5)
    qs_r = [jnp.broadcast_to(d[:, None], (2, 1, d.shape[-1])) for d in ref.D]
    qs_s = qs_r
    action = jnp.zeros((2, ref.num_factors), jnp.int32)
    for _t in range(3):
        key, ko = jr.split(key)
        obs = random_obs(ko, ref)
        new_r = ref.infer_states(obs, ref.update_empirical_prior(action, qs_r))
        new_s = sub.infer_states(obs, sub.update_empirical_prior(action, qs_s))
        beliefs_B_r = [jnp.concatenate([a, b], 1) for a, b in zip(qs_r, new_r)]
        beliefs_B_s = [jnp.concatenate([a, b], 1) for a, b in zip(qs_s, new_s)]
        ref = ref.infer_parameters(new_r, obs, action[:, None], beliefs_B=beliefs_B_r)
        sub = sub.infer_parameters(new_s, obs, action[:, None], beliefs_B=beliefs_B_s)
        for name in ("A", "pA", "B", "pB"):
            for a, b in zip(getattr(ref, name), getattr(sub, name)):
                close(a, b, atol=1e-5, rtol=1e-5)
        q_pi_r, _ = ref.infer_policies(new_r)
        q_pi_s, _ = sub.infer_policies(new_s)
        close(q_pi_r, q_pi_s)  # computed with the learnt (registered) model
        action = ref.sample_action(q_pi_r)
        np.testing.assert_array_equal(action, sub.sample_action(q_pi_s))
        qs_r, qs_s = new_r, new_s
    # learning gave each batch row its own compiled model
    assert len(set(np.asarray(sub.model_id).tolist())) == 2


def tmaze_agents(batch_size, **options):
    env = TMaze()
    params = env.generate_env_params(batch_size=batch_size)
    C = [jnp.zeros((batch_size, a.shape[1])) for a in params["A"]]
    C[1] = C[1].at[:, 1].set(3.0).at[:, 2].set(-3.0)
    kw = dict(C=C, D=params["D"], A_dependencies=env.A_dependencies,
              B_dependencies=env.B_dependencies, batch_size=batch_size, policy_len=2, **options)
    return env, params, PymdpAgent(params["A"], params["B"], **kw), Agent(
        params["A"], params["B"], **kw)


def assert_same_rollout(info_r, info_s):
    np.testing.assert_array_equal(info_r["action"], info_s["action"])
    for a, b in zip(info_r["observation"], info_s["observation"]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(info_r["qs"], info_s["qs"]):
        close(a, b)
    close(info_r["qpi"], info_s["qpi"])
    close(info_r["neg_efe"], info_s["neg_efe"], atol=1e-4, rtol=RTOL_G)


def test_pymdp_rollout_tmaze_gives_pymdp_trajectories():
    env, params, ref, sub = tmaze_agents(3, action_selection="stochastic",
                                         sampling_mode="marginal", gamma=4.0, alpha=2.0)
    run = jax.jit(rollout, static_argnums=(1, 2))
    _, info_r = run(ref, env, 4, jr.PRNGKey(3), env_params=params)
    last, info_s = run(sub, env, 4, jr.PRNGKey(3), env_params=params)
    assert isinstance(last["agent"], Agent)
    assert_same_rollout(info_r, info_s)


def test_pymdp_rollout_gridworld_gives_pymdp_trajectories():
    env = GridWorld(shape=(3, 3), initial_position=(0, 0))
    n = 2
    params = env.generate_env_params(batch_size=n)
    ns = params["A"][0].shape[1]
    C = [jnp.zeros((n, a.shape[1])).at[:, a.shape[1] - 1].set(2.0) for a in params["A"]]
    kw = dict(C=C, D=params["D"], A_dependencies=env.A_dependencies,
              B_dependencies=env.B_dependencies, batch_size=n, policy_len=2)
    ref = PymdpAgent(params["A"], params["B"], **kw)
    sub = Agent(params["A"], params["B"], **kw)
    assert sub.num_states == [ns]
    _, info_r = rollout(ref, env, 3, jr.PRNGKey(0), env_params=params)
    _, info_s = rollout(sub, env, 3, jr.PRNGKey(0), env_params=params)
    assert_same_rollout(info_r, info_s)


def test_rollout_with_online_A_learning():
    env = TMaze()
    n = 2
    params = env.generate_env_params(batch_size=n)
    pA = [a * 5.0 + 1.0 for a in params["A"]]
    A = [p / p.sum(1, keepdims=True) for p in pA]
    kw = dict(D=params["D"], A_dependencies=env.A_dependencies, B_dependencies=env.B_dependencies,
              batch_size=n, pA=pA, learn_A=True)
    ref, sub = PymdpAgent(A, params["B"], **kw), Agent(A, params["B"], **kw)
    last_r, info_r = rollout(ref, env, 3, jr.PRNGKey(1), env_params=params)
    last_s, info_s = rollout(sub, env, 3, jr.PRNGKey(1), env_params=params)
    assert_same_rollout(info_r, info_s)
    for a, b in zip(last_r["agent"].pA, last_s["agent"].pA):
        close(a, b, atol=1e-5, rtol=1e-5)


def test_jit_vmap_scan_and_tree_at():
    A, B, C, kw = random_model(21)
    ref, sub = both(A, B, C=C, batch_size=2, **kw)
    obs = random_obs(jr.PRNGKey(2), ref)

    @jax.jit
    def step(agent, obs):
        qs = agent.infer_states(obs, agent.D)
        q_pi, G = agent.infer_policies(qs)
        return qs, q_pi, agent.sample_action(q_pi)

    for a, b in zip(step(ref, obs), step(sub, obs)):
        jtu.tree_map(close, a, b)
    # tree_at on preferences, as pymdp users do
    C2 = [c * 0.0 + 1.0 * (jnp.arange(c.shape[-1]) == 0) for c in ref.C]
    ref2 = eqx.tree_at(lambda x: x.C, ref, C2)
    sub2 = eqx.tree_at(lambda x: x.C, sub, C2)
    close(step(ref2, obs)[1], step(sub2, obs)[1])
    assert not np.allclose(step(sub2, obs)[1], step(sub, obs)[1])
    # vmap over several observation sets: the host is reached once, rows broadcast
    many = [jnp.stack([o, (o + 1) % n]) for o, n in zip(obs, ref.num_obs)]
    vm = jax.vmap(lambda o: sub.infer_policies(sub.infer_states(o, sub.D))[0])(many)
    for v in range(2):
        one = sub.infer_policies(sub.infer_states([m[v] for m in many], sub.D))[0]
        close(vm[v], one)

    # lax.scan carrying the agent
    def body(agent, o):
        qs, q_pi, act = step(agent, o)
        return agent, act

    seq = [jnp.stack([o] * 3) for o in obs]
    _, acts_r = jax.lax.scan(body, ref, seq)
    _, acts_s = jax.lax.scan(body, sub, seq)
    np.testing.assert_array_equal(acts_r, acts_s)


def test_model_stored_once_for_the_batch():
    A, B, C, kw = random_model(31)
    sub = Agent(A, B, C=C, batch_size=50, **kw)
    assert all(a.shape[0] == 1 for a in sub._A + sub._B)
    assert sub.A[0].shape[0] == 50  # read as pymdp's batched arrays
    ids = np.asarray(sub.model_id)
    assert ids.shape == (50,) and (ids == ids[0]).all()
    again = Agent(A, B, C=C, batch_size=7, **kw)
    assert int(again.model_id[0]) == int(ids[0])  # equal content, one compiled model
    assert host.model(ids[0]).kmodel is host.model(int(again.model_id[0])).kmodel


def test_user_batched_parameters_give_per_row_models():
    A, B, C, kw = random_model(41)
    A2 = [jnp.stack([a, a]) for a in A]
    A2[0] = A2[0].at[1].set(jnp.flip(A[0], 0))
    ref, sub = both(A2, B, C=C, batch_size=2, **kw)
    ids = np.asarray(sub.model_id)
    assert ids[0] != ids[1]
    obs = random_obs(jr.PRNGKey(4), ref)
    for a, b in zip(ref.infer_states(obs, ref.D), sub.infer_states(obs, sub.D)):
        close(a, b)


def test_errors_as_pymdp():
    A, B, C, kw = random_model(51)
    bad_batch = [jnp.stack([a, a, a]) for a in A]
    with pytest.raises(ValueError, match="does not match the first dimension of A"):
        Agent(bad_batch, B, batch_size=2, **kw)
    bad_A = list(A)
    bad_A[0] = A[0].at[0, 1].add(0.05)
    with pytest.raises(ValueError, match="properly normalised and sum to 1"):
        Agent(bad_A, B, **kw)
    bad_B = list(B)
    bad_B[0] = B[0].at[:, 0, 1].set(0.0)
    with pytest.raises(ValueError, match="sum to zero"):
        Agent(A, bad_B, **kw)
    with pytest.raises(NotImplementedError, match="supported: fpi"):
        Agent(A, B, inference_algo="mmp", **kw)
    with pytest.raises(NotImplementedError, match="supported: outcome indices"):
        Agent(A, B, categorical_obs=True, **kw)
    sub = Agent(A, B, **kw)
    with pytest.raises(ValueError, match="random number generator key"):
        Agent(A, B, action_selection="stochastic", **kw).sample_action(jnp.ones((1, 6)) / 6)
    with pytest.raises(ValueError, match="factor"):
        sub.infer_states(random_obs(jr.PRNGKey(0), sub), sub.D[:1])


def test_differentiating_raises_a_clear_error():
    A, B, C, kw = random_model(61)
    sub = Agent(A, B, C=C, **kw)
    obs = random_obs(jr.PRNGKey(0), sub)

    def loss(gamma):
        agent = eqx.tree_at(lambda x: x.gamma, sub, gamma)
        return agent.infer_policies(agent.infer_states(obs, agent.D))[0].sum()

    with pytest.raises(fj.NotDifferentiableError, match="cannot be differentiated"):
        jax.grad(loss)(sub.gamma)


def test_multi_action_helpers_match_pymdp():
    num_obs, num_states, num_controls = [3, 3, 2], [2, 2, 1], [2, 2, 2]
    A_deps = [[0], [0, 1], [0, 1, 2]]
    B_deps = [[0], [0, 1], [1, 2]]
    B_act = [[], [0, 1], [0, 2]]
    ka, kb = jr.split(jr.PRNGKey(5))
    A = putils.random_A_array(ka, num_obs, num_states, A_dependencies=A_deps)
    B = putils.random_B_array(kb, num_states, num_controls, B_dependencies=B_deps,
                              B_action_dependencies=B_act)
    kw = dict(A_dependencies=A_deps, B_dependencies=B_deps, B_action_dependencies=B_act,
              num_controls=num_controls)
    ref, sub = both(A, B, **kw)
    assert ref.policies.policy_arr.tolist() == sub.policies.policy_arr.tolist()
    np.testing.assert_array_equal(ref.unique_multiactions, sub.unique_multiactions)
    obs = [jnp.zeros((1, 1), jnp.int32)] * 3
    q_pi_r, _ = ref.infer_policies(ref.infer_states(obs, ref.D))
    q_pi_s, _ = sub.infer_policies(sub.infer_states(obs, sub.D))
    close(q_pi_r, q_pi_s)
    close(ref.multiaction_probabilities(q_pi_r), sub.multiaction_probabilities(q_pi_s))
    act = ref.sample_action(q_pi_r)
    np.testing.assert_array_equal(act, sub.sample_action(q_pi_s))
    multi = ref.decode_multi_actions(act)
    np.testing.assert_array_equal(multi, sub.decode_multi_actions(act))
    np.testing.assert_array_equal(ref.encode_multi_actions(multi), sub.encode_multi_actions(multi))


def test_prediction_paths_agree(monkeypatch):
    """Small models predict with matrix products, large ones per row in the kernel: same numbers."""
    A, B, C, kw = random_model(71)
    sub = Agent(A, B, batch_size=40, **kw)
    ids = np.asarray(sub.model_id)
    rng = np.random.default_rng(0)
    qs = np.concatenate([rng.dirichlet(np.ones(n), 40) for n in sub.num_states], 1)
    qs = qs.astype(np.float32)
    act = np.stack([rng.integers(-1, n + 1, 40) for n in sub.num_controls], 1).astype(np.int32)
    dense = host.predict_states(ids, qs, act)
    monkeypatch.setattr(host, "DENSE_PREDICT_MAX", 0)
    monkeypatch.setattr(host, "_dense", {})
    close(dense, host.predict_states(ids, qs, act), atol=1e-6)
