"""Models, observations and agents shared by the benchmark modules.

asv runs every benchmark (and parameter combination) in a process of its own
and calls ``setup`` before every sample, so models are cached per process:
``setup`` builds a model once and later samples reuse it. The cached arrays are
shared and must not be written to; benchmarks that need an agent's own copy
(memory figures) deep-copy them.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import numpy as np

import fa_core
from fa_core import builtin_models

#: The builtin models benchmarked, smallest first.
MODELS = ["tmaze", "grid10", "grid30", "four_factor"]

#: Models on which pymdp agents are stepped many times (throughput, memory of
#: many agents): one pymdp step on four_factor takes tens of seconds, so there
#: only the single-call timings of ``agent_step.PymdpAgent`` cover it.
PYMDP_STEPPED_MODELS = ["tmaze", "grid10", "grid30"]


@functools.cache
def model_kwargs(name: str) -> dict:
    """The builtin model ``name`` as pymdp-layout keyword arguments (shared: do not modify)."""
    return builtin_models.get(name)


@functools.cache
def generative_model(name: str) -> fa_core.GenerativeModel:
    """One :class:`fa_core.GenerativeModel` of ``name`` for all agents of this process."""
    return fa_core.GenerativeModel(**model_kwargs(name))


@functools.cache
def learning_kwargs(name: str) -> dict:
    """``model_kwargs(name)`` plus Dirichlet counts ``pA`` and ``pB`` (copies of A and B)."""
    kwargs = dict(model_kwargs(name))
    for key in ("A", "B"):
        kwargs["p" + key] = copy.deepcopy(kwargs[key])
    return kwargs


@functools.cache
def observations(name: str, n: int = 64, seed: int = 0) -> tuple:
    """Observations of a random walk through the model's generative process.

    The hidden state starts from ``D``, observations are drawn from ``A`` and
    moves use a random control per factor, so beliefs stay realistic. Assumes
    pymdp's default layout (``A[m]`` depends on every factor, ``B[f]`` on
    factor ``f`` only), which all builtin models use.
    """
    kwargs = model_kwargs(name)
    rng = np.random.default_rng(seed)
    A, B, D = kwargs["A"], kwargs["B"], kwargs["D"]
    state = [int(rng.choice(len(d), p=d)) for d in D]
    seq = []
    for _ in range(n):
        seq.append(tuple(int(rng.choice(a.shape[0], p=a[(slice(None), *state)])) for a in A))
        state = [int(rng.choice(b.shape[0], p=b[:, s, rng.integers(b.shape[-1])]))
                 for b, s in zip(B, state)]
    return tuple(seq)


def fa_agent(name: str, **kwargs) -> fa_core.Agent:
    """A fa_core agent on the process's shared model of ``name``."""
    return fa_core.Agent(model=generative_model(name), seed=0, **kwargs)


def pymdp_agent_class() -> type:
    """``pymdp.legacy.agent.Agent``, imported on first use.

    Importing it takes seconds (pymdp.legacy loads seaborn, matplotlib and
    pandas), and asv starts a process per benchmark: fa_core's benchmarks do
    without it.
    """
    from pymdp.legacy.agent import Agent

    return Agent


def pymdp_agent(name: str, **kwargs):
    """A pymdp agent on the cached arrays of ``name`` (pymdp keeps references, no copies)."""
    np.random.seed(0)  # pymdp breaks ties with the global generator
    return pymdp_agent_class()(**model_kwargs(name), **kwargs)


def prime(agent, name: str) -> None:
    """Bring a new agent to the middle of an episode: beliefs from one observation and an action.

    The action is set rather than chosen so priming costs no ``infer_policies``
    (tens of seconds for pymdp on four_factor); later ``infer_states`` calls then
    take the usual path through ``B``.
    """
    agent.infer_states(observations(name)[0])
    agent.action = np.zeros(agent.num_factors)


def step(agent, obs) -> None:
    """One perception-action cycle."""
    agent.infer_states(obs)
    agent.infer_policies()
    agent.sample_action()


def bytes_per_object(build: Callable[[], object], count: int = 1) -> float:
    """Bytes per object still allocated (tracemalloc) after ``count`` calls of ``build``."""
    from fa_core.memory import retained_bytes
    return retained_bytes(build, count)
