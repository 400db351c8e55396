"""``fa_core.distributed``: one population sharded over Ray actors (``pip install fa_core[ray]``).

A :class:`ShardedPopulation` behaves like one :class:`fa_core.Population`
whose agents live in ``n_shards`` Ray actors, each holding a ``Population``
of a slice of the agents. Ray does the scheduling, placement and transport:
the same code runs on the local cluster ``ray.init()`` starts and on a
multi-machine cluster (``ray.init(address=...)``).

- The model is put in Ray's object store once and handed to every shard by
  reference, so each worker deserialises it once; models pickle by content and
  are interned, so every population of one worker process shares one model.
- Every agent gets the random stream it would get in one process
  (:func:`fa_core.population.agent_streams`), so actions, beliefs and random
  draws are identical to ``Population(model, n_agents, seed=seed)`` whatever
  the number of shards, also across :meth:`~ShardedPopulation.add` and
  :meth:`~ShardedPopulation.remove`.
- Observations and actions travel as numpy arrays through the object store
  (large arrays are read by the actors without a copy).
- A shard whose actor dies is reported by :class:`ShardLostError`; until
  :meth:`~ShardedPopulation.restore` rolls every shard back to the last
  :meth:`~ShardedPopulation.checkpoint`, every call raises it again, so no
  agent is ever silently dropped.

Global indices
--------------
Agents are numbered ``0 .. n_agents - 1`` exactly as in one ``Population``:
``add(k)`` numbers newcomers ``n .. n + k - 1``; ``remove`` moves the last
surviving agents into the removed indices. Where an agent lives is the
driver's business: newcomers go to the smallest shards, and each shard
removes its own rows; :meth:`ShardedPopulation.locate` tells the shard and
row of an index.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
import warnings
import zlib

import numpy as np

try:
    import ray
    from ray.exceptions import RayActorError
except ImportError as exc:  # pragma: no cover - exercised only without ray
    raise ImportError("fa_core.distributed needs Ray: pip install 'fa_core[ray]'") from exc

from fa_core import options as _opt
from fa_core.blobformat import Reader, dump_value, frame, load_value, unframe
from fa_core.errors import CorruptStateError
from fa_core.model import GenerativeModel, resolve_model
from fa_core.population import (Population, agent_streams, check_checkpoint, check_obs,
                                removal_moves)

__all__ = ["Checkpoint", "ShardLostError", "ShardedPopulation"]

_STATE_ARRAYS = Population._ARRAYS + Population._OPTIONAL
_PER_AGENT_PARAMS = ("gamma", "alpha", "lnC", "lnE")  # what newcomers copy from agent 0


class ShardLostError(RuntimeError):
    """Shards whose Ray actors died; :meth:`ShardedPopulation.restore` resumes the run.

    Parameters
    ----------
    shards : iterable of int
        The lost shards.
    cause : BaseException, optional
        The Ray error that revealed the loss (its first line goes into the message).

    Attributes
    ----------
    shards : list of int
        The lost shards.

    Examples
    --------
    >>> from fa_core.distributed import ShardLostError
    >>> err = ShardLostError([2, 0])
    >>> err.shards
    [0, 2]
    >>> print(err)  # doctest: +ELLIPSIS
    lost shard(s) [0, 2] of the sharded population; the population is stopped: call restore() ...
    """

    def __init__(self, shards, cause: BaseException | None = None):
        self.shards = sorted(shards)
        detail = (f" (Ray actor died: {type(cause).__name__}: "
                  f"{(str(cause).splitlines() or [''])[0]})" if cause else "")
        super().__init__(
            f"lost shard(s) {self.shards} of the sharded population{detail}; "
            f"the population is stopped: call restore() to resume from the last checkpoint")


@dataclasses.dataclass
class Checkpoint:
    """Every shard's hibernated population and the driver's index mapping, at one moment.

    Picklable: save it to resume a run in another session with
    :meth:`ShardedPopulation.wake`. A Checkpoint pickles its model and seed
    sequence with ``pickle``, so unpickle checkpoints from trusted sources
    only (as numpy's ``np.load(allow_pickle=True)``); its shard blobs are the
    checked, pickle-free :meth:`Population.hibernate` format, and
    :meth:`ShardedPopulation.restore` checks every blob and member list
    (:func:`fa_core.population.check_checkpoint`) before any shard changes.

    Parameters
    ----------
    model : GenerativeModel
        The population's model.
    blobs : list of bytes
        Per shard, :meth:`Population.hibernate` bytes.
    members : list of ndarray of int
        Per shard, the global index of each of its rows.
    seed_seq : numpy.random.SeedSequence
        The population's seed sequence.
    n_seeded : int
        Stream draws made so far (construction and adds).

    Examples
    --------
    >>> import numpy as np
    >>> from fa_core import GenerativeModel, builtin_models
    >>> from fa_core.distributed import ShardedPopulation
    >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
    >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
    >>> obs = np.array([[0, 0, 1]] * 6)
    >>> ckpt = pop.checkpoint()
    >>> len(ckpt.blobs), [m.tolist() for m in ckpt.members]
    (2, [[0, 1, 2], [3, 4, 5]])
    >>> pop.shutdown()
    """

    model: GenerativeModel
    blobs: list            #: per shard, :meth:`Population.hibernate` bytes
    members: list          #: per shard, the global index of each of its rows
    seed_seq: np.random.SeedSequence
    n_seeded: int          #: stream draws made so far (construction and adds)


@ray.remote(max_restarts=0)  # a restarted shard would be a fresh population: never silently
class _Shard:
    """A Ray actor holding one :class:`Population`, built fresh or from hibernated bytes."""

    def __init__(self, model: GenerativeModel, n_threads: int, blob=None, **population):
        self.model = model  # held so a woken blob unpickles to this very model
        self.n_threads = n_threads
        if blob is None:
            self.pop = Population(model, n_threads=n_threads, **population)
        else:
            self.wake(blob)
        self.compute_s = 0.0  # seconds spent inside population calls, for overhead figures

    def call(self, method: str, *args):
        t0 = time.perf_counter()
        out = getattr(self.pop, method)(*args)
        self.compute_s += time.perf_counter() - t0
        return out

    def get(self, name: str):
        return getattr(self.pop, name)

    def add(self, streams: np.ndarray, params: dict | None) -> None:
        k = len(streams)
        new = slice(self.pop.n_agents, self.pop.n_agents + k)
        self.pop.add(k, streams=streams)
        for name, row in (params or {}).items():  # newcomers copy the population's agent 0
            if row is not None:
                self.pop.set(name, row, rows=new)

    def row_params(self, row: int) -> dict:
        return {name: None if getattr(self.pop, name) is None else getattr(self.pop, name)[row]
                for name in _PER_AGENT_PARAMS}

    def model_identity(self) -> tuple[int, int, bytes]:
        """(process id, id of the population's model, content key): sharing checks in tests."""
        return os.getpid(), id(self.pop.model), self.pop.model.content_key()

    def wake(self, blob: bytes) -> None:
        self.pop = Population.wake(blob, self.model)
        self.pop.n_threads = self.n_threads  # this actor's CPUs, not the hibernated shard's

    def compute_seconds(self) -> float:
        return self.compute_s

    def member(self, row: int, name: str):
        """Attribute ``name`` of agent ``row`` (``pop[row].pA``, ...): learned parameters."""
        return getattr(self.pop[row], name)

    def qs_t0_missing(self) -> int | None:
        """None if every agent has a first posterior; -1 without ``save_belief_hist``;
        else the first row without one."""
        d = self.pop.__dict__
        if d["_qs_t0"] is None:
            return -1
        has = d["_has_qs_t0"][:self.pop.n_agents]
        return None if has.all() else int(np.argmin(has))

    def save(self, path: str) -> tuple[int, int, int]:
        return save_shard(self.pop, path)

    def load_pending(self, path: str, nbytes: int, crc: int, n_agents: int) -> str | None:
        """Read a shard file into a pending population; an error message, or None."""
        self.pending = None
        try:
            pop = load_shard(path, self.model, nbytes, crc)
        except (OSError, CorruptStateError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if pop.n_agents != n_agents:
            return f"it holds {pop.n_agents} agents, the manifest gives {n_agents}"
        pop.n_threads = self.n_threads
        self.pending = pop
        return None

    def commit_pending(self, keep: bool) -> None:
        if keep:
            self.pop = self.pending
        self.pending = None


# -- checkpoints on files: one file per shard, written by the shard, and a manifest --------

MANIFEST = "manifest.fashard"
_MANIFEST_MAGIC, _MANIFEST_VERSION = b"FS", 1


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: a temporary file, fsync, rename, fsync the folder."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_crc(path: str) -> tuple[int, int]:
    """``(bytes, CRC-32)`` of the file at ``path``, read in chunks."""
    size, crc = 0, 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
    return size, crc


def save_shard(pop: Population, path: str) -> tuple[int, int, int]:
    """The one place a shard's population goes to its file: :meth:`Population.save`.

    One file format for a population on disk everywhere (:mod:`fa_core.storage`:
    atomic, versioned, checksummed); returns ``(n_agents, bytes, crc32)`` of the
    file for the manifest, which ties every shard file to its checkpoint.
    """
    pop.save(path)
    return (pop.n_agents, *_file_crc(path))


def load_shard(path: str, model: GenerativeModel, nbytes: int, crc: int) -> Population:
    """The population :func:`save_shard` wrote to ``path`` (:meth:`Population.load`),
    its size and CRC-32 first checked against the manifest's."""
    size, got = _file_crc(path)
    if size != nbytes or got != crc:
        raise CorruptStateError(f"corrupt or truncated shard file {path!r}: {size} bytes "
                                f"and CRC-32 {got:#010x}, its manifest gives "
                                f"{nbytes} and {crc:#010x}")
    return Population.load(path, model)


def _read_manifest(directory: str, what: str) -> tuple[bytes, dict]:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no sharded checkpoint in {directory!r} (no {MANIFEST})") from None
    _, key, body = unframe(blob, _MANIFEST_MAGIC, _MANIFEST_VERSION, 0, what)
    r = Reader(body, what)
    man = load_value(r)
    r.done()

    def fail(msg):
        raise CorruptStateError(f"corrupt or truncated {what}: {msg}")

    if type(man) is not dict or set(man) != {"shards", "members", "seed_seq", "n_seeded"}:
        fail("its manifest does not hold shards, members, seed_seq and n_seeded")
    shards, members = man["shards"], man["members"]
    if type(shards) is not list or type(members) is not list or len(shards) != len(members) \
            or not shards:
        fail("its manifest's shard and member lists differ in length")
    for s, (sh, m) in enumerate(zip(shards, members)):
        if type(sh) is not tuple or len(sh) != 4 or type(sh[0]) is not str or \
                os.path.basename(sh[0]) != sh[0] or not all(type(x) is int for x in sh[1:]):
            fail(f"shard {s}'s entry is not (file, agents, bytes, crc32)")
        if not isinstance(m, np.ndarray) or m.dtype.kind not in "iu" or m.shape != (sh[1],):
            fail(f"shard {s} holds {sh[1]} agents but its member list is "
                 f"{getattr(m, 'shape', type(m).__name__)}")
    total = sum(sh[1] for sh in shards)
    every = np.concatenate([np.asarray(m, np.int64) for m in members])
    if not np.array_equal(np.sort(every), np.arange(total)):
        fail(f"its member lists do not number the {total} agents 0..{total - 1} once each")
    if type(man["seed_seq"]) is not np.random.SeedSequence or type(man["n_seeded"]) is not int:
        fail("its seed sequence or stream count is malformed")
    return key, man


class ShardedPopulation:
    """A :class:`fa_core.Population` whose agents are split over Ray actors.

    Parameters
    ----------
    model : GenerativeModel
        The model every agent uses.
    n_agents : int
        Number of agents.
    n_shards : int, optional
        Number of shards (Ray actors). Default: one per ``cpus_per_shard``
        CPUs of the cluster.
    seed : int, numpy.random.SeedSequence or numpy.random.Generator, optional
        As for :class:`Population` (:func:`fa_core.options.seed_sequence`): the same seed
        gives the same run whatever ``n_shards`` is.
    cpus_per_shard : float
        CPUs Ray reserves for each shard; a shard steps its agents on
        ``max(1, int(cpus_per_shard))`` threads. Fractions let more shards
        than CPUs share a machine.
    actor_options : dict, optional
        Extra :meth:`ray.actor.ActorClass.options` for the shards (resources,
        placement groups, ...). Shards are spread over nodes by default.
    **options
        The other :class:`Population` keywords (``gamma``, ``alpha``, ``C``,
        ``E``, ``use_utility``, ``action_selection``, learning rates,
        ``inference_algo="MMP"`` with ``inference_horizon``, ``use_BMA`` and
        ``policy_sep_prior``, ``sophisticated=True`` with the ``si_*`` options,
        ...); per-agent arrays are split over the shards. ``storage`` is not
        accepted (use :meth:`checkpoint` with a directory).

    Notes
    -----
    Starts Ray with ``ray.init()`` if it is not running. Dead actors are not
    restarted by Ray (``max_restarts=0``): a restarted actor would hold fresh
    agents, silently replacing the lost ones.

    Examples
    --------
    Two shards on the local machine (``ray.init()`` is called if Ray is not
    running; ``cpus_per_shard=0.5`` lets both fit on one CPU):

    >>> import numpy as np
    >>> from fa_core import GenerativeModel, builtin_models
    >>> from fa_core.distributed import ShardedPopulation
    >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
    >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
    >>> obs = np.array([[0, 0, 1]] * 6)
    >>> pop.step(obs)                              # the same actions one Population gives
    array([[3, 0],
           [3, 0],
           [3, 0],
           [3, 0],
           [3, 0],
           [3, 0]], dtype=int32)
    >>> pop.shard_sizes
    [3, 3]
    >>> pop.shutdown()
    """

    def __init__(self, model: GenerativeModel, n_agents: int, *, n_shards: int | None = None,
                 seed=None, cpus_per_shard: float = 1.0, actor_options: dict | None = None,
                 **options):
        if "n_threads" in options or "streams" in options:
            raise TypeError("n_threads and streams are set per shard by ShardedPopulation "
                            "(use cpus_per_shard)")
        n = _opt.check_int("n_agents", n_agents, 0, None)
        cpus_per_shard = _opt.check_float("cpus_per_shard", cpus_per_shard, lo=0.0, lo_open=True)
        if n_shards is not None:
            n_shards = _opt.check_int("n_shards", n_shards, 1, None)
        if options.get("storage") is not None:
            raise TypeError("storage is not supported by ShardedPopulation: every shard would "
                            "share one state file (use checkpoint(directory) instead)")
        per_agent = {k: options.pop(k) for k in ("gamma", "alpha", "C", "E") if k in options}
        # Validate everything here, before any actor starts: a shard failing in its
        # constructor would surface as a dead actor, not as the ValueError it is.
        probe = Population(model, 0, n_threads=1, **options)
        for name in ("gamma", "alpha"):
            if name in per_agent:
                per_agent[name] = probe._per_agent(per_agent[name], name, n)
        if per_agent.get("C") is not None:
            probe._ln_C(per_agent["C"], n)
        if per_agent.get("E") is not None:
            probe._ln_E(per_agent["E"], n)
        if n and (per_agent.get("C") is not None or per_agent.get("E") is not None):
            # the algorithm's own refusals (MMP or sophisticated with per-agent C), on one row
            Population(model, 1, n_threads=1, **options,
                       **{k: _slice_per_agent(k, v, 0, 1) for k, v in per_agent.items()})

        if not ray.is_initialized():
            ray.init()
        cluster_cpus = ray.cluster_resources().get("CPU", 1.0)
        if n_shards is None:
            n_shards = max(1, int(cluster_cpus // cpus_per_shard))
        if n_shards * cpus_per_shard > cluster_cpus:
            warnings.warn(f"{n_shards} shards of {cpus_per_shard} CPUs need more than the "
                          f"cluster's {cluster_cpus:g} CPUs: shards wait until CPUs free up",
                          RuntimeWarning, stacklevel=2)

        self.model = model
        self._seed_seq = _opt.seed_sequence(seed)
        self._cpus, self._actor_options = float(cpus_per_shard), dict(actor_options or {})
        self._model_ref = ray.put(model)
        self._lost: list[int] = []
        self._checkpoint: Checkpoint | None = None

        streams = agent_streams(self._seed_seq, 0, n)
        self._n_seeded = 1
        bounds = np.linspace(0, n, int(n_shards) + 1).round().astype(np.int64)
        self._members = [np.arange(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._index()
        self._shards = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            part = {k: _slice_per_agent(k, v, lo, hi) for k, v in per_agent.items()}
            self._shards.append(self._start(n_agents=int(hi - lo), streams=streams[lo:hi],
                                            **options, **part))
        self._gather_calls("get", [("n_agents",)] * self.n_shards)  # surfaces start-up errors

    # -- bookkeeping ---------------------------------------------------------------------

    def _start(self, **shard):
        """A new shard actor: a fresh Population (its keywords) or ``blob=`` hibernated bytes."""
        opts = {"num_cpus": self._cpus, "scheduling_strategy": "SPREAD", **self._actor_options}
        threads = min(max(1, int(self._cpus)), _opt.MAX_THREADS)
        return _Shard.options(**opts).remote(self._model_ref, threads, **shard)

    def _index(self) -> None:
        """Rebuild global index -> (shard, row) from the per-shard member lists."""
        n = sum(len(m) for m in self._members)
        self._shard_of = np.empty(n, dtype=np.int32)
        self._row_of = np.empty(n, dtype=np.int64)
        for s, members in enumerate(self._members):
            self._shard_of[members] = s
            self._row_of[members] = np.arange(len(members))

    def _check_alive(self) -> None:
        if self._lost:
            raise ShardLostError(self._lost)

    def _gather_calls(self, method: str, args_per_shard, shards=None) -> list:
        """Call ``method`` on shards concurrently; results in shard order, or ShardLostError."""
        self._check_alive()
        shards = range(self.n_shards) if shards is None else shards
        refs = [getattr(self._shards[s], method).remote(*args)
                for s, args in zip(shards, args_per_shard)]
        try:
            return ray.get(refs)
        except RayActorError as first:
            # name every lost shard, not only the first, nor only those this call used
            failed = [s for s, dead in zip(shards, _failed(refs)) if dead]
            self._lost = sorted(set(failed) | set(self._probe_dead()))
            raise ShardLostError(self._lost, first) from first

    def _scatter_call(self, method: str, arrays=None) -> list:
        """Call ``pop.method(array[members of shard])`` on every shard."""
        return self._gather_calls("call", [(method,) if arrays is None else (method, arrays[m])
                                           for m in self._members])

    def _assemble(self, parts: list) -> np.ndarray:
        """One (n_agents, ...) array in global order from per-shard arrays."""
        first = next(p for p in parts if p is not None)
        out = np.empty((self.n_agents,) + first.shape[1:], dtype=first.dtype)
        for members, part in zip(self._members, parts):
            out[members] = part
        return out

    # -- the Population interface ----------------------------------------------------------

    @property
    def n_agents(self) -> int:
        return len(self._shard_of)

    def __len__(self) -> int:
        return self.n_agents

    @property
    def n_shards(self) -> int:
        return len(self._members)

    @property
    def actors(self) -> list:
        """The shards' Ray actor handles, in shard order."""
        return list(self._shards)

    @property
    def shard_sizes(self) -> list[int]:
        return [len(m) for m in self._members]

    def locate(self, i: int) -> tuple[int, int]:
        """Where global agent ``i`` lives.

        Parameters
        ----------
        i : int
            A global agent index.

        Returns
        -------
        shard, row : int
            The shard and the row in that shard's population.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> pop.locate(4)
        (1, 1)
        >>> pop.shutdown()
        """
        return int(self._shard_of[i]), int(self._row_of[i])

    def step(self, obs) -> np.ndarray:
        """One step of every agent (:meth:`Population.step <fa_core.Population.step>`).

        Parameters
        ----------
        obs : array_like of int, shape (n_agents, n_modalities)
            One outcome index per agent and modality, in global order.

        Returns
        -------
        actions : ndarray of int32, shape (n_agents, num_factors)
            In global order.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> pop.step(obs)[:2]
        array([[3, 0],
               [3, 0]], dtype=int32)
        >>> pop.shutdown()
        """
        obs = check_obs(self.model, self.n_agents, obs)
        return self._assemble(self._scatter_call("step", obs))

    def infer_states(self, obs) -> np.ndarray:
        """:meth:`Population.infer_states <fa_core.Population.infer_states>` on every shard.

        Parameters
        ----------
        obs : array_like of int, shape (n_agents, n_modalities)
            One outcome index per agent and modality, in global order.

        Returns
        -------
        qs : ndarray of float32, shape (n_agents, sum(num_states))
            Beliefs in global order, factors concatenated.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> pop.infer_states(obs).shape
        (6, 6)
        >>> pop.shutdown()
        """
        obs = check_obs(self.model, self.n_agents, obs)
        return self._assemble(self._scatter_call("infer_states", obs))

    def infer_policies(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`Population.infer_policies <fa_core.Population.infer_policies>` on every shard.

        Returns
        -------
        q_pi, G : ndarray of float32, shape (n_agents, n_policies)
            Policy posteriors and negative expected free energies, in global order.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> _ = pop.infer_states(obs)
        >>> q_pi, G = pop.infer_policies()
        >>> q_pi.shape, G.shape
        ((6, 16), (6, 16))
        >>> pop.shutdown()
        """
        parts = self._scatter_call("infer_policies")
        return self._assemble([p[0] for p in parts]), self._assemble([p[1] for p in parts])

    def sample_action(self) -> np.ndarray:
        """:meth:`Population.sample_action <fa_core.Population.sample_action>` on every shard.

        Returns
        -------
        actions : ndarray of int32, shape (n_agents, num_factors)
            In global order.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> _ = pop.infer_states(obs)
        >>> _ = pop.infer_policies()
        >>> pop.sample_action()[0]
        array([3, 0], dtype=int32)
        >>> pop.shutdown()
        """
        return self._assemble(self._scatter_call("sample_action"))

    def reset(self) -> None:
        """:meth:`Population.reset <fa_core.Population.reset>` on every shard.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> _ = pop.step(obs)
        >>> pop.reset()
        >>> pop.gather("curr_timestep").tolist()
        [0, 0, 0, 0, 0, 0]
        >>> pop.shutdown()
        """
        self._scatter_call("reset")

    def gather(self, name: str) -> np.ndarray | None:
        """A copy of one :class:`~fa_core.Population` state array over all agents.

        Parameters
        ----------
        name : str
            ``qs``, ``q_pi``, ``G``, ``actions``, ``has_action``, ``curr_timestep``,
            ``rng``, ``gamma``, ``alpha``, ``lnC`` or ``lnE``.

        Returns
        -------
        values : ndarray or None
            The array in global agent order, or None when the shards share the
            model's (``lnC`` / ``lnE``).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> pop.gather("gamma")
        array([16., 16., 16., 16., 16., 16.], dtype=float32)
        >>> pop.shutdown()
        """
        if name not in _STATE_ARRAYS:
            raise ValueError(f"name must be one of {list(_STATE_ARRAYS)}, got {name!r}")
        parts = self._gather_calls("get", [(name,)] * self.n_shards)
        return None if all(p is None for p in parts) else self._assemble(parts)

    def add(self, k: int = 1) -> np.ndarray:
        """Add ``k`` fresh agents, numbered ``n .. n + k - 1``, placed on the smallest shards.

        They get the random streams and copied parameters one ``Population``
        would give them.

        Parameters
        ----------
        k : int
            How many agents to add.

        Returns
        -------
        indices : ndarray of int
            The newcomers' global indices.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> pop.add(2)
        array([6, 7])
        >>> pop.shard_sizes
        [4, 4]
        >>> pop.shutdown()
        """
        k = _opt.check_int("k", k, 0, None)
        self._check_alive()
        n = self.n_agents
        sizes = np.array(self.shard_sizes)
        target = np.empty(k, dtype=np.int64)
        for j in range(k):  # water-filling: each newcomer to the currently smallest shard
            target[j] = s = int(np.argmin(sizes))
            sizes[s] += 1
        params = None
        if n:  # as one Population, newcomers copy agent 0's gamma, alpha, C and E
            s0, r0 = self.locate(0)
            params = self._gather_calls("row_params", [(r0,)], shards=[s0])[0]
        streams = agent_streams(self._seed_seq, self._n_seeded, k)
        self._n_seeded += 1
        new = np.arange(n, n + k)
        used = sorted(set(target.tolist()))
        self._gather_calls("add", [(streams[target == s], params) for s in used], shards=used)
        for s in used:
            self._members[s] = np.concatenate([self._members[s], new[target == s]])
        self._index()
        return new

    def remove(self, indices) -> dict[int, int]:
        """Remove agents by global index, as :meth:`Population.remove <fa_core.Population.remove>`.

        Each shard removes and refills its own rows.

        Parameters
        ----------
        indices : int or sequence of int
            Global indices of the agents to remove.

        Returns
        -------
        moved : dict of int to int
            ``{old: new}`` global indices of the renumbered agents.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> pop.remove([0])                           # the last agent takes number 0
        {5: 0}
        >>> pop.n_agents
        5
        >>> pop.shutdown()
        """
        self._check_alive()
        n_new, moved = removal_moves(self.n_agents, indices)
        gone = np.unique(np.asarray(indices, dtype=np.int64))
        shards = sorted(set(self._shard_of[gone].tolist()))
        rows = [self._row_of[gone[self._shard_of[gone] == s]] for s in shards]
        local = self._gather_calls("call", [("remove", r) for r in rows], shards=shards)
        for s, r, local_moves in zip(shards, rows, local):
            members = self._members[s]
            for src, dst in local_moves.items():
                members[dst] = members[src]
            self._members[s] = members[:len(members) - len(r)]
        renumber = np.arange(self.n_agents)
        if moved:
            renumber[np.fromiter(moved, np.int64)] = np.fromiter(moved.values(), np.int64)
        self._members = [renumber[m] for m in self._members]
        self._index()
        return moved

    # -- learning ----------------------------------------------------------------------------

    def update_A(self, obs) -> None:
        """:meth:`Population.update_A <fa_core.Population.update_A>` on every shard.

        Parameters
        ----------
        obs : array_like of int, shape (n_agents, n_modalities)
            One outcome index per agent and modality, in global order.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> spec = builtin_models.tmaze()
        >>> gm = GenerativeModel(**spec, pA=[np.asarray(a, float) * 10 + 1 for a in spec["A"]])
        >>> pop = ShardedPopulation(gm, 4, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 4)
        >>> _ = pop.infer_states(obs)
        >>> pop.update_A(obs)
        >>> pop.shutdown()
        """
        if not self.model.has_pA:
            raise ValueError("update_A needs pA (Dirichlet parameters over A): build the "
                             "model with pA=")
        obs = check_obs(self.model, self.n_agents, obs)
        self._scatter_call("update_A", obs)

    def update_B(self, qs_prev) -> None:
        """:meth:`Population.update_B <fa_core.Population.update_B>` on every shard.

        Parameters
        ----------
        qs_prev : array, (n_agents, sum(num_states))
            Every agent's previous beliefs in global order (``pop.gather("qs")``
            before the step).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> spec = builtin_models.tmaze()
        >>> gm = GenerativeModel(**spec, pB=[np.asarray(b, float) * 10 + 1 for b in spec["B"]])
        >>> pop = ShardedPopulation(gm, 4, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 4)
        >>> _ = pop.step(obs)
        >>> qs_prev = pop.gather("qs")
        >>> _ = pop.infer_states(obs)
        >>> pop.update_B(qs_prev)
        >>> pop.shutdown()
        """
        if not self.model.has_pB:
            raise ValueError("update_B needs pB (Dirichlet parameters over B): build the "
                             "model with pB=")
        prev = self._checked_beliefs(qs_prev)
        has = self.gather("has_action")
        if len(has) and not has.all():
            raise ValueError(f"update_B needs an action: agent {int(np.argmin(has))} has none "
                             "(call sample_action or step first)")
        self._scatter_call("update_B", prev)

    def update_D(self, qs_t0=None) -> None:
        """:meth:`Population.update_D <fa_core.Population.update_D>` on every shard.

        Parameters
        ----------
        qs_t0 : array, (n_agents, sum(num_states)), optional
            Initial beliefs in global order. Default: each agent's first
            posterior (``save_belief_hist=True``).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> spec = builtin_models.tmaze()
        >>> gm = GenerativeModel(**spec, pD=[np.asarray(d, float) * 10 + 1 for d in spec["D"]])
        >>> pop = ShardedPopulation(gm, 4, n_shards=2, seed=0, cpus_per_shard=0.5,
        ...                         save_belief_hist=True)
        >>> _ = pop.step(np.array([[0, 0, 1]] * 4))
        >>> pop.update_D()
        >>> pop.shutdown()
        """
        if self.model.pD is None:
            raise ValueError("update_D needs pD (Dirichlet parameters over D): build the "
                             "model with pD=")
        if qs_t0 is not None:
            self._scatter_call("update_D", self._checked_beliefs(qs_t0))
            return
        missing = self._gather_calls("qs_t0_missing", [()] * self.n_shards)
        if -1 in missing:
            raise ValueError("update_D needs qs_t0, or save_belief_hist=True and one "
                             "infer_states call")
        bad = [int(self._members[s][row]) for s, row in enumerate(missing) if row is not None]
        if bad:
            raise ValueError(f"update_D needs qs_t0: agent {min(bad)} has not inferred its "
                             "states yet")
        self._scatter_call("update_D")

    def _checked_beliefs(self, qs) -> np.ndarray:
        """``qs`` checked on the driver as one Population checks it, before any shard runs."""
        probe = Population(self.model, 0, n_threads=1)
        shape = (self.n_agents, sum(self.model.num_states))
        return np.ascontiguousarray(probe._checked("qs", qs, shape, np.dtype(np.float32)))

    def member(self, i: int, name: str):
        """Attribute ``name`` of global agent ``i``, read in its shard (``pop[i].name``).

        Parameters
        ----------
        i : int
            A global agent index.
        name : str
            An agent attribute, e.g. ``"pA"``, ``"A"``, ``"pB"``, ``"qs"``.

        Returns
        -------
        value
            A copy of ``Population[i].name`` from the agent's shard.

        Examples
        --------
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pop = ShardedPopulation(gm, 4, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> float(pop.member(3, "gamma"))
        16.0
        >>> pop.shutdown()
        """
        s, r = self.locate(i)
        return self._gather_calls("member", [(r, name)], shards=[s])[0]

    # -- checkpoints and failure ----------------------------------------------------------

    def checkpoint(self, directory=None) -> Checkpoint | str:
        """Hibernate every shard into a :class:`Checkpoint` on the driver, or into files.

        :meth:`restore` rolls back to the latest one.

        With ``directory``, every shard writes its own file there in parallel
        (a :meth:`Population.save <fa_core.Population.save>` file, which
        :meth:`Population.load <fa_core.Population.load>` reads: atomically
        written, checksummed), then the
        driver writes a small manifest (shard files, agent counts and
        checksums, the index mapping, the model's content key) the same way,
        last: a process killed during a checkpoint leaves the previous one
        whole. Files of earlier checkpoints are removed once the manifest is
        in place. The shards' state never passes through the driver. On a
        cluster of several machines the directory must be shared by all.

        Parameters
        ----------
        directory : str or os.PathLike, optional
            Where to write the checkpoint (created if absent).

        Returns
        -------
        checkpoint : Checkpoint or str
            Every shard's :meth:`Population.hibernate <fa_core.Population.hibernate>`
            bytes and the index mapping; with ``directory``, its path.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> ckpt = pop.checkpoint()
        >>> len(ckpt.blobs)
        2
        >>> import tempfile
        >>> folder = pop.checkpoint(tempfile.mkdtemp())    # one file per shard, and a manifest
        >>> pop.restore(folder)
        []
        >>> pop.shutdown()
        """
        if directory is not None:
            return self._checkpoint_files(os.fspath(directory))
        blobs = self._gather_calls("call", [("hibernate",)] * self.n_shards)
        self._checkpoint = Checkpoint(self.model, blobs, [m.copy() for m in self._members],
                                      self._seed_seq, self._n_seeded)
        return self._checkpoint

    def _checkpoint_files(self, directory: str) -> str:
        os.makedirs(directory, exist_ok=True)
        tag = secrets.token_hex(4)  # new names: an interrupted checkpoint clobbers no old file
        names = [f"shard-{s:05d}-{tag}.fapop" for s in range(self.n_shards)]
        saved = self._gather_calls("save", [(os.path.join(directory, nm),) for nm in names])
        for s, (n, _, _) in enumerate(saved):
            if n != len(self._members[s]):  # pragma: no cover - a driver bookkeeping bug
                raise RuntimeError(f"shard {s} saved {n} agents, the driver counts "
                                   f"{len(self._members[s])}")
        manifest = {"shards": [(nm, *info) for nm, info in zip(names, saved)],
                    "members": [m.astype(np.int64) for m in self._members],
                    "seed_seq": self._seed_seq, "n_seeded": self._n_seeded}
        body = bytearray()
        dump_value(body, manifest, "sharded checkpoint")
        _atomic_write(os.path.join(directory, MANIFEST),
                      frame(_MANIFEST_MAGIC, _MANIFEST_VERSION, 0, self.model.content_key(),
                            bytes(body), False))
        keep = set(names)
        for name in os.listdir(directory):  # earlier checkpoints' files, interrupted writes
            if name.startswith("shard-") and (name.endswith(".fapop") and name not in keep
                                              or ".fapop.tmp" in name):
                os.unlink(os.path.join(directory, name))
        self._checkpoint = directory
        return directory

    def _restore_files(self, directory: str) -> list[int]:
        what = f"sharded checkpoint in {directory!r}"
        key, man = _read_manifest(directory, what)
        if key != self.model.content_key():
            raise ValueError(f"the {what} holds another model than this population")
        shards_info = man["shards"]
        dead = set(self._lost) | set(self._probe_dead())
        actors, started = [], []
        for s in range(len(shards_info)):
            if s < len(self._shards) and s not in dead:
                actors.append(self._shards[s])
            else:
                actors.append(self._start(n_agents=0))
                started.append(actors[-1])
        # every shard reads its own file into a pending population; all or none are kept
        refs = [a.load_pending.remote(os.path.join(directory, nm), nbytes, crc, n)
                for a, (nm, n, nbytes, crc) in zip(actors, shards_info)]
        try:
            errors = ray.get(refs)
        except RayActorError as exc:
            errors = [f"its actor died ({exc})" if dead_ else None
                      for dead_ in _failed(refs)]
        failed = [(s, e) for s, e in enumerate(errors) if e is not None]
        ray.get([a.commit_pending.remote(not failed) for a, d in
                 zip(actors, _failed(refs)) if not d])
        if failed:
            for actor in started:
                ray.kill(actor)
            s, e = failed[0]
            raise CorruptStateError(f"{what}: shard {s} ({shards_info[s][0]}): {e}; "
                                    "the population is unchanged")
        for s in range(len(shards_info), len(self._shards)):
            ray.kill(self._shards[s])
        self._shards, self._lost = actors, []
        self._members = [np.asarray(m, np.int64).copy() for m in man["members"]]
        self._seed_seq, self._n_seeded = man["seed_seq"], man["n_seeded"]
        self._index()
        self._checkpoint = directory
        return sorted(s for s in dead if s < len(shards_info))

    def restore(self, checkpoint: Checkpoint | None = None) -> list[int]:
        """Roll every shard back to ``checkpoint``, starting new actors for lost shards.

        Surviving shards are rolled back too, so the population is where it
        was at the checkpoint as a whole (step the environment from there too).

        Parameters
        ----------
        checkpoint : Checkpoint or str or os.PathLike, optional
            Default: the last one taken. A directory that :meth:`checkpoint`
            wrote: each shard reads its own file there (all or none are taken).

        Returns
        -------
        restarted : list of int
            The shards whose actors were restarted.

        Raises
        ------
        CorruptStateError
            If a blob or member list of the checkpoint does not fit the model,
            or a shard file is missing, truncated or corrupt (nothing changes).
        FileNotFoundError
            If the directory holds no checkpoint manifest.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> ckpt = pop.checkpoint()
        >>> first = pop.step(obs).copy()
        >>> pop.restore()                             # no shard was lost
        []
        >>> bool((pop.step(obs) == first).all())      # the same step again
        True
        >>> pop.shutdown()
        """
        ckpt = self._checkpoint if checkpoint is None else checkpoint
        if ckpt is None:
            raise RuntimeError("no checkpoint to restore: call checkpoint() first")
        if isinstance(ckpt, (str, os.PathLike)):
            return self._restore_files(os.fspath(ckpt))
        if not isinstance(ckpt, Checkpoint):
            raise TypeError(f"restore takes a Checkpoint, got {type(ckpt).__name__}")
        if ckpt.model.content_key() != self.model.content_key():
            raise ValueError("checkpoint holds another model than this population")
        # every blob and member list checked here, before any shard changes: a bad
        # checkpoint raises CorruptStateError on the driver, not a RayTaskError later
        check_checkpoint(self.model, ckpt.blobs, ckpt.members, ckpt.seed_seq, ckpt.n_seeded)
        dead = set(self._lost) | set(self._probe_dead())
        shards = []
        for s, blob in enumerate(ckpt.blobs):
            if s < len(self._shards) and s not in dead:
                shards.append(self._shards[s])
            else:
                shards.append(self._start(blob=blob))
        for s in range(len(ckpt.blobs), len(self._shards)):
            ray.kill(self._shards[s])
        self._shards, self._lost = shards, []
        self._members = [m.copy() for m in ckpt.members]
        self._seed_seq, self._n_seeded = ckpt.seed_seq, ckpt.n_seeded
        self._index()
        live = [s for s in range(len(shards)) if s < len(ckpt.blobs) and s not in dead]
        self._gather_calls("wake", [(ckpt.blobs[s],) for s in live], shards=live)
        self._gather_calls("get", [("n_agents",)] * self.n_shards)  # new actors are up
        self._checkpoint = ckpt
        return sorted(s for s in dead if s < len(ckpt.blobs))

    def _probe_dead(self) -> list[int]:
        """Shards whose actors do not answer."""
        dead = _failed([a.get.remote("n_agents") for a in self._shards])
        return [s for s, d in enumerate(dead) if d]

    @classmethod
    def wake(cls, checkpoint: Checkpoint | str, *, model: GenerativeModel | None = None,
             cpus_per_shard: float = 1.0,
             actor_options: dict | None = None) -> ShardedPopulation:
        """A sharded population started from a :class:`Checkpoint`, one new actor per shard.

        Parameters
        ----------
        checkpoint : Checkpoint or str or os.PathLike
            E.g. one pickled by a previous session (trusted sources only), or a
            directory :meth:`checkpoint` wrote (its shard files are read by the
            new shards).
        model : GenerativeModel, optional
            For a directory: the population's model (default: the live model
            with the manifest's content key).
        cpus_per_shard : float
            As the constructor.
        actor_options : dict, optional
            As the constructor.

        Returns
        -------
        population : ShardedPopulation
            The population as it was at the checkpoint.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> ckpt = pop.hibernate()                     # checkpoint, then free the actors
        >>> pop = ShardedPopulation.wake(ckpt, cpus_per_shard=0.5)
        >>> pop.n_agents, pop.n_shards
        (6, 2)
        >>> pop.shutdown()
        """
        self = cls.__new__(cls)
        if not ray.is_initialized():
            ray.init()
        if isinstance(checkpoint, (str, os.PathLike)):
            directory = os.fspath(checkpoint)
            key, _ = _read_manifest(directory, f"sharded checkpoint in {directory!r}")
            model = resolve_model(key, model, "sharded population")
        else:
            model = checkpoint.model
        self.model = model
        self._cpus, self._actor_options = float(cpus_per_shard), dict(actor_options or {})
        self._model_ref = ray.put(self.model)
        self._shards, self._lost, self._checkpoint = [], [], None
        self.restore(checkpoint)
        return self

    def hibernate(self) -> Checkpoint:
        """:meth:`checkpoint`, then free the shards' actors; :meth:`wake` starts again.

        Returns
        -------
        checkpoint : Checkpoint
            The population's state.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> ckpt = pop.hibernate()
        >>> sum(len(m) for m in ckpt.members)
        6
        """
        ckpt = self.checkpoint()
        self.shutdown()
        return ckpt

    def shutdown(self) -> None:
        """Kill the shards' actors (the population is unusable until :meth:`restore`).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> pop.shutdown()
        >>> pop.step(obs)
        Traceback (most recent call last):
        ...
        fa_core.distributed.ShardLostError: lost shard(s) [0, 1] of the sharded population...
        """
        for actor in self._shards:
            ray.kill(actor)
        self._lost = list(range(self.n_shards))

    def memory_report(self, include_scratch: bool = True):
        """The sum of the shards' :meth:`Population.memory_report`, each made in its shard's
        process (so ``shared_model`` counts the model once per shard process).

        Parameters
        ----------
        include_scratch : bool
            Count each shard's kernel scratch.

        Returns
        -------
        fa_core.MemoryReport

        Examples
        --------
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pop = ShardedPopulation(gm, 10, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> pop.memory_report().n_agents
        10
        >>> pop.shutdown()
        """
        from fa_core.memory import sum_reports
        return sum_reports(self._gather_calls("call", [("memory_report", include_scratch)]
                                              * self.n_shards))

    def compute_seconds(self) -> list[float]:
        """Seconds each shard has spent inside its population's calls (for overhead figures).

        Returns
        -------
        seconds : list of float
            One entry per shard.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> from fa_core.distributed import ShardedPopulation
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = ShardedPopulation(gm, 6, n_shards=2, seed=0, cpus_per_shard=0.5)
        >>> obs = np.array([[0, 0, 1]] * 6)
        >>> _ = pop.step(obs)
        >>> len(pop.compute_seconds())
        2
        >>> pop.shutdown()
        """
        return self._gather_calls("compute_seconds", [()] * self.n_shards)

    def __repr__(self) -> str:
        return (f"fa_core.distributed.ShardedPopulation(n_agents={self.n_agents}, "
                f"n_shards={self.n_shards}, model={self.model!r})")


def _failed(refs) -> list[bool]:
    """For each call, whether its actor died."""
    out = []
    for ref in refs:
        try:
            ray.get(ref)
            out.append(False)
        except RayActorError:
            out.append(True)
    return out


def _slice_per_agent(name: str, value, lo: int, hi: int):
    """Agents ``lo:hi`` of a per-agent keyword (scalars are shared as they are)."""
    if value is None:
        return None
    if name == "C":
        return [np.asarray(c)[lo:hi] for c in value]
    arr = np.asarray(value)
    return arr[lo:hi] if arr.ndim >= 1 else value
