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

#: Models of ``population.FaCorePopulation``: the above and two of issue 17's cases, the
#: T-maze's sizes with dense random A and B and the 30x30 forager with a confusing cue.
POPULATION_MODELS = MODELS + ["tmaze_dense", "grid30_confused"]

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


class SampledWorld:
    """Agents in the world a builtin model describes: hidden states move under its ``B`` and
    the agents' actions, outcomes come from its ``A``, each drawn from the column's largest
    entries only (all its non-zeros: at most ``k`` per column), so a step costs little
    beside the agents' (a dense draw over 900 outcomes per agent would not). Assumes
    pymdp's default layout, as :func:`observations`.
    """

    def __init__(self, name: str, n: int, seed: int = 0):
        kwargs = model_kwargs(name)
        self.rng = np.random.default_rng(seed)
        self.num_states = [len(d) for d in kwargs["D"]]
        self.A = [self._columns(a.reshape(a.shape[0], -1)) for a in kwargs["A"]]
        self.B = [[self._columns(b[..., u]) for u in range(b.shape[-1])] for b in kwargs["B"]]
        self.state = np.stack([self.rng.choice(len(d), size=n, p=d) for d in kwargs["D"]],
                              axis=1)

    @staticmethod
    def _columns(mat: np.ndarray) -> tuple:
        """(rows, cdf): per column its ``k`` largest entries' rows and cumulative sums."""
        k = int(np.count_nonzero(mat, axis=0).max())
        rows = np.argsort(-mat, axis=0, kind="stable")[:k].T
        return rows, np.cumsum(np.take_along_axis(mat.T, rows, axis=1), axis=1)

    def _draw(self, table: tuple, cols: np.ndarray) -> np.ndarray:
        rows, cdf = table
        c = cdf[cols]
        j = (c < self.rng.random(cols.size)[:, None] * c[:, -1:]).sum(axis=1)
        return rows[cols, np.minimum(j, rows.shape[1] - 1)]

    def observe(self) -> np.ndarray:
        """(n, num_modalities) outcome indices."""
        col = np.ravel_multi_index(tuple(self.state.T), self.num_states)
        return np.stack([self._draw(a, col) for a in self.A], axis=1)

    def step(self, actions) -> np.ndarray:
        """Move every agent under its action, then observe."""
        actions = np.asarray(actions)
        for f, slices in enumerate(self.B):
            nxt = self.state[:, f].copy()
            for u, table in enumerate(slices):
                sel = actions[:, f] == u
                if sel.any():
                    nxt[sel] = self._draw(table, self.state[sel, f])
            self.state[:, f] = nxt
        return self.observe()


def grid_model_cache_path(side: int) -> str:
    """Where ``benchmarks/throughput.py`` caches ``grid_forager(side)``'s GenerativeModel:
    the same file name (fa_core's version and the sources that build and pack the model),
    so either tool builds the large grids once for both."""
    import hashlib
    import inspect
    import os

    from fa_core import model as fa_model

    h = hashlib.sha256(fa_core.__version__.encode())
    for fn in (builtin_models.grid_forager, builtin_models.default_reward_locations,
               builtin_models._obj_array):  # the builder, not the whole module
        h.update(inspect.getsource(fn).encode())
    with open(fa_model.__file__, "rb") as f:   # validation and packing
        h.update(f.read())
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "fa_core", "benchmarks",
                        f"grid_forager-{side}-{h.hexdigest()[:16]}.pickle")


def grid_model(side: int):
    """``GenerativeModel(**grid_forager(side))``, from the shared cache for sides of 50 and
    more (built and cached here when missing), or None when building it would need more
    memory than the machine has available (about ``130 * side**4`` bytes: 13 GB at side
    100, for the dense pymdp-layout arrays and their validation)."""
    import os
    import pickle

    if side < 50:
        return fa_core.GenerativeModel(**builtin_models.grid_forager(side))
    path = grid_model_cache_path(side)
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)  # a file fa_core's benchmarks wrote
    available = float("inf")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = float(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if 130.0 * side ** 4 > 0.8 * available:
        return None
    gm = fa_core.GenerativeModel(**builtin_models.grid_forager(side))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(gm, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return gm
