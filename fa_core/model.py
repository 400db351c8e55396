"""The immutable generative model shared by every agent built from it.

A :class:`GenerativeModel` validates pymdp-layout arrays once, converts them
to float32, chooses dense or sparse (CSC) storage per matrix, precomputes the
per-model constants (log A, column entropies of A, log softmax C, log E,
log D, parameter information-gain weights, inductive-inference reachability)
and hands a C view of all of it (:class:`fa_core._kernels.KModel`) to the
kernels. Agents only reference it; learning produces a new model that shares
every unchanged array with the old one (copy-on-write).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
from scipy import sparse as sp

from fa_core import _kernels
from fa_core.policies import construct_policies, validate_policies

#: Matrices at or below this fraction of non-zeros are stored sparse by ``sparse="auto"``.
#: Below about a quarter the CSC product does less work than the dense one,
#: and index storage is paid back in memory well before that.
AUTO_SPARSE_DENSITY = 0.25

#: Tolerance of the normalisation check, as pymdp's ``np.allclose`` on column sums.
NORM_RTOL, NORM_ATOL = 1e-5, 1e-8

_LOG_EPS = 1e-16          # pymdp's spm_log epsilon
_ENTROPY_EPS = np.exp(-16)  # pymdp's spm_MDP_G epsilon


# ---------------------------------------------------------------------------
# Input conversion and validation
# ---------------------------------------------------------------------------

def as_array_list(x: Any, name: str) -> list[np.ndarray]:
    """Convert pymdp-style input (object array, list, or one array) to float64 arrays.

    Raises
    ------
    TypeError
        If ``x`` or an entry is not numeric.
    ValueError
        If an entry contains NaN or infinity, or ``x`` is empty.
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
        label = f"{name}[{i}]" if len(items) > 1 or _is_multi(x) else name
        arr = np.asarray(a)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                       or np.issubdtype(arr.dtype, np.integer)
                                       or arr.dtype == np.bool_):
            raise TypeError(f"{label} must hold real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{label} contains NaN or infinite values")
        out.append(arr)
    return out


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

def _mat_spec(mat2d: np.ndarray, sparse: bool | str, with_log: bool) -> dict:
    """Pack a (rows, cols) float64 matrix for the kernels, dense or CSC."""
    rows, cols = mat2d.shape
    use_sparse = (sparse is True
                  or (sparse == "auto" and np.count_nonzero(mat2d) <= AUTO_SPARSE_DENSITY * mat2d.size))
    if use_sparse:
        csc = sp.csc_matrix(mat2d)
        csc.eliminate_zeros()
        csc.sort_indices()
        val = csc.data
        spec = {"rows": rows, "cols": cols, "sparse": 1,
                "val": val.astype(np.float32),
                "indptr": csc.indptr.astype(np.int32), "idx": csc.indices.astype(np.int32)}
    else:
        val = np.ascontiguousarray(mat2d.T)
        spec = {"rows": rows, "cols": cols, "sparse": 0, "val": val.astype(np.float32).ravel()}
    spec["logval"] = np.log(val + _LOG_EPS).astype(np.float32).ravel() if with_log else None
    return spec


def _spm_wnorm(p: np.ndarray) -> np.ndarray:
    """pymdp's spm_wnorm masked where the prior is zero, as its info-gain routines use it."""
    q = p + _LOG_EPS
    return (1.0 / q.sum(axis=0) - 1.0 / q) * (p > 0)


def _backwards_induction(H: list[np.ndarray], B: list[np.ndarray], B_factor_list,
                         threshold: float, depth: int) -> list[np.ndarray]:
    """pymdp's backwards_induction: which states reach the goal H within i steps."""
    out = []
    for f, h in enumerate(H):
        if len(B_factor_list[f]) > 1:
            raise ValueError("H: inductive inference needs B_factor_list[f] == [f] for every factor "
                             "(as pymdp's backwards_induction)")
        b = np.any(B[f] > threshold, axis=-1).astype(np.float64)  # b[next, prev]
        I = np.zeros((depth, h.shape[0]))
        I[0] = h
        for i in range(1, depth):
            I[i] = np.where(b @ I[i - 1] > 0.1, 1.0, 0.0)
        out.append(I)
    return out


def _readonly(arrays: list[np.ndarray], dtype=np.float32) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        a = np.array(a, dtype=dtype)
        a.flags.writeable = False
        out[i] = a
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
    A_factor_list, B_factor_list, num_controls, policy_len, control_fac_idx, policies,
    ii_depth, ii_threshold
        As pymdp's Agent.
    sparse : {"auto", True, False}
        Storage of each matrix: CSC when ``True``, dense when ``False``, chosen
        by density (at most ``AUTO_SPARSE_DENSITY`` non-zeros) when ``"auto"``.
        Results are the same either way.

    Notes
    -----
    All arrays exposed (``A``, ``B``, ``C``, ...) are float32 and read-only:
    a model is shared, so writing into it would change other agents. Use
    :meth:`replace` to derive a model with some arrays changed.
    """

    def __init__(self, A, B, C=None, D=None, E=None, pA=None, pB=None, pD=None, H=None,
                 A_factor_list=None, B_factor_list=None, num_controls=None, policy_len=1,
                 control_fac_idx=None, policies=None, ii_depth=10, ii_threshold=1 / 16,
                 sparse="auto"):
        if sparse not in ("auto", True, False):
            raise ValueError(f"sparse must be 'auto', True or False, got {sparse!r}")
        if not isinstance(policy_len, (int, np.integer)) or policy_len < 1:
            raise ValueError(f"policy_len must be a positive integer, got {policy_len!r}")
        self.sparse = sparse
        self.policy_len = int(policy_len)
        self.ii_depth = int(ii_depth)
        self.ii_threshold = float(ii_threshold)

        # learning priors: A / B / D are their expectations, as pymdp's reset()
        self._pA = as_array_list(pA, "pA") if pA is not None else None
        self._pB = as_array_list(pB, "pB") if pB is not None else None
        self._pD = as_array_list(pD, "pD") if pD is not None else None
        for name, p in (("pA", self._pA), ("pB", self._pB), ("pD", self._pD)):
            if p is not None and any(np.any(a < 0) for a in p):
                raise ValueError(f"{name} has negative Dirichlet parameters")
        A = as_array_list(A, "A")
        B = as_array_list(B, "B")
        if self._pA is not None:
            self._check_same_shapes(self._pA, A, "pA", "A")
            A = [_normalise(p) for p in self._pA]
        if self._pB is not None:
            self._check_same_shapes(self._pB, B, "pB", "B")
            B = [_normalise(p) for p in self._pB]
        check_normalised(A, "A")
        check_normalised(B, "B")
        for f, b in enumerate(B):
            if b.ndim < 3:
                raise ValueError(f"B[{f}] must have at least 3 axes (next state, previous "
                                 f"state(s), control), got shape {b.shape}")
        for m, a in enumerate(A):
            if a.ndim < 2:
                raise ValueError(f"A[{m}] must have at least 2 dimensions (outcome, states), "
                                 f"got shape {a.shape}")

        self.num_obs = [a.shape[0] for a in A]
        self.num_states = [b.shape[0] for b in B]
        self.num_modalities, self.num_factors = len(A), len(B)
        nf = self.num_factors
        inferred_controls = [b.shape[-1] for b in B]
        if num_controls is not None and list(num_controls) != inferred_controls:
            raise ValueError(f"num_controls {list(num_controls)} does not match the last axis "
                             f"of B {inferred_controls}")
        self.num_controls = inferred_controls

        if A_factor_list is None:
            A_factor_list = [list(range(nf))] * self.num_modalities
        self.A_factor_list = _check_factor_list(A_factor_list, self.num_modalities, nf, "A_factor_list")
        if B_factor_list is None:
            B_factor_list = [[f] for f in range(nf)]
        self.B_factor_list = _check_factor_list(B_factor_list, nf, nf, "B_factor_list")
        for m, a in enumerate(A):
            want = tuple(self.num_states[f] for f in self.A_factor_list[m])
            if a.shape[1:] != want:
                raise ValueError(f"A[{m}] has shape {a.shape}; with A_factor_list[{m}] = "
                                 f"{self.A_factor_list[m]} its trailing axes must be {want}")
        for f, b in enumerate(B):
            want = tuple(self.num_states[g] for g in self.B_factor_list[f])
            if b.shape[1:-1] != want:
                raise ValueError(f"B[{f}] has shape {b.shape}; with B_factor_list[{f}] = "
                                 f"{self.B_factor_list[f]} its middle axes must be {want}")
        self.A_modality_list = [[m for m in range(self.num_modalities) if f in self.A_factor_list[m]]
                                for f in range(nf)]

        if control_fac_idx is None:
            control_fac_idx = [f for f in range(nf) if self.num_controls[f] > 1]
        else:
            control_fac_idx = [int(f) for f in control_fac_idx]
            for f in control_fac_idx:
                if not 0 <= f < nf:
                    raise ValueError(f"control_fac_idx contains {f}, outside 0..{nf - 1}")
                if self.num_controls[f] <= 1:
                    raise ValueError(f"control_fac_idx contains factor {f}, which has only one control")
        self.control_fac_idx = control_fac_idx
        if policies is None:
            policies = construct_policies(self.num_states, self.num_controls, self.policy_len,
                                          self.control_fac_idx)
        self.policies = validate_policies(policies, self.num_controls)
        if self.policies[0].shape[0] != self.policy_len:
            # pymdp evaluates custom policies over their own length
            self.policy_len = self.policies[0].shape[0]
        n_pol = len(self.policies)

        # C: log-preferences, 1-D per modality or (num_obs, T)
        if C is None:
            C = [np.zeros(n) for n in self.num_obs]
        else:
            C = as_array_list(C, "C")
            if len(C) != self.num_modalities:
                raise ValueError(f"C has {len(C)} entries; expected one per modality ({self.num_modalities})")
            for m, c in enumerate(C):
                if c.ndim not in (1, 2) or c.shape[0] != self.num_obs[m]:
                    raise ValueError(f"C[{m}] must have shape ({self.num_obs[m]},) or "
                                     f"({self.num_obs[m]}, T); got {c.shape}")
                if c.ndim == 2 and c.shape[1] < self.policy_len:
                    raise ValueError(f"C[{m}] has {c.shape[1]} time columns; policy_len is {self.policy_len}")
        self._C = C

        if D is None:
            D = [_normalise(p) for p in self._pD] if self._pD is not None else \
                [np.full(n, 1.0 / n) for n in self.num_states]
        else:
            D = as_array_list(D, "D")
        if len(D) != nf or any(d.shape != (n,) for d, n in zip(D, self.num_states)):
            raise ValueError(f"D must hold one vector per factor with lengths {self.num_states}; "
                             f"got shapes {[d.shape for d in D]}")
        check_normalised(D, "D")
        self._D = D
        if self._pD is not None and any(p.shape != d.shape for p, d in zip(self._pD, D)):
            raise ValueError("pD must have the same shapes as D")

        if E is None:
            E = np.full(n_pol, 1.0 / n_pol)
        else:
            E = as_array_list(E, "E")[0]
            if E.shape != (n_pol,):
                raise ValueError(f"E must have one entry per policy ({n_pol}); got shape {E.shape}")
            if np.any(E < 0):
                raise ValueError("E has negative entries")
        self._E = E

        if H is not None:
            H = as_array_list(H, "H")
            if len(H) != nf or any(h.shape != (n,) for h, n in zip(H, self.num_states)):
                raise ValueError(f"H must hold one vector per factor with lengths {self.num_states}")
            self._I = _backwards_induction(H, B, self.B_factor_list, self.ii_threshold, self.ii_depth)
        else:
            self._I = None
        self._H = H

        self._A, self._B = A, B
        self.has_pA, self.has_pB, self.has_H = pA is not None, pB is not None, H is not None
        self._build()

    @staticmethod
    def _check_same_shapes(p, a, pname, aname):
        if len(p) != len(a) or any(x.shape != y.shape for x, y in zip(p, a)):
            raise ValueError(f"{pname} must have the same shapes as {aname}: "
                             f"{[x.shape for x in p]} vs {[y.shape for y in a]}")

    def _build(self) -> None:
        """Pack everything for the kernels (the only place the C layout is decided)."""
        A, B, nf, nm = self._A, self._B, self.num_factors, self.num_modalities
        mats: list[dict] = []
        a_mat, wa_mat, a_H, lnC = [], [], [], []
        T = self.policy_len
        for m, a in enumerate(A):
            a2 = a.reshape(a.shape[0], -1)
            a_mat.append(len(mats))
            mats.append(_mat_spec(a2, self.sparse, with_log=True))
            a_H.append((a2 * np.log(a2 + _ENTROPY_EPS)).sum(axis=0))
            if self._pA is not None:
                wa_mat.append(len(mats))
                mats.append(_mat_spec(_spm_wnorm(self._pA[m]).reshape(a2.shape), self.sparse, False))
            else:
                wa_mat.append(-1)
            c = self._C[m]
            c2 = np.tile(c[:, None], (1, T)) if c.ndim == 1 else c[:, :T]
            # softmax over outcomes of each time column, as pymdp's softmax_obj_arr
            c2 = np.exp(c2 - c2.max(axis=0))
            lnC.append(np.log(c2 / c2.sum(axis=0) + _LOG_EPS))
        b_mat, wb_mat = [], []
        for f, b in enumerate(B):
            b_mat.append(len(mats))
            for u in range(b.shape[-1]):
                mats.append(_mat_spec(b[..., u].reshape(b.shape[0], -1), self.sparse, False))
            if self._pB is not None:
                wb_mat.append(len(mats))
                w = _spm_wnorm(self._pB[f])
                for u in range(b.shape[-1]):
                    mats.append(_mat_spec(w[..., u].reshape(b.shape[0], -1), self.sparse, False))
            else:
                wb_mat.append(-1)

        def offsets(lengths):
            return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)

        ints = {
            "ns": self.num_states, "no": self.num_obs, "nc": self.num_controls,
            "s_off": offsets(self.num_states), "nc_off": offsets(self.num_controls),
            "a_dep": list(itertools.chain(*self.A_factor_list)),
            "a_dep_off": offsets([len(d) for d in self.A_factor_list]),
            "a_K": [int(np.prod([self.num_states[f] for f in d])) for d in self.A_factor_list],
            "a_mat": a_mat, "wa_mat": wa_mat,
            "b_dep": list(itertools.chain(*self.B_factor_list)),
            "b_dep_off": offsets([len(d) for d in self.B_factor_list]),
            "b_K": [int(np.prod([self.num_states[g] for g in d])) for d in self.B_factor_list],
            "b_mat": b_mat, "wb_mat": wb_mat,
            "policies": np.ascontiguousarray(np.stack(self.policies), dtype=np.int32),
        }
        logD = np.log(np.concatenate(self._D) + _LOG_EPS)
        lnE = np.log(self._E + _LOG_EPS)
        I = None
        if self._I is not None:
            I = (np.concatenate([i.ravel() for i in self._I]),
                 offsets([i.size for i in self._I])[:-1])
        self.kmodel = _kernels.KModel(ints, mats, a_H, [c.ravel() for c in lnC], lnE, logD,
                                      I, self.ii_depth)
        self.is_sparse = {"A": [bool(mats[i]["sparse"]) for i in a_mat],
                          "B": [bool(mats[i]["sparse"]) for i in b_mat]}
        self._views: dict[str, np.ndarray] = {}

    # -- pymdp-layout views, built on first use -------------------------------------------

    def _view(self, name: str, arrays, dtype=np.float32):
        if arrays is None:
            return None
        if name not in self._views:
            self._views[name] = _readonly(arrays, dtype)
        return self._views[name]

    A = property(lambda self: self._view("A", self._A), doc="Observation model, float32 read-only.")
    B = property(lambda self: self._view("B", self._B), doc="Transition model, float32 read-only.")
    C = property(lambda self: self._view("C", self._C), doc="Log-preferences, float32 read-only.")
    D = property(lambda self: self._view("D", self._D), doc="Initial-state prior, float32 read-only.")
    pA = property(lambda self: self._view("pA", self._pA, np.float64))
    pB = property(lambda self: self._view("pB", self._pB, np.float64))
    pD = property(lambda self: self._view("pD", self._pD, np.float64))
    H = property(lambda self: self._view("H", self._H))

    @property
    def E(self) -> np.ndarray:
        """Prior over policies, float32 read-only."""
        return self._view("E", [self._E])[0]

    @property
    def I(self):
        """Inductive-inference reachability per factor (None without H)."""
        return self._view("I", self._I)

    @property
    def num_policies(self) -> int:
        return len(self.policies)

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed model the kernels read."""
        return self.kmodel.nbytes

    def replace(self, **changes) -> "GenerativeModel":
        """A new model with some arrays or options changed (this one is left as it is)."""
        kw = self._kwargs()
        kw.update(changes)
        return GenerativeModel(**kw)

    def _kwargs(self) -> dict:
        return dict(A=self._A, B=self._B, C=self._C, D=self._D, E=self._E,
                    pA=self._pA, pB=self._pB, pD=self._pD, H=self._H,
                    A_factor_list=self.A_factor_list, B_factor_list=self.B_factor_list,
                    policy_len=self.policy_len, control_fac_idx=self.control_fac_idx,
                    policies=self.policies, ii_depth=self.ii_depth,
                    ii_threshold=self.ii_threshold, sparse=self.sparse)

    def __repr__(self) -> str:
        return (f"GenerativeModel(num_states={self.num_states}, num_obs={self.num_obs}, "
                f"num_controls={self.num_controls}, policies={self.num_policies}, "
                f"sparse={self.is_sparse})")
