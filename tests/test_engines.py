"""The engine layer behind Agent (fa_core.engines) and the state it persists.

* Blobs written before the engine layer (``tests/data/blobs``, see
  ``make_blobs.py``) wake into the agents the same script builds today, and
  those agents hibernate back into the same bytes: the format did not move.
* Each inference algorithm gets its engine; Agent keeps no per-algorithm state.
* agent.py and lifecycle.py no longer import each other (nor does anything
  agent.py imports import agent.py or lifecycle.py).
* MMP beliefs in pymdp's layout are made when read and kept until the next step.
"""

from __future__ import annotations

import ast
import os
import pickle
import sys

import numpy as np
import pytest

import fa_core
from fa_core import Agent, builtin_models, engines

HERE = os.path.dirname(os.path.abspath(__file__))
BLOBS = os.path.join(HERE, "data", "blobs")
sys.path.insert(0, BLOBS)
from make_blobs import CASES, OBS, build  # noqa: E402

sys.path.remove(BLOBS)


def _window_arrays(qs):
    """Every leaf of a ``qs`` structure (per factor, or per policy / step / factor), in order."""
    if isinstance(qs, np.ndarray) and qs.dtype == object:
        return [leaf for x in qs for leaf in _window_arrays(x)]
    return [] if qs is None else [np.asarray(qs)]


def _same(x, y, atol: float, rtol: float = 0.0) -> bool:
    if atol == 0 and rtol == 0:
        return np.array_equal(x, y)
    return np.allclose(x, y, rtol=rtol, atol=atol)


#: How far today's kernels may move an agent the blob's kernels computed. The
#: vectorised exp flushes what libm made subnormal (below 1e-38) to zero, so the
#: numbers agree to far below float32 resolution (atol). MMP's lockstep kernel
#: (``_mmp.c_mmp_bl``) keeps its messages in float32 and takes exp through float32
#: polynomials: a log near -39 rounded to float32 moves its exp by up to ~4e-6 of
#: itself, so MMP agents agree to float32 resolution relative to each value (their
#: beliefs match MATLAB SPM to 8e-8, tests/test_mmp.py).
KERNEL_TOL = {"atol": 1e-30, "rtol": 0.0}
MMP_KERNEL_TOL = {"atol": 1e-30, "rtol": 1e-5}


def _assert_same_agent(a: Agent, b: Agent, atol: float = 0.0, rtol: float = 0.0) -> None:
    """Equal agents (``atol`` / ``rtol``: numbers from another version of the kernels' math)."""
    for x, y in zip(_window_arrays(a.qs), _window_arrays(b.qs), strict=True):
        assert x.dtype == y.dtype and _same(x, y, atol, rtol)
    assert _same(a.q_pi, b.q_pi, atol, rtol) and _same(a.G, b.G, atol, rtol)
    assert a.curr_timestep == b.curr_timestep
    assert (a.prev_actions is None) == (b.prev_actions is None)
    for u, v in zip(a.prev_actions or [], b.prev_actions or [], strict=True):
        assert np.array_equal(u, v)
    assert a.prev_obs == b.prev_obs
    assert (a.F is None and b.F is None) or _same(a.F, b.F, atol, rtol)
    if hasattr(a, "qs_hist"):
        for e, f in zip(a.qs_hist, b.qs_hist, strict=True):
            for x, y in zip(_window_arrays(e), _window_arrays(f), strict=True):
                assert _same(x, y, atol, rtol)


@pytest.mark.parametrize("name", sorted(CASES))
def test_blobs_from_before_the_engine_layer_wake_the_same(name):
    with open(os.path.join(BLOBS, f"{name}.blob"), "rb") as fh:
        blob = fh.read()
    fresh = build(name)
    woken = Agent.wake(blob)
    assert woken.hibernate() == blob  # the blob's state, back to the same bytes
    assert type(woken._engine) is type(fresh._engine)
    # today's kernels compute the same agent, to KERNEL_TOL / MMP_KERNEL_TOL
    tol = MMP_KERNEL_TOL if isinstance(fresh._engine, engines.MMPEngine) else KERNEL_TOL
    _assert_same_agent(woken, fresh, **tol)
    # and both go on the same way (the global RNG is not read: deterministic selection)
    for agent in (woken, fresh):
        agent.infer_policies()
        agent.sample_action()
        agent.infer_states(OBS[1])
    _assert_same_agent(woken, fresh, **tol)
    again = pickle.loads(pickle.dumps(fresh))
    _assert_same_agent(again, fresh)


@pytest.mark.parametrize("kwargs, engine", [
    ({}, engines.VanillaEngine),
    ({"sophisticated": True}, engines.SophisticatedEngine),
    ({"inference_algo": "MMP"}, engines.MMPEngine),
])
def test_each_algorithm_has_its_engine(kwargs, engine):
    agent = Agent(**builtin_models.tmaze(), **kwargs, seed=0)
    assert type(agent._engine) is engine and agent._engine.name == agent.inference_algo
    assert not hasattr(agent, "_mmp") and not hasattr(agent, "_fpi")
    assert (agent._engine.window is not None) == (agent.inference_algo == "MMP")


def _imports(path: str, top_only: bool = False) -> set[str]:
    """fa_core modules ``path`` imports when run (at module level, or anywhere)."""
    tree = ast.parse(open(path).read())
    # imports for type checkers only are not run
    tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and isinstance(n.test, ast.Name)
                                              and n.test.id == "TYPE_CHECKING")]
    out = set()
    for node in tree.body if top_only else ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fa_core"):
            if node.module == "fa_core":
                out |= {f"fa_core.{a.name}" for a in node.names}
            else:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("fa_core")}
    return out


def test_agent_and_lifecycle_do_not_import_each_other():
    root = os.path.dirname(fa_core.__file__)
    path = lambda mod: os.path.join(root, mod.split(".")[-1] + ".py")  # noqa: E731
    # lifecycle only re-exports: the agent's state functions and the pool, which import Agent
    assert {"fa_core.agent_state", "fa_core.pool"} <= _imports(path("fa_core.lifecycle"),
                                                             top_only=True)
    assert "fa_core.lifecycle" not in _imports(path("fa_core.pool"))
    assert "fa_core.lifecycle" not in _imports(path("fa_core.agent"))
    # what fa_core.agent imports at its top, transitively, imports neither it nor lifecycle
    # anywhere, not even inside a function
    seen, todo = set(), ["fa_core.agent"]
    while todo:
        for dep in _imports(path(todo.pop()), top_only=True):
            if dep not in seen and os.path.exists(path(dep)):
                assert not {"fa_core.agent", "fa_core.lifecycle"} & _imports(path(dep)), dep
                seen.add(dep)
                todo.append(dep)
    assert {"fa_core.agent_state", "fa_core.engines", "fa_core.mmp"} <= seen


def _mmp_agent(**kw):
    return Agent(**builtin_models.tmaze(), inference_algo="MMP", policy_len=2,
                 inference_horizon=3, seed=0, **kw)


def test_mmp_views_are_kept_until_the_next_step_and_held_ones_keep_their_values():
    agent = _mmp_agent()
    qs = agent.infer_states(OBS[0])
    assert agent.qs is qs and agent.qs is agent.qs  # made once per step
    held = [x.copy() for x in _window_arrays(qs)]
    agent.infer_policies()
    agent.sample_action()
    assert agent.qs is qs  # no new step of the window yet
    nxt = agent.infer_states(OBS[1])
    assert nxt is not qs and agent.qs is nxt
    assert all(np.array_equal(x, y) for x, y in zip(_window_arrays(qs), held, strict=True))
    with pytest.raises(ValueError):  # float64 copies: writes would be lost, so refused
        qs[0][0][0][0] = 1.0


def test_mmp_reused_views_follow_the_buffer():
    agent = _mmp_agent(reuse_buffers=True)
    out = []
    for obs in OBS:
        out.append(agent.infer_states(obs))
        agent.infer_policies()
        agent.sample_action()
    # the window is full from the third step: its views are kept and stay current
    assert out[3] is out[4] and out[2] is not out[1]
    ref = _mmp_agent()
    for obs in OBS:
        ref.infer_states(obs)
        ref.infer_policies()
        ref.sample_action()
    for x, y in zip(_window_arrays(out[4]), _window_arrays(ref.qs), strict=True):
        assert x.dtype == np.float32 and np.array_equal(x, y.astype(np.float32))


def test_woken_mmp_agent_shows_its_window():
    agent = build("mmp_bma")
    for woken in (Agent.wake(agent.hibernate()), pickle.loads(pickle.dumps(agent))):
        assert len(woken.qs) == len(agent.policies)
        for x, y in zip(_window_arrays(woken.qs), _window_arrays(agent.qs), strict=True):
            assert np.array_equal(x, y)
        assert np.array_equal(woken.set_latest_beliefs()[0], agent.set_latest_beliefs()[0])


def test_vanilla_engine_refuses_mmp_methods():
    agent = Agent(**builtin_models.tmaze(), seed=0)
    with pytest.raises(NotImplementedError, match="set_latest_beliefs"):
        agent.set_latest_beliefs()
    with pytest.raises(NotImplementedError, match="get_future_qs"):
        agent.get_future_qs()
    with pytest.raises(AttributeError, match="latest_belief"):
        agent.latest_belief  # noqa: B018


@pytest.mark.parametrize("name, bad", [("action_selection", "greedy"), ("sampling_mode", "all"),
                                       ("inference_params", {"num_iter": 0})])
def test_agent_and_population_share_their_option_checks(name, bad):
    """One check per shared keyword (fa_core.options.OPTION_CHECKS): the same error from both."""
    gm = fa_core.GenerativeModel(**builtin_models.tmaze())
    errors = []
    for make in (lambda: Agent(model=gm, **{name: bad}),
                 lambda: fa_core.Population(gm, 2, **{name: bad})):
        with pytest.raises(ValueError) as info:
            make()
        errors.append(str(info.value))
    assert errors[0] == errors[1] and name in errors[0]
