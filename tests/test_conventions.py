"""One convention across Agent, Population and ShardedPopulation: seeds, memory reports,
real attributes."""

from __future__ import annotations

import numpy as np
import pytest

import fa_core
from fa_core import Agent, GenerativeModel, MemoryReport, Population, builtin_models, memory_report
from fa_core.options import OptionTypeError, seed_sequence


@pytest.fixture(scope="module")
def gm():
    return GenerativeModel(**builtin_models.get("tmaze"))


def _obs(n):
    return np.zeros((n, 3), dtype=np.int64)


# -- seeds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: 7, lambda: np.random.SeedSequence(7),
                                  lambda: np.random.default_rng(7)],
                         ids=["int", "SeedSequence", "Generator"])
def test_every_kind_of_seed_is_reproducible(gm, make):
    a = Population(gm, 20, seed=make(), action_selection="stochastic")
    b = Population(gm, 20, seed=make(), action_selection="stochastic")
    np.testing.assert_array_equal(a.rng, b.rng)
    for _ in range(3):
        np.testing.assert_array_equal(a.step(_obs(20)), b.step(_obs(20)))
    agent_a = Agent(model=gm, seed=make(), action_selection="stochastic")
    agent_b = Agent(model=gm, seed=make(), action_selection="stochastic")
    agent_a.infer_states([0, 0, 0])
    agent_b.infer_states([0, 0, 0])
    agent_a.infer_policies()
    agent_b.infer_policies()
    assert [agent_a.sample_action().tolist() for _ in range(5)] == \
        [agent_b.sample_action().tolist() for _ in range(5)]


def test_int_and_seed_sequence_agree(gm):
    np.testing.assert_array_equal(Population(gm, 9, seed=3).rng,
                                  Population(gm, 9, seed=np.random.SeedSequence(3)).rng)


def test_generator_seed_advances_the_generator(gm):
    g = np.random.default_rng(0)
    first = Population(gm, 5, seed=g).rng.copy()
    second = Population(gm, 5, seed=g).rng.copy()
    assert not np.array_equal(first, second)  # the generator was drawn from
    np.testing.assert_array_equal(first, Population(gm, 5, seed=np.random.default_rng(0)).rng)


def test_generator_seeded_population_hibernates_and_adds_the_same(gm):
    pop = Population(gm, 4, seed=np.random.default_rng(11))
    woken = Population.wake(pop.hibernate())
    np.testing.assert_array_equal(pop.add(3), woken.add(3))
    np.testing.assert_array_equal(pop.rng, woken.rng)


@pytest.mark.parametrize("bad, error", [(1.5, OptionTypeError), (True, OptionTypeError),
                                        ("7", OptionTypeError), (-1, ValueError),
                                        ([1, -2], OptionTypeError), (object(), OptionTypeError)])
def test_bad_seeds_are_refused_naming_seed(gm, bad, error):
    with pytest.raises(error, match="seed"):
        Population(gm, 3, seed=bad)
    with pytest.raises(error, match="seed"):
        seed_sequence(bad)


def test_seed_sequence_passes_sequences_through():
    ss = np.random.SeedSequence(5)
    assert seed_sequence(ss) is ss
    assert seed_sequence([1, 2]).entropy == np.random.SeedSequence([1, 2]).entropy
    assert seed_sequence(None).entropy != seed_sequence(None).entropy  # fresh OS entropy


# -- memory reports ---------------------------------------------------------------------------

def test_memory_report_of_a_list_of_agents(gm):
    agents = [Agent(model=gm, seed=i) for i in range(4)]
    for a in agents:
        a.infer_states([0, 0, 0])
    report = memory_report(agents)
    assert report == fa_core.memory_report_many(agents)
    assert report.n_agents == 4 and report.per_agent > 0
    assert memory_report(tuple(agents)) == report
    assert memory_report(agents[0]) == agents[0].memory_report()


def test_memory_report_of_a_population_matches_tracemalloc():
    import gc
    import tracemalloc
    gm = GenerativeModel(**builtin_models.get("grid10"))
    n = 500
    obs = np.zeros((n, 2), dtype=np.int64)
    gc.collect()
    tracemalloc.start()
    try:
        pop = Population(gm, n, seed=0, n_threads=1)
        pop.step(obs)
        traced = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    report = memory_report(pop)
    assert isinstance(report, MemoryReport) and report == pop.memory_report()
    assert report.n_agents == n and report.private_params == 0 and report.history == 0
    # tracemalloc saw what the population allocated (not the model, built before)
    assert report.beliefs + report.scratch == pytest.approx(traced, rel=0.05)
    # the state arrays are most of it: beliefs over 100 states, 5 policies, a few scalars
    assert report.per_agent == pytest.approx(report.beliefs / n)
    assert 4 * (100 + 5 + 5) <= report.per_agent < 4 * (100 + 5 + 5) + 200
    assert report.shared_model > 4 * 100 * 100 // 10  # A over 100 states, stored once
    assert pop.memory_report(include_scratch=False).scratch == 0


def test_memory_report_refuses_what_holds_no_agents(gm):
    for bad in (3, "agents", {"a": 1}):
        with pytest.raises(TypeError, match="memory_report"):
            memory_report(bad)
    with pytest.raises(TypeError, match="Agents only"):
        memory_report([Agent(model=gm), Population(gm, 2)])


# -- real attributes --------------------------------------------------------------------------

def test_population_state_arrays_are_real_attributes(gm):
    pop = Population(gm, 6, seed=0)
    names = set(dir(pop))
    for name in Population._ARRAYS + Population._OPTIONAL:
        assert name in names, name
        assert isinstance(getattr(Population, name), property)
        assert getattr(Population, name).__doc__
    assert pop.qs.shape == (6, sum(gm.num_states))
    assert pop.lnC is None
    pop.gamma = 2.0  # assignment still goes through the checked path
    np.testing.assert_array_equal(pop.gamma, np.full(6, 2.0, np.float32))
    with pytest.raises(ValueError, match="read-only"):
        pop.actions[0, 0] = 1
    with pytest.raises(AttributeError):
        pop.not_an_attribute  # noqa: B018
