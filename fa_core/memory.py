"""Memory accounting: which bytes an agent owns and which it shares.

:func:`memory_report` and :func:`memory_report_many` walk the objects agents
reference (their slots, arrays, dicts, lists, RNGs, models and the arrays a
model's kernel view keeps) and split their bytes into

* ``shared_model``: model objects reachable from more than one agent, or also
  referenced from outside the agents (another model, a user's variable),
  counted once;
* ``private_params``: model objects reachable from one agent only (a model
  only this agent uses, e.g. after learning: copy-on-write shares the
  unchanged arrays with the original model, so only the changed ones are private);
* ``beliefs``: what the agent owns besides history and model: ``qs``,
  ``q_pi``, ``G``, action buffers, options, RNG, and the agent object itself;
* ``history``: ``qs_hist``, ``q_pi_hist`` and ``prev_actions``;
* ``scratch``: the per-thread scratch pool (:func:`fa_core.scratch.scratch_nbytes`),
  shared by every agent on the thread.

An object counts as owned by an agent when every reference to it comes from
objects the agent owns, which is decided from reference counts
(``sys.getrefcount``), so the split needs no bookkeeping in the agents.
Sizes are ``sys.getsizeof`` (numpy arrays that own their data include it)
plus the shape and strides block numpy allocates beside each array, so the
totals agree with tracemalloc, which sees the same allocations.
"""

from __future__ import annotations

import copyreg
import gc
import sys
import types
from dataclasses import asdict, dataclass
from collections.abc import Callable, Iterable

import numpy as np

from fa_core.scratch import scratch_nbytes
from fa_core.sophisticated import _SI_MODELS

__all__ = ["MemoryReport", "memory_report", "memory_report_many", "agent_nbytes", "sum_reports"]

_HISTORY_SLOTS = ("qs_hist", "q_pi_hist", "_prev_actions")
_SKIP = (type, types.ModuleType, types.FunctionType, types.CodeType, types.FrameType)
_ATOMIC = (int, float, complex, str, bytes, bool, type(None))
_SHARED = -1   # owner label of objects not owned by a single agent


@dataclass(frozen=True)
class MemoryReport:
    """Bytes used by ``n_agents`` agents, by component (see :mod:`fa_core.memory`).

    Parameters
    ----------
    n_agents : int
        How many agents the report covers.
    shared_model : int
        Bytes of model objects shared by several agents or referenced from
        elsewhere, counted once.
    private_params : int
        Bytes of model objects only one agent reaches (a model derived by an
        edit or by learning).
    beliefs : int
        Bytes each agent owns besides history and model: ``qs``, ``q_pi``,
        ``G``, action buffers, options, RNG, the agent object itself.
    history : int
        Bytes of ``qs_hist``, ``q_pi_hist`` and ``prev_actions``.
    scratch : int
        Bytes of the calling thread's scratch pool, shared by every agent on it.

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> agents = [Agent(model=gm, seed=i) for i in range(10)]
    >>> from fa_core import memory_report_many
    >>> report = memory_report_many(agents)
    >>> report.n_agents, report.private_params, report.shared_model > 0
    (10, 0, True)
    >>> print(report)
    memory of 10 agent(s):
      shared model ...
    """

    n_agents: int
    shared_model: int
    private_params: int
    beliefs: int
    history: int
    scratch: int

    @property
    def per_agent(self) -> float:
        """Bytes each agent owns on average (private parameters, beliefs, history)."""
        return (self.private_params + self.beliefs + self.history) / max(self.n_agents, 1)

    @property
    def total(self) -> int:
        return (self.shared_model + self.private_params + self.beliefs + self.history
                + self.scratch)

    def as_dict(self) -> dict:
        """The report as a plain dict, with ``per_agent`` and ``total`` added.

        Returns
        -------
        report : dict
            Every field, plus ``per_agent`` (float) and ``total`` (int).

        Examples
        --------
        >>> from fa_core import Agent, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> agents = [Agent(model=gm, seed=i) for i in range(10)]
        >>> from fa_core import memory_report_many
        >>> sorted(memory_report_many(agents).as_dict())
        ['beliefs', 'history', 'n_agents', 'per_agent', 'private_params', 'scratch',
         'shared_model', 'total']
        """
        return {**asdict(self), "per_agent": self.per_agent, "total": self.total}

    def __str__(self) -> str:
        rows = [("shared model", self.shared_model), ("private parameters", self.private_params),
                ("beliefs", self.beliefs), ("history", self.history),
                ("pooled scratch", self.scratch), ("total", self.total)]
        width = max(len(r[0]) for r in rows)
        lines = [f"memory of {self.n_agents} agent(s):"]
        lines += [f"  {name:<{width}}  {n:>14,} B" for name, n in rows]
        lines.append(f"  {'per agent (owned)':<{width}}  {self.per_agent:>14,.0f} B")
        return "\n".join(lines)


def memory_report(obj, include_scratch: bool = True) -> MemoryReport:
    """Bytes of an agent, a list of agents or a population, by component.

    One function for everything that holds agents:

    * an :class:`~fa_core.Agent`: its model counts as shared if anything else references
      it (another agent, a variable, the model it was derived from);
    * an iterable of agents: :func:`memory_report_many` (each distinct model, and each
      shared array, counted once);
    * a :class:`~fa_core.Population`: the model counts as shared (every agent of the
      population uses it), the state arrays (their allocated capacity) and options as
      ``beliefs``, the population's kernel scratch as ``scratch``;
    * a :class:`~fa_core.distributed.ShardedPopulation`: the sum of its shards' reports,
      each made in the shard's process (each process holds its own copy of the model).

    Parameters
    ----------
    obj : Agent, iterable of Agent, Population or ShardedPopulation
    include_scratch : bool
        Count scratch memory (the calling thread's pool for agents; the population's own
        buffer for populations).

    Returns
    -------
    MemoryReport
        ``per_agent`` is the average each agent owns (shared model and scratch excluded).

    Raises
    ------
    TypeError
        ``obj`` is none of these (or a list holds something other than agents).

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, Population, builtin_models
    >>> gm = GenerativeModel(**builtin_models.get("tmaze"))
    >>> memory_report(Population(gm, 100)).n_agents
    100
    >>> memory_report([Agent(model=gm) for _ in range(3)]).n_agents
    3
    """
    from fa_core.agent import Agent
    from fa_core.population import Population

    if isinstance(obj, Population):
        return obj.memory_report(include_scratch=include_scratch)
    if type(obj).__name__ == "ShardedPopulation" and hasattr(obj, "memory_report"):
        return obj.memory_report(include_scratch=include_scratch)
    if isinstance(obj, Agent):
        return memory_report_many([obj], include_scratch)
    if isinstance(obj, (str, bytes, dict)) or not hasattr(obj, "__iter__"):
        raise TypeError(f"memory_report: expected an Agent, a list of agents, a Population or "
                        f"a ShardedPopulation, got {type(obj).__name__}")
    agents = list(obj)
    bad = next((a for a in agents if not isinstance(a, Agent)), None)
    if bad is not None:
        raise TypeError(f"memory_report: a list must hold Agents only, got a "
                        f"{type(bad).__name__} in it (report on a Population by itself)")
    return memory_report_many(agents, include_scratch)


def sum_reports(reports: Iterable[MemoryReport]) -> MemoryReport:
    """The component-wise sum of reports on disjoint sets of agents (e.g. shards).

    Parameters
    ----------
    reports : iterable of MemoryReport
        Reports on sets of agents that share nothing (each model is counted in each).

    Returns
    -------
    MemoryReport
        Every field summed.

    Examples
    --------
    >>> from fa_core import GenerativeModel, Population, builtin_models
    >>> gm = GenerativeModel(**builtin_models.get("tmaze"))
    >>> total = sum_reports([Population(gm, 3).memory_report(), Population(gm, 5).memory_report()])
    >>> total.n_agents
    8
    """
    reports = list(reports)
    fields = ("n_agents", "shared_model", "private_params", "beliefs", "history", "scratch")
    return MemoryReport(**{f: sum(getattr(r, f) for r in reports) for f in fields})


def agent_nbytes(agent) -> int:
    """Bytes ``agent`` owns: private parameters, beliefs and history.

    Parameters
    ----------
    agent : Agent
        The agent to measure.

    Returns
    -------
    nbytes : int
        What :class:`fa_core.AgentPool` counts against ``max_bytes``.

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> agents = [Agent(model=gm, seed=i) for i in range(10)]
    >>> from fa_core.memory import agent_nbytes, memory_report
    >>> agent_nbytes(agents[0]) == memory_report(agents[0]).per_agent
    True
    """
    r = memory_report_many([agent], include_scratch=False)
    return r.private_params + r.beliefs + r.history


def memory_report_many(agents: Iterable, include_scratch: bool = True) -> MemoryReport:
    """Bytes of many agents, each distinct model (and each shared array) counted once.

    The walk holds a few hundred bytes of bookkeeping per object it visits
    (about 20 per agent), so for millions of agents report on a sample.

    Parameters
    ----------
    agents : iterable of Agent
        The agents to measure.
    include_scratch : bool
        Add the calling thread's scratch pool.

    Returns
    -------
    report : MemoryReport
        The totals over ``agents``; ``report.per_agent`` is the mean owned bytes.

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> agents = [Agent(model=gm, seed=i) for i in range(10)]
    >>> from fa_core import memory_report_many
    >>> report = memory_report_many(agents, include_scratch=False)
    >>> report.n_agents, report.scratch
    (10, 0)
    >>> report.total == report.shared_model + report.beliefs + report.history
    True
    """
    agents = list(agents)
    walk = _Walk()
    for i, agent in enumerate(agents):
        walk.add_agent(i, agent)
    owner = walk.owners(len(agents))
    totals = {"model": [0, 0], "beliefs": 0, "history": 0}
    for oid, _obj in walk.nodes.items():
        size, kind = walk.size[oid], walk.kind[oid]
        if kind == "model":
            totals["model"][owner[oid] != _SHARED] += size
        elif owner[oid] != _SHARED:
            totals[kind] += size
    return MemoryReport(n_agents=len(walk.roots), shared_model=totals["model"][0],
                        private_params=totals["model"][1], beliefs=totals["beliefs"],
                        history=totals["history"],
                        scratch=scratch_nbytes() if include_scratch else 0)


def retained_bytes(build: Callable[[], object], count: int = 1) -> float:
    """Bytes per object still allocated (tracemalloc) after ``count`` calls of ``build``.

    Everything ``build`` allocates is traced, including model arrays it
    creates; what it frees before returning (temporaries, input copies an
    agent does not keep) is not counted. Used by the benchmarks to compare
    fa_core's and pymdp's agents the same way.
    """
    import tracemalloc
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [build() for _ in range(count)]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return (after - before) / count


def _sizeof(obj) -> int:
    size = sys.getsizeof(obj)
    if isinstance(obj, np.ndarray) and obj.ndim:
        size += 16 * obj.ndim  # numpy's separate shape + strides block
    return size


def _children(obj) -> list:
    """Objects ``obj`` references, each reference once (as tp_traverse visits them)."""
    if isinstance(obj, np.ndarray):  # arrays are not tracked by gc
        out = [] if obj.base is None else [obj.base]
        if obj.dtype == object:
            out.extend(obj.ravel(order="K").tolist())
        return out
    if isinstance(obj, (types.BuiltinMethodType, types.MethodType)):
        self = obj.__self__
        return [] if self is None or isinstance(self, types.ModuleType) else [self]
    if isinstance(obj, _ATOMIC):
        return []
    return gc.get_referents(obj)


class _Walk:
    """The graph of objects reachable from agents, with in-edge counts."""

    def __init__(self):
        self.nodes: dict[int, object] = {}
        self.size: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.parents: dict[int, list[int]] = {}
        self.roots: dict[int, int] = {}  # id(agent) -> agent index

    def add_agent(self, index: int, agent) -> None:
        aid = id(agent)
        if aid in self.nodes:
            return
        self._add(agent, "beliefs", None)
        self.roots[aid] = index
        slots = [(n, getattr(agent, n)) for n in copyreg._slotnames(type(agent))
                 if n not in _HISTORY_SLOTS and n != "_model" and hasattr(agent, n)]
        history = [getattr(agent, n) for n in _HISTORY_SLOTS if hasattr(agent, n)]
        refs = gc.get_referents(agent)
        slot_ids = {id(v) for _, v in slots} | {id(v) for v in history} | {id(agent._model)}
        for ref in refs:  # the instance __dict__, if any, and anything not in a slot
            if id(ref) not in slot_ids and not isinstance(ref, _SKIP):
                slots.append(("", ref))
        # the model first: other slots may reach it too (a Population member's population);
        # beliefs before history: the last action is also the last entry of prev_actions
        self._visit(agent._model, "model", aid)
        si_copy = _SI_MODELS.get(agent._model)  # kept beside the model, not reachable from it
        if si_copy is not None:
            self._visit(si_copy, "model", aid)
        for _, value in slots:
            self._visit(value, "beliefs", aid)
        for value in history:
            self._visit(value, "history", aid)

    def _add(self, obj, kind: str, parent: int | None) -> bool:
        oid = id(obj)
        if oid in self.nodes:
            if parent is not None:
                self.parents[oid].append(parent)
            return False
        self.nodes[oid] = obj
        self.size[oid] = _sizeof(obj)
        self.kind[oid] = kind
        self.parents[oid] = [] if parent is None else [parent]
        return True

    def _visit(self, obj, kind: str, parent: int) -> None:
        stack = [(obj, parent)]
        while stack:
            o, p = stack.pop()
            if isinstance(o, _SKIP) or o is None or isinstance(o, bool):
                continue
            if self._add(o, kind, p):
                oid = id(o)
                for child in _children(o):
                    stack.append((child, oid))

    def owners(self, n_agents: int) -> dict[int, int]:
        """Agent index owning each node, or ``_SHARED``.

        A node is owned by agent ``i`` when all its references come from
        nodes owned by ``i``. References from outside the walk are found by
        comparing ``sys.getrefcount`` with the in-edges the walk saw.
        """
        baseline = _refcount_baseline()
        external = {}
        for oid, obj in self.nodes.items():
            external[oid] = sys.getrefcount(obj) - baseline - len(self.parents[oid])
            obj = None
        owner = {}
        for oid, index in self.roots.items():
            owner[oid] = index
        # propagate in topological order; nodes left in a cycle are shared
        pending = {oid: len(set(ps)) for oid, ps in self.parents.items() if oid not in owner}
        children: dict[int, list[int]] = {}
        for oid, ps in self.parents.items():
            for p in set(ps):
                children.setdefault(p, []).append(oid)
        ready = list(owner)
        while ready:
            nid = ready.pop()
            for child in children.get(nid, ()):
                pending[child] -= 1
                if pending[child] == 0:
                    labels = {owner[p] for p in self.parents[child]}
                    owner[child] = (labels.pop() if len(labels) == 1 and external[child] <= 0
                                    else _SHARED)
                    ready.append(child)
        for oid in self.nodes:
            owner.setdefault(oid, _SHARED)
        return owner


def _refcount_baseline() -> int:
    """``sys.getrefcount`` of an object referenced only by the walk, measured the
    way :meth:`_Walk.owners` measures (one dict value, one loop variable)."""
    probe = {0: [object()]}
    for _, obj in probe.items():
        return sys.getrefcount(obj)
    raise AssertionError("unreachable")
