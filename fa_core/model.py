"""The immutable generative model shared by every agent built from it.

A :class:`GenerativeModel` validates pymdp-layout arrays once, converts them
to float32, chooses dense or sparse (CSC) storage per matrix, precomputes the
per-model constants (log A, column entropies of A, log softmax C, log E,
log D, parameter information-gain weights, inductive-inference reachability)
and hands a C view of all of it (:class:`fa_core._model.KModel`, built from a typed
:class:`~fa_core._model.KernelLayout` and :class:`~fa_core._model.MatSpec` matrices) to the
kernels. Agents only reference it; learning produces a new model that shares
every unchanged array with the old one (copy-on-write).
"""

from __future__ import annotations

import hashlib
import itertools
import weakref
from typing import Any
from collections.abc import Sequence

import numpy as np

from fa_core import _learning
from fa_core._model import KernelLayout, KModel, MatSpec
from fa_core import options as _opt
from fa_core.policies import (check_policy_count, construct_policies, count_policies,
                              validate_policies)

#: Matrices at or below this fraction of non-zeros are stored sparse by ``sparse="auto"``.
#: Below about a quarter the CSC product does less work than the dense one,
#: and index storage is paid back in memory well before that.
AUTO_SPARSE_DENSITY = 0.25

#: Modalities with fewer joint parent states than this skip the per-step contraction
#: over policy-invariant factors: below it the bookkeeping costs more than it saves
#: (measured with callgrind on the T-maze, 8 joint states, and four_factor, 625).
MIN_TAIL_REDUCTION_K = 64

#: Dense likelihoods up to this many entries (256 KB) keep a float32 copy of log(A).
#: Larger ones take the log of the observed row each step instead: a few thousand logs
#: against a step that reads the whole matrix anyway, and a private model half the size.
LOG_CACHE_MAX_ENTRIES = 65536

#: Tolerance of the normalisation check, as pymdp's ``np.allclose`` on column sums.
NORM_RTOL, NORM_ATOL = 1e-5, 1e-8

_LOG_EPS = 1e-16          # pymdp's spm_log epsilon
_ENTROPY_EPS = np.exp(-16)  # pymdp's spm_MDP_G epsilon


# ---------------------------------------------------------------------------
# Input conversion and validation
# ---------------------------------------------------------------------------

def as_array_list(x: Any, name: str, allow_empty: bool = False) -> list[np.ndarray]:
    """Convert pymdp-style input (object array, list, or one array) to float64 arrays.

    Raises
    ------
    TypeError
        If ``x`` or an entry is not numeric.
    ValueError
        If an entry contains NaN or infinity or a value beyond float32 range
        (the kernels' precision: such values would silently become infinite),
        has an axis of length 0 (unless ``allow_empty``), or ``x`` is empty.
    """
    if isinstance(x, np.ndarray) and x.dtype != object:
        items = [x]
    elif isinstance(x, (np.ndarray, list, tuple)):
        items = list(x)
        # a plain list of numbers is one vector, as np.asarray would read it
        if items and all(np.isscalar(v) for v in items):
            items = [np.asarray(items)]
    else:
        raise TypeError(f"{name} must be a numpy array, an object array or a list of arrays, "
                        f"got {type(x).__name__}")
    if not items:
        raise ValueError(f"{name} is empty")
    out = []
    for i, a in enumerate(items):
        arr = np.asarray(a)
        if arr.dtype.kind not in "fiub":  # real floats, integers, booleans
            raise TypeError(f"{_label(x, items, i, name)} must hold real numbers, "
                            f"got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise ValueError(f"{_label(x, items, i, name)} contains NaN or infinite values")
        if arr.size and np.abs(arr).max() > _opt.FLOAT32_MAX:
            raise ValueError(f"{_label(x, items, i, name)} has values beyond float32 range "
                             f"(largest {np.abs(arr).max():.4g}; at most {_opt.FLOAT32_MAX:.4g})")
        if 0 in arr.shape and not allow_empty:
            raise ValueError(f"{_label(x, items, i, name)} has an axis of length 0 "
                             f"(shape {arr.shape}): every dimension must be >= 1")
        out.append(arr)
    return out


def _label(x: Any, items: list, i: int, name: str) -> str:
    """How an error names entry ``i`` of ``x`` (built only when there is an error)."""
    return f"{name}[{i}]" if len(items) > 1 or _is_multi(x) else name


def _is_multi(x: Any) -> bool:
    return (isinstance(x, np.ndarray) and x.dtype == object) or isinstance(x, (list, tuple))


def check_normalised(arrays: Sequence[np.ndarray], name: str) -> None:
    """Columns (axis 0) of each array must be non-negative and sum to 1."""
    for i, a in enumerate(arrays):
        label = f"{name}[{i}]"
        if np.any(a < 0):
            raise ValueError(f"{label} has negative entries; probabilities must be >= 0")
        sums = a.sum(axis=0)
        if not np.allclose(sums, 1.0, rtol=NORM_RTOL, atol=NORM_ATOL):
            worst = float(np.max(np.abs(sums - 1.0)))
            raise ValueError(f"{label} is not normalised: sums over axis 0 must be 1 "
                             f"(largest deviation {worst:.3g})")


def _normalise(a: np.ndarray) -> np.ndarray:
    return a / a.sum(axis=0)


def _column_entropies(a2: np.ndarray) -> np.ndarray:
    """spm_MDP_G's ``H`` term of a (outcomes, columns) matrix: per column
    sum_o a log(a + exp(-16)), from its float64 values, as float32.

    The one definition for a given ``A`` (the kernels, marginal message passing and
    the sophisticated search all read ``GenerativeModel._a_H``); learned counts get
    theirs from the compiled normalisation pass (``_learning.normalise_counts``).
    """
    return (a2 * np.log(a2 + _ENTROPY_EPS)).sum(axis=0).astype(np.float32)


def _normalise_counts(p: list[np.ndarray], name: str) -> list[np.ndarray]:
    """Dirichlet counts -> their expectations, refusing negative counts and zero columns."""
    out = []
    for i, a in enumerate(p):
        if np.any(a < 0):
            raise ValueError(f"{name}[{i}] has negative Dirichlet parameters; "
                             f"counts must be >= 0")
        sums = a.sum(axis=0)
        if np.any(sums <= 0):
            where = tuple(int(j) for j in np.argwhere(np.atleast_1d(sums) <= 0)[0])
            raise ValueError(f"{name}[{i}] has a column of zero counts (at {where}): "
                             f"every column needs a positive count")
        out.append(a / sums)
    return out


def _check_factor_list(lst: Any, n_items: int, n_factors: int, name: str) -> list[list[int]]:
    if not isinstance(lst, (list, tuple)) or len(lst) != n_items:
        raise ValueError(f"{name} must be a list of {n_items} lists of factor indices")
    out = []
    for i, deps in enumerate(lst):
        deps = list(deps) if isinstance(deps, (list, tuple, np.ndarray)) else None
        if not deps or not all(isinstance(f, (int, np.integer)) for f in deps):
            raise ValueError(f"{name}[{i}] must be a non-empty list of integer factor indices")
        if min(deps) < 0 or max(deps) >= n_factors:
            raise ValueError(f"{name}[{i}] = {deps} refers to a factor outside 0..{n_factors - 1}")
        if len(set(deps)) != len(deps):
            raise ValueError(f"{name}[{i}] = {deps} repeats a factor")
        out.append([int(f) for f in deps])
    return out


# ---------------------------------------------------------------------------
# Kernel layout of one matrix
# ---------------------------------------------------------------------------

def _mat_spec(mat2d: np.ndarray, sparse: bool | str, with_log: bool,
              like: MatSpec | None = None) -> MatSpec:
    """Pack a (rows, cols) float64 matrix for the kernels, dense or CSC.

    ``like`` is the spec of a matrix this one may share a sparsity pattern with
    (the same matrix before a learning update, which never creates or removes
    non-zeros): when the non-zeros are exactly its stored positions, its index
    arrays are reused instead of searched for again.
    """
    rows, cols = mat2d.shape
    nnz = np.count_nonzero(mat2d)
    use_sparse = sparse is True or (sparse == "auto" and nnz <= AUTO_SPARSE_DENSITY * mat2d.size)
    if use_sparse:
        reuse = like is not None and like.sparse and like.idx.size == nnz
        if reuse:
            col_of = np.repeat(np.arange(cols), np.diff(like.indptr))
            val = mat2d[like.idx, col_of]
            reuse = bool(np.all(val))  # as many non-zeros, all at its positions: the same set
        if reuse:
            indptr, idx, onehot = like.indptr, like.idx, like.onehot
        else:
            # CSC: non-zeros column by column, rows ascending within a column
            col_of, row_of = np.nonzero(mat2d.T)
            val = mat2d[row_of, col_of]
            indptr = np.zeros(cols + 1, dtype=np.int32)
            np.cumsum(np.bincount(col_of, minlength=cols), out=indptr[1:])
            idx = row_of.astype(np.int32)
            onehot = bool(np.all(np.diff(indptr) == 1))  # deterministic map: one row per column
    else:
        val, indptr, idx, onehot = np.ascontiguousarray(mat2d), None, None, False
    # a dense log cache costs a full matrix to save ``cols`` logs per step, while a step
    # already reads the whole matrix: worth it only for small matrices
    cache_log = with_log and (use_sparse or mat2d.size <= LOG_CACHE_MAX_ENTRIES)
    logval = np.log(val + _LOG_EPS).astype(np.float32).ravel() if cache_log else None
    return MatSpec(rows, cols, val.astype(np.float32).ravel(), logval=logval, indptr=indptr,
                   idx=idx, onehot=onehot)


def _learned_specs(p2: np.ndarray, like: MatSpec, sparse: bool | str, name: str,
                   likelihood: bool = False) -> tuple[MatSpec, MatSpec, np.ndarray | None]:
    """Specs of the matrix normalised from counts ``p2`` and of its spm_wnorm weights,
    in ``like``'s layout, computed in one kernel pass; for a ``likelihood`` (A)
    also its log cache and column entropies.

    Learning never creates or removes non-zeros, so the layout of the matrix
    before the update almost always fits; when it does not (A given apart
    from pA with other zeros), the specs are packed afresh.
    """
    rows, cols = p2.shape
    n = like.val.size
    val, wval = np.empty(n, np.float32), np.empty(n, np.float32)
    logval = None if like.logval is None else np.empty(n, np.float32)
    col_H = np.empty(cols, np.float32) if likelihood else None
    code = _learning.pack_counts(p2, like.indptr, like.idx, val, logval, col_H,
                                wval, np.empty(3 * cols))
    if code == 1:
        raise ValueError(f"{name} must be finite and non-negative")
    if code == 2:
        raise ValueError(f"{name} has a column of zero counts: its distribution is undefined")
    if code == 3:  # other zeros than the layout's: a new pattern
        a2 = _normalise(p2)
        spec = _mat_spec(a2, sparse, with_log=likelihood)
        wspec = _mat_spec(_spm_wnorm(p2), sparse, False, like=spec)
        h = _column_entropies(a2) if likelihood else None
        return spec, wspec, h
    return like.with_values(val, logval), like.with_values(wval), col_H


def _spm_wnorm(p: np.ndarray) -> np.ndarray:
    """pymdp's spm_wnorm masked where the prior is zero, as its info-gain routines use it."""
    q = p + _LOG_EPS
    return (1.0 / q.sum(axis=0) - 1.0 / q) * (p > 0)


def _backwards_induction(H: list[np.ndarray], B: list[np.ndarray], B_factor_list,
                         threshold: float, depth: int) -> list[np.ndarray]:
    """pymdp's backwards_induction: which states reach the goal H within i steps."""
    out = []
    for f, h in enumerate(H):
        if list(B_factor_list[f]) != [f]:
            # pymdp refuses several parents, and with one other parent g reads B[g] instead
            raise ValueError("H: inductive inference needs B_factor_list[f] == [f] for every "
                             f"factor (factor {f} has {list(B_factor_list[f])})")
        b = np.any(B[f] > threshold, axis=-1).astype(np.float64)  # b[next, prev]
        I = np.zeros((depth, h.shape[0]))
        I[0] = h
        for i in range(1, depth):
            I[i] = np.where(b @ I[i - 1] > 0.1, 1.0, 0.0)
        out.append(I)
    return out


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------

class GenerativeModel:
    """A validated, immutable POMDP generative model in pymdp's layout.

    Parameters
    ----------
    A, B : object array, list of arrays, or one array
        Observation and transition likelihoods, pymdp layout: ``A[m]`` of shape
        ``(num_obs[m], *num_states[A_factor_list[m]])``, ``B[f]`` of shape
        ``(num_states[f], *num_states[B_factor_list[f]], num_controls[f])``.
        Columns must sum to 1. When ``pA`` / ``pB`` are given, ``A`` / ``B``
        are their normalised expectations, as in pymdp.
    C : optional
        Log-preferences per modality, ``(num_obs[m],)`` or
        ``(num_obs[m], T)`` with ``T >= policy_len``. Default zeros.
    D : optional
        Prior over initial states per factor. Default uniform, or normalised ``pD``.
    E : optional
        Prior over policies. Default uniform.
    pA, pB, pD : optional
        Dirichlet parameters (learning and parameter information gain).
    H : optional
        Goal prior per factor for inductive inference.
    A_factor_list, B_factor_list : list of lists of int, optional
        The factors each modality / factor depends on, as pymdp's Agent.
    num_controls, policy_len, control_fac_idx, policies : optional
        The policy set, as pymdp's Agent.
    ii_depth, ii_threshold : optional
        Inductive inference, as pymdp's Agent.
    sparse : {"auto", True, False}
        Storage of each matrix: CSC when ``True``, dense when ``False``, chosen
        by density (at most ``AUTO_SPARSE_DENSITY`` non-zeros) when ``"auto"``.
        Results are the same either way.

    Notes
    -----
    The model keeps only its packed float32 form; the pymdp-layout arrays it
    exposes (``A``, ``B``, ``C``, ...) are float32, read-only, and built on
    first access. A model is shared, so writing into it would change other
    agents: use :meth:`replace` to derive a model with some arrays changed
    (it shares every unchanged array with this one), or :meth:`interned` to
    reuse a live model built from equal arrays.

    Examples
    --------
    >>> from fa_core import Agent, GenerativeModel, builtin_models
    >>> gm = GenerativeModel(**builtin_models.tmaze(), policy_len=2)
    >>> gm
    GenerativeModel(num_states=[4, 2], num_obs=[4, 3, 2], num_controls=[4, 1], policies=16,
                    nbytes=1668)
    >>> agents = [Agent(model=gm, seed=i) for i in range(3)]     # all three share gm
    >>> agents[0].model is agents[2].model is gm
    True
    """

    def __init__(self, A, B, C=None, D=None, E=None, pA=None, pB=None, pD=None, H=None,
                 A_factor_list=None, B_factor_list=None, num_controls=None, policy_len=1,
                 control_fac_idx=None, policies=None, ii_depth=10, ii_threshold=1 / 16,
                 sparse="auto"):
        if sparse not in ("auto", True, False):
            raise ValueError(f"sparse must be 'auto', True or False, got {sparse!r}")
        self.sparse = sparse
        self.policy_len = _opt.check_int("policy_len", policy_len, 1, None)
        self.ii_depth = _opt.check_int("ii_depth", ii_depth, 1, _opt.MAX_II_DEPTH)
        self.ii_threshold = _opt.check_float("ii_threshold", ii_threshold)
        if num_controls is not None:
            num_controls = _opt.check_count_list("num_controls", num_controls)
        self._views: dict[str, Any] = {}
        A_dense, B_dense = self._set_A(A, pA), None
        B_dense = self._set_B(B, pB, num_controls)
        self._set_factor_lists(A_factor_list, B_factor_list, A_dense, B_dense)
        self._set_policies(control_fac_idx, policies)
        self._set_C(C)
        self._set_D(D, pD)
        self._set_E(E)
        # pymdp builds I from the B given, even when pB (normalised) replaces it
        self._set_H(H, as_array_list(B, "B") if pB is not None else B_dense)
        self._pack()

    # -- one setter per component: validate, then compute its packed form ---------------

    def _set_A(self, A, pA, from_counts: bool = True) -> list[np.ndarray]:
        self._pA = as_array_list(pA, "pA") if pA is not None else None
        A = as_array_list(A, "A")
        if self._pA is not None:
            _check_same_shapes(self._pA, A, "pA", "A")
            if from_counts:
                A = _normalise_counts(self._pA, "pA")  # A is the expectation of pA, as pymdp
        self.A_from_counts = self._pA is not None and from_counts
        check_normalised(A, "A")
        for m, a in enumerate(A):
            if a.ndim < 2:
                raise ValueError(f"A[{m}] must have at least 2 axes (outcome, states), "
                                 f"got shape {a.shape}")
        self.num_obs = [a.shape[0] for a in A]
        self.num_modalities = len(A)
        self._A_shapes = [a.shape for a in A]
        self._A_specs, self._wA_specs, self._a_H = [], [], []
        for m, a in enumerate(A):
            a2 = a.reshape(a.shape[0], -1)
            self._A_specs.append(_mat_spec(a2, self.sparse, with_log=True))
            self._a_H.append(_column_entropies(a2))
            self._wA_specs.append(None if self._pA is None else
                                  _mat_spec(_spm_wnorm(self._pA[m]).reshape(a2.shape),
                                            self.sparse, with_log=False))
        self._views.pop("A", None)
        return A

    def _set_B(self, B, pB, num_controls=None, from_counts: bool = True) -> list[np.ndarray]:
        self._pB = as_array_list(pB, "pB") if pB is not None else None
        B = as_array_list(B, "B")
        if self._pB is not None:
            _check_same_shapes(self._pB, B, "pB", "B")
            if from_counts:
                B = _normalise_counts(self._pB, "pB")
        self.B_from_counts = self._pB is not None and from_counts
        check_normalised(B, "B")
        for f, b in enumerate(B):
            if b.ndim < 3:
                raise ValueError(f"B[{f}] must have at least 3 axes (next state, previous "
                                 f"state(s), control), got shape {b.shape}")
        inferred = [b.shape[-1] for b in B]
        if num_controls is not None and list(num_controls) != inferred:
            raise ValueError(f"num_controls {list(num_controls)} does not match the last axis "
                             f"of B {inferred}")
        self.num_controls = inferred
        self.num_states = [b.shape[0] for b in B]
        self.num_factors = len(B)
        self._B_shapes = [b.shape for b in B]
        self._B_specs, self._wB_specs = [], []
        for f, b in enumerate(B):
            self._B_specs.append([_mat_spec(b[..., u].reshape(b.shape[0], -1), self.sparse, False)
                                  for u in range(b.shape[-1])])
            if self._pB is None:
                self._wB_specs.append(None)
            else:
                w = _spm_wnorm(self._pB[f])
                self._wB_specs.append([_mat_spec(w[..., u].reshape(b.shape[0], -1), self.sparse,
                                                 False) for u in range(b.shape[-1])])
        self._views.pop("B", None)
        return B

    def _set_factor_lists(self, A_factor_list, B_factor_list, A, B) -> None:
        nf = self.num_factors
        if A_factor_list is None:
            A_factor_list = [list(range(nf))] * self.num_modalities
        self.A_factor_list = _check_factor_list(A_factor_list, self.num_modalities, nf,
                                                "A_factor_list")
        if B_factor_list is None:
            B_factor_list = [[f] for f in range(nf)]
        self.B_factor_list = _check_factor_list(B_factor_list, nf, nf, "B_factor_list")
        for m, shape in enumerate(self._A_shapes):
            want = tuple(self.num_states[f] for f in self.A_factor_list[m])
            if shape[1:] != want:
                raise ValueError(f"A[{m}] has shape {shape}; with A_factor_list[{m}] = "
                                 f"{self.A_factor_list[m]} its trailing axes must be {want}")
        for f, shape in enumerate(self._B_shapes):
            want = tuple(self.num_states[g] for g in self.B_factor_list[f])
            if shape[1:-1] != want:
                raise ValueError(f"B[{f}] has shape {shape}; with B_factor_list[{f}] = "
                                 f"{self.B_factor_list[f]} its middle axes must be {want}")
        self.A_modality_list = [[m for m in range(self.num_modalities)
                                 if f in self.A_factor_list[m]] for f in range(nf)]

    def _set_policies(self, control_fac_idx, policies) -> None:
        nf = self.num_factors
        if control_fac_idx is None:
            control_fac_idx = [f for f in range(nf) if self.num_controls[f] > 1]
        else:
            control_fac_idx = _opt.check_index_list("control_fac_idx", control_fac_idx, nf)
            for f in control_fac_idx:
                if self.num_controls[f] <= 1:
                    raise ValueError(f"control_fac_idx contains factor {f}, which has only "
                                     "one control")
        self.control_fac_idx = control_fac_idx
        if policies is None:
            # refused before a single policy is built
            check_policy_count(count_policies(self.num_controls, self.policy_len),
                               self.policy_len, nf)
            policies = construct_policies(self.num_states, self.num_controls, self.policy_len,
                                          self.control_fac_idx)
        self.policies = validate_policies(policies, self.num_controls)
        # pymdp evaluates custom policies over their own length
        self.policy_len = self.policies[0].shape[0]

    def _set_C(self, C) -> None:
        if C is None:
            C = [np.zeros(n) for n in self.num_obs]
        else:
            C = as_array_list(C, "C")
            if len(C) != self.num_modalities:
                raise ValueError(f"C has {len(C)} entries; expected one per modality "
                                 f"({self.num_modalities})")
            for m, c in enumerate(C):
                if c.ndim not in (1, 2) or c.shape[0] != self.num_obs[m]:
                    raise ValueError(f"C[{m}] must have shape ({self.num_obs[m]},) or "
                                     f"({self.num_obs[m]}, T); got {c.shape}")
                if c.ndim == 2 and c.shape[1] < self.policy_len:
                    raise ValueError(f"C[{m}] has {c.shape[1]} time columns; policy_len is "
                                     f"{self.policy_len}")
        self._C = [np.array(c, dtype=np.float64) for c in C]  # exact, as given (small)
        T = self.policy_len
        self._lnC = []
        for c in C:
            c2 = np.tile(c[:, None], (1, T)) if c.ndim == 1 else c[:, :T]
            # softmax over outcomes of each time column, as pymdp's softmax_obj_arr
            c2 = np.exp(c2 - c2.max(axis=0))
            self._lnC.append(np.log(c2 / c2.sum(axis=0) + _LOG_EPS).astype(np.float32).ravel())
        self._views.pop("C", None)

    def _set_D(self, D, pD) -> None:
        self._pD = as_array_list(pD, "pD") if pD is not None else None
        if self._pD is not None:
            normalised_pD = _normalise_counts(self._pD, "pD")
        if D is None:
            D = (normalised_pD if self._pD is not None
                 else [np.full(n, 1.0 / n) for n in self.num_states])
        else:
            D = as_array_list(D, "D")
        if len(D) != self.num_factors or any(d.shape != (n,) for d, n in zip(D, self.num_states)):
            raise ValueError(f"D must hold one vector per factor with lengths {self.num_states}; "
                             f"got shapes {[d.shape for d in D]}")
        check_normalised(D, "D")
        if self._pD is not None and any(p.shape != d.shape for p, d in zip(self._pD, D)):
            raise ValueError("pD must have the same shapes as D")
        self._D = [np.array(d, dtype=np.float64) for d in D]
        self._logD = np.log(np.concatenate(D) + _LOG_EPS).astype(np.float32)
        self._views.pop("D", None)

    def _set_E(self, E) -> None:
        n_pol = len(self.policies)
        if E is None:
            E = np.full(n_pol, 1.0 / n_pol)
        else:
            E = as_array_list(E, "E")[0]
            if E.shape != (n_pol,):
                raise ValueError(f"E must have one entry per policy ({n_pol}); got shape {E.shape}")
            if np.any(E < 0):
                raise ValueError("E has negative entries")
        self._E = np.array(E, dtype=np.float64)
        self._lnE = np.log(E + _LOG_EPS).astype(np.float32)
        self._views.pop("E", None)

    def _set_H(self, H, B) -> None:
        if H is None:
            self._H = self._I = None
            return
        H = as_array_list(H, "H")
        if len(H) != self.num_factors or any(h.shape != (n,) for h, n in zip(H, self.num_states)):
            raise ValueError(f"H must hold one vector per factor with lengths {self.num_states}")
        if B is None:
            B = [np.asarray(b, dtype=np.float64) for b in self.B]
        self._H = [h.astype(np.float32) for h in H]
        self._I = _backwards_induction(H, B, self.B_factor_list, self.ii_threshold, self.ii_depth)
        self._views.pop("H", None)
        self._views.pop("I", None)

    def _pack(self) -> None:
        """Hand every packed component to the kernels (the only place the C layout is fixed)."""
        mats: list[MatSpec] = []
        a_mat, wa_mat, b_mat, wb_mat = [], [], [], []
        for spec, wspec in zip(self._A_specs, self._wA_specs):
            a_mat.append(len(mats))
            mats.append(spec)
            wa_mat.append(-1 if wspec is None else len(mats))
            if wspec is not None:
                mats.append(wspec)
        for specs, wspecs in zip(self._B_specs, self._wB_specs):
            b_mat.append(len(mats))
            mats.extend(specs)
            wb_mat.append(-1 if wspecs is None else len(mats))
            if wspecs is not None:
                mats.extend(wspecs)

        self._kernel_layout = self._build_layout(a_mat, wa_mat, b_mat, wb_mat)
        I_values, I_off = self._packed_I()
        self.kmodel = KModel(self._kernel_layout, mats, a_H=self._a_H, lnC=self._lnC,
                             lnE=self._lnE, logD=self._logD, I_values=I_values, I_off=I_off,
                             ii_depth=self.ii_depth)
        self.has_pA, self.has_pB = self._pA is not None, self._pB is not None
        self.has_H = self._I is not None
        self.num_controls_i32 = np.asarray(self.num_controls, dtype=np.int32)
        # smallest signed integer holding every control index and -1 (action histories)
        self.action_dtype = np.min_scalar_type(-max(self.num_controls))
        edges = np.cumsum([0] + self.num_states).tolist()
        self.state_bounds = list(zip(edges[:-1], edges[1:]))  # factor f is qs_flat[lo:hi]
        self.state_edges = np.asarray(edges, dtype=np.int64)
        self.num_policies_i32 = np.asarray([len(self.policies)], dtype=np.int32)
        self.is_sparse = self._sparsity()

    def _sparsity(self) -> dict:
        return {"A": [bool(s.sparse) for s in self._A_specs],
                "B": [[bool(s.sparse) for s in b] for b in self._B_specs]}

    def _packed_I(self):
        """The inductive matrices as (flat values, offset per factor), or (None, None)."""
        if self._I is None:
            return None, None
        sizes = [i.size for i in self._I]
        return (np.concatenate([i.ravel() for i in self._I]),
                np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32))

    def _build_layout(self, a_mat, wa_mat, b_mat, wb_mat) -> KernelLayout:
        """The integer layout the kernels read."""
        def offsets(lengths):
            return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)

        groups: list[list[int]] = []  # modalities sharing a parent list, in order
        for d in self.A_factor_list:
            if d not in groups:
                groups.append(d)
        a_group = [groups.index(d) for d in self.A_factor_list]
        g_K = [int(np.prod([self.num_states[f] for f in d])) for d in groups]
        ntail, khead, red_off, red_stride = self._invariant_tails()
        return KernelLayout(
            a_group=a_group,
            a_group_first=[int(a_group.index(g) == m) for m, g in enumerate(a_group)],
            g_dep=list(itertools.chain(*groups)),
            g_dep_off=offsets([len(d) for d in groups]),
            g_dep_vfe=list(itertools.chain(*(sorted(d) for d in groups))),
            g_K=g_K, g_off=offsets(g_K),
            a_ntail=ntail, a_Khead=khead, a_red_off=red_off, red_stride=red_stride,
            ns=self.num_states, no=self.num_obs, nc=self.num_controls,
            s_off=offsets(self.num_states), nc_off=offsets(self.num_controls),
            a_dep=list(itertools.chain(*self.A_factor_list)),
            a_dep_off=offsets([len(d) for d in self.A_factor_list]),
            a_K=[int(np.prod([self.num_states[f] for f in d])) for d in self.A_factor_list],
            a_mat=a_mat, wa_mat=wa_mat,
            b_dep=list(itertools.chain(*self.B_factor_list)),
            b_dep_off=offsets([len(d) for d in self.B_factor_list]),
            b_K=[int(np.prod([self.num_states[g] for g in d])) for d in self.B_factor_list],
            b_mat=b_mat, wb_mat=wb_mat,
            policies=np.stack(self.policies))

    def _invariant_tails(self):
        """Trailing parents of each modality whose predictions no policy changes.

        A factor is policy-invariant when every policy takes the same action on
        it at every step (e.g. it has one control) and its transition parents
        are invariant too. The kernels contract A over such a trailing run once
        per time step instead of once per policy.
        """
        pol = np.stack(self.policies)  # (policies, T, factors)
        inv = [bool(np.all(pol[:, :, f] == pol[:1, :, f])) for f in range(self.num_factors)]
        changed = True
        while changed:
            changed = False
            for f in range(self.num_factors):
                if inv[f] and not all(inv[g] for g in self.B_factor_list[f]):
                    inv[f], changed = False, True
        ntail, khead, red_off, stride = [], [], [], 0
        for m, deps in enumerate(self.A_factor_list):
            n = 0
            while n < len(deps) and inv[deps[len(deps) - 1 - n]]:
                n += 1
            if np.prod([self.num_states[f] for f in deps]) < MIN_TAIL_REDUCTION_K:
                n = 0
            kh = int(np.prod([self.num_states[f] for f in deps[:len(deps) - n]]))
            ntail.append(n)
            khead.append(kh)
            red_off.append(stride)
            if n:
                stride += self.num_obs[m] * kh + kh + 1
        return ntail, khead, red_off, stride

    # -- pymdp-layout views, built on first use -------------------------------------------

    def _view(self, name: str, build):
        if name not in self._views:
            arrays = build()
            if arrays is None:
                return None
            out = np.empty(len(arrays), dtype=object)
            for i, a in enumerate(arrays):
                # the model never writes its arrays after building them, so read-only
                # views of them need no copy
                a = np.asarray(a, dtype=np.float64 if name.startswith("p") else np.float32)
                a.flags.writeable = False
                out[i] = a
            self._views[name] = out
        return self._views[name]

    @property
    def A(self) -> np.ndarray:
        """Observation model (object array of float32 read-only arrays)."""
        return self._view("A", lambda: [_unpack(s).reshape(shape) for s, shape
                                        in zip(self._A_specs, self._A_shapes)])

    @property
    def B(self) -> np.ndarray:
        """Transition model (object array of float32 read-only arrays)."""
        return self._view("B", lambda: [
            np.stack([_unpack(s) for s in specs], axis=-1).reshape(shape)
            for specs, shape in zip(self._B_specs, self._B_shapes)])

    C = property(lambda self: self._view("C", lambda: self._C), doc="Log-preferences.")
    D = property(lambda self: self._view("D", lambda: self._D), doc="Initial-state prior.")
    H = property(lambda self: self._view("H", lambda: self._H), doc="Goal prior (or None).")
    I = property(lambda self: self._view("I", lambda: self._I),
                 doc="Inductive-inference reachability per factor (or None).")
    pA = property(lambda self: self._view("pA", lambda: self._pA), doc="Dirichlet over A.")
    pB = property(lambda self: self._view("pB", lambda: self._pB), doc="Dirichlet over B.")
    pD = property(lambda self: self._view("pD", lambda: self._pD), doc="Dirichlet over D.")

    @property
    def E(self) -> np.ndarray:
        """Prior over policies, float32 read-only."""
        return self._view("E", lambda: [self._E])[0]

    def exact(self, name: str):
        """Component ``name`` as exactly as the model holds it.

        Parameters
        ----------
        name : str
            ``A``, ``B``, ``C``, ``D``, ``E``, ``H``, ``pA``, ``pB`` or ``pD``.

        Returns
        -------
        value : object array, list of arrays, ndarray or None
            float64 for ``C``, ``D``, ``E`` and the Dirichlet counts (as given),
            the float32 arrays the kernels read for ``A`` and ``B``.

        Examples
        --------
        >>> from fa_core import GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> gm.exact("C")[1], gm.exact("C")[1].dtype
        (array([ 0.,  3., -3.]), dtype('float64'))
        """
        if name in ("A", "B"):
            return getattr(self, name)
        return getattr(self, "_" + name)

    @property
    def num_policies(self) -> int:
        return len(self.policies)

    @property
    def nbytes(self) -> int:
        """Bytes of the packed model the kernels read (views built on access not counted)."""
        return self.kmodel.nbytes

    # -- deriving and sharing models -----------------------------------------------------

    def replace(self, *, renormalise: bool = True, **changes) -> GenerativeModel:
        """A new model with some components changed; this one is left as it is.

        Every component not changed is shared with this model, not copied.

        Parameters
        ----------
        renormalise : bool
            ``True`` (default): new ``pA`` / ``pB`` also set ``A`` / ``B`` to their
            normalised expectations. ``False``: new ``pA`` / ``pB`` without ``A`` /
            ``B`` keep the current ``A`` / ``B`` (pymdp's agent changes ``A`` only
            when it learns or resets, not when its ``pA`` is edited).
        **changes
            New ``A``, ``B``, ``C``, ``D``, ``E``, ``H``, ``pA``, ``pB`` or ``pD``.

        Returns
        -------
        model : GenerativeModel
            The new model.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> keener = gm.replace(C=[np.zeros(4), np.array([0.0, 6.0, -6.0]), np.zeros(2)])
        >>> keener.exact("C")[1], gm.exact("C")[1]
        (array([ 0.,  6., -6.]), array([ 0.,  3., -3.]))
        """
        allowed = {"A", "B", "C", "D", "E", "H", "pA", "pB", "pD"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"replace() takes {sorted(allowed)}, got {sorted(unknown)}")
        new = object.__new__(GenerativeModel)
        new.__dict__.update(self.__dict__)
        new._views = {k: v for k, v in self._views.items() if k not in changes}
        B_dense = None
        if "A" in changes or "pA" in changes:
            A = changes.get("A", self.A if "pA" in changes else None)
            pA = changes.get("pA", self._pA if "A" not in changes else None)
            new._set_A(A, pA, from_counts=renormalise or "A" in changes)
            if new._A_shapes != self._A_shapes:
                raise ValueError("replace() cannot change the shapes of A")
        if "B" in changes or "pB" in changes:
            B = changes.get("B", self.B if "pB" in changes else None)
            pB = changes.get("pB", self._pB if "B" not in changes else None)
            B_dense = new._set_B(B, pB, from_counts=renormalise or "B" in changes)
            if new._B_shapes != self._B_shapes:
                raise ValueError("replace() cannot change the shapes of B")
        if "C" in changes:
            new._set_C(changes["C"])
        if "D" in changes or "pD" in changes:
            new._set_D(changes.get("D", None if "pD" in changes else self._D),
                       changes.get("pD", self._pD))
        if "E" in changes:
            new._set_E(changes["E"])
        if "H" in changes or B_dense is not None and self._H is not None:
            new._set_H(changes.get("H", self._H), B_dense)
        new._pack()
        return new

    def derived(self, *, renormalise: bool = True, **changes) -> GenerativeModel:
        """:meth:`replace`, interned: equal changes to one model give one shared model.

        This is what ``Agent(model=gm, C=...)`` uses, so a thousand agents
        given the same ``C`` share one derived model instead of a thousand.

        Parameters
        ----------
        renormalise : bool
            As :meth:`replace`.
        **changes
            As :meth:`replace`.

        Returns
        -------
        model : GenerativeModel
            The live derived model with these changes, or a new one.

        Examples
        --------
        >>> import numpy as np
        >>> from fa_core import GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> C = [np.zeros(4), np.array([0.0, 6.0, -6.0]), np.zeros(2)]
        >>> gm.derived(C=C) is gm.derived(C=C)
        True
        """
        key = (self.content_key(), _content_key(changes), renormalise)
        model = _DERIVED.get(key)
        if model is None:
            model = self.replace(renormalise=renormalise, **changes)
            _DERIVED[key] = model
        return model

    def with_counts(self, pA=None, pB=None, pB_controls=None) -> GenerativeModel:
        """A model whose Dirichlet counts changed (learning), rebuilding only what changed.

        Parameters
        ----------
        pA, pB : list of ndarray, optional
            Every modality's / factor's counts. An entry that is this model's own
            array (``model._pA[m]``) keeps its packed matrices, shared with this
            model. New entries must be float64 arrays of the same shape that nobody
            else writes to (they are kept, not copied).
        pB_controls : dict of int to list of int, optional
            Maps a factor to the controls whose slices changed (``update_B``
            changes one); other slices keep their matrices.

        Returns
        -------
        model : GenerativeModel
            The new model; ``A`` / ``B`` are the normalised new counts.

        Examples
        --------
        >>> from fa_core import GenerativeModel, builtin_models
        >>> d = builtin_models.tmaze()
        >>> gm = GenerativeModel(**d, pA=[10 * a for a in d["A"]])
        >>> pA = gm.exact("pA")
        >>> learned = gm.with_counts(pA=[pA[0], pA[1], 2 * pA[2]])   # modality 2's counts doubled
        >>> float(learned.exact("pA")[2].sum()), float(gm.exact("pA")[2].sum())
        (160.0, 80.0)
        """
        new = object.__new__(GenerativeModel)
        new.__dict__.update(self.__dict__)
        new._views = {k: v for k, v in self._views.items() if k not in ("A", "B", "pA", "pB")}
        mats: dict[int, MatSpec] = {}
        a_H, lay = {}, self._kernel_layout
        if pA is not None:
            new._pA, new._A_specs = list(self._pA), list(self._A_specs)
            new._wA_specs, new._a_H = list(self._wA_specs), list(self._a_H)
            for m, p in enumerate(pA):
                if p is self._pA[m]:
                    continue
                _check_counts(p, self._pA[m].shape, f"pA[{m}]", values=False)
                new._pA[m] = p
                spec, wspec, h = _learned_specs(p.reshape(p.shape[0], -1), self._A_specs[m],
                                                self.sparse, f"pA[{m}]", likelihood=True)
                mats[int(lay.a_mat[m])] = new._A_specs[m] = spec
                mats[int(lay.wa_mat[m])] = new._wA_specs[m] = wspec
                a_H[m] = new._a_H[m] = h
        if pB is not None:
            new._pB, new._B_specs, new._wB_specs = list(self._pB), list(self._B_specs), \
                list(self._wB_specs)
            for f, p in enumerate(pB):
                if p is self._pB[f]:
                    continue
                _check_counts(p, self._pB[f].shape, f"pB[{f}]", values=False)
                new._pB[f] = p
                new._B_specs[f], new._wB_specs[f] = list(self._B_specs[f]), list(self._wB_specs[f])
                controls = (pB_controls or {}).get(f, range(p.shape[-1]))
                for u in controls:  # columns of one control's slice normalise on their own
                    spec, wspec, _ = _learned_specs(p[..., u].reshape(p.shape[0], -1),
                                                    self._B_specs[f][u], self.sparse, f"pB[{f}]")
                    mats[int(lay.b_mat[f]) + u] = new._B_specs[f][u] = spec
                    mats[int(lay.wb_mat[f]) + u] = new._wB_specs[f][u] = wspec
        # same structure: only the changed matrices are handed to the kernels. I
        # (reachability of H) stays as built: pymdp computes it once, from the B given at
        # construction, and learning B does not change it
        new.A_from_counts = new.A_from_counts or pA is not None
        new.B_from_counts = new.B_from_counts or pB is not None
        new.kmodel = self.kmodel.with_changes(mats, a_H)
        new.is_sparse = new._sparsity()
        return new

    @classmethod
    def interned(cls, **kwargs) -> GenerativeModel:
        """The live model built from equal arguments, or a new one (then remembered).

        Models are keyed by a hash of their arguments' contents and held
        weakly: a model is freed when the last agent using it goes.

        Parameters
        ----------
        **kwargs
            The :class:`GenerativeModel` constructor's arguments.

        Returns
        -------
        model : GenerativeModel
            A live model equal to ``GenerativeModel(**kwargs)``.

        Examples
        --------
        >>> from fa_core import GenerativeModel, builtin_models
        >>> a = GenerativeModel.interned(**builtin_models.tmaze())
        >>> b = GenerativeModel.interned(**builtin_models.tmaze())   # equal arrays, built anew
        >>> a is b
        True
        """
        for name in ("A", "B", "C", "D", "E", "H", "pA", "pB", "pD"):
            if kwargs.get(name) is not None:  # before hashing: a date array has no buffer
                _opt.check_numeric_arrays(name, kwargs[name])
        key = _content_key(kwargs)
        model = _INTERNED.get(key)
        if model is None:
            model = cls(**kwargs)
            _INTERNED[key] = model
        return model

    # -- pickling: by content, so an unpickled model is the live equal model when there is one

    def content_key(self) -> bytes:
        """Digest of the packed contents: equal models have equal keys, in any process.

        Computed once per model; from then on :func:`model_by_key` finds the
        model while it is alive (the first live model of a key wins).

        Returns
        -------
        key : bytes
            A 20-byte digest; hibernated agents and populations record it.

        Examples
        --------
        >>> from fa_core import GenerativeModel, builtin_models
        >>> gm = GenerativeModel(**builtin_models.tmaze())
        >>> key = gm.content_key()
        >>> len(key), key == GenerativeModel(**builtin_models.tmaze()).content_key()
        (20, True)
        """
        entry = _KEYED.get(id(self))
        if entry is not None:
            return entry[0]
        state = {k: _plain(v) for k, v in self.__getstate__().items()}
        # keys hash the integer tables as the dict of int32 arrays the model kept before
        # they were typed, so agents hibernated by earlier versions still find their model
        lay = self._kernel_layout
        state["_ints"] = _plain({k: np.asarray(getattr(lay, k), dtype=np.int32)
                                 for k in _LAYOUT_KEY_FIELDS})
        key = _content_key(state)
        _remember_key(self, key)
        return key

    def __getstate__(self) -> dict:
        """Packed arrays and settings; the kernel view and pymdp-layout views are rebuilt."""
        return {k: v for k, v in self.__dict__.items()
                if k not in ("kmodel", "_kernel_layout", "_views")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._views = {}
        self._pack()

    def __reduce__(self):
        return _unpickle_model, (self.content_key(), self.__getstate__())

    def __copy__(self) -> GenerativeModel:
        return self  # immutable: a copy would only cost memory

    def __deepcopy__(self, memo) -> GenerativeModel:
        return self

    def __repr__(self) -> str:
        return (f"GenerativeModel(num_states={self.num_states}, num_obs={self.num_obs}, "
                f"num_controls={self.num_controls}, policies={self.num_policies}, "
                f"nbytes={self.nbytes})")


_INTERNED: weakref.WeakValueDictionary[bytes, GenerativeModel] = weakref.WeakValueDictionary()
_DERIVED: weakref.WeakValueDictionary[tuple, GenerativeModel] = weakref.WeakValueDictionary()


#: content key -> a live model with that key, for unpickling and waking; and
#: id(model) -> (content key, weak reference) for every keyed model (kept outside
#: the model because replace() copies the model's __dict__ into derived models)
_BY_CONTENT: weakref.WeakValueDictionary[bytes, GenerativeModel] = weakref.WeakValueDictionary()
_KEYED: dict[int, tuple[bytes, weakref.ref]] = {}


def _remember_key(model: GenerativeModel, key: bytes) -> None:
    ident = id(model)
    _KEYED[ident] = (key, weakref.ref(model, lambda _, i=ident: _KEYED.pop(i, None)))
    _BY_CONTENT.setdefault(key, model)


def model_by_key(key: bytes) -> GenerativeModel | None:
    """The live model whose :meth:`GenerativeModel.content_key` is ``key``, or None.

    Finds models that have computed their key (pickled, hibernated, or
    unpickled ones) and every live interned model.
    """
    model = _BY_CONTENT.get(key)
    if model is None:
        for m in list(_INTERNED.values()):
            m.content_key()
        for k, ref in list(_KEYED.values()):
            m = ref()
            if k == key and m is not None:
                _BY_CONTENT[key] = m
                return m
    return model


def resolve_model(key: bytes, model: GenerativeModel | None, owner: str) -> GenerativeModel:
    """``model``, checked to have content key ``key``, or the live model with that key.

    ``owner`` names what is being restored ("agent", "population") in the messages.
    """
    if model is None:
        model = model_by_key(key)
        if model is None:
            raise ValueError(f"no live model has content key {key.hex()}: keep the {owner}'s "
                             "model alive or pass it as model=")
    elif not isinstance(model, GenerativeModel):
        raise TypeError(f"model must be a GenerativeModel, got {type(model).__name__}")
    elif model.content_key() != key:
        raise ValueError(f"model is not the model this {owner} was hibernated with "
                         "(its content key differs)")
    return model


def _unpickle_model(key: bytes, state: dict) -> GenerativeModel:
    model = model_by_key(key)
    if model is None:
        model = object.__new__(GenerativeModel)
        model.__setstate__(state)
        _remember_key(model, key)
    return model


# KernelLayout's fields, as content_key hashes them
_LAYOUT_KEY_FIELDS = ("a_group", "a_group_first", "g_dep", "g_dep_off", "g_dep_vfe", "g_K", "g_off",
                      "a_ntail", "a_Khead", "a_red_off", "red_stride", "ns", "no", "nc", "s_off",
                      "nc_off", "a_dep", "a_dep_off", "a_K", "a_mat", "wa_mat", "b_dep",
                      "b_dep_off", "b_K", "b_mat", "wb_mat", "policies")


def _plain(x):
    """``x`` with dicts turned into key-sorted tuples, as :func:`_content_key` reads them."""
    if isinstance(x, dict):
        return tuple((k, _plain(x[k])) for k in sorted(x))
    if isinstance(x, MatSpec):  # every field, in the dict form specs had before (stable keys)
        spec = {"rows": x.rows, "cols": x.cols, "sparse": int(x.sparse), "onehot": int(x.onehot),
                "val": x.val, "logval": x.logval}
        if x.sparse:
            spec.update(indptr=x.indptr, idx=x.idx)
        return _plain(spec)
    if isinstance(x, (list, tuple)):
        return tuple(_plain(v) for v in x)
    return x


def _content_key(kwargs: dict) -> bytes:
    """Digest of model arguments: array bytes, shapes and dtypes, and plain values."""
    h = hashlib.blake2b(digest_size=20)

    def feed(x):
        if isinstance(x, np.ndarray) and x.dtype != object:
            h.update(f"nd{x.dtype.str}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).data)
        elif isinstance(x, (list, tuple, np.ndarray)):
            h.update(f"seq{len(x)}(".encode())
            for v in x:
                feed(v)
            h.update(b")")
        else:
            h.update(repr(x).encode())

    for k in sorted(kwargs):
        h.update(k.encode())
        feed(kwargs[k])
    return h.digest()


def _check_counts(p: np.ndarray, shape: tuple, name: str, values: bool = True) -> None:
    if p.shape != shape or p.dtype != np.float64:
        raise ValueError(f"{name} must be a float64 array of shape {shape}")
    if not values:
        return
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    if np.any(p.sum(axis=0) <= 0):
        raise ValueError(f"{name} has a column of zero counts: its distribution is undefined")


def _check_same_shapes(p, a, pname, aname):
    if len(p) != len(a) or any(x.shape != y.shape for x, y in zip(p, a)):
        raise ValueError(f"{pname} must have the same shapes as {aname}: "
                         f"{[x.shape for x in p]} vs {[y.shape for y in a]}")


def _unpack(spec: MatSpec) -> np.ndarray:
    """The (rows, cols) float32 matrix a spec holds."""
    if spec.sparse:
        dense = np.zeros((spec.rows, spec.cols), dtype=np.float32)
        col_of = np.repeat(np.arange(spec.cols), np.diff(spec.indptr))
        dense[spec.idx, col_of] = spec.val
        return dense
    return spec.val.reshape(spec.rows, spec.cols)
