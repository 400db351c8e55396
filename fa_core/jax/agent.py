"""``fa_core.jax.Agent``: pymdp 1.0's JAX ``Agent`` API on fa_core's compiled kernels.

The agent is an equinox Module (a pytree) with pymdp's fields, constructor
keywords, batch conventions and methods. What differs is where the work
runs: state inference (fixed-point iteration), the expected free energy of
every policy and the prediction of the next prior run in fa_core's nogil
float32 kernels, reached through ``jax.pure_callback``; the model is stored
once for the whole batch (one compiled :class:`fa_core.GenerativeModel`,
referred to by an integer id leaf) unless the user gave a batch axis.
Action sampling runs in JAX on the policy posterior the kernels computed,
with the caller's PRNG keys, as pymdp does. Learning (``infer_parameters``)
updates the Dirichlet counts in JAX and registers the learnt model.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any
from collections.abc import Callable

import numpy as np
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax import lax, nn, vmap

from fa_core.jax import host
from fa_core.jax.learning import MINVAL, reachability, update_A_row, update_B_row
from fa_core.jax.smoothing import smooth_row, update_B_from_joints
from fa_core.jax.policies import (
    Policies, count_policies, flatten_multi_policies, product_policies)

#: inference algorithms this backend runs (pymdp also has mmp, vmp)
SUPPORTED_ALGOS = ("fpi", "ovf", "exact")
#: algorithms that filter per step and smooth the belief history when learning
SMOOTHING_ALGOS = ("ovf", "exact")
_PYMDP_ALGOS = ("fpi", "ovf", "mmp", "vmp", "exact")
#: the largest policy set accepted (as fa_core.policies.MAX_POLICIES)
MAX_POLICIES = 100_000


_DISTR_MSG = ("categorical_obs=True / preprocess_fn are not supported by fa_core.jax: pymdp JAX "
              "scores an observation distribution by its expected log likelihood, which the "
              "kernels do not compute; supported: outcome indices (categorical_obs=False)")


class NotDifferentiableError(TypeError):
    """Raised when JAX tries to differentiate through a fa_core.jax.Agent."""


def _no_jvp(name):
    def rule(primals, tangents):
        raise NotDifferentiableError(
            f"fa_core.jax.Agent.{name} runs in compiled kernels and cannot be differentiated "
            "(jax.grad / jvp / vjp); use pymdp.agent.Agent for gradients")
    return rule


def _callback(fn, result_shapes, *args, name):
    """``jax.pure_callback`` of ``fn`` under a JVP rule that refuses differentiation.

    ``vmap_method="broadcast_all"``: a vmapped call reaches the host once,
    with every operand broadcast to the vmapped axes; the host functions take
    any leading axes and flatten them into rows.
    """
    @jax.custom_jvp
    def call(*a):
        return jax.pure_callback(fn, result_shapes, *a, vmap_method="broadcast_all")

    call.defjvp(_no_jvp(name))
    return call(*args)


def _log_stable(x):
    return jnp.log(jnp.clip(x, min=MINVAL))


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _validate_normalization(tensor, name: str) -> None:
    """pymdp's normalisation check on axis 1 (after the batch axis), with its messages."""
    sums = jnp.sum(tensor, axis=1)
    zero_msg = (f"Please ensure that none of the distributions along {name}'s 1-th axis "
                "sum to zero...")
    norm_msg = (f"Please ensure that all distributions along {name}'s 1-th axis are "
                "properly normalised and sum to 1...")
    if _is_traced(sums):
        sums = eqx.error_if(sums, jnp.any(jnp.isclose(sums, 0.0)), zero_msg)
        eqx.error_if(sums, jnp.any(~jnp.isclose(sums, 1.0)), norm_msg)
        return
    sums = np.asarray(sums)
    if np.any(np.isclose(sums, 0.0)):
        raise ValueError(zero_msg)
    if np.any(~np.isclose(sums, 1.0)):
        raise ValueError(norm_msg)


def _lead(x, batch_size: int, core_ndim: int, what: str):
    """``x`` with a leading axis of 1 or ``batch_size`` (pymdp's batch rules, not broadcast)."""
    x = jnp.asarray(x)
    if x.ndim > core_ndim:
        if x.shape[0] == 1 or x.shape[0] == batch_size:
            return x
        raise ValueError(f"Batch size {batch_size} does not match the first dimension of "
                         f"{what} with shape {x.shape}")
    return x[None]


def _full(x, batch_size: int):
    return jnp.broadcast_to(x, (batch_size,) + x.shape[1:])


class Agent(eqx.Module):
    """pymdp 1.0's JAX ``Agent`` (``pymdp.agent.Agent``), run by fa_core's compiled kernels.

    Constructor keywords, defaults, batch conventions, attributes and method
    signatures are pymdp's; see ``pymdp.agent.Agent``. ``A``, ``B``, ``pA``,
    ``pB`` are kept with a leading axis of 1 when the user gave them without a
    batch axis (one model for the whole batch) and read as ``(batch_size,
    ...)`` arrays; other parameters (``C``, ``D``, ``E``, ``gamma``, ...) are
    per batch row, as in pymdp. ``inference_algo`` may be ``"fpi"``,
    ``"ovf"`` (filtering as ``fpi``, the belief history smoothed backwards in
    :meth:`infer_parameters`) or ``"exact"`` (one factor: one-sweep filtering,
    exact HMM smoothing); ``"mmp"`` / ``"vmp"`` raise ``NotImplementedError``;
    expected free energy with ``use_param_info_gain`` or ``use_inductive``
    raises ``NotImplementedError`` in :meth:`infer_policies`. Differentiating
    through the agent raises :class:`NotDifferentiableError`.

    Edit ``C``, ``D``, ``E``, ``gamma``, ``alpha`` with ``eqx.tree_at`` as
    with pymdp; to change ``A`` / ``B`` build a new agent (or learn them with
    :meth:`infer_parameters`): the compiled model follows the model id leaf.
    """

    _A: list
    _B: list
    C: list
    D: list
    E: jax.Array
    _pA: list | None
    _pB: list | None
    gamma: jax.Array
    alpha: jax.Array
    inductive_threshold: jax.Array
    inductive_epsilon: jax.Array
    H: list | None
    I: list
    model_id: jax.Array  # (batch_size,) int32: the compiled model of each row

    policies: Policies = eqx.field(static=True)
    A_dependencies: list = eqx.field(static=True)
    B_dependencies: list = eqx.field(static=True)
    B_action_dependencies: list = eqx.field(static=True)
    action_maps: list | None = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    num_iter: int = eqx.field(static=True)
    num_obs: list = eqx.field(static=True)
    num_modalities: int = eqx.field(static=True)
    num_states: list = eqx.field(static=True)
    num_factors: int = eqx.field(static=True)
    num_controls: list = eqx.field(static=True)
    num_controls_multi: list | None = eqx.field(static=True)
    control_fac_idx: list = eqx.field(static=True)
    policy_len: int = eqx.field(static=True)
    inference_horizon: int | None = eqx.field(static=True)
    inductive_depth: int = eqx.field(static=True)
    use_utility: bool = eqx.field(static=True)
    use_states_info_gain: bool = eqx.field(static=True)
    use_param_info_gain: bool = eqx.field(static=True)
    use_inductive: bool = eqx.field(static=True)
    categorical_obs: bool = eqx.field(static=True)
    preprocess_fn: Callable | None = eqx.field(static=True)
    action_selection: str = eqx.field(static=True)
    sampling_mode: str = eqx.field(static=True)
    inference_algo: str = eqx.field(static=True)
    learning_mode: str = eqx.field(static=True)
    learn_A: bool = eqx.field(static=True)
    learn_B: bool = eqx.field(static=True)
    learn_C: bool = eqx.field(static=True)
    learn_D: bool = eqx.field(static=True)
    learn_E: bool = eqx.field(static=True)
    _unique: tuple = eqx.field(static=True)

    def __init__(
        self,
        A,
        B,
        C=None,
        D=None,
        E=None,
        pA=None,
        pB=None,
        H=None,
        I=None,
        A_dependencies=None,
        B_dependencies=None,
        B_action_dependencies=None,
        num_controls=None,
        control_fac_idx=None,
        policy_len: int = 1,
        policies=None,
        gamma=1.0,
        alpha=1.0,
        inductive_depth: int = 1,
        inductive_threshold=0.1,
        inductive_epsilon=1e-3,
        use_utility: bool = True,
        use_states_info_gain: bool = True,
        use_param_info_gain: bool = False,
        use_inductive: bool = False,
        categorical_obs: bool = False,
        preprocess_fn: Callable | None = None,
        action_selection: str = "deterministic",
        sampling_mode: str = "full",
        inference_algo: str = "fpi",
        inference_horizon: int | None = None,
        num_iter: int = 16,
        batch_size: int = 1,
        learning_mode: str = "online",
        learn_A: bool = False,
        learn_B: bool = False,
        learn_C: bool = False,
        learn_D: bool = False,
        learn_E: bool = False,
    ) -> None:
        if B_action_dependencies is not None:
            assert num_controls is not None, \
                "Please specify num_controls if you're also using complex action dependencies"
        if learn_A:
            assert pA is not None, "pA is required for A learning"
        if learn_B and pB is None:
            raise ValueError("pB is required for B learning")
        algo = inference_algo.lower() if isinstance(inference_algo, str) else inference_algo
        if algo not in SUPPORTED_ALGOS:
            raise NotImplementedError(
                f"inference_algo={inference_algo!r} is not supported by fa_core.jax.Agent; "
                f"supported: {', '.join(SUPPORTED_ALGOS)} (pymdp also has "
                f"{', '.join(a for a in _PYMDP_ALGOS if a not in SUPPORTED_ALGOS)})")
        if action_selection not in ("deterministic", "stochastic"):
            raise ValueError(f"action_selection must be 'deterministic' or 'stochastic', got "
                             f"{action_selection!r}")
        if sampling_mode not in ("full", "marginal"):
            raise ValueError(f"sampling_mode must be 'full' or 'marginal', got {sampling_mode!r}")
        if learn_C or learn_D or learn_E:
            raise NotImplementedError("learn_C / learn_D / learn_E are not supported (pymdp's "
                                      "JAX agent does not learn them either)")
        if learning_mode not in ("online", "offline"):
            raise ValueError(f"learning_mode must be 'online' or 'offline', got {learning_mode!r}")
        if not isinstance(num_iter, int) or isinstance(num_iter, bool) or num_iter < 1:
            raise ValueError(f"num_iter must be a positive integer, got {num_iter!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if inference_horizon is not None and inference_horizon < 1:
            raise ValueError("`inference_horizon` must be >= 1 when provided")
        if use_inductive and inductive_depth < 1:
            raise ValueError("`inductive_depth` must be >= 1 when `use_inductive` is True")

        A = [jnp.asarray(getattr(a, "data", a)) for a in A]
        B = [jnp.asarray(getattr(b, "data", b)) for b in B]
        self.num_modalities = len(A)
        self.num_factors = len(B)
        nf = self.num_factors
        self.A_dependencies = ([list(d) for d in A_dependencies] if A_dependencies is not None
                               else [list(range(nf)) for _ in range(self.num_modalities)])
        self.B_dependencies = ([list(d) for d in B_dependencies] if B_dependencies is not None
                               else [[f] for f in range(nf)])
        self.B_action_dependencies = ([list(d) for d in B_action_dependencies]
                                      if B_action_dependencies is not None
                                      else [[f] for f in range(nf)])
        self.num_controls_multi = list(num_controls) if num_controls is not None else None
        self.batch_size = batch_size
        pA = None if pA is None else [jnp.asarray(p) for p in pA]
        pB = None if pB is None else [jnp.asarray(p) for p in pB]

        # several actions acting on one factor: one flat action axis per factor, as pymdp
        self.action_maps = None
        multi_policies = None
        if policies is None and B_action_dependencies is not None:
            multi_policies = product_policies(self.num_controls_multi, policy_len)
            B, pB, self.action_maps = self._flatten_B_action_dims(B, pB)
            sampling_mode = "full"

        self.num_states = self._num_states_from_B(B)
        self.num_controls = [int(b.shape[-1]) for b in B]

        # leading axis of 1 (shared) or batch_size: pymdp's rules, without broadcasting
        C = None if C is None else [jnp.asarray(getattr(c, "data", c)) for c in C]
        D = None if D is None else [jnp.asarray(getattr(d, "data", d)) for d in D]
        for m, a in enumerate(A):
            core = len(self.A_dependencies[m]) + 1
            if a.ndim < core:
                raise ValueError(f"A[{m}] has shape {a.shape}; its A_dependencies "
                                 f"{self.A_dependencies[m]} need {core} axes")
            A[m] = _lead(a, batch_size, core, f"A[{m}]")
            if pA is not None:
                pA[m] = _lead(pA[m], batch_size, core, f"pA[{m}]")
        for f, b in enumerate(B):
            core = len(self.B_dependencies[f]) + 2
            B[f] = _lead(b, batch_size, core, f"B[{f}]")
            if pB is not None:
                pB[f] = _lead(pB[f], batch_size, core, f"pB[{f}]")
        self.num_obs = [int(a.shape[1]) for a in A]

        self.num_iter = num_iter
        self.inference_algo = algo
        self.inference_horizon = inference_horizon
        self.inductive_depth = inductive_depth
        self.policy_len = policy_len
        self.action_selection = action_selection
        self.sampling_mode = sampling_mode
        self.use_utility = bool(use_utility)
        self.use_states_info_gain = bool(use_states_info_gain)
        self.use_param_info_gain = bool(use_param_info_gain)
        self.use_inductive = bool(use_inductive)
        self.learning_mode = learning_mode
        self.learn_A, self.learn_B = bool(learn_A), bool(learn_B)
        self.learn_C = self.learn_D = self.learn_E = False

        if control_fac_idx is None:
            self.control_fac_idx = [f for f in range(nf) if self.num_controls[f] > 1]
        else:
            assert max(control_fac_idx) <= nf - 1, (
                "Check control_fac_idx - must be consistent with `num_states` and `num_factors`...")
            self.control_fac_idx = list(control_fac_idx)

        if policies is None:
            if multi_policies is not None:
                n_pol = len(multi_policies)
                tup = flatten_multi_policies(multi_policies, self.action_maps)
            else:
                n_pol = count_policies(self.num_controls, policy_len)
                if n_pol > MAX_POLICIES:
                    raise ValueError(f"{n_pol} policies (prod(num_controls) ** policy_len) exceed "
                                     f"fa_core.jax.agent.MAX_POLICIES = {MAX_POLICIES}")
                tup = product_policies(self.num_controls, policy_len)
            self.policies = Policies(tup)
        else:
            self.policies = Policies(policies)
        pol = self.policies.as_numpy()
        if pol.shape[2] != nf or (pol < 0).any() or (pol >= np.asarray(self.num_controls)).any():
            raise ValueError(f"policies must have shape (num_policies, policy_len, {nf}) with "
                             f"actions within num_controls {self.num_controls}")
        self._unique = tuple(map(tuple, np.unique(pol[:, 0], axis=0).tolist()))

        B_ = batch_size
        if C is None:
            C = [jnp.ones((B_, n)) / n for n in self.num_obs]
        else:
            C = [_full(_lead(c, B_, 1, f"C[{m}]"), B_) for m, c in enumerate(C)]
        if D is None:
            D = [jnp.ones((B_, n)) / n for n in self.num_states]
        else:
            D = [_full(_lead(d, B_, 1, f"D[{f}]"), B_) for f, d in enumerate(D)]
        P = self.policies.num_policies
        if E is None:
            E = jnp.ones((B_, P)) / P
        else:
            E = _full(_lead(jnp.asarray(getattr(E, "data", E)), B_, 1, "E"), B_)
        if H is not None:
            H = [_full(_lead(jnp.asarray(getattr(h, "data", h)), B_, 1, f"H[{f}]"), B_)
                 for f, h in enumerate(H)]

        self._A, self._B, self._pA, self._pB = A, B, pA, pB
        self.C, self.D, self.E, self.H = C, D, E, H
        self.gamma = jnp.broadcast_to(jnp.asarray(gamma, dtype=jnp.float32), (B_,))
        self.alpha = jnp.broadcast_to(jnp.asarray(alpha, dtype=jnp.float32), (B_,))
        self.inductive_threshold = jnp.broadcast_to(
            jnp.asarray(inductive_threshold, dtype=jnp.float32), (B_,))
        self.inductive_epsilon = jnp.broadcast_to(
            jnp.asarray(inductive_epsilon, dtype=jnp.float32), (B_,))
        if self.use_inductive and H is not None:
            self.I = self._inductive(H, B)
        elif self.use_inductive and I is not None:
            self.I = list(I)
        else:
            self.I = [jnp.zeros((B_, 1, n)) for n in self.num_states]

        if categorical_obs or preprocess_fn is not None:
            raise NotImplementedError(_DISTR_MSG)
        self.categorical_obs = False
        self.preprocess_fn = None
        self._validate()
        if algo == "exact":
            self._validate_exact()
        self.model_id = self._register(A, B)

    # -- construction helpers ------------------------------------------------------------

    def _num_states_from_B(self, B) -> list[int]:
        num_states = []
        for f, deps in enumerate(self.B_dependencies):
            if f not in deps:
                raise ValueError(f"num_states cannot be inferred from B, B_dependencies if the "
                                 f"dynamics of hidden state {f} is not conditioned on itself")
            num_states.append(int(B[f].shape[-(len(deps) + 1 - deps.index(f))]))
        return num_states

    def _flatten_B_action_dims(self, B, pB):
        maps, B_flat, pB_flat = [], [], []
        for i, (b, deps) in enumerate(zip(B, self.B_action_dependencies)):
            if not deps:
                B_flat.append(b[..., None])
                if pB is not None:
                    pB_flat.append(pB[i][..., None])
                maps.append({"multi_dependency": [], "multi_dims": [], "flat_dependency": [i],
                             "flat_dims": [1]})
                continue
            dims = [self.num_controls_multi[d] for d in deps]
            shape = tuple(b.shape[:-len(deps)]) + (math.prod(dims),)
            B_flat.append(b.reshape(shape))
            if pB is not None:
                pB_flat.append(pB[i].reshape(shape))
            maps.append({"multi_dependency": list(deps), "multi_dims": dims,
                         "flat_dependency": [i], "flat_dims": [math.prod(dims)]})
        return B_flat, (pB_flat if pB is not None else None), maps

    def _validate(self) -> None:
        for m in range(self.num_modalities):
            dims = tuple(self.num_states[f] for f in self.A_dependencies[m])
            assert max(self.A_dependencies[m]) <= self.num_factors - 1, (
                f"Check modality {m} of `A_dependencies` - must be consistent with `num_states` "
                "and `num_factors`...")
            if tuple(self._A[m].shape[2:]) != dims:
                raise ValueError(f"A[{m}] has shape {tuple(self._A[m].shape[1:])} (without the "
                                 f"batch axis); A_dependencies {self.A_dependencies[m]} give "
                                 f"states {dims}")
            _validate_normalization(self._A[m], f"A[{m}]")
            if self._pA is not None and self._pA[m].shape[1:] != self._A[m].shape[1:]:
                raise ValueError(f"pA[{m}] must have the shape of A[{m}]")
        for f in range(self.num_factors):
            dims = tuple(self.num_states[d] for d in self.B_dependencies[f])
            if tuple(self._B[f].shape[2:-1]) != dims:
                raise ValueError(f"B[{f}] has shape {tuple(self._B[f].shape[1:])} (without the "
                                 f"batch axis); B_dependencies {self.B_dependencies[f]} give "
                                 f"parent states {dims}")
            _validate_normalization(self._B[f], f"B[{f}]")
            if self._pB is not None and self._pB[f].shape[1:] != self._B[f].shape[1:]:
                raise ValueError(f"pB[{f}] must have the shape of B[{f}]")
        for f in self.control_fac_idx:
            assert self.num_controls[f] > 1, ("Control factor (and B matrix) dimensions are not "
                                              "consistent with user-given control_fac_idx")

    def _validate_exact(self) -> None:
        """pymdp's restrictions of ``inference_algo="exact"`` (a single-factor HMM)."""
        if self.num_factors != 1:
            raise ValueError("`exact` inference currently supports only a single hidden-state "
                             "factor")
        if self.B_dependencies != [[0]]:
            raise ValueError("Exact inference requires single-factor self-dynamics only "
                             "(i.e. B_dependencies == [[0]])")
        if any(d != [0] for d in self.A_dependencies):
            raise ValueError("Exact inference requires each observation modality to depend "
                             "only on factor 0 (i.e. A_dependencies[m] == [0])")

    def _spec(self):
        return (tuple(map(tuple, self.A_dependencies)), tuple(map(tuple, self.B_dependencies)),
                self.policies._tup)

    def _register(self, A, B):
        """Model ids, (batch_size,) int32, of ``A`` / ``B`` (leading axis 1 or batch_size)."""
        spec, n = self._spec(), self.batch_size
        arrays = [jnp.asarray(x, jnp.float32) for x in list(A) + list(B)]
        out = jax.ShapeDtypeStruct((n,), jnp.int32)

        def fn(*xs):
            return host.register(spec, n, *[np.asarray(x) for x in xs])

        # "sequential": a vmapped construction registers each vmapped model on its own
        @jax.custom_jvp
        def call(*xs):
            return jax.pure_callback(fn, out, *xs, vmap_method="sequential")

        call.defjvp(_no_jvp("__init__"))
        return call(*arrays)

    def _inductive(self, H, B):
        def one(f, h, b, thr):
            return reachability(h, b, thr, self.inductive_depth)
        return [vmap(partial(one, f))(H[f], _full(B[f], self.batch_size),
                                      self.inductive_threshold)
                for f in range(self.num_factors)]

    # -- pymdp's attributes --------------------------------------------------------------

    @property
    def A(self) -> list:
        """Observation likelihoods, ``(batch_size, num_obs[m], ...)`` per modality."""
        return [_full(a, self.batch_size) for a in self._A]

    @property
    def B(self) -> list:
        """Transition models, ``(batch_size, num_states[f], ..., num_controls[f])`` per factor."""
        return [_full(b, self.batch_size) for b in self._B]

    @property
    def pA(self):
        """Dirichlet counts over ``A`` (or None)."""
        return None if self._pA is None else [_full(p, self.batch_size) for p in self._pA]

    @property
    def pB(self):
        """Dirichlet counts over ``B`` (or None)."""
        return None if self._pB is None else [_full(p, self.batch_size) for p in self._pB]

    @property
    def unique_multiactions(self) -> jax.Array:
        """The distinct first-step actions of the policies, padded with -1 rows as pymdp."""
        size = math.prod(self.num_controls)
        rows = list(self._unique) + [(-1,) * self.num_factors] * (size - len(self._unique))
        return jnp.asarray(rows, dtype=jnp.int32)

    def get_model_dimensions(self) -> dict[str, Any]:
        """Model shape metadata (pymdp's keys)."""
        return {"num_obs": self.num_obs, "num_states": self.num_states,
                "num_controls": self.num_controls, "num_modalities": self.num_modalities,
                "num_factors": self.num_factors, "num_policies": self.policies.num_policies,
                "policy_len": self.policy_len, "inference_horizon": self.inference_horizon,
                "A_dependencies": self.A_dependencies, "B_dependencies": self.B_dependencies}

    # -- perception ----------------------------------------------------------------------

    def process_obs(self, observations):
        """Observations in distributional form (one-hot unless ``categorical_obs``)."""
        if self.preprocess_fn is not None:
            return self.preprocess_fn(observations)
        if self.categorical_obs:
            return observations
        return self.make_categorical(observations)

    def make_categorical(self, observations):
        """One-hot vectors of outcome indices, one per modality."""
        return [nn.one_hot(o, self.num_obs[m]) for m, o in enumerate(observations)]

    def _rows(self, x, tail: int):
        """``x`` as (batch_size, ...) with ``tail`` trailing axes kept (unbatched broadcast)."""
        x = jnp.asarray(x)
        if x.ndim == tail:
            x = jnp.broadcast_to(x, (self.batch_size,) + x.shape)
        return x

    def infer_states(self, observations, empirical_prior, *, past_actions=None, qs_hist=None,
                     valid_steps=None, mask=None, preprocess_fn=None, return_info=False):
        """Posterior over hidden states (pymdp's fixed-point iteration, ``num_iter`` sweeps).

        Parameters
        ----------
        observations : list
            One entry per modality: outcome indices (``(batch_size,)``,
            ``(batch_size, T)`` or scalars), or distributions with
            ``categorical_obs=True`` / ``preprocess_fn``; the last time step is used.
        empirical_prior : list
            Prior over each factor, ``(batch_size, num_states[f])``.
        past_actions, valid_steps
            Accepted for pymdp's signature; unused by ``fpi`` / ``ovf`` / ``exact``
            (which filter one step at a time).
        qs_hist : list, optional
            Earlier beliefs ``(batch_size, T, num_states[f])``; the new ones are appended.
        mask, return_info
            Not supported (raise ``NotImplementedError``).
        preprocess_fn : callable, optional
            Maps ``observations`` to distributions for this call.

        Returns
        -------
        list of jax.Array
            ``qs[f]`` of shape ``(batch_size, 1, num_states[f])`` (or the
            extended history with ``qs_hist``).
        """
        if mask is not None:
            raise NotImplementedError("infer_states(mask=...) is not supported by fa_core.jax")
        if return_info:
            raise NotImplementedError("infer_states(return_info=True) is not supported by "
                                      "fa_core.jax")
        if not isinstance(empirical_prior, (list, tuple)):
            raise ValueError("`empirical_prior` must be a list/tuple with one entry per "
                             "hidden-state factor.")
        if len(empirical_prior) != self.num_factors:
            raise ValueError(f"`empirical_prior` has {len(empirical_prior)} factor(s), expected "
                             f"{self.num_factors}")
        n = self.batch_size
        if preprocess_fn is not None:
            raise NotImplementedError(_DISTR_MSG)
        cols = []
        for _m, o in enumerate(observations):
            o = jnp.asarray(o)
            if o.ndim == 0:
                o = jnp.broadcast_to(o, (n,))
            cols.append(o.reshape(n, -1)[:, -1].astype(jnp.int32))  # the current time step
        obs = jnp.stack(cols, axis=1)
        # the kernels index A by outcome: refuse what pymdp's one-hot would turn into zeros
        valid = jnp.all((obs >= 0) & (obs < jnp.asarray(self.num_obs, jnp.int32)))
        obs = eqx.error_if(obs, ~valid, "observation index out of range of num_obs")
        prior = jnp.concatenate([self._rows(p, 1).reshape(n, -1).astype(jnp.float32)
                                 for p in empirical_prior], axis=1)
        S = sum(self.num_states)
        # pymdp's exact filter is one sweep (exact for its single factor)
        num_iter = 1 if self.inference_algo == "exact" else self.num_iter
        qs = _callback(partial(host.infer_states, num_iter),
                       jax.ShapeDtypeStruct(prior.shape[:-1] + (S,), jnp.float32),
                       self.model_id, obs, prior, name="infer_states")
        out = [x[:, None, :] for x in jnp.split(qs, np.cumsum(self.num_states)[:-1], axis=-1)]
        if qs_hist is not None:
            out = [jnp.concatenate([h, q], axis=1) for h, q in zip(qs_hist, out)]
            if self.inference_horizon is not None:
                out = [q[:, -self.inference_horizon:] for q in out]
        return out

    def update_empirical_prior(self, action, qs):
        """Prior for the next step: ``B[f][..., action[f]]`` applied to the latest ``qs``.

        Parameters
        ----------
        action : jax.Array
            ``(batch_size, num_factors)`` (or ``(num_factors,)``) action indices.
        qs : list of jax.Array
            Beliefs ``(batch_size, T, num_states[f])``; the last step is used.

        Returns
        -------
        list of jax.Array
            ``(batch_size, num_states[f])`` per factor.
        """
        n = self.batch_size
        last = jnp.concatenate([jnp.asarray(q)[:, -1].reshape(n, -1).astype(jnp.float32)
                                for q in qs], axis=1)
        act = self._rows(action, 1).astype(jnp.int32).reshape(n, -1)
        pred = _callback(host.predict_states, jax.ShapeDtypeStruct(last.shape, jnp.float32),
                         self.model_id, last, act, name="update_empirical_prior")
        return jnp.split(pred, np.cumsum(self.num_states)[:-1], axis=-1)

    # -- planning ------------------------------------------------------------------------

    def _utility_weights(self):
        """pymdp JAX's ``C`` (used as given, not log-softmaxed) laid out for the kernels."""
        T, n = self.policies.horizon, self.batch_size
        cols = []
        for c in self.C:
            c = jnp.asarray(c, jnp.float32)
            if c.ndim == 2:  # (batch, num_obs): the same at every step
                c = jnp.broadcast_to(c[:, :, None], c.shape + (T,))
            else:  # (batch, T, num_obs)
                c = jnp.swapaxes(c[:, :T], 1, 2)
            cols.append(c.reshape(n, -1))
        return jnp.concatenate(cols, axis=1)

    def infer_policies(self, qs):
        """Posterior over policies and their negative expected free energy.

        Parameters
        ----------
        qs : list of jax.Array
            Beliefs ``(batch_size, T, num_states[f])``; the last step is used.

        Returns
        -------
        q_pi : jax.Array
            ``softmax(gamma * neg_efe + log E)``, ``(batch_size, num_policies)``.
        neg_efe : jax.Array
            ``-EFE`` of every policy (pymdp's sign), ``(batch_size, num_policies)``.
        """
        if self.use_param_info_gain:
            raise NotImplementedError("use_param_info_gain=True is not supported by fa_core.jax "
                                      "(pymdp JAX's exact Dirichlet information gain); supported: "
                                      "use_utility, use_states_info_gain")
        if self.use_inductive:
            raise NotImplementedError("use_inductive=True is not supported in fa_core.jax's "
                                      "infer_policies; supported: use_utility, "
                                      "use_states_info_gain")
        n = self.batch_size
        last = jnp.concatenate([jnp.asarray(q)[:, -1].reshape(n, -1).astype(jnp.float32)
                                for q in qs], axis=1)
        lnE = _log_stable(self.E).astype(jnp.float32)
        P = self.policies.num_policies
        shape = jax.ShapeDtypeStruct(last.shape[:-1] + (P,), jnp.float32)
        q_pi, neg_efe = _callback(
            partial(host.infer_policies, self.use_utility, self.use_states_info_gain),
            (shape, shape), self.model_id, last, self._utility_weights(), lnE,
            self.gamma.astype(jnp.float32), name="infer_policies")
        return q_pi, neg_efe

    # -- action --------------------------------------------------------------------------

    def _marginals(self, q_pi):
        """Action marginals per factor of one row's ``q_pi`` (pymdp's get_marginals)."""
        first = self.policies.policy_arr[:, 0]
        return [jnp.where(jnp.arange(nc)[:, None] == first[:, f], q_pi, 0.0).sum(-1)
                for f, nc in enumerate(self.num_controls)]

    def multiaction_probabilities(self, q_pi):
        """Probabilities of the joint first-step actions.

        Marginal mode: the outer product of the action marginals (one row's
        ``q_pi``). Full mode: for each of :attr:`unique_multiactions`, the
        summed ``q_pi`` of the policies starting with it (rows of ``q_pi``).
        """
        if self.sampling_mode == "marginal":
            marg = self._marginals(q_pi)
            out = marg[0]
            for x in marg[1:]:
                out = jnp.outer(out, x).reshape(-1)
            return out
        locs = jnp.all(self.policies.policy_arr[:, 0]
                       == jnp.expand_dims(self.unique_multiactions, -2), -1)
        return vmap(lambda x: jnp.where(locs, x, 0.0).sum(-1))(q_pi)

    def sample_action(self, q_pi, rng_key=None):
        """One action per control factor and batch row: ``(batch_size, num_factors)``.

        Deterministic: the most probable (policy or action marginal);
        stochastic: drawn with ``jax.random.categorical`` from
        ``alpha * log p`` with the row's key in ``rng_key``, as pymdp.
        """
        if rng_key is None and self.action_selection == "stochastic":
            raise ValueError("Please provide a random number generator key to sample actions "
                             "stochastically")
        pol = self.policies.policy_arr
        stochastic = self.action_selection == "stochastic"

        def marginal(q, alpha, key):
            marg = self._marginals(q)
            if stochastic:
                return jnp.array([jr.categorical(key, alpha * _log_stable(x)) for x in marg])
            return jnp.array([jnp.argmax(x, -1) for x in marg])

        def full(q, alpha, key):
            idx = (jr.categorical(key, _log_stable(q) * alpha) if stochastic
                   else jnp.argmax(q))
            return pol[idx, 0]

        fn = marginal if self.sampling_mode == "marginal" else full
        return vmap(fn)(q_pi, self.alpha, rng_key)

    def decode_multi_actions(self, action):
        """Flat actions per factor back to the several actions of ``num_controls``."""
        if self.action_maps is None:
            return action
        out = jnp.zeros((self.batch_size, len(self.num_controls_multi)), dtype=action.dtype)
        for f, m in enumerate(self.action_maps):
            if not m["multi_dependency"]:
                continue
            rem = action[..., f]
            digits = []
            for d in reversed(m["multi_dims"]):
                digits.append(rem % d)
                rem = rem // d
            out = out.at[..., m["multi_dependency"]].set(jnp.stack(digits[::-1], axis=-1))
        return out

    def encode_multi_actions(self, action_multi):
        """Several actions per factor as one flat action index per factor."""
        if self.action_maps is None:
            return action_multi
        out = jnp.zeros((self.batch_size, len(self.num_controls)), dtype=action_multi.dtype)
        for f, m in enumerate(self.action_maps):
            if not m["multi_dependency"]:
                out = out.at[..., f].set(jnp.zeros_like(action_multi[..., 0]))
                continue
            idx = jnp.zeros_like(action_multi[..., 0])
            for d, dim in zip(m["multi_dependency"], m["multi_dims"]):
                idx = idx * dim + action_multi[..., d]
            out = out.at[..., f].set(idx)
        return out

    # -- learning ------------------------------------------------------------------------

    def infer_parameters(self, beliefs_A, observations, actions, beliefs_B=None, lr_pA=1.0,
                         lr_pB=1.0, **kwargs):
        """Dirichlet update of ``pA`` / ``pB`` (where learning is on); returns a new agent.

        With ``inference_algo="ovf"`` / ``"exact"`` the belief sequence
        (``beliefs_B``, else ``beliefs_A``) is first smoothed backwards through
        the transitions of ``actions`` (:mod:`fa_core.jax.smoothing`): ``A``
        learns from the smoothed marginals, ``B`` from the smoothed pairwise
        joints. Until the sequence holds a valid transition (the first step),
        ``A`` learns from the filtered beliefs and ``B`` is left as it is, as
        in pymdp.

        Parameters
        ----------
        beliefs_A : list of jax.Array
            ``(batch_size, T, num_states[f])`` beliefs for the ``A`` update.
        observations : list of jax.Array
            ``(batch_size, T)`` outcome indices (or ``(batch_size, T, num_obs)``
            with ``categorical_obs``) per modality.
        actions : jax.Array or None
            ``(batch_size, T - 1, num_factors)`` (or ``(batch_size, num_factors)``).
        beliefs_B : list of jax.Array, optional
            Belief sequence for the ``B`` update (default ``beliefs_A``).
        lr_pA, lr_pB : float
            Learning rates.

        Returns
        -------
        Agent
            With updated ``pA``, ``A``, ``pB``, ``B`` (and ``I`` with ``use_inductive``),
            registered with the kernels.
        """
        n = self.batch_size
        seq = beliefs_A if beliefs_B is None else beliefs_B
        if actions is not None:
            actions = jnp.asarray(actions)
            if actions.ndim == 2:
                actions = actions[:, None]
        T = seq[0].shape[1]
        acts = actions[:, :max(T - 1, 0)] if actions is not None and actions.ndim == 3 else actions
        # a sequence with T - 1 transitions; whether any of them is valid is known at run time
        has_steps = acts is not None and T > 1 and acts.shape[1] == T - 1
        if has_steps:
            valid = jnp.all(acts >= 0, axis=-1).astype(jnp.float32)  # (n, T-1)
            ok = jnp.any(valid > 0)
            u1h = [nn.one_hot(acts[..., f].astype(jnp.int32), nc)
                   for f, nc in enumerate(self.num_controls)]
        smoothing = self.inference_algo in SMOOTHING_ALGOS
        marginals, joints = beliefs_A, None
        if smoothing:
            if any(d != [f] for f, d in enumerate(self.B_dependencies)):
                raise ValueError(
                    f"inference_algo={self.inference_algo!r} smooths each factor through its own "
                    "transitions and needs B_dependencies[f] == [f] for every factor (pymdp's "
                    "smoothing requires square 2D transitions after action selection); got "
                    f"B_dependencies={self.B_dependencies}")
            # pymdp: without a valid transition the filtered beliefs are learnt from as they are
            marginals = list(seq)
            if has_steps:
                exact = self.inference_algo == "exact"
                B_full = [_full(b, n) for b in self._B]

                def smoothed():
                    m, j = vmap(lambda q, b, a: smooth_row(q, b, a, exact))(
                        [jnp.asarray(q, jnp.float32) for q in seq], B_full, acts)
                    return m, [x * valid[..., None, None] for x in j]

                def filtered():
                    return ([jnp.asarray(q, jnp.float32) for q in seq],
                            [jnp.zeros((n, T - 1, ns, ns), jnp.float32)
                             for ns in self.num_states])

                marginals, joints = lax.cond(ok, smoothed, filtered)
        agent = self
        A, pA, B, pB = self._A, self._pA, self._B, self._pB
        if self.learn_A:
            lr = jnp.broadcast_to(jnp.asarray(lr_pA, jnp.float32), (n,))
            obs = []
            for m, o in enumerate(observations):
                o = jnp.asarray(o).reshape(n, -1).astype(jnp.int32)
                obs.append(nn.one_hot(o, self.num_obs[m]))
            fn = partial(update_A_row, A_deps=self.A_dependencies)
            pA, A = vmap(lambda p, o, q, r: fn(p, o, q, lr=r))(
                [_full(p, n) for p in pA], obs, list(marginals), lr)
        new_I = self.I
        if self.learn_B and has_steps:
            lrB = jnp.broadcast_to(jnp.asarray(lr_pB, jnp.float32), (n,))
            pB_full = [_full(p, n) for p in pB]
            B_full = [_full(b, n) for b in B]
            if smoothing:
                pB_new, B_new = vmap(update_B_from_joints)(pB_full, joints, u1h, lrB)
            else:
                qn = [q[:, 1:] * valid[..., None] for q in seq]
                qp = [q[:, :-1] * valid[..., None] for q in seq]
                fn = partial(update_B_row, B_deps=self.B_dependencies)
                pB_new, B_new = vmap(lambda p, a, b, u, r: fn(p, a, b, u, lr=r))(
                    pB_full, qn, qp, u1h, lrB)
            pB = lax.cond(ok, lambda: pB_new, lambda: pB_full)
            B = lax.cond(ok, lambda: B_new, lambda: B_full)
            if self.use_inductive and self.H is not None:
                new_I = lax.cond(ok, lambda: self._inductive(self.H, B), lambda: self.I)
        if self.learn_A or self.learn_B:
            ids = self._register(A, B)
            agent = eqx.tree_at(lambda x: (x._A, x._pA, x._B, x._pB, x.I, x.model_id), agent,
                                (A, pA, B, pB, new_I, ids), is_leaf=lambda x: x is None)
        return agent
