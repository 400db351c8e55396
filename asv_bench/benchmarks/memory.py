"""Memory: peak memory of many agents, and bytes kept per agent, fa_core beside pymdp.

Agents are built as users port pymdp code: each from its own copy of the
model arrays. pymdp keeps that copy; fa_core converts it to a float32 model,
interned by content, so agents of one model share it.
"""

import copy

import fa_core

from .common import (MODELS, PYMDP_STEPPED_MODELS, bytes_per_object, generative_model,
                     model_kwargs, observations, prime, pymdp_agent_class, step)


def _build_and_step(make, name, n_agents):
    kwargs = model_kwargs(name)
    obs = observations(name)
    agents = [make(copy.deepcopy(kwargs)) for _ in range(n_agents)]
    for i, agent in enumerate(agents):
        step(agent, obs[i % len(obs)])
    return agents


class FaCoreMemory:
    """Peak memory of the process after building ``n_agents`` agents and stepping each once."""

    params = (MODELS, [1, 100])
    param_names = ["model", "n_agents"]

    def peakmem_build_and_step(self, name, n_agents):
        _build_and_step(lambda kw: fa_core.Agent(**kw, seed=0), name, n_agents)


class PymdpMemory:
    """As :class:`FaCoreMemory` for pymdp's Agent."""

    params = (PYMDP_STEPPED_MODELS, [1, 10])
    param_names = ["model", "n_agents"]
    processes = 1
    timeout = 300

    def peakmem_build_and_step(self, name, n_agents):
        _build_and_step(lambda kw: pymdp_agent_class()(**kw), name, n_agents)


class FaCoreFootprint:
    """Bytes kept per agent (tracemalloc), right after construction."""

    params = MODELS
    param_names = ["model"]
    unit = "bytes"

    def setup(self, name):
        # A throw-away agent first, so one-off allocations (lazy imports,
        # per-thread scratch) are not charged to the measured ones. It is gone
        # before measuring, so the agent built from arrays owns its model.
        warm = fa_core.Agent(**copy.deepcopy(model_kwargs(name)), seed=0)
        prime(warm, name)
        del warm
        generative_model(name)

    def track_bytes_per_agent(self, name):
        """An agent built from its own arrays: its model included."""
        kwargs = model_kwargs(name)
        return bytes_per_object(lambda: fa_core.Agent(**copy.deepcopy(kwargs), seed=0))

    def track_bytes_per_agent_shared_model(self, name):
        """Agents built as ``Agent(model=gm, C=..., D=...)`` on one model, averaged over 20."""
        kwargs, gm = model_kwargs(name), generative_model(name)
        return bytes_per_object(
            lambda: fa_core.Agent(model=gm, C=kwargs["C"], D=kwargs["D"], seed=0), count=20)

    def track_bytes_per_agent_shared_model_no_C_D(self, name):
        """Agents built as ``Agent(model=gm)``: no derived model per agent; averaged over 20."""
        gm = generative_model(name)
        return bytes_per_object(lambda: fa_core.Agent(model=gm, seed=0), count=20)


class PymdpFootprint:
    """Bytes kept per pymdp agent built from its own copy of the arrays."""

    params = MODELS
    param_names = ["model"]
    unit = "bytes"
    processes = 1

    def setup(self, name):
        warm = pymdp_agent_class()(**copy.deepcopy(model_kwargs(name)))
        prime(warm, name)
        del warm

    def track_bytes_per_agent(self, name):
        kwargs, agent_class = model_kwargs(name), pymdp_agent_class()
        return bytes_per_object(lambda: agent_class(**copy.deepcopy(kwargs)))
