"""The builtin models: layout, normalisation, determinism, and that both agents accept them."""

from __future__ import annotations

import numpy as np
import pytest

from fa_core import builtin_models as bm

EXPECTED = {
    # name: (num_states, num_obs, num_controls, number of policies)
    "tmaze": ([4, 2], [4, 3, 2], [4, 1], 4),
    "tmaze_dense": ([4, 2], [4, 3, 2], [4, 1], 4),
    "grid10": ([100], [100, 2], [5], 5),
    "grid30": ([900], [900, 2], [5], 5),
    "grid30_confused": ([900], [900, 2], [5], 5),
    "four_factor": ([5, 5, 5, 5], [6, 6, 6], [3, 3, 1, 1], 81),
}


@pytest.fixture(params=sorted(EXPECTED))
def name(request):
    return request.param


def _is_obj_array_of_float64(x, n):
    return (isinstance(x, np.ndarray) and x.dtype == object and x.shape == (n,)
            and all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in x))


def test_shapes_and_dtypes(name):
    num_states, num_obs, num_controls, _ = EXPECTED[name]
    d = bm.get(name)
    for key, n in (("A", len(num_obs)), ("B", len(num_states)), ("C", len(num_obs)),
                   ("D", len(num_states))):
        assert _is_obj_array_of_float64(d[key], n), key
    for m, A_m in enumerate(d["A"]):
        assert A_m.shape == (num_obs[m], *num_states)
    for f, B_f in enumerate(d["B"]):
        assert B_f.shape == (num_states[f], num_states[f], num_controls[f])
    assert [c.shape for c in d["C"]] == [(o,) for o in num_obs]
    assert [x.shape for x in d["D"]] == [(s,) for s in num_states]


def test_distributions_are_normalised(name):
    d = bm.get(name)
    for key in ("A", "B"):
        for i, arr in enumerate(d[key]):
            assert np.all(arr >= 0), f"{key}[{i}]"
            np.testing.assert_allclose(arr.sum(axis=0), 1.0, atol=1e-12, err_msg=f"{key}[{i}]")
    for f, D_f in enumerate(d["D"]):
        np.testing.assert_allclose(D_f.sum(), 1.0, atol=1e-12, err_msg=f"D[{f}]")


def test_deterministic_and_fresh(name):
    d1, d2 = bm.get(name), bm.get(name)
    for key in ("A", "B", "C", "D"):
        for x, y in zip(d1[key], d2[key]):
            np.testing.assert_array_equal(x, y)
            assert not np.shares_memory(x, y)


def test_unknown_name():
    with pytest.raises(ValueError, match="name"):
        bm.get("nope")


def test_registry_builders_match_get():
    assert set(bm.MODELS) == set(EXPECTED)
    np.testing.assert_array_equal(bm.MODELS["grid10"]()["B"][0], bm.grid_forager(10)["B"][0])


def test_tmaze_semantics():
    A, B = bm.tmaze()["A"], bm.tmaze()["B"]
    for ctx in range(2):
        # The cue location reveals the context; the centre does not.
        assert A[2][ctx, 3, ctx] == 1.0
        np.testing.assert_array_equal(A[2][:, 0, ctx], [0.5, 0.5])
        # Arm ctx + 1 mostly rewards, the other arm mostly punishes.
        assert A[1][1, ctx + 1, ctx] == bm.TMAZE_REWARD_PROB
        assert A[1][2, 2 - ctx, ctx] == bm.TMAZE_REWARD_PROB
    # Action a takes every location to a; the context never changes.
    for a in range(4):
        np.testing.assert_array_equal(B[0][:, :, a], np.outer(np.eye(4)[a], np.ones(4)))
    np.testing.assert_array_equal(B[1][:, :, 0], np.eye(2))


def test_grid_moves_and_walls():
    B = bm.grid_forager(3)["B"][0]

    def nxt(cell, a):
        col = B[:, cell, a]
        assert col.max() == 1.0
        return int(np.argmax(col))

    centre, corner = 4, 0  # (1, 1) and (0, 0)
    assert [nxt(centre, a) for a in range(5)] == [4, 1, 7, 3, 5]  # stay up down left right
    assert [nxt(corner, a) for a in range(5)] == [0, 0, 3, 0, 1]  # walls keep the agent in place


def test_grid_food_cells():
    A = bm.grid_forager(5, reward_locations=[(0, 4), (3, 1)])["A"]
    np.testing.assert_array_equal(np.flatnonzero(A[1][1]), [4, 16])
    np.testing.assert_array_equal(A[0], np.eye(25))
    default = bm.grid10()["A"][1]
    cells = sorted(r * 10 + c for r, c in bm.default_reward_locations(10))
    np.testing.assert_array_equal(np.flatnonzero(default[1]), cells)
    assert bm.grid10()["C"][1][1] > bm.grid10()["C"][1][0]


def test_grid_rejects_cells_outside():
    with pytest.raises(ValueError, match="reward_locations"):
        bm.grid_forager(4, reward_locations=[(4, 0)])


def test_four_factor_policy_len():
    d = bm.four_factor(policy_len=1)
    assert d["policy_len"] == 1
    assert d["control_fac_idx"] == [0, 1]
    assert bm.four_factor()["policy_len"] == 2


@pytest.mark.parametrize("which", ["RefAgent", "FaAgent"])
def test_agents_accept_models(name, which, request):
    Agent = request.getfixturevalue(which)
    d = bm.get(name)
    num_states, num_obs, num_controls, n_policies = EXPECTED[name]
    agent = Agent(**d)
    assert list(agent.num_states) == num_states
    assert list(agent.num_obs) == num_obs
    assert list(agent.num_controls) == num_controls
    assert len(agent.policies) == n_policies
    qs = agent.infer_states([0] * len(num_obs))
    assert [q.shape for q in qs] == [(s,) for s in num_states]
    # pymdp needs seconds for the 81 four-factor policies; its acceptance of the model is shown
    # above.
    if not (which == "RefAgent" and name == "four_factor"):
        q_pi, _ = agent.infer_policies()
        assert q_pi.shape == (n_policies,)
        assert agent.sample_action().shape == (len(num_states),)


@pytest.mark.parametrize("which", ["RefAgent", "FaAgent"])
def test_tmaze_agent_checks_cue_then_exploits(which, request):
    Agent = request.getfixturevalue(which)
    for ctx in range(2):
        np.random.seed(ctx)
        agent = Agent(**bm.tmaze())
        agent.infer_states([0, 0, 0])
        agent.infer_policies()
        assert agent.sample_action()[0] == 3  # the epistemic move: go to the cue
        agent.infer_states([3, 0, ctx])
        agent.infer_policies()
        assert agent.sample_action()[0] == ctx + 1  # the arm the cue points to


def test_grid_cue_confusion():
    A = bm.grid_forager(4, cue_confusion=0.2)["A"][0]
    # an inner cell (1, 1) = 5: itself 0.8, its four neighbours 0.05 each
    np.testing.assert_allclose(A[[5, 1, 9, 4, 6], 5], [0.8, 0.05, 0.05, 0.05, 0.05])
    # a corner has two neighbours inside the grid
    np.testing.assert_allclose(A[[0, 4, 1], 0], [0.8, 0.1, 0.1])
    assert np.count_nonzero(A) == 16 + 2 * 24     # each cell plus each grid edge both ways
    np.testing.assert_array_equal(bm.grid_forager(4, cue_confusion=0.0)["A"][0], np.eye(16))
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="cue_confusion"):
            bm.grid_forager(4, cue_confusion=bad)


def test_dense_like():
    d = bm.tmaze_dense()
    t = bm.tmaze()
    for key in ("A", "B"):
        for x, y in zip(d[key], t[key]):
            assert x.shape == y.shape
            assert np.all(x > 0)                      # no zero entry: the dense paths
    for key in ("C", "D"):
        for x, y in zip(d[key], t[key]):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(bm.dense_like("tmaze", 0)["A"][1], d["A"][1])
    assert not np.array_equal(bm.dense_like("tmaze", 1)["A"][1], d["A"][1])
    g = bm.dense_like("grid10", seed=3)
    assert g["B"][0].shape == (100, 100, 5) and np.all(g["A"][0] > 0)


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_dense_like_refuses_a_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        bm.dense_like("tmaze", seed)
