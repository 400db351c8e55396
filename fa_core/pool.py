"""``AgentPool``: agents by id under a memory budget, the rest hibernated in RAM or on disk.

The least recently used agents beyond the budget are hibernated
(:func:`fa_core.lifecycle.hibernate`, lossless by default) and woken again on
access. With ``spill=PATH`` their blobs go to a file
(:class:`fa_core.spillfile.SpillFile`) instead of RAM, the budget counts RAM
only, and the pool reopens from the file in a later process.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, MutableMapping

import numpy as np

from fa_core.agent import Agent
from fa_core.agent_state import (_check_hibernatable, _class_name, _lossy_check,
                                 blob_model_key, hibernate, wake)
from fa_core.blobformat import unframe
from fa_core.model import GenerativeModel, model_by_key

__all__ = ["AgentPool"]

_AGENT = _class_name(Agent)
# compaction starts by itself once this share of the data file is dead records
# (and the file is past _COMPACT_MIN bytes: small files are not worth rewriting)
_GARBAGE_RATIO, _COMPACT_MIN = 0.5, 1 << 20


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
        Passed to :func:`~fa_core.lifecycle.hibernate`.
    prune : float, optional
        Passed to :func:`~fa_core.lifecycle.hibernate`.
    spill : str or os.PathLike, optional
        Hibernated agents go to this file (and ``PATH.<n>.data`` next to it)
        instead of RAM; the budget counts RAM only. An existing file is
        reopened: every agent it holds is in the pool, hibernated. See Notes.
    models : iterable of GenerativeModel, optional
        With ``spill``: the models of the agents in a reopened file (by
        default the live models with their content keys).
    classes : iterable of type, optional
        With ``spill``: the :class:`~fa_core.Agent` subclasses of agents in a
        reopened file (waking one of another class raises ValueError).
    garbage_ratio : float
        With ``spill``: :meth:`flush` also compacts the file (:meth:`compact`)
        once this share of it is dead records (replaced or deleted agents) and
        it is larger than 1 MiB.

    Notes
    -----
    The agent object ``pool[id]`` returns is valid until the pool hibernates
    it: do not keep it across other pool accesses (changes made to it after
    that are lost); ask the pool again. Models of hibernated agents are kept
    alive by the pool.

    A spilled pool appends every hibernated agent to its data file;
    :meth:`flush` writes the awake agents too and commits (durably: fsync,
    then an atomic rename of the commit file), and so do :meth:`close`,
    :meth:`compact` and leaving a ``with`` block, and nothing else (so a
    commit is always a state the caller chose). A process killed at any
    point leaves a file that reopens as it was at the last commit; a file
    damaged otherwise (truncated, bits flipped) raises
    :class:`~fa_core.errors.CorruptStateError` when opened or woken, never a
    wrong agent. One process at a time may open a spill file.

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

    Spilled to a file, then reopened:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "agents.pool")
    >>> with AgentPool(max_awake=2, spill=path) as pool:
    ...     for i in range(5):
    ...         pool[i] = Agent(model=gm, seed=i)
    >>> again = AgentPool.open(path, max_awake=2, models=[gm])
    >>> len(again), again.n_awake
    (5, 0)
    >>> again.close()
    """

    def __init__(self, max_awake: int | None = None, *, max_bytes: int | None = None,
                 lossy: str | None = None, prune: float | None = None, spill=None,
                 models: Iterable[GenerativeModel] = (), classes: Iterable[type] = (),
                 garbage_ratio: float = _GARBAGE_RATIO):
        if (max_awake is None) == (max_bytes is None):
            raise ValueError("AgentPool needs exactly one of max_awake and max_bytes")
        for name, v in (("max_awake", max_awake), ("max_bytes", max_bytes)):
            if v is not None and (not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        _lossy_check(lossy, prune)
        if not (isinstance(garbage_ratio, (int, float)) and 0.0 < garbage_ratio <= 1.0):
            raise ValueError(f"garbage_ratio must be in (0, 1], got {garbage_ratio!r}")
        models, classes = list(models), list(classes)
        for m in models:
            if not isinstance(m, GenerativeModel):
                raise TypeError(f"models must be GenerativeModels, got {type(m).__name__}")
        for c in classes:
            if not (isinstance(c, type) and issubclass(c, Agent)):
                raise TypeError(f"classes must be fa_core.Agent subclasses, got {c!r}")
        self.max_awake, self.max_bytes = max_awake, max_bytes
        self._hib = {"lossy": lossy, "prune": prune}
        self._awake: OrderedDict[Hashable, Agent] = OrderedDict()  # least recently used first
        self._sizes: dict[Hashable, int] = {}
        self._awake_bytes = 0
        self._asleep: dict[Hashable, bytes] = {}  # in RAM (no spill)
        self._classes: dict[Hashable, type] = {}  # of hibernated agents of Agent subclasses
        self._models: dict[bytes, list] = {}  # key -> [model, number of blobs needing it]
        self._class_by_name = {_class_name(c): c for c in classes}
        self.garbage_ratio = float(garbage_ratio)
        self.n_hibernated = self.n_woken = self.n_compactions = 0
        self._spill = None
        if spill is not None:
            from fa_core.spillfile import SpillFile
            given = {m.content_key(): m for m in models}
            spill_file = SpillFile(spill)
            try:
                keys = {e.key for e in spill_file.entries.values()}
                for key in keys:  # every agent in the file must be wakeable
                    model = given.get(key) or model_by_key(key)
                    if model is None:
                        raise ValueError(
                            f"the spill file {spill_file.path!r} holds agents of a model with "
                            f"content key {key.hex()}: pass it in models= (or keep it alive)")
                    self._models[key] = [model, 0]
            except BaseException:
                spill_file.close()
                raise
            self._spill = spill_file

    @classmethod
    def open(cls, spill, max_awake: int | None = None, **options) -> AgentPool:
        """Reopen a spilled pool; FileNotFoundError if ``spill`` does not exist.

        Parameters
        ----------
        spill : str or os.PathLike
            The file a pool spilled to.
        max_awake : int, optional
            As the constructor (or ``max_bytes=``).
        **options
            The constructor's other keywords (``models``, ``classes``, ...).

        Returns
        -------
        pool : AgentPool
            Every agent the file held at its last commit, hibernated.

        Examples
        --------
        >>> import os, tempfile
        >>> from fa_core import AgentPool
        >>> AgentPool.open(os.path.join(tempfile.mkdtemp(), "none.pool"), max_awake=1)
        Traceback (most recent call last):
        ...
        FileNotFoundError: no AgentPool spill file at ...
        """
        if not os.path.exists(spill):
            raise FileNotFoundError(f"no AgentPool spill file at {os.fspath(spill)!r}")
        return cls(max_awake, spill=spill, **options)

    # -- mapping ---------------------------------------------------------------

    def __getitem__(self, agent_id: Hashable) -> Agent:
        agent = self._awake.get(agent_id)
        if agent is not None:
            self._awake.move_to_end(agent_id)
            return agent
        if self._spill is None:
            blob = self._asleep[agent_id]  # KeyError for an unknown id
            key = blob_model_key(blob)
            agent = wake(blob, self._models[key][0], cls=self._classes.get(agent_id, Agent))
            del self._asleep[agent_id]  # only once woken: a failed wake leaves the pool as it was
            self._classes.pop(agent_id, None)
            self._release(key)
        else:
            entry = self._live_spill().entries[agent_id]
            agent = wake(self._spill.read(entry), self._models[entry.key][0],
                         cls=self._class_of(entry.cls_name))
            # the record stays: the agent's last durable state until it is hibernated again
        self.n_woken += 1
        self._admit(agent_id, agent)
        return agent

    def __setitem__(self, agent_id: Hashable, agent: Agent) -> None:
        if not isinstance(agent, Agent):
            raise TypeError(f"AgentPool holds fa_core.Agent objects, got {type(agent).__name__}")
        _check_hibernatable(agent)
        self._check_id(agent_id)
        if self._spill is not None:
            # no delete record: its record on disk stays the last durable state until the
            # new agent is hibernated or flushed, so a commit never lacks a replaced agent
            self._live_spill()
            self._drop_awake(agent_id)
        elif agent_id in self:
            del self[agent_id]
        self._admit(agent_id, agent)

    def __delitem__(self, agent_id: Hashable) -> None:
        if self._spill is not None:
            spill = self._live_spill()
            if agent_id not in self._awake and agent_id not in spill.entries:
                raise KeyError(agent_id)
            self._drop_awake(agent_id)
            if agent_id in spill.entries:
                spill.delete(agent_id)
        elif agent_id in self._awake:
            del self._awake[agent_id]
            self._awake_bytes -= self._sizes.pop(agent_id, 0)
        else:
            self._release(blob_model_key(self._asleep.pop(agent_id)))
            self._classes.pop(agent_id, None)

    def __contains__(self, agent_id) -> bool:
        if agent_id in self._awake:
            return True
        return agent_id in (self._asleep if self._spill is None else self._spill.entries)

    def __iter__(self) -> Iterator[Hashable]:
        # a snapshot: reading values while iterating wakes and hibernates agents
        if self._spill is None:
            return iter(list(self._awake) + list(self._asleep))
        awake = self._awake
        return iter(list(awake) + [i for i in self._spill.entries if i not in awake])

    def __len__(self) -> int:
        return len(self._awake) + self.n_asleep

    # -- hibernated agents as bytes ---------------------------------------------

    def get_hibernated(self, agent_id: Hashable) -> bytes:
        """The blob of a hibernated agent, without waking it.

        Parameters
        ----------
        agent_id : hashable
            A hibernated agent's key (KeyError if it is awake or absent).

        Returns
        -------
        blob : bytes
            :func:`~fa_core.lifecycle.hibernate` bytes (:func:`~fa_core.lifecycle.wake` them).

        Examples
        --------
        >>> from fa_core import Agent, AgentPool, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pool = AgentPool(max_awake=1)
        >>> pool["a"], pool["b"] = Agent(model=gm), Agent(model=gm)
        >>> len(pool.get_hibernated("a")) > 0
        True
        """
        if agent_id in self._awake:
            raise KeyError(f"agent {agent_id!r} is awake")
        if self._spill is None:
            return self._asleep[agent_id]
        return self._spill.read(self._live_spill().entries[agent_id])

    def set_hibernated(self, agent_id: Hashable, blob: bytes, cls: type = Agent) -> None:
        """Add an agent as hibernated bytes, without waking it (replaces ``agent_id``).

        The blob's header and checksum are checked here, its contents when it
        is woken.

        Parameters
        ----------
        agent_id : hashable
            The agent's key.
        blob : bytes
            What :func:`~fa_core.lifecycle.hibernate` returned.
        cls : type
            The agent's class (:class:`~fa_core.Agent` or a subclass).

        Raises
        ------
        CorruptStateError
            If ``blob`` is not an intact hibernated agent.
        ValueError
            If no live model has the blob's content key.

        Examples
        --------
        >>> from fa_core import Agent, AgentPool, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pool = AgentPool(max_awake=1)
        >>> pool.set_hibernated("a", Agent(model=gm, seed=0).hibernate())
        >>> pool.is_awake("a"), pool["a"].curr_timestep
        (False, 0)
        """
        from fa_core.agent_state import _F_RENORM, _F_ZLIB, _MAGIC, _VERSION, _WHAT
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            raise TypeError(f"cls must be fa_core.Agent or a subclass, got {cls!r}")
        self._check_id(agent_id)
        key = unframe(blob, _MAGIC, _VERSION, _F_ZLIB | _F_RENORM, _WHAT)[1]
        model = self._models[key][0] if key in self._models else model_by_key(key)
        if model is None:
            raise ValueError(f"no live model has content key {key.hex()}: keep the agent's "
                             "model alive")
        blob = bytes(blob)
        if self._spill is not None:
            self._live_spill()
            self._drop_awake(agent_id)  # the put replaces its record: no delete in between
        elif agent_id in self:
            del self[agent_id]
        self._store(agent_id, blob, key, model, cls)

    # -- budget ----------------------------------------------------------------

    @property
    def n_awake(self) -> int:
        return len(self._awake)

    @property
    def n_asleep(self) -> int:
        if self._spill is None:
            return len(self._asleep)
        entries = self._spill.entries
        return len(entries) - sum(1 for i in self._awake if i in entries)

    @property
    def asleep_nbytes(self) -> int:
        """Bytes of the hibernated agents' blobs held in RAM (``bytes`` objects included;
        0 for a spilled pool, see :attr:`spill_nbytes`)."""
        import sys
        return sum(sys.getsizeof(b) for b in self._asleep.values())

    @property
    def spill_nbytes(self) -> int:
        """Bytes of the spill data file (0 without ``spill``)."""
        return 0 if self._spill is None else self._spill.nbytes

    @property
    def spill_live_nbytes(self) -> int:
        """Bytes of the spill file's records still in use (what :meth:`compact` keeps)."""
        return 0 if self._spill is None else self._spill.live_nbytes

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

    # -- the spill file ----------------------------------------------------------

    def flush(self) -> None:
        """Write every awake agent to the spill file too and commit it (durable on return).

        Awake agents stay awake. Then compacts the file if its dead records
        exceed ``garbage_ratio``. Without ``spill`` this does nothing.

        Examples
        --------
        >>> import os, tempfile
        >>> from fa_core import Agent, AgentPool, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pool = AgentPool(max_awake=4, spill=os.path.join(tempfile.mkdtemp(), "p.pool"))
        >>> pool["a"] = Agent(model=gm)
        >>> pool.flush()                             # "a" is on disk, and still awake
        >>> pool.is_awake("a"), pool.spill_nbytes > 0
        (True, True)
        >>> pool.close()
        """
        if self._spill is None:
            return
        spill = self._live_spill()
        for agent_id, agent in self._awake.items():
            self._write(agent_id, agent)
        spill.commit()
        self._maybe_compact()

    def compact(self) -> None:
        """Rewrite the spill file without the records of replaced and deleted agents.

        Commits (as :meth:`flush`, without writing the awake agents); the old
        data file is removed once the new one is durable. Without ``spill``
        this does nothing.

        Examples
        --------
        >>> import os, tempfile
        >>> from fa_core import Agent, AgentPool, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pool = AgentPool(max_awake=1, spill=os.path.join(tempfile.mkdtemp(), "p.pool"))
        >>> for i in range(10):
        ...     pool[i] = Agent(model=gm)
        >>> for i in range(9):
        ...     del pool[i]
        >>> before = pool.spill_nbytes
        >>> pool.compact()
        >>> pool.spill_nbytes < before
        True
        >>> pool.close()
        """
        if self._spill is not None:
            self._live_spill().compact()
            self.n_compactions += 1

    def close(self) -> None:
        """:meth:`flush`, then close the spill file; the pool is unusable afterwards.

        Without ``spill`` this does nothing.

        Examples
        --------
        >>> import os, tempfile
        >>> from fa_core import Agent, AgentPool, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> path = os.path.join(tempfile.mkdtemp(), "p.pool")
        >>> pool = AgentPool(max_awake=1, spill=path)
        >>> pool[0] = Agent(model=gm)
        >>> pool.close()
        >>> len(AgentPool.open(path, max_awake=1))
        1
        """
        if self._spill is None or self._spill._fd < 0:
            return
        self.flush()
        self._spill.close()
        self._awake.clear()
        self._sizes.clear()
        self._awake_bytes = 0

    def __enter__(self) -> AgentPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _drop_awake(self, agent_id) -> None:
        if self._awake.pop(agent_id, None) is not None:
            self._awake_bytes -= self._sizes.pop(agent_id, 0)

    def _live_spill(self):
        if self._spill._fd < 0:
            raise ValueError(f"the AgentPool spilled to {self._spill.path!r} is closed")
        return self._spill

    def _maybe_compact(self) -> None:
        spill = self._spill
        if spill.nbytes > _COMPACT_MIN and \
                spill.nbytes - spill.live_nbytes > self.garbage_ratio * spill.nbytes:
            self.compact()

    def _write(self, agent_id: Hashable, agent: Agent) -> None:
        """Append ``agent``'s blob to the spill file under ``agent_id``."""
        blob = hibernate(agent, **self._hib)
        key = blob_model_key(blob)
        self._models.setdefault(key, [agent._model, 0])
        self._spill.put(agent_id, self._class_key(type(agent)), blob, key)

    def _class_key(self, cls: type) -> str | None:
        if cls is Agent:
            return None
        name = _class_name(cls)
        self._class_by_name.setdefault(name, cls)
        return name

    def _class_of(self, name: str | None) -> type:
        if name is None:
            return Agent
        cls = self._class_by_name.get(name)
        if cls is None:
            raise ValueError(f"the spill file holds an agent of class {name}: pass that class "
                             "in classes= to wake it")
        return cls

    # -- internals ---------------------------------------------------------------

    @staticmethod
    def _check_id(agent_id) -> None:
        hash(agent_id)  # TypeError for an unhashable id, before anything changes

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
        if self._spill is not None:
            self._write(agent_id, agent)
            self.n_hibernated += 1
            return
        blob = hibernate(agent, **self._hib)
        self._store(agent_id, blob, blob_model_key(blob), agent._model, type(agent))
        self.n_hibernated += 1

    def _store(self, agent_id, blob: bytes, key: bytes, model, cls: type) -> None:
        """Keep a hibernated agent (in RAM, or appended to the spill file)."""
        if self._spill is not None:
            self._models.setdefault(key, [model, 0])
            self._live_spill().put(agent_id, self._class_key(cls), blob, key)
            return
        entry = self._models.get(key)
        if entry is None:
            self._models[key] = [model, 1]
        else:
            entry[1] += 1
        self._asleep[agent_id] = blob
        if cls is not Agent:
            self._classes[agent_id] = cls

    def _release(self, key: bytes) -> None:
        entry = self._models[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._models[key]

    def __repr__(self) -> str:
        budget = (f"max_awake={self.max_awake}" if self.max_bytes is None
                  else f"max_bytes={self.max_bytes}")
        spill = "" if self._spill is None else f", spill={self._spill.path!r}"
        return f"AgentPool({budget}, awake={self.n_awake}, asleep={self.n_asleep}{spill})"
