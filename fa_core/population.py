"""``fa_core.Population``: many agents of one model, stepped in one kernel call.

State lives in contiguous ``(n_agents, ...)`` arrays; one call runs the same
per-agent kernels as :class:`fa_core.Agent` in a loop over agents in C with
the GIL released, across OpenMP threads when the build has OpenMP. For small
models (``model.kmodel.blocked``) state inference and policy evaluation run
eight agents at a time instead, agreeing with ``Agent`` to float32 rounding.
Each agent has its own random stream (one 64-bit SplitMix64 word seeded from
``numpy.random.SeedSequence``), so results and random draws are identical
whatever the number of threads.

Learning (:meth:`Population.update_A`, ``update_B``, ``update_D``) gives each
agent its own Dirichlet counts in the sparsity pattern of the shared model's
matrices and its own compiled model pointing at them, which the driver reads
through a per-agent table (design: :mod:`fa_core.population_learning`). An
agent with its own model is stepped by the per-agent kernels, not the
eight-agent blocks; so are the policies of a block in which an agent follows its
plan (``step(obs, replan=...)``).
"""

from __future__ import annotations

import os
import threading
import types
import weakref

import numpy as np

from fa_core import _kernels, _learning, engines, population_si
from fa_core import options as _opt
from fa_core import storage as _storage
from fa_core.agent import Agent, _DEFAULT_VANILLA
from fa_core.blobformat import Reader, encode_state, frame, load_value, unframe
from fa_core.errors import CorruptStateError
from fa_core.model import GenerativeModel, as_array_list, resolve_model
from fa_core.population_learning import _ROWS as _LEARNED_ROWS
from fa_core.population_learning import LearnedParams, check_learned_state, learn_indices
from fa_core.restore_checks import check_actions, check_int, check_vector, fail

_INFER_STATES, _INFER_POLICIES, _SAMPLE = 1, 2, 4
_POP_MAGIC, _POP_VERSION = b"FP", 1
_POP_WHAT = "hibernated population"


def default_threads() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Population:
    """A population of agents sharing one generative model.

    Parameters
    ----------
    model : GenerativeModel
        The model every agent uses.
    n_agents : int
        Number of agents.
    gamma, alpha : float or array of shape (n_agents,)
        Policy and action precisions, per agent if arrays.
    C : optional
        Per-agent log-preferences: one array per modality of shape
        ``(n_agents, num_obs[m])``. Default: the model's ``C``.
    E : optional
        Per-agent policy priors, shape ``(n_agents, n_policies)``. Default: the model's.
    use_utility, use_states_info_gain, use_param_info_gain : bool
        As :class:`fa_core.Agent`.
    action_selection : {"deterministic", "stochastic"}
        As :class:`fa_core.Agent`.
    sampling_mode : {"marginal", "full"}
        As :class:`fa_core.Agent`.
    inference_params : dict, optional
        As :class:`fa_core.Agent` (``num_iter``, ``dF``, ``dF_tol``).
    modalities_to_learn, factors_to_learn, lr_pA, lr_pB, lr_pD
        As :class:`fa_core.Agent`, for :meth:`update_A`, :meth:`update_B` and
        :meth:`update_D` (learning rates must be finite and non-negative).
    save_belief_hist : bool
        Keep each agent's first posterior (``qs_t0``), which :meth:`update_D`
        learns from by default, as ``Agent.qs_hist[0]``. (The population keeps
        no other history.)
    seed : int, numpy.random.SeedSequence or numpy.random.Generator, optional
        Seeds the per-agent random streams (tie-breaks, stochastic actions); see
        :func:`fa_core.options.seed_sequence`. A Generator gives 128 bits of entropy.
    n_threads : int, optional
        Threads for the agent loop; default all cores available to the process.
    sophisticated : bool
        Evaluate policies by pymdp's sophisticated-inference tree search, as
        ``Agent(sophisticated=True)`` (one-step policies; ``q_pi = softmax(G)``
        at gamma 1 without ``E``): see :mod:`fa_core.population_si`.
    si_horizon, si_policy_prune_threshold, si_state_prune_threshold, si_prune_penalty
        The search's depth and pruning, as :class:`fa_core.Agent`.
    streams : array of shape (n_agents,) uint64, optional
        The agents' random-stream words, instead of drawing them from ``seed``:
        :mod:`fa_core.distributed` gives each shard the words
        :func:`agent_streams` gives its agents in one process.
    storage : str or os.PathLike, optional
        Keep every per-agent array in this new file, memory-mapped (the OS
        pages state in and out, so the population may exceed RAM), flushed
        once built; :meth:`flush` makes later changes durable and
        :meth:`open` resumes it. FileExistsError if the file exists. See
        :mod:`fa_core.storage` for the format and crash safety.
    inference_algo : {"VANILLA", "MMP"}
        As :class:`fa_core.Agent`. ``"MMP"`` runs marginal message passing for
        every agent with ``Agent``'s numbers (:mod:`fa_core.population_mmp`);
        ``inference_params`` are then MMP's (``num_iter``, ``tau``). Not with
        per-agent ``C``, ``save_belief_hist`` or ``replan``; ``update_D`` learns
        from each agent's window prior, ``update_A`` / ``update_B`` raise as
        ``Agent``'s do; ``pop[i]`` is a view for reading.
    inference_horizon, use_BMA, policy_sep_prior
        MMP's options, as :class:`fa_core.Agent`.

    Attributes
    ----------
    qs : ndarray, (n_agents, sum(num_states)) float32
        Beliefs, factors concatenated; :meth:`qs_factor` gives one factor.
    q_pi, G : ndarray, (n_agents, n_policies) float32
    actions : ndarray, (n_agents, num_factors) int32
    has_action : ndarray, (n_agents,) uint8
        Whether ``actions`` holds a previous action (the next prior predicts
        from it) or not (the next prior is ``D``).
    curr_timestep : ndarray, (n_agents,) int64
    gamma, alpha : ndarray, (n_agents,) float32
    rng : ndarray, (n_agents,) uint64
    lnC, lnE : ndarray or None
        Per-agent log-preferences / log-habits (``None`` when shared).

    Notes
    -----
    The state arrays are read-only views: a write such as
    ``pop.actions[0, 0] = 7`` raises a ValueError naming the attribute.
    Set them with ``pop.actions = values`` (every agent; broadcast) or
    :meth:`set` (some rows); both check the values (range of actions,
    normalised beliefs, finite float32 precisions, ...) before anything
    changes. Options (``n_threads``, ``inference_params``,
    ``action_selection``, ...) are checked when assigned too.

    Calls on one population from several threads are serialised by a lock
    (the kernel itself runs without the GIL, on ``n_threads`` OpenMP
    threads), so two threads stepping one population give the results of
    some sequential order of their calls.

    Examples
    --------
    >>> import numpy as np
    >>> from fa_core import GenerativeModel, Population, builtin_models
    >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
    >>> pop = Population(gm, 4, seed=0)
    >>> obs = np.array([[0, 0, 1]] * 4)           # every agent in the centre
    >>> pop.step(obs)                             # every agent goes to the cue first
    array([[3, 0],
           [3, 0],
           [3, 0],
           [3, 0]], dtype=int32)
    >>> pop.qs.shape, pop.q_pi.shape              # factors concatenated; 16 policies
    ((4, 6), (4, 16))
    """

    def __init__(self, model: GenerativeModel, n_agents: int, *, gamma=16.0, alpha=16.0,
                 C=None, E=None, use_utility=True, use_states_info_gain=True,
                 use_param_info_gain=False, action_selection="deterministic",
                 sampling_mode="marginal", inference_params=None, seed=None,
                 n_threads: int | None = None, streams=None, modalities_to_learn="all",
                 lr_pA=1.0, factors_to_learn="all", lr_pB=1.0, lr_pD=1.0,
                 save_belief_hist=False, inference_algo="VANILLA", inference_horizon=1,
                 use_BMA=True, policy_sep_prior=False, sophisticated=False, si_horizon=3,
                 si_policy_prune_threshold=1 / 16, si_state_prune_threshold=1 / 16,
                 si_prune_penalty=512, storage=None):
        if not isinstance(model, GenerativeModel):
            raise TypeError(f"model must be a GenerativeModel, got {type(model).__name__}")
        n = _opt.check_int("n_agents", n_agents, 0, None)
        # an engine runs inference_algo="MMP" (fa_core.population_mmp); None: VANILLA
        engine = None
        if inference_algo == "MMP":
            from fa_core import population_mmp
            engine = population_mmp.build(
                model, inference_horizon=inference_horizon, use_BMA=use_BMA,
                policy_sep_prior=policy_sep_prior, inference_params=inference_params, C=C, E=E,
                use_param_info_gain=use_param_info_gain, save_belief_hist=save_belief_hist)
            inference_params = None  # the engine's; the VANILLA ones stay at their defaults
        elif inference_algo != "VANILLA":
            raise ValueError(f"inference_algo must be 'VANILLA' or 'MMP', got {inference_algo!r}")
        # every option is checked before anything is stored
        opts = {name: check(value) for name, check, value in (
            ("inference_params", _opt.check_inference_params, inference_params),
            ("use_utility", _OPTION_CHECKS["use_utility"], use_utility),
            ("use_states_info_gain", _OPTION_CHECKS["use_states_info_gain"], use_states_info_gain),
            ("use_param_info_gain", _OPTION_CHECKS["use_param_info_gain"], use_param_info_gain),
            ("action_selection", _OPTION_CHECKS["action_selection"], action_selection),
            ("sampling_mode", _OPTION_CHECKS["sampling_mode"], sampling_mode),
            ("n_threads", _OPTION_CHECKS["n_threads"], n_threads),
            ("lr_pA", _OPTION_CHECKS["lr_pA"], lr_pA),
            ("lr_pB", _OPTION_CHECKS["lr_pB"], lr_pB),
            ("lr_pD", _OPTION_CHECKS["lr_pD"], lr_pD))}
        learn_mods = learn_indices(modalities_to_learn, model.num_modalities,
                                   "modalities_to_learn")
        learn_facs = learn_indices(factors_to_learn, model.num_factors, "factors_to_learn")
        save_belief_hist = _opt.check_bool("save_belief_hist", save_belief_hist)
        gamma = _opt.check_precisions("gamma", gamma, n)
        alpha = _opt.check_precisions("alpha", alpha, n)
        lnC = None if C is None else self._ln_C(C, n, model)
        lnE = None if E is None else self._ln_E(E, n, model)
        seed_seq = _opt.seed_sequence(seed)
        if _opt.check_bool("sophisticated", sophisticated):
            if engine is not None:
                raise ValueError("sophisticated=True runs with inference_algo='VANILLA' only, "
                                 f"got inference_algo={inference_algo!r}")
            population_si.check_population(model, n, C)
            engine = population_si.SophisticatedEngine(
                model, si_horizon, si_policy_prune_threshold, si_state_prune_threshold,
                si_prune_penalty, E=E, use_utility=opts["use_utility"],
                use_states_info_gain=opts["use_states_info_gain"],
                use_param_info_gain=opts["use_param_info_gain"])
        d = self.__dict__
        if storage is not None:  # hook: arrays come from the state file (fa_core.storage)
            d["_store"] = _storage.StateFile.create(storage, model.content_key())
        d["_model"] = model
        d["_engine"] = engine
        d["_lock"] = threading.RLock()
        for name, value in opts.items():
            self._set_option(name, value)
        d["_seed_seq"] = seed_seq
        d["_n_seeded"] = 0  # streams handed out so far, so added agents get fresh ones
        d["_n"] = 0
        words = self._new_streams(n, streams)
        d["_lnC"] = d["_lnE"] = None
        d["_learn_mods"], d["_learn_facs"] = learn_mods, learn_facs
        d["_learned"] = None  # LearnedParams, from the first update_A / B / D on
        d["_qs_t0"] = np.zeros((0, sum(model.num_states)), np.float32) if save_belief_hist \
            else None
        d["_has_qs_t0"] = np.zeros(0, np.uint8) if save_belief_hist else None
        # optional per-agent rows live in the same growable storage as the rest
        d["_lnC"], d["_lnE"] = lnC, lnE  # their widths, for _alloc
        self._alloc(n)
        d["_n"] = n
        for name, value in (("lnC", lnC), ("lnE", lnE), ("qs", self._uniform_qs()),
                            ("q_pi", 1.0 / model.num_policies), ("rng", words),
                            ("gamma", gamma), ("alpha", alpha)):
            if value is not None:
                self._fill(name, value)
        if engine is not None:
            engine.reset(self)
        if storage is not None:
            self.flush()

    # -- storage -----------------------------------------------------------------------

    _ARRAYS = ("qs", "q_pi", "G", "actions", "has_action", "curr_timestep", "rng", "gamma",
               "alpha")
    _OPTIONAL = ("lnC", "lnE")  # per-agent log preferences / log habits, or None when shared

    def _array_specs(self) -> dict:
        """The registry of per-agent row arrays: ``{name: (row width or None, dtype)}``,
        stored as ``self._<name>`` with ``capacity`` rows. Everything here is grown by
        :meth:`add`, mapped from a state file and saved (:mod:`fa_core.storage`)."""
        m = self.model
        shapes = {"qs": (sum(m.num_states), np.float32), "q_pi": (m.num_policies, np.float32),
                  "G": (m.num_policies, np.float32), "actions": (m.num_factors, np.int32),
                  "has_action": (None, np.uint8), "curr_timestep": (None, np.int64),
                  "rng": (None, np.uint64), "gamma": (None, np.float32),
                  "alpha": (None, np.float32)}
        for name in Population._OPTIONAL:
            old = self.__dict__.get("_" + name)
            if old is not None:
                shapes[name] = (old.shape[1], np.float32)
        if self.__dict__.get("_qs_t0") is not None:  # save_belief_hist
            shapes["qs_t0"] = (sum(m.num_states), np.float32)
            shapes["has_qs_t0"] = (None, np.uint8)
        engine = self.__dict__.get("_engine")
        if engine is not None:  # the engine's per-agent rows: name -> (shape per agent, dtype)
            shapes.update(engine.rows)
        return shapes

    def _alloc(self, capacity: int) -> None:
        """(Re)allocate storage for ``capacity`` agents, keeping the first ``self._n``."""
        store = self.__dict__.get("_store")
        for name, (width, dtype) in self._array_specs().items():
            shape = (capacity,) if width is None else (capacity, *width) \
                if isinstance(width, tuple) else (capacity, width)
            new = np.zeros(shape, dtype=dtype) if store is None else \
                store.array(name, shape, dtype)
            old = self.__dict__.get("_" + name)
            if old is not None and new is not old:
                new[:self._n] = old[:self._n]
            self.__dict__["_" + name] = new
        if self.__dict__.get("_learned") is not None:
            self._learned.resize(capacity, self._n)
        self._capacity = capacity

    def _will_write(self) -> None:
        """Hook before rows are written: a state file sets its DIRTY flag first
        (:mod:`fa_core.storage`); nothing for a population in RAM."""
        store = self.__dict__.get("_store")
        if store is not None:
            store.will_write()

    def _fill(self, name: str, value) -> None:
        """Every row of ``name`` set to ``value`` (broadcast, or one row per agent when it
        has the rows' dimensions); for a state file chunk by chunk, each chunk's pages
        leaving the resident set after it."""
        rows = self._rows(name)
        store = self.__dict__.get("_store")
        if store is None:
            rows[:] = value
            return
        per_row = np.ndim(value) == rows.ndim
        for lo, hi in store.spans(self._n):
            rows[lo:hi] = value[lo:hi] if per_row else value
            store.release_rows(lo, hi)

    def _engine_rows(self) -> tuple:
        """Names of the engine's per-agent arrays (none for VANILLA)."""
        engine = self.__dict__.get("_engine")
        return () if engine is None else tuple(engine.rows)

    def _threads(self) -> int:
        """Threads for one kernel call: beyond the number of agents they get no work."""
        return max(1, min(self.__dict__["n_threads"], self.__dict__["_n"]))

    def _rows(self, name: str):
        """The writable storage of the first n_agents rows of a state array (or None)."""
        self._will_write()
        arr = self.__dict__.get("_" + name)
        return None if arr is None else arr[:self.__dict__["_n"]]

    def __setattr__(self, name, value):
        if name in Population._ARRAYS or name in Population._OPTIONAL:
            self.set(name, value)
        elif name == "inference_params" and self.__dict__.get("_engine") is not None:
            self._engine.set_params(value)  # the engine's options (MMP: num_iter, tau)
        elif name in _OPTION_CHECKS:
            self._set_option(name, _OPTION_CHECKS[name](value))
        elif name in ("model", "n_agents"):
            raise AttributeError(f"Population.{name} cannot be changed: build a new Population "
                                 f"(or use add / remove)")
        else:
            object.__setattr__(self, name, value)

    def _set_option(self, name: str, value) -> None:
        """Store a checked option."""
        d = self.__dict__
        if name == "inference_params":
            d["_params"] = value
            d["_fpi"] = _opt.fpi_args(value)
        else:
            d[name] = value

    @property
    def inference_params(self):
        """State-inference options (read-only mapping; assign a dict to change them)."""
        engine = self.__dict__.get("_engine")
        return types.MappingProxyType(self.__dict__["_params"] if engine is None
                                      else engine.params)

    @property
    def model(self) -> GenerativeModel:
        """The generative model every agent uses (fixed for the population's life)."""
        return self.__dict__["_model"]

    # -- validated writes of state arrays ------------------------------------------------

    def set(self, name: str, value, rows=None) -> None:
        """Set state array ``name`` for ``rows`` (default: every agent), broadcasting ``value``.

        The values are checked first, vectorised (actions within ``num_controls``,
        beliefs and policy posteriors non-negative and normalised, precisions finite
        and within float32, ...); a refused call changes nothing.

        Parameters
        ----------
        name : str
            One of ``qs``, ``q_pi``, ``G``, ``actions``, ``has_action``,
            ``curr_timestep``, ``rng``, ``gamma``, ``alpha``, ``lnC``, ``lnE``.
        value : array_like
            Broadcast to ``(len(rows), ...)``.
        rows : slice, int, 1-D integer array or boolean mask, optional
            The agents to set; default every agent.

        Raises
        ------
        ValueError
            If a value is out of range (the message names the attribute), or
            ``lnC`` / ``lnE`` are shared by the model.
        TypeError
            If ``value`` does not hold real numbers or ``rows`` is not an index.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> pop.set("gamma", [2.0, 4.0], rows=[0, 3])
        >>> pop.gamma
        array([ 2., 16., 16.,  4.], dtype=float32)
        >>> pop.set("actions", [9, 0], rows=0)
        Traceback (most recent call last):
        ...
        ValueError: Population.actions: action 9 for factor 0 is outside 0..3 ...
        """
        if name not in Population._ARRAYS and name not in Population._OPTIONAL:
            raise ValueError(f"set() takes one of {list(Population._ARRAYS + Population._OPTIONAL)}"
                             f", got {name!r}")
        with self._lock:
            store = self._rows(name)
            if store is None:
                raise ValueError(f"Population.{name} is None: this population shares the "
                                 f"model's {name[2:]} (pass per-agent {name[2:]}= to the "
                                 f"constructor)")
            n = self._n
            if rows is None:
                idx = slice(None)
                k = n
            else:
                if isinstance(rows, slice):
                    sel = np.arange(n)[rows]
                else:
                    r = np.asarray(rows)
                    if r.dtype.kind not in "iub" or r.ndim > 1:
                        raise TypeError(f"rows must be a slice, an integer, a 1-D integer array or "
                                        f"a boolean mask, got {r.dtype} of shape {r.shape}")
                    if r.dtype.kind != "b" and r.size and (r.min() < -n or r.max() >= n):
                        raise IndexError(f"rows must be in 0..{n - 1}")
                    if r.dtype.kind == "b" and r.shape != (n,):
                        raise IndexError(f"a boolean rows mask must have shape ({n},)")
                    sel = np.arange(n)[r]
                idx = sel
                k = np.size(sel)
            vals = self._checked(name, value, (k,) + store.shape[1:], store.dtype)
            store[idx] = vals

    def _checked(self, name: str, value, shape: tuple, dtype) -> np.ndarray:
        """``value`` broadcast to ``shape`` and checked for state array ``name``."""
        m = self.model
        label = f"Population.{name}"
        v = np.asarray(value)
        if v.dtype.kind not in "fiub":
            raise TypeError(f"{label} must hold real numbers, got dtype {v.dtype}")
        try:
            v = np.broadcast_to(v, shape)
        except ValueError:
            raise ValueError(f"{label} must broadcast to shape {shape}, got {v.shape}") from None
        if dtype.kind in "iu":  # indices, flags, counters, random words
            if v.dtype.kind == "f":
                if not (np.isfinite(v).all() and np.all(v == np.round(v))):
                    raise TypeError(f"{label} must hold integers")
            if name == "actions":
                nc = np.asarray(m.num_controls)
                bad = (v < 0) | (v >= nc)
                if bad.any():
                    i, f = np.argwhere(bad)[0]
                    raise ValueError(f"{label}: action {v[i, f].item()!r} for factor {f} is "
                                     f"outside 0..{nc[f] - 1} (num_controls = "
                                     f"{list(m.num_controls)})")
            elif name == "has_action":
                if np.any((v != 0) & (v != 1)):
                    raise ValueError(f"{label} must hold 0 or 1")
            elif name == "curr_timestep":
                if v.size and (v.min() < 0 or v.max() >= 2 ** 62):
                    raise ValueError(f"{label} must be integers in 0..2**62")
            elif name == "rng":
                if v.dtype.kind == "i" and v.size and v.min() < 0:
                    raise ValueError(f"{label} must hold non-negative 64-bit words")
            return v.astype(dtype)
        v = v.astype(np.float64)
        if name in ("gamma", "alpha"):
            return _opt.check_precisions(label, v, shape[0])
        _opt.check_finite_float32(label, v)
        if name in ("qs", "q_pi"):
            if np.any(v < 0):
                raise ValueError(f"{label} has negative entries; probabilities must be >= 0")
            if name == "qs":
                sums = np.add.reduceat(v, [lo for lo, _ in m.state_bounds], axis=1) if v.size \
                    else np.ones((0, 1))
            else:
                sums = v.sum(axis=1)
            dev = np.abs(sums - 1.0)
            if dev.size and dev.max() > _opt.BELIEF_ATOL:
                per = "per agent and factor" if name == "qs" else "per agent"
                raise ValueError(f"{label} must sum to 1 ({per}); largest deviation "
                                 f"{dev.max():.3g}")
        return v.astype(dtype)

    @property
    def n_agents(self) -> int:
        return self._n

    def __len__(self) -> int:
        return self._n

    def _uniform_qs(self) -> np.ndarray:
        return np.concatenate([np.full(n, 1.0 / n, dtype=np.float32)
                               for n in self.model.num_states])

    def _new_streams(self, k: int, given=None) -> np.ndarray:
        if given is not None:
            given = np.asarray(given)
            if given.dtype != np.uint64 or given.shape != (k,):
                raise ValueError(f"streams must be a uint64 array of shape ({k},), "
                                 f"got {given.dtype} {given.shape}")
            return given
        words = agent_streams(self._seed_seq, self._n_seeded, k)
        self._n_seeded += 1
        return words

    @staticmethod
    def _per_agent(x, name: str, n: int) -> np.ndarray:
        return _opt.check_precisions(name, x, n)

    def _ln_C(self, C, n: int, model: GenerativeModel | None = None) -> np.ndarray:
        m = self.model if model is None else model
        C = as_array_list(C, "C", allow_empty=True)
        if len(C) != m.num_modalities or any(c.shape != (n, k) for c, k in zip(C, m.num_obs)):
            raise ValueError(f"per-agent C must hold one array per modality of shapes "
                             f"{[(n, k) for k in m.num_obs]}, got {[c.shape for c in C]}")
        T = m.policy_len
        parts = []
        for c in C:
            e = np.exp(c - c.max(axis=1, keepdims=True))
            ln = np.log(e / e.sum(axis=1, keepdims=True) + 1e-16)
            parts.append(np.repeat(ln[:, :, None], T, axis=2).reshape(n, -1))  # (n, no * T)
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def _ln_E(self, E, n: int, model: GenerativeModel | None = None) -> np.ndarray:
        m = self.model if model is None else model
        E = np.asarray(E)
        if E.dtype.kind not in "fiub":
            raise TypeError(f"per-agent E must hold real numbers, got dtype {E.dtype}")
        E = E.astype(np.float64)
        if E.shape != (n, m.num_policies):
            raise ValueError(f"per-agent E must have shape ({n}, {m.num_policies}), "
                             f"got {E.shape}")
        _opt.check_finite_float32("E", E)
        if np.any(E < 0):
            raise ValueError("E must be finite and non-negative")
        return np.log(E + 1e-16).astype(np.float32)

    # -- stepping ----------------------------------------------------------------------

    def _check_obs(self, obs) -> np.ndarray:
        return check_obs(self.model, self._n, obs)

    def _run(self, stages: int, obs=None, replan=None) -> None:
        """One kernel call; the caller holds ``self._lock`` (the scratch is this population's).

        ``replan``: checked uint8 mask of the agents that evaluate policies (stage 2)."""
        d = self.__dict__
        m, n = d["_model"], d["_n"]
        if obs is None:  # stages that read no observation
            obs = d.get("_no_obs")
            if obs is None or obs.shape[0] < n:
                obs = d["_no_obs"] = np.zeros((max(n, 1), m.num_modalities), dtype=np.int32)
        # threads beyond the number of agents would get no work, only scratch
        threads = max(1, min(d["n_threads"], n))
        shift = None
        width = m.kmodel.scratch_size
        if replan is not None:
            shift = _policy_shift(m)
            width = max(width, shift[3])
        # each thread's row a whole number of 64-byte lines plus one: two threads never
        # write the same cache line of scratch (false sharing costs the 2-thread speedup)
        width = (width + 15) // 16 * 16 + 16
        scratch = d.get("_scratch")
        if scratch is None or scratch.shape != (threads, width):
            scratch = d["_scratch"] = np.empty((threads, width), dtype=np.float32)
        learned = d["_learned"]
        use_param = d["use_param_info_gain"]
        if use_param and learned is not None:
            learned.use_weights()  # the kernels read the weights from now on
        num_iter, dF, dF_tol, compute_vfe = d["_fpi"]
        rows = self._rows
        table = None if learned is None else learned.table(n)
        store = d.get("_store")
        # a state file is stepped in row chunks whose pages leave the resident set after
        # their chunk (hook: fa_core.storage), in RAM in one call
        for lo, hi in ((0, n),) if store is None else store.spans(n):
            part = _whole if store is None else (
                lambda a, lo=lo, hi=hi: None if a is None else a[lo:hi])
            _kernels.population_stages(
                m.kmodel, stages, part(rows("qs")), part(rows("q_pi")), part(rows("G")),
                part(rows("actions")), part(rows("has_action")), part(obs),
                part(rows("gamma")), part(rows("alpha")), part(rows("lnC")),
                part(rows("lnE")), part(rows("rng")), scratch, num_iter, dF, dF_tol,
                compute_vfe, d["use_utility"], d["use_states_info_gain"],
                use_param and m.has_pA, use_param and m.has_pB, m.has_H,
                d["sampling_mode"] == "full", d["action_selection"] == "deterministic",
                threads, part(table), part(replan), shift)
            if store is not None:
                store.release_rows(lo, hi)
        if (stages & _INFER_STATES) and d["_qs_t0"] is not None:
            first = d["_has_qs_t0"][:n] == 0  # save_belief_hist: the first posterior
            if first.any():
                d["_qs_t0"][:n][first] = rows("qs")[first]
                d["_has_qs_t0"][:n][first] = 1

    def infer_states(self, obs) -> np.ndarray:
        """Update every agent's beliefs from one observation per agent.

        Parameters
        ----------
        obs : array_like of int, shape (n_agents, n_modalities)
            One outcome index per agent and modality.

        Returns
        -------
        qs : ndarray of float32, shape (n_agents, sum(num_states))
            A read-only view of the beliefs, factors concatenated
            (:meth:`qs_factor` gives one factor).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> qs = pop.infer_states(np.array([[0, 0, 1]] * 4))
        >>> pop.qs_factor(0).round(3)[0]              # sure to be in the centre
        array([1., 0., 0., 0.], dtype=float32)
        """
        with self._lock:
            engine = self.__dict__["_engine"]
            if engine is not None:
                engine.infer_states(self, self._check_obs(obs))
            else:
                self._run(_INFER_STATES, self._check_obs(obs))
        return self.qs

    def infer_policies(self, replan=None):
        """Every agent's posterior over policies and negative expected free energies.

        Parameters
        ----------
        replan : array of bool, (n_agents,), optional
            Only these agents evaluate their policies; the others shift their
            ``q_pi`` one step, as in :meth:`step`.

        Returns
        -------
        q_pi : ndarray of float32, shape (n_agents, n_policies)
            Policy posteriors (read-only view).
        G : ndarray of float32, shape (n_agents, n_policies)
            Negative expected free energies (read-only view).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> _ = pop.infer_states(np.array([[0, 0, 1]] * 4))
        >>> q_pi, G = pop.infer_policies()
        >>> q_pi.shape, np.allclose(q_pi.sum(axis=1), 1)
        ((4, 16), True)
        """
        with self._lock:
            if replan is not None:
                replan = _check_replan(replan, self._n)
            engine = self.__dict__["_engine"]
            if engine is not None:
                engine.infer_policies(self, replan)
            else:
                self._run(_INFER_POLICIES, None, replan)
        return self.q_pi, self.G

    def sample_action(self) -> np.ndarray:
        """Select every agent's action and advance time.

        Returns
        -------
        actions : ndarray of int32, shape (n_agents, num_factors)
            One control index per agent and factor (read-only view).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> _ = pop.infer_states(np.array([[0, 0, 1]] * 4))
        >>> _ = pop.infer_policies()
        >>> pop.sample_action()[0], int(pop.curr_timestep[0])
        (array([3, 0], dtype=int32), 1)
        """
        with self._lock:
            self._sample()
        return self.actions

    def _sample(self) -> None:
        """Action selection, time, and the engine's step_time (MMP's window)."""
        engine = self.__dict__["_engine"]
        if engine is not None:
            engine.sample_action(self)
        else:
            self._run(_SAMPLE)
        self._rows("curr_timestep")[:] += 1
        if engine is not None:
            engine.step_time(self)

    def step(self, obs, replan=None) -> np.ndarray:
        """:meth:`infer_states`, :meth:`infer_policies` and :meth:`sample_action` in one call.

        Parameters
        ----------
        obs : array_like of int, shape (n_agents, n_modalities)
            One outcome index per agent and modality.
        replan : array of bool, (n_agents,), optional
            Intermittent planning: only agents where ``replan`` is True evaluate
            their policies this step (default: all). Every agent still updates
            its beliefs and selects an action; an agent not replanning acts on
            its previous policy posterior shifted one step, and keeps its ``G``:

            * ``policy_len`` 1: nothing is left of a one-step plan to shift, so
              ``q_pi`` is kept as it was (the agent chooses again from the same
              distribution over actions);
            * ``policy_len`` > 1: the policies that began with the action just
              taken (all factors) pass their probability to the policies that
              start with their remaining steps: ``q'(p)`` is proportional to
              the sum of ``q(p')`` over ``p'`` with ``p'[0]`` = the action taken
              and ``p'[1:] == p[:-1]``, shared equally among the policies with
              the same first ``policy_len - 1`` steps (they differ only in a
              last step no earlier evaluation planned). If no such mass exists
              (the action taken starts no policy with probability, or custom
              policies whose remainders start none), the condition on the
              action taken is dropped; if there is still none, ``q_pi`` is kept.
              After ``policy_len - 1`` steps without replanning the plan is
              used up and ``q_pi`` spreads out to uniform.

            An agent with no previous action (new, or after :meth:`reset`) has
            no plan to follow and evaluates its policies whatever the mask.

        Returns
        -------
        actions : ndarray of int32, shape (n_agents, num_factors)
            One control index per agent and factor (read-only view).

        Examples
        --------
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> from fa_core.envs import GridWorld
        >>> gm = GenerativeModel(**builtin_models.grid10())
        >>> pop = Population(gm, 100, seed=0)
        >>> env = GridWorld(10, 100, seed=1)
        >>> obs = env.reset()
        >>> for t in range(10):
        ...     obs = env.step(pop.step(obs))
        >>> int(pop.curr_timestep[0]), bool(env.found.any())
        (10, True)
        """
        with self._lock:
            obs = self._check_obs(obs)
            if replan is not None:
                replan = _check_replan(replan, self._n)
            engine = self.__dict__["_engine"]
            if engine is not None:
                if replan is not None:
                    engine.check_replan(replan)  # before anything moves
                engine.step(self, obs, replan)
                self._rows("curr_timestep")[:] += 1
                engine.step_time(self)
                return self.actions
            self._run(_INFER_STATES | _INFER_POLICIES | _SAMPLE, obs, replan)
            self._rows("curr_timestep")[:] += 1
        return self.actions

    def reset(self) -> None:
        """Uniform beliefs, no previous action (the next prior is ``D``) and time 0, for all.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> _ = pop.step(np.array([[0, 0, 1]] * 4))
        >>> pop.reset()
        >>> pop.curr_timestep, pop.has_action
        (array([0, 0, 0, 0]), array([0, 0, 0, 0], dtype=uint8))
        """
        with self._lock:
            self._rows("qs")[:] = self._uniform_qs()
            self._rows("has_action")[:] = 0
            self._rows("curr_timestep")[:] = 0
            if self.__dict__["_engine"] is not None:
                self.__dict__["_engine"].reset(self)

    def qs_factor(self, f: int) -> np.ndarray:
        """Every agent's beliefs over one factor.

        Parameters
        ----------
        f : int
            The factor, ``0 <= f < num_factors``.

        Returns
        -------
        qs_f : ndarray of float32, shape (n_agents, num_states[f])
            A read-only view of ``qs``.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> pop.qs_factor(1)                          # the context: unknown at first
        array([[0.5, 0.5],
               [0.5, 0.5],
               [0.5, 0.5],
               [0.5, 0.5]], dtype=float32)
        """
        f = _opt.check_int("f", f, 0, self.model.num_factors - 1)
        lo, hi = self.model.state_bounds[f]
        return self.qs[:, lo:hi]

    # -- learning (Dirichlet counts per agent; fa_core.population_learning) --------------

    modalities_to_learn = property(lambda self: list(self.__dict__["_learn_mods"]),
                                   doc="Modalities update_A learns (fixed at construction).")
    factors_to_learn = property(lambda self: list(self.__dict__["_learn_facs"]),
                                doc="Factors update_B / update_D learn (fixed at construction).")

    @property
    def qs_t0(self):
        """Each agent's first posterior (``save_belief_hist=True``; NaN rows: none yet), or None."""
        d = self.__dict__
        if d["_qs_t0"] is None:
            return None
        n = d["_n"]
        out = d["_qs_t0"][:n].copy()
        out[d["_has_qs_t0"][:n] == 0] = np.nan
        return out

    def _learn(self, kind: str, keys: list, lr: float, qs, qs_prev=None, obs=None,
               actions=None, row=None) -> None:
        """One learning kernel call over every agent (or only agent ``row``, for
        ``pop[row].update_A`` and co.); the caller holds the lock and has checked the
        inputs, given for those agents."""
        d = self.__dict__
        n, m = d["_n"], d["_model"]
        learned = d["_learned"]
        if learned is None:
            learned = LearnedParams(m, self._capacity, weights=d["use_param_info_gain"])
        entries = learned.ensure(keys)  # may raise (counts outside the pattern): nothing changed
        d["_learned"] = learned
        threads = max(1, min(d["n_threads"], n))
        if row is not None:
            threads, sl = 1, slice(row, row + 1)
            entries = [{k: (v[sl] if k in _LEARNED_ROWS and v is not None else v)
                        for k, v in e.items()} for e in entries]
        d["_learn_scratch"] = learned.scratch(entries, threads, d.get("_learn_scratch"))
        lay = m._kernel_layout
        _learning.population_learn({"A": 0, "B": 1, "D": 2}[kind], entries, qs, qs_prev, obs,
                                   actions, lr, lay.s_off, lay.ns, d["_learn_scratch"], threads)
        learned.adopt(n, row)
        d["_param_version"] = d.get("_param_version", 0) + 1  # pop[i] shows the new values

    def update_A(self, obs) -> None:
        """Dirichlet update of every agent's ``pA`` from ``obs`` and its current ``qs``.

        As ``Agent.update_A`` for each agent: ``pA[m] += lr_pA * outer(obs[m], qs)``
        where ``pA[m] > 0``, for ``m`` in ``modalities_to_learn``; the agent's ``A``
        becomes its normalised ``pA`` (read by its later inference). ``pop[i].pA``
        and ``pop[i].A`` show agent ``i``'s; ``pop[i].update_A(obs_i)`` learns for
        agent ``i`` alone.

        Parameters
        ----------
        obs : array of int, (n_agents, n_modalities)

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> spec = builtin_models.tmaze()
        >>> counts = lambda arrays: [np.asarray(x, dtype=float) * 10 + (x > 0) for x in arrays]
        >>> gm = GenerativeModel(**spec, pA=counts(spec["A"]), pB=counts(spec["B"]),
        ...                      pD=counts(spec["D"]))
        >>> pop = Population(gm, 4, seed=0, save_belief_hist=True)
        >>> obs = np.array([[0, 0, 1]] * 4)
        >>> _ = pop.infer_states(obs)
        >>> before = pop[0].pA[0].sum()
        >>> pop.update_A(obs)
        >>> bool(pop[0].pA[0].sum() > before), bool(pop[1].pA[0].sum() > before)
        (True, True)
        """
        self._update_A(obs, None)

    def _update_A(self, obs, row) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.refuse_learning("update_A")
            m = self.model
            if not m.has_pA:
                raise ValueError("update_A needs pA (Dirichlet parameters over A): build the "
                                 "model with pA=")
            obs = check_obs(m, self._n if row is None else 1, obs)
            qs = self._rows("qs")
            keys = [("A", mm) for mm in self._learn_mods]
            self._learn("A", keys, self.lr_pA, qs if row is None else qs[row:row + 1], obs=obs,
                        row=row)

    def update_B(self, qs_prev) -> None:
        """Dirichlet update of every agent's ``pB`` from ``qs_prev``, its last action and ``qs``.

        As ``Agent.update_B`` for each agent: the slice of the action taken,
        ``pB[f][..., a_f] += lr_pB * outer(qs[f], qs_prev[B_factor_list[f]])`` where it is
        positive, for ``f`` in ``factors_to_learn``; ``B`` becomes the normalised ``pB``.
        As with ``Agent``, call it after ``infer_states`` and before ``sample_action``
        (after :meth:`step`, ``actions`` already holds the next action)::

            qs_prev = pop.qs.copy()
            pop.infer_states(obs)
            pop.update_B(qs_prev)
            pop.update_A(obs)
            pop.infer_policies()
            actions = pop.sample_action()

        Parameters
        ----------
        qs_prev : array, (n_agents, sum(num_states))
            Every agent's previous beliefs, factors concatenated (as ``pop.qs``; keep
            a copy: ``qs_prev = pop.qs.copy()`` before the step).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> spec = builtin_models.tmaze()
        >>> counts = lambda arrays: [np.asarray(x, dtype=float) * 10 + (x > 0) for x in arrays]
        >>> gm = GenerativeModel(**spec, pA=counts(spec["A"]), pB=counts(spec["B"]),
        ...                      pD=counts(spec["D"]))
        >>> pop = Population(gm, 4, seed=0, save_belief_hist=True)
        >>> obs = np.array([[0, 0, 1]] * 4)
        >>> _ = pop.step(obs)                      # a first action
        >>> qs_prev = pop.qs.copy()
        >>> _ = pop.infer_states(obs)
        >>> before = pop[0].pB[0].sum()
        >>> pop.update_B(qs_prev)
        >>> bool(pop[0].pB[0].sum() > before)
        True
        """
        self._update_B(qs_prev, None)

    def _update_B(self, qs_prev, row) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.refuse_learning("update_B")
            m = self.model
            if not m.has_pB:
                raise ValueError("update_B needs pB (Dirichlet parameters over B): build the "
                                 "model with pB=")
            sl = slice(None) if row is None else slice(row, row + 1)
            n = self._n if row is None else 1
            has = self._rows("has_action")[sl]
            if n and not has.all():
                i = int(np.argmin(has)) if row is None else row
                raise ValueError(f"update_B needs an action: agent {i} has none (call "
                                 "sample_action or step first)")
            prev = np.ascontiguousarray(self._checked("qs", qs_prev, (n, sum(m.num_states)),
                                                      np.dtype(np.float32)))
            keys = [("B", f, u) for f in self._learn_facs for u in range(m.num_controls[f])]
            self._learn("B", keys, self.lr_pB, self._rows("qs")[sl], qs_prev=prev,
                        actions=self._rows("actions")[sl], row=row)

    def update_D(self, qs_t0=None) -> None:
        """Dirichlet update of every agent's ``pD`` from ``qs_t0``; ``D`` becomes normalised ``pD``.

        Parameters
        ----------
        qs_t0 : array, (n_agents, sum(num_states)), optional
            Initial beliefs. Default: each agent's first posterior, kept with
            ``save_belief_hist=True`` (as ``Agent.qs_hist[0]``).

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> spec = builtin_models.tmaze()
        >>> counts = lambda arrays: [np.asarray(x, dtype=float) * 10 + (x > 0) for x in arrays]
        >>> gm = GenerativeModel(**spec, pA=counts(spec["A"]), pB=counts(spec["B"]),
        ...                      pD=counts(spec["D"]))
        >>> pop = Population(gm, 4, seed=0, save_belief_hist=True)
        >>> obs = np.array([[0, 0, 1]] * 4)
        >>> _ = pop.step(obs)
        >>> pop.update_D()                          # from each agent's first posterior
        >>> np.allclose(pop[0].D[0], pop[0].pD[0] / pop[0].pD[0].sum())
        True
        """
        self._update_D(qs_t0, None)

    def _update_D(self, qs_t0, row) -> None:
        with self._lock:
            m = self.model
            sl = slice(None) if row is None else slice(row, row + 1)
            n = self._n if row is None else 1
            if m.pD is None:
                raise ValueError("update_D needs pD (Dirichlet parameters over D): build the "
                                 "model with pD=")
            start = None if self._engine is None else self._engine.window_start_belief(self)
            if qs_t0 is None and start is not None:  # MMP: the window's prior
                qs_t0 = start[sl]
            if qs_t0 is None:
                d = self.__dict__
                if d["_qs_t0"] is None:
                    raise ValueError("update_D needs qs_t0, or save_belief_hist=True and one "
                                     "infer_states call")
                has = d["_has_qs_t0"][:self._n][sl]
                if n and not has.all():
                    i = int(np.argmin(has)) if row is None else row
                    raise ValueError(f"update_D needs qs_t0: agent {i} has not inferred its "
                                     "states yet")
                q0 = np.ascontiguousarray(d["_qs_t0"][:self._n][sl])
            else:
                q0 = np.ascontiguousarray(self._checked("qs", qs_t0, (n, sum(m.num_states)),
                                                        np.dtype(np.float32)))
            keys = [("D", f) for f in self._learn_facs]
            self._learn("D", keys, self.lr_pD, q0, row=row)

    def memory_report(self, include_scratch: bool = True):
        """Bytes of the population by component (also :func:`fa_core.memory_report`).

        Parameters
        ----------
        include_scratch : bool
            Count the kernels' scratch buffers.

        Returns
        -------
        fa_core.MemoryReport
            The shared model, the learned counts and values of every agent
            (``private_params``, with each learning agent's own model table),
            state arrays (``beliefs``), the first posteriors of
            ``save_belief_hist`` (``history``) and the kernels' scratch.

        Examples
        --------
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> report = Population(gm, 100).memory_report()
        >>> report.n_agents, report.private_params
        (100, 0)
        """
        from fa_core.memory import MemoryReport
        d = self.__dict__
        learned = d["_learned"]
        private = 0
        if learned is not None:
            private = learned.nbytes + sum(km.table_nbytes for km in learned.kmodels
                                           if km is not None)
        beliefs = sum(d["_" + k].nbytes for k in Population._ARRAYS + Population._OPTIONAL
                      + self._engine_rows() if d.get("_" + k) is not None)
        history = sum(d["_" + k].nbytes for k in _HIST if d.get("_" + k) is not None)
        scratch = sum(d[k].nbytes for k in ("_scratch", "_learn_scratch")
                      if include_scratch and d.get(k) is not None)
        if include_scratch and d["_engine"] is not None:
            scratch += d["_engine"].scratch_nbytes
        return MemoryReport(n_agents=self._n, shared_model=self.model.nbytes,
                            private_params=private, beliefs=beliefs, history=history,
                            scratch=scratch)

    # -- membership ----------------------------------------------------------------------

    def add(self, k: int = 1, streams=None) -> np.ndarray:
        """Add ``k`` fresh agents (uniform beliefs, their own random streams).

        Storage grows geometrically, so adding one agent at a time costs
        amortised O(1), not a copy of the population. Newcomers take agent 0's
        ``gamma``, ``alpha`` and per-agent ``C`` / ``E``.

        Parameters
        ----------
        k : int
            How many agents to add.
        streams : ndarray of uint64, shape (k,), optional
            The newcomers' random-stream words (as in the constructor); default
            fresh streams from the population's seed.

        Returns
        -------
        indices : ndarray of int
            The newcomers' indices, ``n_agents`` before the call onwards.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> pop.add(2)
        array([4, 5])
        >>> pop.n_agents
        6
        """
        k = _opt.check_int("k", k, 0, None)
        with self._lock:
            streams = self._new_streams(k, streams)
            self._will_write()
            n = self._n
            if n + k > self._capacity:
                self._alloc(max(n + k, 2 * self._capacity, 16))
            d = self.__dict__
            for name in Population._ARRAYS + self._engine_rows():
                d["_" + name][n:n + k] = 0
            for name in Population._OPTIONAL:  # newcomers copy agent 0's preferences / habits
                arr = d["_" + name]
                if arr is not None:
                    arr[n:n + k] = arr[0]
            d["_n"] = n + k
            new = slice(n, n + k)
            if d["_learned"] is not None:  # newcomers read the shared model until they learn
                d["_learned"].fresh(new)
                d["_param_version"] = d.get("_param_version", 0) + 1
            if d["_has_qs_t0"] is not None:
                d["_has_qs_t0"][new] = 0
            rows = self._rows
            rows("qs")[new] = self._uniform_qs()
            rows("q_pi")[new] = 1.0 / self.model.num_policies
            rows("rng")[new] = streams
            rows("gamma")[new] = rows("gamma")[0] if n else 16.0
            rows("alpha")[new] = rows("alpha")[0] if n else 16.0
            if d["_engine"] is not None:
                d["_engine"].reset(self, new)
        return np.arange(n, n + k)

    def remove(self, indices) -> dict[int, int]:
        """Remove agents by moving the last agents into their rows.

        Costs O(len(indices)), not a copy.

        Parameters
        ----------
        indices : int or sequence of int
            The agents to remove.

        Returns
        -------
        moved : dict of int to int
            ``{old_index: new_index}`` for every agent that moved; other indices
            are unchanged.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> pop.remove([0])                           # the last agent takes row 0
        {3: 0}
        >>> pop.n_agents
        3
        """
        with self._lock:
            n_new, moved = removal_moves(self._n, indices)
            self._will_write()
            arrays = [self.__dict__["_" + name]
                      for name in Population._ARRAYS + Population._OPTIONAL + _HIST
                      + self._engine_rows()]
            arrays = [a for a in arrays if a is not None]
            learned = self.__dict__["_learned"]
            for src, dst in moved.items():
                for a in arrays:
                    a[dst] = a[src]
                if learned is not None:
                    learned.move(src, dst)
            if learned is not None:
                learned.drop(range(n_new, self._n))
            self.__dict__["_param_version"] = self.__dict__.get("_param_version", 0) + 1
            self.__dict__["_n"] = n_new
        return moved

    def __getitem__(self, i: int) -> Agent:
        """An :class:`Agent` whose beliefs, q_pi, G and action indices are views of row ``i``.

        Calls on it (``infer_states``, ...) update the population in place.
        Its time step and action history are its own, and it draws random
        numbers from its own generator, not the population's stream.
        """
        i = _opt.as_index("agent index", i)
        if not -self._n <= i < self._n:
            raise IndexError(f"agent index {i} out of range for {self._n} agents")
        i %= self._n
        if self.lnC is not None or self.lnE is not None:
            raise NotImplementedError("pop[i] is not available with per-agent C or E")
        engine = self._engine
        member = None if engine is None else engine.member(self, i)  # MMP: a window view
        if member is not None:
            return member
        return PopulationMember(self, i)

    def _agent_model(self, i: int) -> GenerativeModel:
        """Agent ``i``'s parameters as a model: the shared one, or built from its counts."""
        learned = self.__dict__["_learned"]
        if learned is None or not learned.own[i]:
            return self.model
        cache = self.__dict__.setdefault("_member_models", {})
        key = (i, self.__dict__.get("_param_version", 0))
        model = cache.get(key)
        if model is None:
            cache.clear()
            model = cache[key] = learned.agent_model(i)
        return model

    # -- persistence ---------------------------------------------------------------------

    def _small_state(self) -> dict:
        """The state without the model and the row arrays: options, seed sequence, counts
        of agents and stream draws, learned counts (plain values)."""
        d = self.__dict__
        state = {k: v for k, v in d.items() if not k.startswith("_")
                 or k in ("_seed_seq", "_n_seeded", "_n")}  # storage and scratch are rebuilt
        state["inference_params"] = dict(d["_params"])
        state["modalities_to_learn"] = list(d["_learn_mods"])
        state["factors_to_learn"] = list(d["_learn_facs"])
        learned = d["_learned"]
        state["learned"] = None if learned is None else learned.state(d["_n"])
        state["engine"] = None if d["_engine"] is None else d["_engine"].state()
        return state

    def __getstate__(self) -> dict:
        with self._lock:
            d = self.__dict__
            state = self._small_state()
            state["model"] = d["_model"]
            for name in Population._ARRAYS + Population._OPTIONAL + _HIST:
                arr = d.get("_" + name)
                state[name] = None if arr is None else arr[:d["_n"]].copy()
            engine = d["_engine"]
            if engine is not None and engine.rows:  # MMP's windows; a state file maps them
                state["engine"] = dict(state["engine"], rows={
                    name: d["_" + name][:d["_n"]].copy() for name in engine.rows})
        return state

    def __setstate__(self, state: dict) -> None:
        check_population_state(state, state.get("model"), "unpickled population")
        self._restore(state)

    def _restore(self, state: dict, capacity: int | None = None) -> None:
        state = dict(state)
        for name, default in _POP_DEFAULTS.items():  # states saved before learning existed
            state.setdefault(name, default)
        arrays = {name: state.pop(name)
                  for name in Population._ARRAYS + Population._OPTIONAL + _HIST}
        learned = state.pop("learned")
        engine_state = state.pop("engine")
        d = self.__dict__
        d["_model"] = state.pop("model")
        d["_engine"] = None if engine_state is None else \
            _restored_engine(d["_model"], engine_state, "restored population")
        d["_learn_mods"] = tuple(state.pop("modalities_to_learn"))
        d["_learn_facs"] = tuple(state.pop("factors_to_learn"))
        d["_learned"] = None
        d["_lock"] = threading.RLock()
        self._set_option("inference_params",
                         _opt.check_inference_params(state.pop("inference_params")))
        for name in list(state):
            if name in _OPTION_CHECKS:
                self._set_option(name, _OPTION_CHECKS[name](state.pop(name)))
        d.update(state)
        for name in Population._OPTIONAL + _HIST:  # _alloc takes their widths from these
            d["_" + name] = arrays[name]
        n = d["_n"]
        d["_n"] = 0
        self._alloc(n if capacity is None else capacity)
        d["_n"] = n
        for name, arr in arrays.items():
            if arr is not None and arr is not d["_" + name]:  # a state file's: in place
                d["_" + name][:n] = arr
        if engine_state is not None and d["_engine"].rows:
            rows = engine_state.get("rows")
            if rows is None:  # a state file's mapped rows, adopted by _alloc: checked here
                _check_engine_state(dict(engine_state, rows={
                    name: d["_" + name][:n] for name in d["_engine"].rows}),
                    d["_model"], n, "restored population")
            else:
                for name, arr in rows.items():
                    d["_" + name][:n] = arr
        if learned is not None:
            d["_learned"] = LearnedParams.restored(d["_model"], self._capacity, n, learned,
                                                   d["_learn_mods"], d["_learn_facs"])

    def hibernate(self, *, compress: bool = False) -> bytes:
        """The whole population's state as checked bytes; see :meth:`wake`.

        The blob (:mod:`fa_core.blobformat`: length, version, CRC-32) holds every
        agent's arrays, the options and the seed sequence as plain values, and
        the model's content key, not the model: keep the model alive or pass it
        to :meth:`wake` (pickle a Population to carry its model along).

        Parameters
        ----------
        compress : bool
            Deflate the payload (smaller, slower).

        Returns
        -------
        blob : bytes
            The population's state.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> blob = pop.hibernate()
        >>> again = Population.wake(blob)
        >>> again.n_agents, bool((again.qs == pop.qs).all())
        (4, True)
        """
        state = self.__getstate__()
        model = state.pop("model")
        body = encode_state(state, "population")
        return frame(_POP_MAGIC, _POP_VERSION, 0, model.content_key(), body, compress)

    @staticmethod
    def wake(blob: bytes, model: GenerativeModel | None = None) -> Population:
        """A population restored exactly from :meth:`hibernate` bytes.

        Never unpickles: the blob's checksum, length and version are checked,
        then every array against the model (shapes, action indices against
        ``num_controls``, finite non-negative beliefs, ...) before anything is
        built.

        Parameters
        ----------
        blob : bytes
            What :meth:`hibernate` returned.
        model : GenerativeModel, optional
            The population's model; by default the live model with the blob's
            content key.

        Returns
        -------
        population : Population
            The population as it was hibernated.

        Raises
        ------
        CorruptStateError
            If ``blob`` is corrupt or truncated or holds values out of range.
        ValueError
            If no live model has the blob's key, or ``model`` has another key.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> _ = pop.step(np.array([[0, 0, 1]] * 4))
        >>> again = Population.wake(pop.hibernate(), model=gm)
        >>> again.actions[0], int(again.curr_timestep[0])
        (array([3, 0], dtype=int32), 1)
        >>> Population.wake(pop.hibernate()[:-1])
        Traceback (most recent call last):
        ...
        fa_core.errors.CorruptStateError: corrupt or truncated hibernated population: ...
        """
        state = decode_population(blob, model)
        pop = Population.__new__(Population)
        pop._restore(state)
        return pop

    # -- state files (fa_core.storage) -------------------------------------------------

    @property
    def storage(self) -> str | None:
        """The path of the state file holding this population's arrays, or None (in RAM)."""
        store = self.__dict__.get("_store")
        return None if store is None else store.path

    def save(self, path) -> None:
        """Write the whole population to a state file, atomically; see :meth:`load`.

        The file (:mod:`fa_core.storage`: versioned, CRC-32 checksummed, no
        pickle) holds every per-agent array, the options, the random streams and
        seed sequence and the learned counts, and names the model by its content
        key. It is written to a temporary file, fsynced and renamed over
        ``path``, so a crash leaves the previous file or none, never a partial
        one. Works for in-RAM and storage-backed populations alike.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write (replaced if it exists).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> pop = Population(gm, 4, seed=0)
        >>> _ = pop.step(np.array([[0, 0, 1]] * 4))
        >>> path = os.path.join(tempfile.mkdtemp(), "pop.fap")
        >>> pop.save(path)
        >>> again = Population.load(path, gm)
        >>> obs = np.array([[1, 0, 0]] * 4)
        >>> bool((again.step(obs) == pop.step(obs)).all())
        True
        """
        _storage.save_population(self, path)

    @classmethod
    def load(cls, path, model: GenerativeModel) -> Population:
        """An in-RAM population read from a file :meth:`save` or :meth:`flush` wrote.

        Every check :meth:`wake` makes is made (magic, version, CRC-32s of the
        superblock, metadata and every array, then the values against the model).

        Parameters
        ----------
        path : str or os.PathLike
        model : GenerativeModel
            The population's model (its content key must be the file's).

        Returns
        -------
        Population
            Steps exactly as the saved population would have.

        Raises
        ------
        fa_core.errors.CorruptStateError
            Corrupt, truncated or out-of-range contents
            (:class:`~fa_core.errors.UnflushedStateError`: a storage-backed
            file changed after its last flush).
        fa_core.errors.ModelMismatchError
            ``model`` is not the file's model.
        fa_core.errors.LayoutMismatchError
            The file's arrays are not the ones this model and options need.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> pop = Population(gm, 4, seed=0)
        >>> obs = np.array([[0, 0, 1]] * 4)
        >>> _ = pop.step(obs)
        >>> path = os.path.join(tempfile.mkdtemp(), "pop.fap")
        >>> pop.save(path)
        >>> again = Population.load(path, gm)
        >>> bool((again.step(obs) == pop.step(obs)).all())
        True
        """
        return _storage.load_population(cls, path, model)

    @classmethod
    def open(cls, path, model: GenerativeModel, *, verify: bool = True) -> Population:
        """Resume a storage-backed population from its state file (memory-mapped, in place).

        The population continues exactly where the last :meth:`flush` left it
        (arrays, options, random streams, learned counts); later changes go to
        the file and become durable at the next :meth:`flush`. See
        :mod:`fa_core.storage` for the crash-safety design.

        Parameters
        ----------
        path : str or os.PathLike
            A file made by ``Population(..., storage=path)`` or :meth:`save`.
        model : GenerativeModel
            The population's model.
        verify : bool
            Check every array's CRC-32 and values (one pass over the file,
            pages dropped as it goes). ``False`` skips that pass and checks
            only the superblock and metadata.

        Returns
        -------
        Population

        Raises
        ------
        fa_core.errors.UnflushedStateError
            The file was written after its last flush and not flushed again.
        fa_core.errors.CorruptStateError
            Corrupt or truncated header, metadata or data.
        fa_core.errors.ModelMismatchError, fa_core.errors.LayoutMismatchError
            Another model, or arrays other than this model and options need.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
        >>> path = os.path.join(tempfile.mkdtemp(), "pop.fap")
        >>> pop = Population(gm, 4, seed=0, storage=path)
        >>> _ = pop.step(np.array([[0, 0, 1]] * 4))
        >>> pop.flush()
        >>> pop.close()
        >>> again = Population.open(path, gm)
        >>> int(again.curr_timestep[0]), again.storage == path
        (1, True)
        """
        return _storage.open_population(cls, path, model, verify=verify)

    def flush(self) -> None:
        """Make a storage-backed population's current state durable (its commit record).

        msyncs the mapped arrays, writes their CRC-32s and the small state into
        the metadata, fsyncs, then clears the superblock's DIRTY flag and
        fsyncs again. Until then a crash leaves a file that refuses to open
        (:class:`~fa_core.errors.UnflushedStateError`). Reads every array once.

        Raises
        ------
        ValueError
            If the population is in RAM (use :meth:`save`).

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> path = os.path.join(tempfile.mkdtemp(), "pop.fap")
        >>> pop = Population(gm, 4, seed=0, storage=path)
        >>> _ = pop.step(np.array([[0, 0, 1]] * 4))
        >>> pop.flush()                 # a kill from here on reopens at this step
        >>> int(Population.open(path, gm, verify=False).curr_timestep[0])
        1
        """
        store = self.__dict__.get("_store")
        if store is None:
            raise ValueError("flush() is for storage-backed populations "
                             "(Population(..., storage=PATH)); use save(PATH) for this one")
        with self._lock:
            store.flush(self._small_state(), self._capacity, self._n)

    def close(self) -> None:
        """Close a storage-backed population's file without flushing (nothing in RAM).

        Any later use of the population raises ValueError, as a closed file
        does; unflushed changes stay undurable (the file refuses to open until
        flushed), so call :meth:`flush` first. Closing twice, or closing a
        population in RAM, does nothing.

        Examples
        --------
        >>> import os, tempfile
        >>> from fa_core import GenerativeModel, Population, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> path = os.path.join(tempfile.mkdtemp(), "pop.fap")
        >>> pop = Population(gm, 4, seed=0, storage=path)
        >>> pop.close()
        >>> pop
        <closed fa_core.Population>
        >>> Population.open(path, gm).n_agents
        4
        """
        store = self.__dict__.pop("_store", None)
        if store is None:
            return
        with self._lock:
            for name in self._array_specs():
                self.__dict__.pop("_" + name, None)
            self.__dict__["_n"] = 0
            store.close()
            self.__class__ = _ClosedPopulation

    def __repr__(self) -> str:
        return (f"fa_core.Population(n_agents={self._n}, model={self.model!r}, "
                f"n_threads={self.n_threads})")


#: One line per state array, the docstring of its property.
_STATE_DOCS = {
    "qs": "Beliefs, ``(n_agents, sum(num_states))`` float32, factors concatenated "
          "(:meth:`Population.qs_factor` gives one).",
    "q_pi": "Policy posteriors, ``(n_agents, n_policies)`` float32.",
    "G": "Expected free energies (negative), ``(n_agents, n_policies)`` float32.",
    "actions": "Last actions, ``(n_agents, num_factors)`` int32.",
    "has_action": "Whether ``actions`` holds a previous action (the next prior predicts from "
                  "it) or not (the next prior is ``D``), ``(n_agents,)`` uint8.",
    "curr_timestep": "Time step per agent, ``(n_agents,)`` int64.",
    "rng": "Random-stream word per agent (SplitMix64), ``(n_agents,)`` uint64.",
    "gamma": "Policy precision per agent, ``(n_agents,)`` float32.",
    "alpha": "Action precision per agent, ``(n_agents,)`` float32.",
    "lnC": "Per-agent log-preferences, one array per modality ``(n_agents, num_obs[m])`` "
           "concatenated, or None when the model's ``C`` is shared.",
    "lnE": "Per-agent log policy priors ``(n_agents, n_policies)``, or None when shared.",
}


class _ClosedPopulation(Population):
    """What a storage-backed population becomes once closed: every use raises."""

    def __getattribute__(self, name):
        if name in ("__class__", "__dict__", "__repr__", "close"):
            return object.__getattribute__(self, name)
        raise ValueError(f"Population.{name}: the population's state file is closed "
                         "(Population.open(path, model) resumes it)")

    def __setattr__(self, name, value):
        raise ValueError(f"Population.{name}: the population's state file is closed "
                         "(Population.open(path, model) resumes it)")

    def __repr__(self) -> str:
        return "<closed fa_core.Population>"

    def close(self) -> None:
        """Closed already: nothing to do."""


def _state_property(name: str) -> property:
    """A real attribute (seen by ``dir()`` and tab completion) for state array ``name``: a
    read-only view of the first ``n_agents`` rows of its storage; assignment goes through
    :meth:`Population.set` (``Population.__setattr__``)."""
    def get(self):
        arr = self.__dict__.get("_" + name)
        return None if arr is None else _state_view(arr[:self.__dict__["_n"]], name)
    get.__name__ = name
    doc = _STATE_DOCS.get(name, f"Per-agent state array ``{name}``.")
    return property(get, doc=doc + " Read-only view; set with ``pop." + name
                    + " = values`` or :meth:`Population.set`.")


for _name in Population._ARRAYS + Population._OPTIONAL:
    setattr(Population, _name, _state_property(_name))
del _name


def _whole(a):
    return a


# the keywords shared with Agent and ShardedPopulation are checked in fa_core.options
_OPTION_CHECKS = {"n_threads": lambda v: _opt.check_threads(v, default_threads()),
                  **_opt.OPTION_CHECKS}

#: save_belief_hist's storage: each agent's first posterior and whether it has one
_HIST = ("qs_t0", "has_qs_t0")

_SHIFTS: weakref.WeakKeyDictionary[GenerativeModel, tuple] = weakref.WeakKeyDictionary()


def _policy_shift(model: GenerativeModel) -> tuple:
    """The tables of ``_replan.shift_policy_posterior`` for ``model``'s policies (cached):
    ``(head, tail, share, n_keys)``, see :meth:`Population.step`."""
    shift = _SHIFTS.get(model)
    if shift is None:
        pol = np.stack(model.policies)  # (P, T, nf)
        P = pol.shape[0]
        if pol.shape[1] <= 1:
            shift = (np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros(1, np.float32), 0)
        else:
            keys: dict[bytes, int] = {}
            head = np.array([keys.setdefault(p[:-1].tobytes(), len(keys)) for p in pol],
                            dtype=np.int32)
            tail = np.array([keys.get(p[1:].tobytes(), -1) for p in pol], dtype=np.int32)
            share = (1.0 / np.bincount(head, minlength=len(keys))[head]).astype(np.float32)
            shift = (head, tail, share, len(keys))
        assert shift[3] <= max(P, 1)
        _SHIFTS[model] = shift
    return shift


def _check_replan(replan, n: int) -> np.ndarray:
    """The replan mask as C-contiguous uint8 (n,), or a clear error."""
    r = np.asarray(replan)
    if r.dtype != np.bool_:
        raise TypeError(f"replan must be a boolean array of shape ({n},), got dtype {r.dtype}")
    if r.shape != (n,):
        raise ValueError(f"replan must have shape (n_agents,) = ({n},), got {r.shape}")
    return np.ascontiguousarray(r, dtype=np.uint8)


class StateView(np.ndarray):
    """A read-only view of a :class:`Population` state array.

    Reads, slicing and arithmetic behave as for any array (results of
    arithmetic and :meth:`copy` are plain, writable ndarrays); a write raises
    a ValueError naming the attribute and the validated ways to set it.
    """

    def __array_finalize__(self, obj):
        self._fa_name = getattr(obj, "_fa_name", None)

    def _refuse(self):
        name = self._fa_name or "state array"
        raise ValueError(f"Population.{name} is read-only: set it with pop.{name} = values "
                         f"(every agent) or pop.set({name!r}, values, rows=...), which check "
                         f"the values first")

    def __setitem__(self, key, value):
        if not self.flags.writeable:
            self._refuse()
        super().__setitem__(key, value)

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        arr = arr.view(np.ndarray)
        return arr[()] if return_scalar else arr

    def copy(self, order="C"):
        return np.array(self, order=order, copy=True, subok=False)

    def __reduce_ex__(self, protocol):
        return np.asarray(self).__reduce_ex__(protocol)

    def __reduce__(self):
        return np.asarray(self).__reduce__()

    def __repr__(self):
        return repr(np.asarray(self))


def _inplace(op):
    def method(self, other):
        if not self.flags.writeable:
            self._refuse()
        return getattr(super(StateView, self), op)(other)
    method.__name__ = op
    return method


for _op in ("__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
            "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__"):
    setattr(StateView, _op, _inplace(_op))


def _state_view(arr: np.ndarray, name: str) -> np.ndarray:
    v = arr.view(StateView)
    v.flags.writeable = False
    v._fa_name = name
    return v


def agent_streams(seed_seq: np.random.SeedSequence, call: int, k: int) -> np.ndarray:
    """Random-stream words of the ``k`` agents made by a population's ``call``-th draw.

    A population seeded with ``seed_seq`` draws once when built (call 0) and
    once per :meth:`Population.add` (calls 1, 2, ...); agent ``i`` of a draw
    gets word ``i``, whatever ``k`` is, so any slice of a draw can be made apart.
    """
    return np.random.SeedSequence(seed_seq.entropy, spawn_key=seed_seq.spawn_key + (call,)
                                  ).generate_state(max(k, 1), dtype=np.uint64)[:k]


def check_obs(model: GenerativeModel, n_agents: int, obs) -> np.ndarray:
    """``obs`` as a C-contiguous int32 (n_agents, num_modalities) array, or a clear error."""
    obs = np.asarray(obs)
    if obs.dtype.kind not in "iu":
        raise TypeError(f"obs must be an integer array of outcome indices, got dtype {obs.dtype}")
    if obs.shape != (n_agents, model.num_modalities):
        raise ValueError(f"obs must have shape (n_agents, num_modalities) = "
                         f"({n_agents}, {model.num_modalities}), got {obs.shape}")
    if obs.dtype == np.int32 and obs.flags.c_contiguous:
        # one comparison: a negative index read as uint32 is at least 2**31, beyond every
        # modality's outcomes (a per-step check, a few ms at 100k agents in two passes)
        if not (obs.view(np.uint32) >= np.asarray(model.num_obs, dtype=np.uint32)).any():
            return obs
    bad = (obs < 0) | (obs >= np.asarray(model.num_obs))
    if bad.any():
        i, mm = np.argwhere(bad)[0]
        raise ValueError(f"obs[{i}, {mm}] = {obs[i, mm]} out of range: modality {mm} has "
                         f"{model.num_obs[mm]} outcomes")
    return np.ascontiguousarray(obs, dtype=np.int32)


def removal_moves(n_agents: int, indices) -> tuple[int, dict[int, int]]:
    """How :meth:`Population.remove` renumbers: the new count and ``{old: new}`` of movers.

    The last surviving agents fill the removed rows, in order.
    """
    raw = np.asarray(indices)
    if raw.size and (raw.dtype.kind not in "iu" or raw.ndim > 1):
        raise TypeError(f"indices must be integers (a 1-D list or array of agent indices), "
                        f"got {raw.dtype} of shape {raw.shape}")
    idx = np.unique(raw.astype(np.int64).reshape(-1))
    if idx.size and (idx[0] < 0 or idx[-1] >= n_agents):
        raise IndexError(f"indices must be in 0..{n_agents - 1}")
    gone = set(idx.tolist())
    n_new = n_agents - idx.size
    holes = [i for i in idx.tolist() if i < n_new]
    movers = [j for j in range(n_new, n_agents) if j not in gone]
    return n_new, dict(zip(movers, holes))


def _row_property(array: str, doc: str):
    """An attribute of a member that is row ``i`` of a population array, read when used."""
    return property(lambda self: self._pop._rows(array)[self._row],
                    lambda self, value: None,  # rewritten in place by the Agent code
                    doc=doc)


class PopulationMember(Agent):
    """Agent-compatible view of one row of a :class:`Population`.

    Beliefs, policy posterior, expected free energy, action, time step,
    gamma and alpha are the population's row ``i``, read when used (so a
    member made before a step, or before :meth:`Population.add` grew the
    storage, is still current) and written in place. The member's action
    history is its own, and it draws random numbers from the global
    ``np.random`` (as ``Agent``), not from the population's stream.
    """

    __slots__ = ("_pop", "_row", "_own_model")

    def __init__(self, pop: Population, i: int):  # noqa: D107 - no Agent.__init__: state is the row
        self._pop, self._row = pop, i
        self._own_model = None
        self._reuse = True
        self._pviews = self._pdirty = self._pi_ref = self._G_ref = None
        self._prev_actions = None
        self._rng, self._randint = np.random, np.random.randint
        params = pop.__dict__["_params"]  # VANILLA's (an engine keeps its own)
        self.inference_params = dict(params)
        self._engine = engines.VanillaEngine((int(params["num_iter"]), float(params["dF"]),
                                              float(params["dF_tol"]),
                                              bool(params["compute_vfe"])))
        self.inference_algo, self.inference_horizon = "VANILLA", 1
        self.action_selection, self.sampling_mode = pop.action_selection, pop.sampling_mode
        self.use_utility = pop.use_utility
        self.use_states_info_gain = pop.use_states_info_gain
        self.use_param_info_gain = pop.use_param_info_gain
        self.modalities_to_learn = list(pop.modalities_to_learn)
        self.factors_to_learn = list(pop.factors_to_learn)
        self.lr_pA, self.lr_pB, self.lr_pD = pop.lr_pA, pop.lr_pB, pop.lr_pD
        self.sophisticated, self.si_horizon = False, 3
        self.si_policy_prune_threshold = self.si_state_prune_threshold = 1 / 16
        self.si_prune_penalty = 512
        if pop.__dict__["_engine"] is not None:  # the population's algorithm and its options
            pop.__dict__["_engine"].configure_member(self)
        self.edge_handling_params = {"use_BMA": True, "policy_sep_prior": False}
        self.factorized = False
        self._hist_len = self._act_hist_len = None
        self.prev_obs, self.F = [], None

    @property
    def _model(self):
        """Agent ``i``'s parameters (its learned counts, read when used), or a model this
        member was given by an edit of its own."""
        own = self._own_model
        return own if own is not None else self._pop._agent_model(self._row)

    @_model.setter
    def _model(self, value):
        self._own_model = value

    _qs_buf = _row_property("qs", "Flat beliefs: the population's row.")
    _q_pi = _row_property("q_pi", "Policy posterior: the population's row.")
    _G = _row_property("G", "Negative expected free energies: the population's row.")
    _act_i = _row_property("actions", "Action indices: the population's row.")

    @property
    def _qs(self):
        buf = self._qs_buf
        qs = np.empty(len(self._model.state_bounds), dtype=object)
        for f, (lo, hi) in enumerate(self._model.state_bounds):
            qs[f] = buf[lo:hi]
        return qs

    @_qs.setter
    def _qs(self, value):
        pass  # the views are rebuilt from the row on every read

    @property
    def _action(self):
        pop, i = self._pop, self._row
        return pop._rows("actions")[i].astype(np.float64) if pop._rows("has_action")[i] else None

    @_action.setter
    def _action(self, value):
        pop, i = self._pop, self._row
        if value is None:
            pop.set("has_action", 0, rows=[i])
        else:
            pop.set("actions", value, rows=[i])
            pop.set("has_action", 1, rows=[i])

    @property
    def curr_timestep(self):
        return int(self._pop.curr_timestep[self._row])

    @curr_timestep.setter
    def curr_timestep(self, value):
        self._pop._rows("curr_timestep")[self._row] = _opt.check_int("curr_timestep", value, 0,
                                                                     2 ** 62)

    @property
    def gamma(self):
        return float(self._pop.gamma[self._row])

    @gamma.setter
    def gamma(self, value):
        self._pop._rows("gamma")[self._row] = _opt.check_precision("gamma", value)

    @property
    def alpha(self):
        return float(self._pop.alpha[self._row])

    @alpha.setter
    def alpha(self, value):
        self._pop._rows("alpha")[self._row] = _opt.check_precision("alpha", value)

    # learning goes to the population's rows for this agent (its counts, its model)
    def update_A(self, obs):
        """Dirichlet update of this agent's ``pA`` in its population; returns ``qA``."""
        self._pop._update_A(np.asarray(obs).reshape(1, -1), self._row)
        return self.pA

    def update_B(self, qs_prev):
        """Dirichlet update of this agent's ``pB`` in its population; returns ``qB``."""
        prev = np.concatenate(self._factor_vectors(qs_prev, "qs_prev")).reshape(1, -1)
        self._pop._update_B(prev, self._row)
        return self.pB

    def update_D(self, qs_t0=None):
        """Dirichlet update of this agent's ``pD`` in its population; returns ``qD``."""
        q0 = None if qs_t0 is None else \
            np.concatenate(self._factor_vectors(qs_t0, "qs_t0")).reshape(1, -1)
        self._pop._update_D(q0, self._row)
        return self.pD

    def __reduce__(self):
        raise TypeError("a population member is a view; pickle the Population instead")


# ---------------------------------------------------------------------------
# Restoring: checks before anything is built
# ---------------------------------------------------------------------------


def decode_population(blob: bytes, model: GenerativeModel | None = None,
                      what: str = _POP_WHAT) -> dict:
    """The checked state (``Population.__getstate__`` form) that ``blob`` holds.

    Raises CorruptStateError for a corrupt, truncated or out-of-range blob,
    ValueError if the model cannot be found or differs from the blob's.
    """
    _, key, body = unframe(blob, _POP_MAGIC, _POP_VERSION, 1, what)
    model = resolve_model(key, model, "population")
    r = Reader(body, what, copy=False)  # views: Population._restore copies them into storage
    state = load_value(r)
    r.done()
    if type(state) is not dict or "model" in state:
        fail(what, "its payload is not a population's state")
    state["model"] = model
    check_population_state(state, model, what)
    return state


_POP_FIELDS = {"model", "inference_params", "use_utility", "use_states_info_gain",
               "use_param_info_gain", "action_selection", "sampling_mode", "n_threads",
               "_seed_seq", "_n_seeded", "_n"} | set(Population._ARRAYS + Population._OPTIONAL)

#: fields added with learning; states without them (saved before) get these values
_POP_DEFAULTS = {"lr_pA": 1.0, "lr_pB": 1.0, "lr_pD": 1.0, "modalities_to_learn": "all",
                 "factors_to_learn": "all", "qs_t0": None, "has_qs_t0": None, "learned": None,
                 "engine": None}


def check_population_state(state, model, what: str = "unpickled population") -> None:
    """Refuse a population state whose values a kernel could not run on safely:
    array shapes and dtypes against the model, action indices against
    ``num_controls``, finite non-negative beliefs, option values."""
    if type(state) is not dict:
        fail(what, "its state is not a mapping")
    for name, default in _POP_DEFAULTS.items():
        state.setdefault(name, default)
    missing = sorted(_POP_FIELDS - set(state))
    if missing:
        fail(what, f"fields {missing} are missing")
    odd = sorted(str(k) for k in state if k not in _POP_FIELDS and k not in _POP_DEFAULTS and (
        type(k) is not str or k.startswith("_") or hasattr(Population, k)))
    if odd:
        fail(what, f"fields {odd} are neither population state nor user attributes")
    if type(model) is not GenerativeModel:
        fail(what, f"its model is a {type(model).__name__}, not a GenerativeModel")
    n = state["_n"]
    check_int(what, "n_agents", n)
    S, P, nf = sum(model.num_states), model.num_policies, model.num_factors
    for name, shape in (("qs", (n, S)), ("q_pi", (n, P))):
        check_vector(what, name, state[name], shape)
    for name in ("G", "gamma", "alpha"):
        check_vector(what, name, state[name], (n, P) if name == "G" else (n,), nonneg=False)
    sums = state["q_pi"].sum(axis=1, dtype=np.float64)
    if n and np.abs(sums - 1.0).max() > 1e-3 + 1e-6 * P:
        i = int(np.argmax(np.abs(sums - 1.0)))
        fail(what, f"q_pi of agent {i} sums to {sums[i]}, not 1 (it is a probability distribution)")
    check_vector(what, "actions", state["actions"], (n, nf), (np.int32,), nonneg=False)
    check_actions(what, "actions", state["actions"], model.num_controls)
    check_vector(what, "has_action", state["has_action"], (n,), (np.uint8,))
    if (state["has_action"] > 1).any():
        fail(what, "has_action holds values other than 0 and 1")
    check_vector(what, "curr_timestep", state["curr_timestep"], (n,), (np.int64,))
    check_vector(what, "rng", state["rng"], (n,), (np.uint64,), nonneg=False)
    width_C = sum(model.num_obs) * model.policy_len
    for name, width in (("lnC", width_C), ("lnE", P)):
        if state[name] is not None:
            check_vector(what, name, state[name], (n, width), nonneg=False)
    params = state["inference_params"]
    if type(params) is not dict or set(params) != set(_DEFAULT_VANILLA):
        fail(what, f"inference_params must have the keys {sorted(_DEFAULT_VANILLA)}")
    for name, check in _OPTION_CHECKS.items():  # the checks a constructor makes
        try:
            check(state[name])
        except (TypeError, ValueError) as exc:
            fail(what, str(exc))
    if type(state["_seed_seq"]) is not np.random.SeedSequence:
        fail(what, "its seed sequence is not a numpy SeedSequence")
    check_int(what, "the number of stream draws", state["_n_seeded"])
    try:
        state["modalities_to_learn"] = list(learn_indices(
            state["modalities_to_learn"], model.num_modalities, "modalities_to_learn"))
        state["factors_to_learn"] = list(learn_indices(
            state["factors_to_learn"], model.num_factors, "factors_to_learn"))
    except (TypeError, ValueError) as exc:
        fail(what, str(exc))
    if (state["qs_t0"] is None) != (state["has_qs_t0"] is None):
        fail(what, "qs_t0 and has_qs_t0 must be given together")
    if state["qs_t0"] is not None:
        check_vector(what, "has_qs_t0", state["has_qs_t0"], (n,), (np.uint8,))
        if (state["has_qs_t0"] > 1).any():
            fail(what, "has_qs_t0 holds values other than 0 and 1")
        check_vector(what, "qs_t0", state["qs_t0"], (n, S))
    check_learned_state(state["learned"], model, n, state["modalities_to_learn"],
                        state["factors_to_learn"], what)
    if state["engine"] is not None:  # the algorithm's options, checked as the constructor does
        _check_engine_state(state["engine"], model, n, what)


def _restored_engine(model, state, what: str):
    """The engine a restored population's ``state["engine"]`` describes (checked)."""
    from fa_core import population_mmp  # it imports PopulationMember from here
    if type(state) is dict and "algo" in state:
        return population_si.restore(model, state, what)
    return population_mmp.MMPEngine.from_options(model, state["options"])


def _check_engine_state(state, model, n: int, what: str) -> None:
    """Refuse a restored engine state: the sophisticated search's options, or MMP's
    options and (when they travel in the state) per-agent window rows."""
    from fa_core import population_mmp
    if type(state) is dict and "algo" in state:
        population_si.restore(model, state, what)
    else:
        population_mmp.check_engine_state(state, model, n, what)


def check_checkpoint(model: GenerativeModel, blobs, members, seed_seq, n_seeded,
                     what: str = "checkpoint") -> list[int]:
    """Refuse a sharded population's checkpoint whose parts do not fit together.

    Every shard blob is checked as :meth:`Population.wake` would (without
    building it); ``members[s]`` must give one global index per agent of
    shard ``s``, and together the indices must number the agents ``0 ..
    n - 1`` once each. Returns the shard sizes.
    """
    if not isinstance(model, GenerativeModel):
        raise CorruptStateError(f"corrupt or truncated {what}: its model is a "
                                f"{type(model).__name__}")
    if type(blobs) is not list or type(members) is not list or len(blobs) != len(members):
        fail(what, f"{len(blobs) if isinstance(blobs, list) else '?'} shard blobs but "
                   f"{len(members) if isinstance(members, list) else '?'} member lists")
    sizes = []
    for s, blob in enumerate(blobs):
        state = decode_population(blob, model, f"{what} shard {s}")
        sizes.append(state["_n"])
        m = members[s]
        if not isinstance(m, np.ndarray) or m.dtype.kind not in "iu" or m.shape != (state["_n"],):
            fail(what, f"shard {s} holds {state['_n']} agents but its member list is "
                       f"{getattr(m, 'shape', type(m).__name__)}")
    total = sum(sizes)
    every = np.concatenate([np.asarray(m, np.int64) for m in members]) if members else \
        np.zeros(0, np.int64)
    if not np.array_equal(np.sort(every), np.arange(total)):
        fail(what, f"its member lists do not number the {total} agents 0..{total - 1} once each")
    if type(seed_seq) is not np.random.SeedSequence:
        fail(what, "its seed sequence is not a numpy SeedSequence")
    check_int(what, "n_seeded", n_seeded)
    return sizes
