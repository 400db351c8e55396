"""``fa_core.Agent``: a drop-in replacement for pymdp's numpy Agent.

Same constructor keywords and defaults as ``pymdp.legacy.agent.Agent``
(inferactively-pymdp 1.0.x), same methods, attributes and return types.
The numbers come from the float32 kernels in :mod:`fa_core._kernels`; the
agent owns only its beliefs, policy posterior, action and time step and
references a shared :class:`~fa_core.model.GenerativeModel` for the rest.
"""

from __future__ import annotations

import warnings
import weakref

import numpy as np

from fa_core import _kernels, _learning, _views, agent_state, engines, mmp
from fa_core import options as _opt
from fa_core import sophisticated as _si
from fa_core.model import GenerativeModel, as_array_list
from fa_core.params import EDITABLE, component_values, param_view, put_entry
from fa_core.scratch import scratch

# model-defining keywords that cannot be combined with model= (policy_len, ii_depth and
# ii_threshold have non-None defaults and are taken from the model instead)
_MODEL_KEYS = ("A", "B", "H", "pA", "pB", "pD", "num_controls", "control_fac_idx", "policies",
               "A_factor_list", "B_factor_list")
_DEFAULT_VANILLA = _opt.VANILLA_DEFAULTS


def _row_store(rows: np.ndarray) -> np.ndarray:
    """The buffer whose first rows ``rows`` are (``step_time`` grows into it), or ``rows``.

    Only ``step_time`` makes such views (the setter and waking store fresh arrays).
    """
    base = rows.base
    if type(base) is np.ndarray and base.ndim == 2 and base.shape[1] == rows.shape[1] \
            and base.dtype == rows.dtype:
        return base
    return rows


def _deep_copy(qs):
    """A copy of a beliefs structure (``qs[f]``, or MMP's ``qs[p][t][f]``), for histories."""
    if isinstance(qs, np.ndarray) and qs.dtype == object:
        out = np.empty(len(qs), dtype=object)
        for i, x in enumerate(qs):
            out[i] = _deep_copy(x)
        return out
    return None if qs is None else np.array(qs)


def _obj_array(items) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = x
    return out


class Agent:
    """Active-inference agent with pymdp's API and a compiled float32 core.

    A drop-in replacement for ``pymdp.legacy.agent.Agent``: the same keywords and
    defaults, methods, attributes and return types.

    Parameters
    ----------
    A, B : object array or list of arrays, optional
        Observation and transition likelihoods in pymdp's layout (see
        :class:`GenerativeModel`); required unless ``model`` is given.
    C, D, E, H : object array or list of arrays, optional
        Log-preferences per modality, initial-state prior per factor, prior over
        policies and goal prior for inductive inference, as pymdp.
    pA, pB, pD : object array or list of arrays, optional
        Dirichlet parameters over ``A``, ``B``, ``D`` (learning, parameter
        information gain).
    num_controls, policy_len, control_fac_idx, policies : optional
        The policy set, as pymdp: every combination of controls ``policy_len``
        deep by default.
    A_factor_list, B_factor_list : list of lists of int, optional
        The factors each modality and each factor depends on, as pymdp.
    gamma, alpha : float
        Policy precision and action precision (default 16, as pymdp).
    use_utility, use_states_info_gain, use_param_info_gain : bool
        Terms of the expected free energy, as pymdp.
    action_selection : {"deterministic", "stochastic"}
        As pymdp.
    sampling_mode : {"marginal", "full"}
        As pymdp.
    inference_algo : {"VANILLA", "MMP"}
        Fixed-point state inference, or marginal message passing.
    inference_params : dict, optional
        ``num_iter``, ``dF``, ``dF_tol`` (VANILLA) or ``num_iter``, ``tau``
        (MMP); honoured, unlike pymdp, and unknown keys raise ``ValueError``.
    inference_horizon, use_BMA, policy_sep_prior : optional
        MMP options, as pymdp.
    modalities_to_learn, factors_to_learn : "all" or list of int
        What ``update_A`` / ``update_B`` / ``update_D`` learn.
    lr_pA, lr_pB, lr_pD : float
        Learning rates.
    save_belief_hist : bool
        Keep ``qs_hist`` and ``q_pi_hist``.
    sophisticated, si_horizon : optional
        Sophisticated inference (tree search) and its depth, as pymdp.
    si_policy_prune_threshold, si_state_prune_threshold, si_prune_penalty : optional
        The tree search's pruning, as pymdp.
    ii_depth, ii_threshold : optional
        Inductive inference, as pymdp.
    model : GenerativeModel, optional
        A model to share instead of ``A``, ``B``, ... (which must then be
        omitted; ``C``, ``D`` and ``E`` may still be given per agent, giving a
        derived model that shares everything else). Without it, the model
        built from ``A``, ``B``, ... is interned: agents built from equal
        arrays share one model.
    seed : int, numpy.random.SeedSequence or numpy.random.Generator, optional
        Randomness for stochastic action selection and tie-breaks: a Generator is used as
        it is, an int or a SeedSequence seeds a new one (:func:`numpy.random.default_rng`).
        ``None`` (default) uses the global ``np.random`` as pymdp does.
    sparse : {"auto", True, False}
        Storage of the model's matrices when built from arrays (see
        :class:`GenerativeModel`).
    belief_hist_len : int, optional
        With ``save_belief_hist=True``, keep at most this many entries of
        ``qs_hist`` / ``q_pi_hist`` (the first belief is always kept, for
        ``update_D``). Default ``None``: all of them, as pymdp.
    action_hist_len : int, optional
        ``prev_actions`` (and, with MMP, ``prev_obs``) keep at most this many
        entries. Default ``None``: all of them, as pymdp.
    reuse_buffers : bool
        ``False`` (default): like pymdp, every ``infer_states`` /
        ``infer_policies`` call returns new float64 arrays, so references a
        user holds (``qs_prev = agent.qs``) keep their values. ``True``: results
        are the agent's own float32 buffers, rewritten in place with no
        allocation per step; copy what you keep.

    See Also
    --------
    Population : many agents of one model stepped in one call.
    GenerativeModel : the shared, validated model.

    Notes
    -----
    The kernels compute in float32; ``qs``, ``q_pi``, ``G`` and the model
    parameters (``A``, ``B``, ``C``, ``D``, ``E``, ``pA``, ``pB``, ``pD``) are
    handed out as float64 arrays, as pymdp's. Parameters may be edited in
    place as in pymdp (``agent.C[1][1] = 3.0``): the agent then derives a
    private model from its edited copy before its next call, and no other
    agent sharing the model is affected (see :mod:`fa_core.params`). Writes
    into ``qs`` or ``q_pi`` take effect at the next call, as in pymdp.

    With ``sophisticated=True`` (one-step policies only), ``infer_policies``
    runs pymdp's sophisticated-inference tree search, with its semantics:
    ``q_pi = softmax(G)`` (gamma 1, no ``E``); see :mod:`fa_core.sophisticated`.

    Examples
    --------
    >>> from fa_core import Agent, builtin_models
    >>> agent = Agent(**builtin_models.tmaze(), policy_len=2, seed=0)
    >>> agent
    fa_core.Agent(num_states=[4, 2], num_obs=[4, 3, 2], policies=16, t=0)
    >>> qs = agent.infer_states([0, 0, 1])          # centre, no reward, cue 1 (uninformative)
    >>> q_pi, G = agent.infer_policies()
    >>> agent.sample_action()                       # to the cue location first
    array([3., 0.])
    """

    # Slots keep an awake agent small: it owns its beliefs, policy posterior,
    # action and options; model and scratch are shared. ``__dict__`` is kept so
    # users can still attach their own attributes (allocated only if they do).
    __slots__ = ("_model", "_qs_buf", "_qs", "_reuse", "_q_pi", "_G", "_act_i", "_action",
                 "_prev_actions", "_rng", "_randint", "_engine", "_hist_len", "_act_hist_len",
                 "qs_hist", "q_pi_hist",
                 "prev_obs", "F", "curr_timestep", "inference_params", "inference_algo",
                 "inference_horizon", "gamma", "alpha", "action_selection", "sampling_mode",
                 "use_utility", "use_states_info_gain", "use_param_info_gain",
                 "modalities_to_learn", "factors_to_learn", "lr_pA", "lr_pB", "lr_pD",
                 "sophisticated", "si_horizon", "si_policy_prune_threshold",
                 "si_state_prune_threshold", "si_prune_penalty", "edge_handling_params",
                 "factorized", "_pviews", "_pdirty", "_pi_ref", "_G_ref",
                 "__dict__", "__weakref__")

    def __init__(self, A=None, B=None, C=None, D=None, E=None, H=None, pA=None, pB=None, pD=None,
                 num_controls=None, policy_len=1, inference_horizon=1, control_fac_idx=None,
                 policies=None, gamma=16.0, alpha=16.0, use_utility=True,
                 use_states_info_gain=True, use_param_info_gain=False,
                 action_selection="deterministic", sampling_mode="marginal",
                 inference_algo="VANILLA", inference_params=None, modalities_to_learn="all",
                 lr_pA=1.0, factors_to_learn="all", lr_pB=1.0, lr_pD=1.0, use_BMA=True,
                 policy_sep_prior=False, save_belief_hist=False, A_factor_list=None,
                 B_factor_list=None, sophisticated=False, si_horizon=3,
                 si_policy_prune_threshold=1 / 16, si_state_prune_threshold=1 / 16,
                 si_prune_penalty=512, ii_depth=10, ii_threshold=1 / 16, *,
                 model: GenerativeModel | None = None, seed=None, sparse="auto",
                 belief_hist_len: int | None = None, action_hist_len: int | None = None,
                 reuse_buffers: bool = False):
        if inference_algo is None:
            inference_algo = "VANILLA"
        if sophisticated and inference_algo != "VANILLA":
            # pymdp silently ignores sophisticated=True outside VANILLA
            raise ValueError(f"sophisticated=True runs with inference_algo='VANILLA' only, "
                             f"got {inference_algo!r}")
        if inference_algo not in ("VANILLA", "MMP"):
            raise NotImplementedError(f"inference_algo={inference_algo!r} is not implemented "
                                      "(pymdp implements 'VANILLA' and 'MMP')")
        # options, all checked before anything is built or stored (fa_core.options)
        _opt.OPTION_CHECKS["action_selection"](action_selection)
        _opt.OPTION_CHECKS["sampling_mode"](sampling_mode)
        _opt.check_precision("gamma", gamma)
        _opt.check_precision("alpha", alpha)
        for name, v in (("lr_pA", lr_pA), ("lr_pB", lr_pB), ("lr_pD", lr_pD)):
            _opt.AGENT_RATE_CHECK(name, v)
        _opt.check_hist_len("belief_hist_len", belief_hist_len)
        _opt.check_hist_len("action_hist_len", action_hist_len)
        if inference_algo == "VANILLA":
            vanilla_params = _opt.OPTION_CHECKS["inference_params"](inference_params)

        if model is None:
            if A is None or B is None:
                raise TypeError("Agent needs A and B, or model=")
            for name, v in (("A", A), ("B", B), ("C", C), ("D", D), ("E", E)):
                if v is not None and not isinstance(v, np.ndarray):
                    # pymdp's own check: plain lists are refused there too
                    raise TypeError(f"{name} must be a numpy array (or object array), "
                                    f"got {type(v).__name__}")
            model = GenerativeModel.interned(
                A=A, B=B, C=C, D=D, E=E, pA=pA, pB=pB, pD=pD, H=H, A_factor_list=A_factor_list,
                B_factor_list=B_factor_list, num_controls=num_controls, policy_len=policy_len,
                control_fac_idx=control_fac_idx, policies=policies, ii_depth=ii_depth,
                ii_threshold=ii_threshold, sparse=sparse)
        else:
            if not isinstance(model, GenerativeModel):
                raise TypeError(f"model must be a GenerativeModel, got {type(model).__name__}")
            args = locals()
            given = [k for k in _MODEL_KEYS if args[k] is not None]
            if given:
                raise ValueError(f"with model=, these belong to the model and cannot be passed: "
                                 f"{given} (C, D and E can)")
            per_agent = {k: v for k, v in (("C", C), ("D", D), ("E", E)) if v is not None}
            if per_agent:
                # a derived model sharing A and B with the given one (and with every
                # agent given equal C / D / E)
                model = model.derived(**per_agent)
        if sophisticated:
            _si.check_options(model, si_horizon, si_policy_prune_threshold,
                              si_state_prune_threshold, si_prune_penalty, policy_len=policy_len,
                              E=E, use_utility=use_utility,
                              use_states_info_gain=use_states_info_gain,
                              use_param_info_gain=use_param_info_gain)
        self._model = model

        params = dict(_DEFAULT_VANILLA)
        if inference_algo == "MMP":
            # pymdp ignores inference_params; fa_core honours them (num_iter, tau)
            self.inference_params = mmp.check_params(inference_params, inference_horizon)
            if use_param_info_gain and (model.has_pA or model.has_pB):
                raise NotImplementedError("use_param_info_gain with inference_algo='MMP' is not "
                                          "implemented")
        else:
            params = vanilla_params
        if inference_algo == "VANILLA":
            self.inference_params = params
        fpi = _opt.fpi_args(params)
        self.inference_algo = inference_algo
        self.inference_horizon = inference_horizon
        self.gamma, self.alpha = gamma, alpha
        self.action_selection, self.sampling_mode = action_selection, sampling_mode
        self.use_utility = use_utility
        self.use_states_info_gain = use_states_info_gain
        self.use_param_info_gain = use_param_info_gain
        self.modalities_to_learn, self.factors_to_learn = modalities_to_learn, factors_to_learn
        self.lr_pA, self.lr_pB, self.lr_pD = lr_pA, lr_pB, lr_pD
        self.sophisticated = bool(sophisticated)
        self.si_horizon = si_horizon
        self.si_policy_prune_threshold = si_policy_prune_threshold
        self.si_state_prune_threshold = si_state_prune_threshold
        self.si_prune_penalty = si_prune_penalty
        if policy_sep_prior and use_BMA:
            warnings.warn("Inconsistent choice of `policy_sep_prior` and `use_BMA`. You have set "
                          "`policy_sep_prior` to True, so we are setting `use_BMA` to False",
                          stacklevel=2)
            use_BMA = False
        self.edge_handling_params = {"use_BMA": use_BMA, "policy_sep_prior": policy_sep_prior}
        self.factorized = A_factor_list is not None or B_factor_list is not None

        if seed is None:
            # the global generator, as pymdp; randint(n) draws what pymdp's choice(n) draws
            self._rng = np.random
            self._randint = np.random.randint
        else:
            self._rng = (seed if isinstance(seed, np.random.Generator)
                         else np.random.default_rng(seed))
            self._randint = self._rng.integers

        m = model
        self._reuse = bool(reuse_buffers)
        self._pviews = self._pdirty = self._pi_ref = self._G_ref = None
        self._set_qs_buffer(np.empty(sum(m.num_states), dtype=np.float32))
        self._q_pi = np.full(m.num_policies, 1.0 / m.num_policies, dtype=np.float32)
        self._G = np.zeros(m.num_policies, dtype=np.float32)
        self._act_i = np.zeros(m.num_factors, dtype=np.int32)
        self._hist_len = None if belief_hist_len is None else int(belief_hist_len)
        self._act_hist_len = None if action_hist_len is None else int(action_hist_len)
        if save_belief_hist:
            self.qs_hist, self.q_pi_hist = [], []
        self.prev_obs = []
        self.F = None
        window = (mmp.MMPState(model, inference_horizon, self.inference_params, use_BMA,
                                policy_sep_prior) if inference_algo == "MMP" else None)
        self._engine = engines.make(inference_algo, self.sophisticated, fpi, window)
        self.reset()
        self._action = None
        self._prev_actions = None

    # -- model views (pymdp attribute names) ----------------------------------------------

    @property
    def model(self) -> GenerativeModel:
        """The (possibly shared) generative model this agent uses."""
        return self._model

    # -- editable parameters (copy-on-write, see fa_core.params) ---------------------------

    def _param(self, name: str):
        """This agent's float64 view of one model component (made on first read)."""
        views = self._pviews
        v = views.get(name) if views is not None else None
        if type(v) is weakref.ref:
            v = v()
        if v is None:
            v = param_view(self, name, self._model.exact(name))
            if v is not None:
                if views is None:
                    views = self._pviews = {}
                views[name] = weakref.ref(v)  # the user's to keep; made again if dropped
        return v

    def _param_written(self, name: str, index, entry) -> None:
        """A ParamArray of this agent was written: adopt the edited component."""
        if name in ("_pi_ref", "_G_ref"):  # q_pi / G as read: loaded back at the next call
            setattr(self, name, entry)
            return
        if name == "qs":
            qs = self.qs if index is not None else entry
            if index is not None and qs[index] is not entry:
                put_entry(qs, index, entry)
            self._qs = qs
            return
        views = self._pviews
        if views is None:
            views = self._pviews = {}
        if index is None:
            container = entry  # E, or an object array written by item assignment
        else:
            container = views.get(name)
            if type(container) is weakref.ref:
                container = container()
            if container is None:
                container = param_view(self, name, self._model.exact(name))
            if container[index] is not entry:
                put_entry(container, index, entry)
        views[name] = container  # held: the agent's own values from now on
        self._pdirty = (self._pdirty or frozenset()) | {name}

    def _apply_edits(self) -> None:
        """Derive this agent's model from its edited components (once per edit)."""
        names = sorted(self._pdirty)
        try:
            changes = {n: component_values(n, self._pviews[n]) for n in names}
            # editing pA / pB leaves A / B as they are until learning or reset, as pymdp
            model = self._model.derived(renormalise=False, **changes)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"agent.{'/'.join(names)} was edited into an invalid model: "
                            f"{exc}") from exc
        self._model = model
        self._pdirty = None

    def _set_model(self, model: GenerativeModel, changed=EDITABLE) -> None:
        """Use ``model`` (assigned or learned); views of the changed components go stale."""
        self._model = model
        if self._pviews:
            for name in changed:
                self._pviews.pop(name, None)

    def _set_model_array(self, name, value):
        self._sync()  # pending in-place edits first, so none is lost
        self._set_model(self._model.replace(renormalise=False, **{name: value}), (name,))

    A = property(lambda s: s._param("A"), lambda s, v: s._set_model_array("A", v))
    B = property(lambda s: s._param("B"), lambda s, v: s._set_model_array("B", v))
    C = property(lambda s: s._param("C"), lambda s, v: s._set_model_array("C", v))
    D = property(lambda s: s._param("D"), lambda s, v: s._set_model_array("D", v))
    E = property(lambda s: s._param("E"), lambda s, v: s._set_model_array("E", v))
    pA = property(lambda s: s._param("pA"), lambda s, v: s._set_model_array("pA", v))
    pB = property(lambda s: s._param("pB"), lambda s, v: s._set_model_array("pB", v))
    pD = property(lambda s: s._param("pD"), lambda s, v: s._set_model_array("pD", v))
    H = property(lambda s: s._model.H)
    I = property(lambda s: s._model.I)
    policies = property(lambda s: s._model.policies)
    num_states = property(lambda s: s._model.num_states)
    num_obs = property(lambda s: s._model.num_obs)
    num_controls = property(lambda s: s._model.num_controls)
    num_factors = property(lambda s: s._model.num_factors)
    num_modalities = property(lambda s: s._model.num_modalities)
    control_fac_idx = property(lambda s: s._model.control_fac_idx)
    A_factor_list = property(lambda s: s._model.A_factor_list)
    B_factor_list = property(lambda s: s._model.B_factor_list)
    policy_len = property(lambda s: s._model.policy_len)

    # -- results: float32 buffers inside, float64 copies outside ---------------------------

    def _result(self, ref_slot: str, buf: np.ndarray):
        """``buf`` as the user sees it: itself with reuse_buffers, else its float64 copy."""
        if self._reuse:
            return buf
        out = getattr(self, ref_slot)
        if type(out) is weakref.ref:
            out = out()
        if out is None:  # read, not returned by a call: a write into it must reach the agent
            out = param_view(self, ref_slot, buf)
            setattr(self, ref_slot, weakref.ref(out))
        return out

    @property
    def q_pi(self) -> np.ndarray:
        """Posterior over policies (float64; float32 buffer with ``reuse_buffers``)."""
        return self._result("_pi_ref", self._q_pi)

    @q_pi.setter
    def q_pi(self, value):
        self._q_pi[:] = self._policy_vector(value, "q_pi")
        self._pi_ref = None

    @property
    def G(self) -> np.ndarray:
        """Negative expected free energy of each policy (float64, as ``q_pi``)."""
        return self._result("_G_ref", self._G)

    @G.setter
    def G(self, value):
        self._G[:] = self._policy_vector(value, "G", probabilities=False)
        self._G_ref = None

    def _policy_vector(self, value, name: str, probabilities: bool = True) -> np.ndarray:
        v = np.asarray(value, dtype=np.float64)
        n = self._model.num_policies
        if v.shape != (n,) or not np.all(np.isfinite(v)) or (probabilities and np.any(v < 0)):
            raise ValueError(f"{name} must be {n} finite{' non-negative' if probabilities else ''} "
                             f"numbers, one per policy; got shape {v.shape}")
        return v

    @property
    def qs(self) -> np.ndarray:
        """Posterior over hidden states: object array of per-factor arrays (float64 as
        pymdp; float32 views of the agent's buffer with ``reuse_buffers``)."""
        qs = self._engine.beliefs(self._reuse)  # MMP: per policy and time step
        if qs is not None:
            return qs
        qs = self._qs
        if type(qs) is weakref.ref:
            qs = qs()
        if qs is None:  # read, not returned by a call: a write into it must reach the agent
            qs = param_view(self, "qs",
                            [self._qs_buf[lo:hi] for lo, hi in self._model.state_bounds])
            self._qs = weakref.ref(qs)
        return qs

    @qs.setter
    def qs(self, value):
        if not self._engine.set_beliefs(value):  # MMP keeps what it is given, as pymdp
            self._load_beliefs(value, "qs")

    def _load_beliefs(self, value, name: str) -> None:
        """Validate per-factor beliefs and make them the agent's ``qs`` (kept as given,
        as pymdp keeps them, until the next inference)."""
        qs = self._factor_vectors(value, name)
        self._qs_buf[:] = np.concatenate(qs)
        keep = isinstance(value, np.ndarray) and value.dtype == object and not self._reuse
        self._set_qs_buffer(self._qs_buf, value if keep else None)

    def _sync(self) -> None:
        """Before a call: check the precisions (plain attributes a user may assign) and
        apply in-place edits of parameters, ``qs`` and ``q_pi``."""
        for name in ("gamma", "alpha"):
            v = getattr(self, name)
            if type(v) is not float or not -_opt.MAX_PRECISION <= v <= _opt.MAX_PRECISION:
                setattr(self, name, _opt.check_precision(name, v))  # NaN fails the range too
        if self._pdirty:
            self._apply_edits()
        if self._reuse:
            return  # the user holds the buffers themselves
        qs = self._qs
        if type(qs) is weakref.ref:
            qs = qs()
        if qs is not None and _views.factors_differ(qs, self._qs_buf, self._model.state_edges):
            self._load_beliefs(qs, "qs")
        q_pi = self._pi_ref
        if type(q_pi) is weakref.ref:
            q_pi = q_pi()
        if q_pi is not None and _views.vector_differs(q_pi, self._q_pi):
            self.q_pi = q_pi

    def _factor_vectors(self, value, name: str) -> list[np.ndarray]:
        """``value`` as one float64 vector per factor (non-negative, summing to 1), or a
        ValueError naming ``name``."""
        return _opt.check_beliefs(name, value, self.num_states)

    def _set_qs_buffer(self, buf: np.ndarray, container=None) -> None:
        """Make ``buf`` (flat, float32) the agent's beliefs. With reuse_buffers ``qs``
        views its factors; otherwise ``qs`` is ``container`` (the beliefs as the user
        set them) or, without one, float64 copies made when read."""
        self._qs_buf = buf
        if not self._reuse:
            self._qs = container
            return
        bounds = self._model.state_bounds
        qs = np.empty(len(bounds), dtype=object)
        for f, (lo, hi) in enumerate(bounds):  # np.split is several times slower
            qs[f] = buf[lo:hi]
        self._qs = qs

    @property
    def mb_dict(self) -> dict:
        return {"A_factor_list": self._model.A_factor_list,
                "A_modality_list": self._model.A_modality_list}

    @property
    def prev_actions(self):
        """Past actions, oldest first: a list of float arrays (``None`` where none was set).

        Stored as one small integer matrix (a few bytes per step, not an
        array object per step); the list is built when read.
        """
        prev = self._prev_actions
        if prev is None:
            return None
        return [None if row[0] < 0 else row.astype(np.float64) for row in prev]

    @prev_actions.setter
    def prev_actions(self, value):
        if value is None:
            self._prev_actions = None
            return
        rows = []
        for i, a in enumerate(value):
            if a is None:
                rows.append(np.full(self.num_factors, -1))
                continue
            a = np.asarray(a, dtype=np.float64).reshape(-1)
            if a.shape != (self.num_factors,) or np.any(a != np.round(a)) or np.any(a < 0) \
                    or np.any(a >= self.num_controls):
                raise ValueError(f"prev_actions[{i}] must hold one control index per factor "
                                 f"(num_controls = {self.num_controls}), got {a}")
            rows.append(a)
        rows = np.array(rows, dtype=self._model.action_dtype).reshape(len(rows), self.num_factors)
        if self._act_hist_len is not None:
            rows = rows[-self._act_hist_len:]
        self._prev_actions = rows.copy()

    # -- inference -----------------------------------------------------------------------

    def reset(self, init_qs=None):
        """Uniform beliefs (or ``init_qs``) and time step 0.

        As pymdp, ``action`` is kept, so the next ``infer_states`` predicts
        from it; set ``agent.action = None`` to start from ``D`` instead.

        Parameters
        ----------
        init_qs : object array or list of arrays, optional
            Beliefs to start from, one normalised vector per factor.

        Returns
        -------
        qs : object array of float64 arrays
            The new beliefs, one array per factor.

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> agent.reset()[1]
        array([0.5, 0.5])
        >>> agent.curr_timestep
        0
        """
        self._sync()
        m = self._model
        # pymdp's reset makes A and B the expectations of pA and pB again
        if m.pA is not None and not m.A_from_counts or m.pB is not None and not m.B_from_counts:
            self._set_model(m.replace(**{k: getattr(m, "_" + k) for k, v in
                                         (("pA", m.A_from_counts), ("pB", m.B_from_counts))
                                         if getattr(m, "_" + k) is not None and not v}),
                            ("A", "B"))
        self._engine.reset(self._model, init_qs, self._load_beliefs)
        self.curr_timestep = 0
        return self.qs

    def _load_observation(self, observation, distr_obs: bool):
        """Validate ``observation`` into scratch buffers.

        Returns ``(distr, obs, obs_distr)``: whether it is a distribution, the
        outcome indices (int32) and the concatenated distributions (float32).
        """
        nm = self._model.num_modalities
        obs = scratch(nm, "obs", np.int32)
        obs_distr = scratch(self._model.kmodel.sum_obs, "obs_distr")
        if isinstance(observation, np.ndarray) and observation.dtype == object:
            distr_obs = True
        if distr_obs:
            parts = as_array_list(observation, "observation")
            if len(parts) != nm:
                raise ValueError(f"observation must have one distribution per modality ({nm}), "
                                 f"got {len(parts)}")
            for m, p in enumerate(parts):
                if p.shape != (self._model.num_obs[m],):
                    raise ValueError(f"observation[{m}] must have shape "
                                     f"({self._model.num_obs[m]},), got {p.shape}")
                if np.any(p < 0):
                    raise ValueError(f"observation[{m}] has negative probabilities")
            obs_distr[:self._model.kmodel.sum_obs] = np.concatenate(parts)
            return True, obs, obs_distr
        if isinstance(observation, (int, np.integer)) and nm == 1:
            observation = (observation,)
        _kernels.load_observation(self._model.kmodel, observation, obs)
        return False, obs, obs_distr

    def infer_states(self, observation, distr_obs=False):
        """Update the posterior over hidden states from one observation.

        Parameters
        ----------
        observation : sequence of int, or sequence of arrays
            One outcome index per modality, or with ``distr_obs=True`` one
            distribution per modality.
        distr_obs : bool
            Whether ``observation`` holds distributions.

        Returns
        -------
        qs : object array of float64 arrays
            The posterior, one array per factor (with MMP, per policy and time
            step, as pymdp).

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), seed=0)
        >>> qs = agent.infer_states([0, 0, 1])
        >>> qs[0].round(3), qs[1].round(3)              # in the centre; context still unknown
        (array([1., 0., 0., 0.]), array([0.5, 0.5]))
        """
        return self._infer_states(observation, distr_obs, False)[0]

    def _infer_states(self, observation, distr_obs, record: bool):
        """The engine's state inference; ``(qs, records)`` (records: MMP's test variant)."""
        self._sync()
        loaded = self._load_observation(observation, distr_obs)
        rec = self._engine.infer_states(self, self._model, loaded, observation, distr_obs,
                                        self._qs_buf, self._act_i, self._action is not None,
                                        self._prev_actions, self._act_hist_len, self._reuse,
                                        record)
        qs = self._engine.beliefs(self._reuse)
        if qs is None:  # the agent's per-factor buffer
            if self._reuse:
                qs = self._qs
            else:
                qs = _views.f64_factors(self._qs_buf, self._model.state_edges)
                self._qs = weakref.ref(qs)
        if hasattr(self, "qs_hist"):
            self._append_hist(self.qs_hist, _deep_copy(qs) if self._reuse else qs)
        return qs, rec

    def _infer_states_test(self, observation, distr_obs=False):
        """pymdp's test variant of :meth:`infer_states`.

        VANILLA: the same as :meth:`infer_states`. MMP: runs pymdp's
        non-factorised scheme (``_run_mmp_testing``, SPM's form) and returns
        ``(qs, xn, vn)``, each policy's beliefs and prediction errors at every
        iteration (``xn[p][itr][f]``, shape ``(num_states[f], infer_len)``), as
        pymdp's tests compare with MATLAB's ``spm_MDP_VB_X``.
        """
        qs, rec = self._infer_states(observation, distr_obs, True)
        return qs if rec is None else (qs, *rec)

    def infer_policies(self):
        """Posterior over policies and their negative expected free energies.

        Returns
        -------
        q_pi : ndarray of float64, shape (n_policies,)
            ``softmax(gamma * G + ln E)``.
        G : ndarray of float64, shape (n_policies,)
            Negative expected free energy of each policy (higher is better).

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), policy_len=2, seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> q_pi, G = agent.infer_policies()
        >>> q_pi.shape, G.shape, round(float(q_pi.sum()), 6)
        ((16,), (16,), 1.0)
        """
        self._sync()
        self._engine.infer_policies(self, self._model, self._qs_buf, self._G, self._q_pi)
        if self._reuse:
            q_pi, G = self._q_pi, self._G
        else:
            q_pi, G = _views.f64_vector(self._q_pi), _views.f64_vector(self._G)
            self._pi_ref, self._G_ref = weakref.ref(q_pi), weakref.ref(G)
        if hasattr(self, "q_pi_hist"):
            self._append_hist(self.q_pi_hist, q_pi.copy() if self._reuse else q_pi)
        return q_pi, G

    def _append_hist(self, hist: list, item) -> None:
        hist.append(item)
        if self._hist_len is not None and len(hist) > self._hist_len:
            del hist[1]  # keep the first entry: update_D reads it

    def _select(self, probs: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """One index per block of ``probs``: pymdp's select_highest or softmax sampling."""
        out = scratch(len(sizes), "select", np.int32)
        if self.action_selection == "deterministic":
            # ties: within float32's rounding of the policy logits (see c_tie_rtol)
            rtol = self._engine.tie_rtol(self._model, self._G, self._q_pi, float(self.gamma))
            _kernels.select_highest(probs, sizes, out, rtol, self._randint)
        else:
            off = 0
            for b, n in enumerate(sizes):
                p = self._action_softmax(probs[off:off + n])
                out[b] = int(np.argmax(self._rng.multinomial(1, p)))
                off += n
        return out

    def _action_softmax(self, probs: np.ndarray) -> np.ndarray:
        """pymdp's stochastic selection distribution: softmax(alpha * log(probs + 1e-16))."""
        logits = np.log(probs.astype(np.float64) + 1e-16) * self.alpha
        p = np.exp(logits - logits.max())
        return p / p.sum()

    def sample_action(self):
        """Select an action per factor and advance time.

        Returns
        -------
        action : ndarray of float64, shape (num_factors,)
            One control index per factor, as floats (pymdp's type).

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), policy_len=2, seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> _ = agent.infer_policies()
        >>> agent.sample_action(), agent.curr_timestep
        (array([3., 0.]), 1)
        """
        self._sync()
        m = self._model
        if self.sampling_mode == "marginal":
            marg = scratch(m.kmodel.sum_controls, "marginals")
            _kernels.action_marginals(m.kmodel, self._q_pi, marg)
            sel = self._select(marg, m.num_controls_i32)
            self._act_i[:] = sel[:m.num_factors]
        else:
            idx = int(self._select(self._q_pi, m.num_policies_i32)[0])
            self._act_i[:] = m.policies[idx][0, :]
        action = self._act_i.astype(np.float64)
        self._action = action
        self.step_time()
        return action

    def _sample_action_test(self):
        """pymdp's test variant of :meth:`sample_action`: ``(action, p_dist)``.

        ``p_dist`` is the distribution the action was chosen from: per factor
        (``sampling_mode="marginal"``) the normalised action marginals, or
        with ``action_selection="stochastic"`` their softmax at precision
        ``alpha``; over policies (``"full"``) ``q_pi`` or its softmax.
        """
        self._sync()
        m = self._model
        if self.sampling_mode == "marginal":
            marg = np.empty(m.kmodel.sum_controls, np.float32)
            _kernels.action_marginals(m.kmodel, self._q_pi, marg)
            edges = np.cumsum([0] + list(m.num_controls))
            parts = [marg[edges[f]:edges[f + 1]].astype(np.float64) for f in range(m.num_factors)]
            parts = [p / p.sum() for p in parts]
        else:
            parts = [self._q_pi.astype(np.float64)]
        if self.action_selection == "stochastic":
            parts = [self._action_softmax(p) for p in parts]
        p_dist = _obj_array(parts) if self.sampling_mode == "marginal" else parts[0]
        return self.sample_action(), p_dist

    def step_time(self):
        """Record the action in ``prev_actions`` and advance ``curr_timestep``.

        :meth:`sample_action` calls it; call it yourself only to advance time
        without selecting an action (as pymdp).

        Returns
        -------
        curr_timestep : int
            The new time step.

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), seed=0)
        >>> agent.step_time()
        1
        """
        row = self._act_i if self._action is not None else -1  # -1: no action (pymdp: None)
        prev = self._prev_actions
        if prev is None:
            self._prev_actions = np.empty((1, self.num_factors), dtype=self._model.action_dtype)
            self._prev_actions[0] = row
        elif self._act_hist_len is None or len(prev) < self._act_hist_len:
            # the rows are a view of a buffer that doubles when full: appending is O(1)
            store = _row_store(prev)
            n = len(prev)
            if n == len(store):
                cap = n * 2 if self._act_hist_len is None else min(n * 2, self._act_hist_len)
                store = np.empty((cap, self.num_factors), dtype=prev.dtype)
                store[:n] = prev
            store[n] = row
            self._prev_actions = store[:n + 1]
        else:  # full: drop the oldest in place
            prev[:-1] = prev[1:]
            prev[-1] = row
        self.curr_timestep += 1
        self._engine.advance(self._model, self.curr_timestep, self._q_pi)  # MMP: window prior
        return self.curr_timestep

    @property
    def action(self):
        return self._action

    @action.setter
    def action(self, value):
        if value is not None:
            value = np.asarray(value, dtype=np.float64).reshape(-1)
            if value.shape != (self.num_factors,) or np.any(value < 0) or \
                    np.any(value >= self.num_controls) or np.any(value != np.round(value)):
                raise ValueError(f"action must hold one control index per factor, within "
                                 f"num_controls = {self.num_controls}; got {value}")
            self._act_i[:] = value
        self._action = value

    def set_latest_beliefs(self, last_belief=None):
        """MMP: set the prior for the first step of the inference window.

        Parameters
        ----------
        last_belief : object array, optional
            The prior; default: the current beliefs at the window's first step,
            as pymdp.

        Returns
        -------
        latest_belief : object array
            The prior now in use, as pymdp's ``latest_belief``.

        Raises
        ------
        NotImplementedError
            Without ``inference_algo="MMP"``.

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), inference_algo="MMP", seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> prior = agent.set_latest_beliefs()
        >>> prior is agent.latest_belief or len(prior) > 0
        True
        """
        return self._engine.set_latest_beliefs(self._model, last_belief, self.curr_timestep,
                                               self._q_pi)

    def get_future_qs(self):
        """MMP: each policy's beliefs over the current step and ``policy_len`` future steps.

        Returns
        -------
        future_qs : object array
            ``future_qs[p][t][f]``: policy ``p``, step ``t`` (0 is now), factor ``f``.

        Raises
        ------
        NotImplementedError
            Without ``inference_algo="MMP"``.

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), inference_algo="MMP", seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> future = agent.get_future_qs()
        >>> len(future), len(future[0])                 # 4 policies; now and one step ahead
        (4, 2)
        """
        return self._engine.future_beliefs(self._model)

    @property
    def latest_belief(self):
        """MMP: prior for the window's first step (per factor, or per policy with
        ``policy_sep_prior``)."""
        return self._engine.latest_belief(self._model)

    # -- learning ------------------------------------------------------------------------

    def _joint(self, qs, deps) -> np.ndarray:
        out = np.ones(())
        for f in deps:
            out = np.multiply.outer(out, np.asarray(qs[f], dtype=np.float64))
        return out

    def _learn_list(self, which, n: int, name: str) -> list[int]:
        if isinstance(which, str) and which == "all":
            return list(range(n))
        idx = [int(i) for i in which]
        if any(i < 0 or i >= n for i in idx):
            raise ValueError(f"{name} contains an index outside 0..{n - 1}")
        return idx

    def update_A(self, obs):
        """Dirichlet update of ``pA`` from ``obs`` and the current ``qs``.

        The agent gets its own model with the new ``pA`` and ``A``; a model
        shared with other agents is never changed.

        Parameters
        ----------
        obs : sequence of int
            The observation the current beliefs were inferred from, one outcome
            index per modality.

        Returns
        -------
        qA : object array of float64 arrays
            The new Dirichlet parameters (also ``agent.pA``); ``agent.A`` is their
            normalised expectation.

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> d = builtin_models.tmaze()
        >>> agent = Agent(**d, pA=[10 * a for a in d["A"]], seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> qA = agent.update_A([0, 0, 1])
        >>> float(qA[2].sum() - 10 * d["A"][2].sum())    # one observation's worth of counts
        1.0
        """
        self._sync()
        m = self._model
        self._engine.check_learning("update_A")
        if m.pA is None:
            raise ValueError("update_A needs pA (Dirichlet parameters over A)")
        mods = self._learn_list(self.modalities_to_learn, m.num_modalities, "modalities_to_learn")
        distr, o_idx, o_distr = self._load_observation(obs, False)
        qA = list(m._pA)  # unlearned modalities keep their arrays (and packed matrices)
        off = np.cumsum([0] + m.num_obs)
        for mm in mods:
            o = (o_distr[off[mm]:off[mm + 1]].astype(np.float64) if distr
                 else np.eye(m.num_obs[mm])[o_idx[mm]])
            qA[mm] = qA[mm].copy()
            # pymdp masks with A > 0; A is the normalised pA, so that is pA > 0
            _learning.dirichlet_add(qA[mm].reshape(-1), o,
                                   self._joint(self.qs, m.A_factor_list[mm]).reshape(-1),
                                   float(self.lr_pA), 1, 0)
        self._set_model(m.with_counts(pA=qA), ("A", "pA"))
        return param_view(self, "pA", self._model.exact("pA"))  # pymdp's qA

    def update_B(self, qs_prev):
        """Dirichlet update of ``pB`` from ``qs_prev``, the last action and ``qs``.

        Parameters
        ----------
        qs_prev : object array or list of arrays
            The beliefs before the last action, one vector per factor.

        Returns
        -------
        qB : object array of float64 arrays
            The new Dirichlet parameters (also ``agent.pB``); ``agent.B`` is their
            normalised expectation.

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> d = builtin_models.tmaze()
        >>> agent = Agent(**d, pB=[10 * b for b in d["B"]], policy_len=2, seed=0)
        >>> qs_prev = agent.infer_states([0, 0, 1])
        >>> _ = agent.infer_policies()
        >>> agent.sample_action()
        array([3., 0.])
        >>> _ = agent.infer_states([3, 0, 1])
        >>> qB = agent.update_B(qs_prev)
        >>> qB[0][:, 0, 3].tolist()      # centre -> cue under action 3: one more count
        [0.0, 0.0, 0.0, 11.0]
        """
        self._sync()
        m = self._model
        self._engine.check_learning("update_B")
        if m.pB is None:
            raise ValueError("update_B needs pB (Dirichlet parameters over B)")
        if self.action is None:
            raise ValueError("update_B needs an action: call sample_action first")
        prev = self._factor_vectors(qs_prev, "qs_prev")
        factors = self._learn_list(self.factors_to_learn, m.num_factors, "factors_to_learn")
        qB = list(m._pB)  # unlearned factors keep their arrays (and packed matrices)
        for f in factors:
            a = int(self.action[f])
            qB[f] = qB[f].copy()
            _learning.dirichlet_add(qB[f].reshape(-1), np.asarray(self.qs[f], dtype=np.float64),
                                   self._joint(prev, m.B_factor_list[f]).reshape(-1),
                                   float(self.lr_pB), m.num_controls[f], a)
        self._set_model(m.with_counts(pB=qB, pB_controls={f: [int(self.action[f])]
                                                          for f in factors}), ("B", "pB"))
        return param_view(self, "pB", self._model.exact("pB"))  # pymdp's qB

    def update_D(self, qs_t0=None):
        """Dirichlet update of ``pD`` from ``qs_t0``.

        Parameters
        ----------
        qs_t0 : object array or list of arrays, optional
            Beliefs about the initial states; default the first saved belief
            (``save_belief_hist=True``), or the window's first step with MMP.

        Returns
        -------
        qD : object array of float64 arrays
            The new Dirichlet parameters (also ``agent.pD``); ``agent.D`` is their
            normalised expectation.

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> d = builtin_models.tmaze()
        >>> agent = Agent(**d, pD=[2 * x for x in d["D"]], save_belief_hist=True, seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> agent.update_D()[0].tolist()                # the initial location was the centre
        [3.0, 0.0, 0.0, 0.0]
        """
        self._sync()
        m = self._model
        if m.pD is None:
            raise ValueError("update_D needs pD (Dirichlet parameters over D)")
        if qs_t0 is None:  # MMP: the window's prior
            qs_t0 = self._engine.window_start_belief(self._model, self._q_pi)
        if qs_t0 is None:
            if not getattr(self, "qs_hist", None):
                raise ValueError("update_D needs qs_t0, or save_belief_hist=True and one "
                                 "infer_states call")
            qs_t0 = self.qs_hist[0]
        qs = self._factor_vectors(qs_t0, "qs_t0")
        factors = self._learn_list(self.factors_to_learn, m.num_factors, "factors_to_learn")
        qD = [np.array(p) for p in m.pD]
        for f in factors:
            _learning.dirichlet_add(qD[f], np.ones(1), qs[f], float(self.lr_pD), 1, 0)
        self._set_model(m.replace(pD=qD, D=[d / d.sum() for d in qD]), ("D", "pD"))
        return param_view(self, "pD", self._model.exact("pD"))  # pymdp's qD

    # -- lifecycle and memory (implemented in fa_core.agent_state and fa_core.memory) ---

    def __getstate__(self) -> dict:
        """Pickle state: the agent's own buffers and options, the model by reference."""
        return agent_state.agent_getstate(self)

    def __setstate__(self, state: dict) -> None:
        agent_state.agent_setstate(self, state)

    def hibernate(self, *, lossy: str | None = None, prune: float | None = None,
                  compress: bool = True) -> bytes:
        """This agent's own state as a compact, checked blob; :meth:`wake` restores it.

        Lossless by default. See :func:`fa_core.lifecycle.hibernate` for the
        opt-in lossy modes and their error bounds.

        Parameters
        ----------
        lossy : {None, "float16"}
            Store beliefs as float16 (renormalised on waking).
        prune : float in (0, 1), optional
            Drop belief entries below ``prune`` (renormalised on waking).
        compress : bool
            zlib-compress the blob when that makes it smaller.

        Returns
        -------
        blob : bytes
            The agent's state and its model's content key (not the model).

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> blob = agent.hibernate()
        >>> type(blob).__name__, len(blob) < 400
        ('bytes', True)
        """
        return agent_state.hibernate(self, lossy=lossy, prune=prune, compress=compress)

    @classmethod
    def wake(cls, blob: bytes, model: GenerativeModel | None = None) -> Agent:
        """The agent :meth:`hibernate` stored in ``blob``.

        Parameters
        ----------
        blob : bytes
            What :meth:`hibernate` returned.
        model : GenerativeModel, optional
            The agent's model; by default the live model with the blob's content key.

        Returns
        -------
        agent : Agent
            The agent (of this class), exactly as it was hibernated (lossless blobs).

        Raises
        ------
        CorruptStateError
            If the blob is corrupt, truncated or holds values out of range.

        Examples
        --------
        >>> from fa_core import Agent, builtin_models
        >>> agent = Agent(**builtin_models.tmaze(), seed=0)
        >>> _ = agent.infer_states([0, 0, 1])
        >>> again = Agent.wake(agent.hibernate())
        >>> bool((again.qs[0] == agent.qs[0]).all()), again.curr_timestep
        (True, 0)
        """
        return agent_state.wake(blob, model, cls=cls)

    def memory_report(self):
        """Bytes this agent uses, by component (:func:`fa_core.memory.memory_report`).

        Returns
        -------
        report : MemoryReport
            Shared model, private parameters, beliefs, history and pooled scratch.

        Examples
        --------
        >>> from fa_core import Agent, GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> agent = Agent(model=gm, seed=0)
        >>> report = agent.memory_report()
        >>> report.n_agents, report.private_params, report.shared_model > 0   # gm is shared
        (1, 0, True)
        """
        from fa_core.memory import memory_report
        return memory_report(self)

    def __repr__(self) -> str:
        return (f"fa_core.Agent(num_states={self.num_states}, num_obs={self.num_obs}, "
                f"policies={len(self.policies)}, t={self.curr_timestep})")


agent_state.register_agent_class(Agent)  # agent_state stores Agents without importing this module
