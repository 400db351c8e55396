"""Property (issue 13 item 4): a flipped bit, a truncation or appended bytes in a hibernated
agent or population give either the exact original back or CorruptStateError, never
another error, a crash or a silently different state."""

from __future__ import annotations

import gc

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

import fa_core  # noqa: E402
from fa_core import CorruptStateError, Population, builtin_models  # noqa: E402

def _agent(model):
    ag = fa_core.Agent(model=model, seed=4, save_belief_hist=True, gamma=3.0)
    ag.note = {"k": [1, 2.5, "x"]}
    for obs in ([0, 0, 0], [1, 2, 1]):
        ag.infer_states(obs)
        ag.infer_policies()
        ag.sample_action()
    return ag


def _population(model):
    pop = Population(model, 3, seed=1)
    pop.step(np.zeros((3, model.num_modalities), np.int32))
    return pop


@pytest.fixture(scope="module")
def originals():
    """The model and the blobs corrupted; released after this module (a live model of
    the same key would be the one other modules' wakes resolve to)."""
    model = fa_core.GenerativeModel(**builtin_models.get("tmaze"))
    agent = _agent(model)
    yield model, {"agent": agent.hibernate(), "agent-raw": agent.hibernate(compress=False),
                  "population": _population(model).hibernate()}
    del model, agent
    gc.collect()


def _state(obj) -> bytes:
    """Everything the blob restores, as comparable bytes."""
    if isinstance(obj, Population):
        return obj.hibernate()
    return obj.hibernate(compress=False)


def _wake(kind, blob, model):
    if kind == "population":
        return Population.wake(blob, model)
    return fa_core.Agent.wake(blob, model)


_edit = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10 ** 6), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10 ** 6), st.just(0)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=16), st.just(0)),
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(kind=st.sampled_from(["agent", "agent-raw", "population"]), edit=_edit)
def test_corrupted_blobs_round_trip_exactly_or_raise(originals, kind, edit):
    model, blobs = originals
    blob = blobs[kind]
    op, a, b = edit
    if op == "flip":
        bad = bytearray(blob)
        bad[a % len(blob)] ^= 1 << b
        bad = bytes(bad)
    elif op == "truncate":
        bad = blob[:a % len(blob)]
    else:
        bad = blob + a
    try:
        woken = _wake(kind, bad, model)
    except CorruptStateError as exc:
        assert "corrupt or truncated" in str(exc)
        return
    assert _state(woken) == _state(_wake(kind, blob, model))
