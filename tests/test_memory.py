"""Memory reports: the split into shared model, private parameters, beliefs,
history and scratch, and agreement with tracemalloc."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import fa_core
from fa_core import builtin_models
from fa_core.memory import MemoryReport, agent_nbytes, memory_report, memory_report_many
from fa_core.scratch import scratch_nbytes
from random_models import dirichlet_counts

# tracemalloc and the report see the same allocations; what the report cannot
# see is small (numpy's cached buffer-protocol info of arrays handed to the
# kernels, the interpreter's bookkeeping), a few percent of an agent
TOLERANCE = 0.05


def _step(agent, t: int, n_obs: int) -> None:
    agent.infer_states([(31 * t) % n_obs, 0])
    agent.infer_policies()
    agent.sample_action()


def _traced(build):
    """Bytes still allocated after ``build()`` returns, and what it returned."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, out


@pytest.mark.parametrize("seeded", [False, True])
def test_report_agrees_with_tracemalloc_for_agents_sharing_a_model(seeded):
    kwargs = builtin_models.grid_forager(30)
    model = fa_core.GenerativeModel(**kwargs)
    _step(fa_core.Agent(model=model), 0, 900)  # scratch grown before measuring
    n = 300

    def build():
        agents = [fa_core.Agent(model=model, seed=i if seeded else None) for i in range(n)]
        for t in range(4):
            for a in agents:
                _step(a, t, 900)
        return agents

    traced, agents = _traced(build)
    report = memory_report_many(agents)
    owned = report.private_params + report.beliefs + report.history
    assert report.private_params == 0
    assert report.history > 0 and report.beliefs > n * 900 * 4
    assert abs(owned - traced) <= TOLERANCE * traced, (owned, traced)
    # the model is counted once, whatever the number of agents
    assert memory_report_many(agents[:10]).shared_model == report.shared_model
    assert report.shared_model >= model.nbytes


@pytest.mark.parametrize("sparse", [False, True])
def test_report_agrees_with_tracemalloc_for_private_models(sparse):
    kwargs = builtin_models.grid_forager(10)

    def build():
        return [fa_core.Agent(model=fa_core.GenerativeModel(**kwargs, sparse=sparse))
                for _ in range(20)]

    traced, agents = _traced(build)
    report = memory_report_many(agents)
    assert report.shared_model < 1_000  # nothing of substance is shared
    assert report.private_params > 20 * agents[0].model.nbytes
    owned = report.private_params + report.beliefs + report.history
    assert abs(owned - traced) <= TOLERANCE * traced, (owned, traced)


def test_report_counts_the_sophisticated_search_copy():
    # sophisticated inference keeps a dense float64 copy of each model it plans with
    kwargs = builtin_models.grid_forager(4)
    warm = fa_core.Agent(**kwargs, sophisticated=True, si_horizon=2)  # scratch grown
    warm.infer_states([0, 0])
    warm.infer_policies()

    def build():
        model = fa_core.GenerativeModel(**kwargs)
        agents = [fa_core.Agent(model=model, sophisticated=True, si_horizon=2)
                  for _ in range(3)]
        for a in agents:
            a.infer_states([0, 0])
            a.infer_policies()
        return agents

    traced, agents = _traced(build)
    report = memory_report_many(agents)
    owned = report.shared_model + report.private_params + report.beliefs + report.history
    assert report.shared_model > 2 * agents[0].model.nbytes  # the model and its copy
    assert abs(owned - traced) <= TOLERANCE * traced, (owned, traced)


def test_single_agent_report():
    model = fa_core.GenerativeModel(**builtin_models.tmaze())
    agent = fa_core.Agent(model=model)
    report = agent.memory_report()
    assert isinstance(report, MemoryReport) and report == memory_report(agent)
    assert report.n_agents == 1
    assert report.shared_model > 0 and report.private_params == 0  # `model` holds it too
    assert report.scratch == scratch_nbytes()
    assert report.total == (report.shared_model + report.private_params + report.beliefs
                            + report.history + report.scratch)
    assert report.per_agent == agent_nbytes(agent)
    assert "shared model" in str(report) and report.as_dict()["total"] == report.total
    del model
    gc.collect()
    # now only this agent uses its model: all of it is the agent's own
    alone = agent.memory_report()
    assert alone.shared_model < 1_000 and alone.private_params >= agent.model.nbytes


def test_learning_makes_only_the_changed_parameters_private():
    kwargs = builtin_models.grid_forager(10)
    pA = dirichlet_counts(np.random.default_rng(0), kwargs["A"])
    model = fa_core.GenerativeModel(**kwargs, pA=pA)
    learner, other = fa_core.Agent(model=model), fa_core.Agent(model=model)
    assert memory_report_many([learner, other]).private_params == 0
    learner.infer_states([3, 0])
    learner.update_A([3, 0])
    assert learner.model is not model and other.model is model
    own_counts = sum(p.nbytes for p in learner.model.pA)  # (builds the model's pA views first)
    after = memory_report_many([learner, other])
    # the original model (and the arrays the learner's copy shares with it) stays shared
    assert after.shared_model == memory_report(other).shared_model
    assert after.private_params > own_counts
    assert memory_report(learner).private_params == after.private_params
    # copy-on-write: B is shared, not copied; once the original is gone it is the learner's own
    b_bytes = sum(arr.nbytes for specs in learner.model._B_specs for spec in specs
                  for arr in (spec.val, spec.indptr, spec.idx) if arr is not None)
    del other, model
    gc.collect()
    alone = memory_report(learner)
    assert alone.shared_model < 1_000
    assert alone.private_params - after.private_params >= b_bytes


def test_history_is_reported_and_bounded():
    model = fa_core.GenerativeModel(**builtin_models.grid_forager(10))
    agent = fa_core.Agent(model=model, save_belief_hist=True, belief_hist_len=5,
                          action_hist_len=5)
    sizes = []
    for t in range(12):
        _step(agent, t, 100)
        sizes.append(memory_report(agent).history)
    assert sizes[0] > 0 and sizes[3] > sizes[0]
    assert sizes[-1] == sizes[-2] == sizes[6]  # bounded: 5 beliefs, 5 policy posteriors, 5 actions
    assert sizes[-1] >= 5 * 100 * 4


def test_agents_counted_once_and_empty_report():
    model = fa_core.GenerativeModel(**builtin_models.tmaze())
    agent = fa_core.Agent(model=model)
    twice = memory_report_many([agent, agent])
    once = memory_report_many([agent])
    assert twice == once and twice.n_agents == 1
    empty = memory_report_many([], include_scratch=False)
    assert empty.total == 0 and empty.per_agent == 0
