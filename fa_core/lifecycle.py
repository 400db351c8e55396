"""Agent lifecycle: pickling, hibernation to compact bytes, and a pool under a memory budget.

Three ways to put an :class:`~fa_core.agent.Agent` away:

* ``pickle``: self-contained and exact. The agent's model is pickled by
  reference, so a pickle of many agents sharing one model stores it once, and
  unpickling it where an equal model is alive reuses that model (see
  :meth:`GenerativeModel.content_key <fa_core.model.GenerativeModel.content_key>`).
  :func:`dumps` / :func:`loads` go further and leave models out of the pickle.
  Unpickled agents are checked (:func:`fa_core.restore_checks.check_agent`),
  but as with any pickle, unpickling untrusted data can run arbitrary code.
* :func:`hibernate` / :func:`wake`: a compact blob holding only what the agent
  owns (beliefs, policy posterior, expected free energies, action, action
  history, time step, options that differ from the defaults, RNG state) and
  the model's content key. Exact by default; opt-in lossy compression of beliefs.
  The blob is checked (length, version, CRC-32) and pickle-free (see
  :mod:`fa_core.blobformat`): waking bytes from elsewhere never runs code and
  raises :class:`~fa_core.errors.CorruptStateError` for anything malformed.
* :class:`AgentPool`: agents by id with at most a budget of them awake; the
  least recently used are hibernated and woken again on access.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator, MutableMapping

import numpy as np

from fa_core.agent import Agent
# an agent's own state (pickling, hibernate / wake) lives in fa_core.agent_state,
# which fa_core.agent imports; re-exported here, where it has always been
from fa_core.agent_state import (FLOAT16_ABS_ERROR, FLOAT16_REL_ERROR, _FIXED,  # noqa: F401
                                 _check_hibernatable, _decode_floats, _lossy_check,
                                 agent_getstate, agent_setstate, blob_model_key, dumps,
                                 hibernate, loads, wake)

__all__ = ["hibernate", "wake", "blob_model_key", "dumps", "loads", "AgentPool",
           "FLOAT16_REL_ERROR", "FLOAT16_ABS_ERROR"]


# ---------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------


class AgentPool(MutableMapping):
    """Agents by id, with at most a budget of them awake; the rest hibernated.

    ``pool[id] = agent`` adds an agent, ``pool[id]`` returns it (waking it if
    it was hibernated), ``del pool[id]`` removes it. When the awake agents
    exceed the budget, the least recently used are hibernated (lossless by
    default), so a run through the pool gives the same numbers as a run with
    every agent awake.

    Parameters
    ----------
    max_awake : int, optional
        At most this many agents awake.
    max_bytes : int, optional
        At most this many bytes of awake agents' own memory (beliefs, history
        and private parameters, as :func:`fa_core.memory.memory_report` counts
        them; measured when an agent is added or woken). At least one agent
        (the one just used) is always awake.
    lossy : {None, "float16"}
        Passed to :func:`hibernate`.
    prune : float, optional
        Passed to :func:`hibernate`.

    Notes
    -----
    The agent object ``pool[id]`` returns is valid until the pool hibernates
    it: do not keep it across other pool accesses (changes made to it after
    that are lost); ask the pool again. Models of hibernated agents are kept
    alive by the pool.

    Examples
    --------
    >>> from fa_core import Agent, AgentPool, GenerativeModel, builtin_models
    >>> gm = GenerativeModel(**builtin_models.tmaze())
    >>> pool = AgentPool(max_awake=2)
    >>> for i in range(5):
    ...     pool[i] = Agent(model=gm, seed=i)
    >>> pool
    AgentPool(max_awake=2, awake=2, asleep=3)
    >>> qs = pool[0].infer_states([0, 0, 1])     # agent 0 is woken; another one sleeps
    >>> pool.is_awake(0), pool.n_asleep
    (True, 3)
    """

    def __init__(self, max_awake: int | None = None, *, max_bytes: int | None = None,
                 lossy: str | None = None, prune: float | None = None):
        if (max_awake is None) == (max_bytes is None):
            raise ValueError("AgentPool needs exactly one of max_awake and max_bytes")
        for name, v in (("max_awake", max_awake), ("max_bytes", max_bytes)):
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        _lossy_check(lossy, prune)
        self.max_awake, self.max_bytes = max_awake, max_bytes
        self._hib = {"lossy": lossy, "prune": prune}
        self._awake: OrderedDict[Hashable, Agent] = OrderedDict()  # least recently used first
        self._sizes: dict[Hashable, int] = {}
        self._awake_bytes = 0
        self._asleep: dict[Hashable, bytes] = {}
        self._classes: dict[Hashable, type] = {}  # of hibernated agents of Agent subclasses
        self._models: dict[bytes, list] = {}  # key -> [model, number of blobs needing it]
        self.n_hibernated = self.n_woken = 0

    # -- mapping ---------------------------------------------------------------

    def __getitem__(self, agent_id: Hashable) -> Agent:
        agent = self._awake.get(agent_id)
        if agent is not None:
            self._awake.move_to_end(agent_id)
            return agent
        blob = self._asleep.pop(agent_id)  # KeyError for an unknown id
        key = blob_model_key(blob)
        entry = self._models[key]
        agent = wake(blob, entry[0], cls=self._classes.pop(agent_id, Agent))
        self._release(key)
        self.n_woken += 1
        self._admit(agent_id, agent)
        return agent

    def __setitem__(self, agent_id: Hashable, agent: Agent) -> None:
        if not isinstance(agent, Agent):
            raise TypeError(f"AgentPool holds fa_core.Agent objects, got {type(agent).__name__}")
        _check_hibernatable(agent)
        if agent_id in self:
            del self[agent_id]
        self._admit(agent_id, agent)

    def __delitem__(self, agent_id: Hashable) -> None:
        if agent_id in self._awake:
            del self._awake[agent_id]
            self._awake_bytes -= self._sizes.pop(agent_id, 0)
        else:
            self._release(blob_model_key(self._asleep.pop(agent_id)))
            self._classes.pop(agent_id, None)

    def __contains__(self, agent_id) -> bool:
        return agent_id in self._awake or agent_id in self._asleep

    def __iter__(self) -> Iterator[Hashable]:
        # a snapshot: reading values while iterating wakes and hibernates agents
        return iter(list(self._awake) + list(self._asleep))

    def __len__(self) -> int:
        return len(self._awake) + len(self._asleep)

    # -- budget ----------------------------------------------------------------

    @property
    def n_awake(self) -> int:
        return len(self._awake)

    @property
    def n_asleep(self) -> int:
        return len(self._asleep)

    @property
    def asleep_nbytes(self) -> int:
        """Bytes of the hibernated agents' blobs (``bytes`` objects included)."""
        import sys
        return sum(sys.getsizeof(b) for b in self._asleep.values())

    def is_awake(self, agent_id: Hashable) -> bool:
        """Whether agent ``agent_id`` is awake (asking does not wake it).

        Parameters
        ----------
        agent_id : hashable
            The agent's key in the pool.

        Returns
        -------
        awake : bool
            ``True`` if awake, ``False`` if hibernated or not in the pool.

        Examples
        --------
        >>> from fa_core import Agent, AgentPool, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pool = AgentPool(max_awake=2)
        >>> for i in range(3):
        ...     pool[i] = Agent(model=gm, seed=i)
        >>> [pool.is_awake(i) for i in range(3)]     # the least recently used sleeps
        [False, True, True]
        """
        return agent_id in self._awake

    def hibernate_all(self) -> None:
        """Hibernate every awake agent.

        Examples
        --------
        >>> from fa_core import Agent, AgentPool, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pool = AgentPool(max_awake=2)
        >>> for i in range(3):
        ...     pool[i] = Agent(model=gm, seed=i)
        >>> pool.hibernate_all()
        >>> pool.n_awake, pool.n_asleep
        (0, 3)
        """
        while self._awake:
            self._evict_one()

    def _admit(self, agent_id: Hashable, agent: Agent) -> None:
        self._awake[agent_id] = agent
        if self.max_bytes is not None:
            from fa_core.memory import agent_nbytes
            size = agent_nbytes(agent)
            self._sizes[agent_id] = size
            self._awake_bytes += size
            while self._awake_bytes > self.max_bytes and len(self._awake) > 1:
                self._evict_one()
        else:
            while len(self._awake) > self.max_awake:
                self._evict_one()

    def _evict_one(self) -> None:
        agent_id, agent = self._awake.popitem(last=False)
        self._awake_bytes -= self._sizes.pop(agent_id, 0)
        blob = hibernate(agent, **self._hib)
        key = blob_model_key(blob)
        entry = self._models.get(key)
        if entry is None:
            self._models[key] = [agent._model, 1]
        else:
            entry[1] += 1
        self._asleep[agent_id] = blob
        if type(agent) is not Agent:
            self._classes[agent_id] = type(agent)
        self.n_hibernated += 1

    def _release(self, key: bytes) -> None:
        entry = self._models[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._models[key]

    def __repr__(self) -> str:
        budget = (f"max_awake={self.max_awake}" if self.max_bytes is None
                  else f"max_bytes={self.max_bytes}")
        return f"AgentPool({budget}, awake={self.n_awake}, asleep={self.n_asleep})"
