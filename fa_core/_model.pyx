# cython: language_level=3
"""The typed compiled model (:class:`KModel`, declared in ``_model.pxd``) and the
observation check against it.

A model is described to C by a :c:type:`ModelC`: a table of matrices (each a
likelihood ``A[m]``, a transition slice ``B[f][..., u]`` or a parameter
information-gain weight), dense or sparse (CSC), plus per-model constants.
Every matrix maps a flattened joint state of its parent factors (column
``k``, C order over the factor list) to a distribution over rows.

Dense matrices are stored row-major, ``(rows, cols)``: a row is the
likelihood of one outcome over joint states (contiguous to read), and
``M @ x`` is one dot product per row. Sparse matrices are CSC, whose product
skips the zero entries of ``x`` column by column.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.string cimport memcpy

import numpy as np
cimport numpy as cnp

from fa_core._model cimport BLOCK_MAX_K, MAX_ND, Mat
from fa_core._policies cimport infer_policies_block_scratch, infer_policies_scratch
from fa_core._selection cimport sample_action_scratch
from fa_core._states cimport (evidence_scratch, infer_states_block_scratch,
                              infer_states_sparse_scratch)

cnp.import_array()


_LAYOUT_ARRAYS = ("ns", "no", "nc", "s_off", "nc_off", "a_dep", "a_dep_off", "a_K", "a_mat",
                  "wa_mat", "a_group", "a_group_first", "g_dep", "g_dep_off", "g_dep_vfe",
                  "g_K", "g_off", "a_ntail", "a_Khead", "a_red_off", "b_dep", "b_dep_off",
                  "b_K", "b_mat", "wb_mat", "policies")

cdef int _ZERO_INT[1]  # what an empty integer table points at (never read)


cdef int* _iptr(object arr):
    """Data of an int32 contiguous array held by a KernelLayout (which keeps it alive)."""
    cdef cnp.ndarray a = arr
    if a.size == 0:
        return _ZERO_INT
    return <int*>cnp.PyArray_DATA(a)


def _vector(object x, str name, int ndim=1):
    a = np.ascontiguousarray(x, dtype=np.int32)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axis(es), got shape {a.shape}")
    a.flags.writeable = False
    return a


cdef class MatSpec:
    """One kernel matrix (``A[m]``, a slice ``B[f][..., u]`` or an information-gain weight).

    Maps a flattened joint parent state (column) to a distribution over rows,
    stored dense row-major (``val`` of ``rows * cols``) or sparse CSC (``indptr``,
    ``idx``, ``val`` of the non-zeros). The kernels point into the arrays given,
    without a copy, so they must already be C-contiguous float32 / int32.

    Parameters
    ----------
    rows, cols : int
        Shape of the matrix.
    val : ndarray of float32
        Stored values.
    logval : ndarray of float32, optional
        ``log(val + 1e-16)`` in ``val``'s layout, when the model caches it.
    indptr, idx : ndarray of int32, optional
        CSC column pointers and row indices; both or neither (dense).
    onehot : bool
        Sparse with exactly one stored value per column (a deterministic map).

    Raises
    ------
    TypeError
        If an array has the wrong dtype or is not C-contiguous.
    ValueError
        If sizes disagree with ``rows`` / ``cols``.
    """
    def __init__(self, int rows, int cols, object val, *, object logval=None,
                 object indptr=None, object idx=None, bint onehot=False):
        if rows < 1 or cols < 1:
            raise ValueError(f"a kernel matrix needs rows, cols >= 1, got ({rows}, {cols})")
        if (indptr is None) != (idx is None):
            raise ValueError("indptr and idx must be given together (sparse) or not at all")
        _check_array(val, np.float32, "val")
        n = rows * cols
        if indptr is not None:
            _check_array(indptr, np.int32, "indptr")
            _check_array(idx, np.int32, "idx")
            if indptr.size != cols + 1 or idx.size != val.size:
                raise ValueError(f"sparse matrix ({rows}, {cols}): indptr must hold cols + 1 "
                                 f"and idx as many values as val ({val.size}), got "
                                 f"{indptr.size} and {idx.size}")
        elif val.size != n:
            raise ValueError(f"dense matrix ({rows}, {cols}) must hold {n} values, got "
                             f"{val.size}")
        if onehot and (indptr is None or val.size != cols):
            raise ValueError("onehot needs a sparse matrix with one value per column")
        if logval is not None:
            _check_array(logval, np.float32, "logval")
            if logval.size != val.size:
                raise ValueError(f"logval must hold {val.size} values, got {logval.size}")
        self.rows, self.cols = rows, cols
        self.sparse, self.onehot = indptr is not None, onehot
        self.val, self.logval, self.indptr, self.idx = val, logval, indptr, idx

    def with_values(self, object val, object logval=None):
        """This matrix's layout (shape, pattern) with other values (learning)."""
        return MatSpec(self.rows, self.cols, val, logval=logval, indptr=self.indptr,
                       idx=self.idx, onehot=self.onehot)

    @property
    def nbytes(self):
        """Bytes of the arrays this matrix holds."""
        return int(sum(a.nbytes for a in (self.val, self.logval, self.indptr, self.idx)
                       if a is not None))

    def __repr__(self):
        kind = "onehot" if self.onehot else ("sparse" if self.sparse else "dense")
        return f"MatSpec({self.rows}x{self.cols}, {kind}, {self.val.size} values)"


def _check_array(object a, object dtype, str name):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != 1 \
            or not a.flags.c_contiguous:
        got = (f"{a.dtype} of shape {a.shape}" if isinstance(a, np.ndarray)
               else type(a).__name__)
        raise TypeError(f"{name} must be a 1-D C-contiguous {np.dtype(dtype).name} array "
                        f"(the kernels point into it), got {got}")


cdef class KernelLayout:
    """The integer tables of a model's kernel layout (see ``ModelC`` in ``_model.pxd``).

    Built by :class:`fa_core.model.GenerativeModel` only; every argument is a
    keyword, converted once to a read-only int32 array (``red_stride`` an int).
    Modality ``m`` has parents ``a_dep[a_dep_off[m]:a_dep_off[m+1]]`` (joint size
    ``a_K[m]``) and kernel matrix ``a_mat[m]`` (``wa_mat[m]`` its pA weight, or -1);
    factor ``f`` has parents ``b_dep[b_dep_off[f]:...]`` (``b_K[f]``) and control
    slices from ``b_mat[f]`` (``wb_mat[f]``); ``a_group*`` / ``g_*`` group
    modalities sharing a parent list; ``a_ntail``, ``a_Khead``, ``a_red_off``,
    ``red_stride`` describe the policy-invariant tails; ``policies`` is
    ``(n_policies, T, n_factors)``.
    """
    def __init__(self, *, ns, no, nc, s_off, nc_off, a_dep, a_dep_off, a_K, a_mat, wa_mat,
                 a_group, a_group_first, g_dep, g_dep_off, g_dep_vfe, g_K, g_off,
                 a_ntail, a_Khead, a_red_off, int red_stride, b_dep, b_dep_off, b_K, b_mat,
                 wb_mat, policies):
        self.ns, self.no, self.nc = _vector(ns, "ns"), _vector(no, "no"), _vector(nc, "nc")
        self.s_off, self.nc_off = _vector(s_off, "s_off"), _vector(nc_off, "nc_off")
        self.a_dep, self.a_dep_off = _vector(a_dep, "a_dep"), _vector(a_dep_off, "a_dep_off")
        self.a_K, self.a_mat = _vector(a_K, "a_K"), _vector(a_mat, "a_mat")
        self.wa_mat = _vector(wa_mat, "wa_mat")
        self.a_group = _vector(a_group, "a_group")
        self.a_group_first = _vector(a_group_first, "a_group_first")
        self.g_dep, self.g_dep_off = _vector(g_dep, "g_dep"), _vector(g_dep_off, "g_dep_off")
        self.g_dep_vfe, self.g_K = _vector(g_dep_vfe, "g_dep_vfe"), _vector(g_K, "g_K")
        self.g_off = _vector(g_off, "g_off")
        self.a_ntail, self.a_Khead = _vector(a_ntail, "a_ntail"), _vector(a_Khead, "a_Khead")
        self.a_red_off = _vector(a_red_off, "a_red_off")
        self.red_stride = red_stride
        self.b_dep, self.b_dep_off = _vector(b_dep, "b_dep"), _vector(b_dep_off, "b_dep_off")
        self.b_K, self.b_mat = _vector(b_K, "b_K"), _vector(b_mat, "b_mat")
        self.wb_mat = _vector(wb_mat, "wb_mat")
        self.policies = _vector(policies, "policies", 3)
        nf, nm, ng = self.ns.size, self.no.size, self.g_K.size
        for name, n in (("nc", nf), ("s_off", nf + 1), ("nc_off", nf + 1), ("b_K", nf),
                        ("b_mat", nf), ("wb_mat", nf), ("b_dep_off", nf + 1),
                        ("a_K", nm), ("a_mat", nm), ("wa_mat", nm), ("a_dep_off", nm + 1),
                        ("a_group", nm), ("a_group_first", nm), ("a_ntail", nm),
                        ("a_Khead", nm), ("a_red_off", nm), ("g_dep_off", ng + 1),
                        ("g_off", ng + 1)):
            if getattr(self, name).size != n:
                raise ValueError(f"{name} must hold {n} values, got {getattr(self, name).size}")
        if nf < 1 or nm < 1 or ng < 1:
            raise ValueError("a layout needs at least one factor, modality and group")
        if self.policies.shape[0] < 1 or self.policies.shape[2] != nf:
            raise ValueError(f"policies must be (n_policies >= 1, T, {nf}), got "
                             f"{self.policies.shape}")


cdef class KModel:
    """C view of a validated generative model.

    Built by :class:`fa_core.model.GenerativeModel` only. Holds references to
    every numpy array it points into, so the pointers stay valid for the
    object's lifetime. Immutable after construction.

    Parameters
    ----------
    layout : KernelLayout
        The integer tables.
    mats : list of MatSpec
        The kernel matrices, indexed by ``layout.a_mat`` / ``b_mat`` / ``wa_mat`` / ``wb_mat``.
    a_H : list of ndarray
        Per modality, the column entropies of ``A[m]`` (``a_K[m]`` values).
    lnC : list of ndarray
        Per modality, log softmax C, ``(no[m], T)``.
    lnE : ndarray
        ``log(E + 1e-16)``, one per policy.
    logD : ndarray
        ``log(D + 1e-16)``, flat over factors.
    I_values, I_off : ndarray, optional
        Inductive matrices (flat) and each factor's offset into them; both or neither.
    ii_depth : int
        Rows of each inductive matrix.
    """
    def __cinit__(self):
        self.c.mats = NULL
        self._aH = NULL

    def __init__(self, KernelLayout layout not None, list mats not None, *, list a_H not None,
                 list lnC not None, object lnE, object logD, object I_values=None,
                 object I_off=None, int ii_depth=0):
        cdef int i
        cdef KernelLayout L = layout
        last = max(int(np.max(L.a_mat)), int(np.max(L.wa_mat)),
                   int(np.max(L.b_mat + L.nc)) - 1,
                   int(np.max(np.where(L.wb_mat >= 0, L.wb_mat + L.nc, 0))) - 1)
        if len(mats) <= last or int(np.min(L.a_mat)) < 0 or int(np.min(L.b_mat)) < 0:
            raise ValueError(f"the layout indexes matrices outside the {len(mats)} given")
        if len(a_H) != L.no.size or len(lnC) != L.no.size:
            raise ValueError(f"a_H and lnC must hold one entry per modality ({L.no.size})")
        self.layout = L
        self._keep = []
        self.c.ns, self.c.no, self.c.nc = _iptr(L.ns), _iptr(L.no), _iptr(L.nc)
        self.c.s_off, self.c.nc_off = _iptr(L.s_off), _iptr(L.nc_off)
        self.c.a_dep, self.c.a_dep_off = _iptr(L.a_dep), _iptr(L.a_dep_off)
        self.c.ng = L.g_K.size
        self.c.a_group, self.c.a_group_first = _iptr(L.a_group), _iptr(L.a_group_first)
        self.c.g_dep, self.c.g_dep_off = _iptr(L.g_dep), _iptr(L.g_dep_off)
        self.c.g_dep_vfe, self.c.g_K = _iptr(L.g_dep_vfe), _iptr(L.g_K)
        self.c.g_off = _iptr(L.g_off)
        self.c.a_K, self.c.a_mat, self.c.wa_mat = _iptr(L.a_K), _iptr(L.a_mat), _iptr(L.wa_mat)
        self.c.a_ntail, self.c.a_Khead = _iptr(L.a_ntail), _iptr(L.a_Khead)
        self.c.a_red_off = _iptr(L.a_red_off)
        self.c.red_stride = L.red_stride
        self.c.b_dep, self.c.b_dep_off = _iptr(L.b_dep), _iptr(L.b_dep_off)
        self.c.b_K, self.c.b_mat, self.c.wb_mat = _iptr(L.b_K), _iptr(L.b_mat), _iptr(L.wb_mat)
        self.c.policies = _iptr(L.policies)
        self.c.nf, self.c.nm = L.ns.size, L.no.size
        self.c.S = int(np.sum(L.ns))
        self.c.n_pol, self.c.T = L.policies.shape[0], L.policies.shape[1]
        self.c.max_K = int(max(np.max(L.a_K), np.max(L.b_K)))
        self.c.max_rows = int(max(np.max(L.no), np.max(L.ns)))

        # the block kernel has no policy-invariant tail contraction (large models only)
        self.blocked = self.c.max_K <= BLOCK_MAX_K and self.c.red_stride == 0
        self.c.nll = int(np.sum(L.a_K))
        max_nd = int(np.max(np.diff(L.g_dep_off)))
        # one factor has a closed form; unsorted parents need pymdp's reshaped free energy
        self.c.fpi_blocked = (self.blocked and self.c.nf > 1 and max_nd <= MAX_ND
                              and np.array_equal(L.g_dep, L.g_dep_vfe))
        self.c.n_mats = len(mats)
        self.c.mats = <Mat*>PyMem_Malloc(len(mats) * sizeof(Mat))
        self._aH = <float**>PyMem_Malloc(self.c.nm * sizeof(float*))
        if self.c.mats == NULL or self._aH == NULL:
            raise MemoryError()
        self.c.a_H = self._aH
        self._mat_keep = [None] * len(mats)
        self._aH_keep = [None] * self.c.nm
        self._rows_keep = [None] * len(mats)
        for i, spec in enumerate(mats):
            self._set_mat(i, spec)
        for i in range(self.c.nm):
            self._set_aH(i, a_H[i])
        self.c.lnC = self._floats(np.concatenate([np.ravel(c) for c in lnC]))
        lnC_off = _vector(np.cumsum([0] + [np.size(c) for c in lnC]), "lnC_off")
        self._keep.append(lnC_off)
        self.c.lnC_off = _iptr(lnC_off)
        self.lnC_size = int(sum(np.size(c) for c in lnC))
        self.c.lnE = self._floats(lnE)
        self.c.logD = self._floats(logD)
        self._set_I(I_values, I_off, ii_depth)
        self.s_off = np.asarray(L.s_off, dtype=np.intp)
        self.sum_obs = int(np.sum(L.no))
        self.sum_controls = int(np.sum(L.nc))
        self.c.max_nd = max_nd
        self.c.max_nc = int(np.max(L.nc))
        # each size is written next to the kernel that carves it
        self.scratch_size = int(max(
            evidence_scratch(&self.c),                                    # infer_states
            infer_states_sparse_scratch(&self.c) if self.c.nf == 1 else 0,
            infer_policies_scratch(&self.c),
            infer_policies_block_scratch(&self.c) if self.blocked else 0,
            infer_states_block_scratch(&self.c) if self.c.fpi_blocked else 0,
            sample_action_scratch(&self.c),
        ))

    cdef float* _floats(self, object x, list keep=None) except NULL:
        cdef cnp.ndarray arr = np.ascontiguousarray(x, dtype=np.float32)
        if arr.size == 0:
            arr = np.zeros(1, dtype=np.float32)
        (self._keep if keep is None else keep).append(arr)
        return <float*>cnp.PyArray_DATA(arr)

    cdef int _set_mat(self, int i, MatSpec spec) except -1:
        if spec is None:
            raise TypeError(f"matrix {i} must be a MatSpec, got None")
        cdef list keep = [spec]
        cdef Mat* M = &self.c.mats[i]
        cdef cnp.ndarray arr
        M.rows = spec.rows
        M.cols = spec.cols
        M.sparse = spec.sparse
        M.onehot = spec.onehot
        arr = spec.val
        M.val = <float*>cnp.PyArray_DATA(arr)   # MatSpec checked dtype and contiguity: no copy
        M.logval = NULL
        M.indptr = NULL
        M.idx = NULL
        M.rptr = NULL
        M.rcol = NULL
        if spec.logval is not None:
            arr = spec.logval
            M.logval = <float*>cnp.PyArray_DATA(arr)
        if spec.sparse:
            M.indptr = _iptr(spec.indptr)
            M.idx = _iptr(spec.idx)
        # rows of one-hot maps: the block kernel gathers through them, one-factor state
        # inference checks that an outcome's states were all predicted (_states)
        if spec.onehot and (self.blocked or self.c.nf == 1):
            idx = spec.idx  # kept with the layout by learning: the gather tables are reused
            rows = self._rows_keep[i]
            if rows is None or rows[0] is not idx:
                rows = (idx, np.argsort(idx, kind="stable").astype(np.int32),
                        np.concatenate([[0], np.cumsum(np.bincount(idx, minlength=M.rows))])
                        .astype(np.int32))
                self._rows_keep[i] = rows
            keep.append(rows)
            M.rcol = _iptr(rows[1])
            M.rptr = _iptr(rows[2])
        self._mat_keep[i] = keep
        return 0

    cdef int _set_aH(self, int m, object a_H) except -1:
        cdef list keep = []
        self._aH[m] = self._floats(a_H, keep)
        self._aH_keep[m] = keep
        return 0

    cdef int _set_I(self, object I_values, object I_off, int ii_depth) except -1:
        cdef list keep = []
        if (I_values is None) != (I_off is None):
            raise ValueError("I_values and I_off must be given together or not at all")
        if I_values is None:
            self.c.has_I = 0
            self.c.ii_depth = 0
            self.c.ind = NULL
            self.c.I_off = NULL
        else:
            self.c.has_I = 1
            self.c.ii_depth = ii_depth
            self.c.ind = self._floats(I_values, keep)
            off = _vector(I_off, "I_off")
            keep.append(off)
            self.c.I_off = _iptr(off)
        self._I_keep = keep
        return 0

    def with_changes(self, dict mats, dict a_H, object logD=None):
        """This model with some matrices replaced, in O(changes): what learning needs.

        ``mats`` maps a matrix index to its new :class:`MatSpec` (same shape), ``a_H`` a
        modality to its new column entropies, ``logD`` (optional) is the new
        log D. Everything else is shared with this model. The new model points
        into the arrays given (no copy), so a population's learned rows can be
        updated in place (fa_core._learning).
        """
        cdef KModel new = KModel.__new__(KModel)
        cdef int i
        new.c = self.c
        new.c.mats = <Mat*>PyMem_Malloc(self.c.n_mats * sizeof(Mat))
        new._aH = <float**>PyMem_Malloc(self.c.nm * sizeof(float*))
        if new.c.mats == NULL or new._aH == NULL:
            raise MemoryError()
        memcpy(new.c.mats, self.c.mats, self.c.n_mats * sizeof(Mat))
        memcpy(new._aH, self._aH, self.c.nm * sizeof(float*))
        new.c.a_H = new._aH
        new.layout, new._keep, new._I_keep = self.layout, self._keep, self._I_keep
        new._mat_keep, new._aH_keep = list(self._mat_keep), list(self._aH_keep)
        new._rows_keep = list(self._rows_keep)
        new.scratch_size, new.sum_obs = self.scratch_size, self.sum_obs
        new.sum_controls, new.lnC_size, new.s_off = self.sum_controls, self.lnC_size, self.s_off
        new.blocked = self.blocked  # before _set_mat, which reads it
        for i, spec in mats.items():
            if not 0 <= i < self.c.n_mats:
                raise IndexError(f"matrix index {i} out of range")
            new._set_mat(i, spec)
        for i, h in a_H.items():
            if not 0 <= i < self.c.nm:
                raise IndexError(f"modality index {i} out of range")
            new._set_aH(i, h)
        if logD is not None:
            if np.size(logD) != self.c.S:
                raise ValueError(f"logD must hold {self.c.S} values")
            new._keep = list(self._keep)  # _floats appends to it: not the shared list
            new.c.logD = new._floats(logD)
        return new

    @property
    def table_nbytes(self):
        """Bytes of this model's own C tables (matrix descriptors, entropy pointers): what a
        derived model holds besides the arrays it shares or was given."""
        return <Py_ssize_t>(self.c.n_mats * sizeof(Mat) + self.c.nm * sizeof(float*))

    @property
    def _c_address(self):
        """Address of this model's C struct: the population driver's per-agent model table
        holds it (the population keeps this object alive while the table does)."""
        return <size_t>&self.c

    def __dealloc__(self):
        PyMem_Free(self.c.mats)
        PyMem_Free(self._aH)

    @property
    def nbytes(self):
        """Bytes of the arrays this model points into (its share of memory)."""
        L = self.layout
        arrays = [getattr(L, name) for name in _LAYOUT_ARRAYS]
        arrays += list(self._keep) + list(self._I_keep)
        for keep in self._aH_keep:
            arrays.extend(keep)
        for keep in self._mat_keep:
            spec = keep[0]
            arrays.extend(a for a in (spec.val, spec.logval, spec.indptr, spec.idx)
                          if a is not None)
            if len(keep) > 1:  # the gather tables of a one-hot matrix (idx is the spec's)
                arrays.extend(keep[1][1:])
        return int(sum(a.nbytes for a in arrays))


def load_observation(KModel model, object observation, int[::1] out):
    """Check ``observation`` (one outcome index per modality) and write it into ``out``.

    Raises ValueError (wrong length, index out of range) or TypeError (not an
    integer) naming the entry, before anything is written.
    """
    cdef int nm = model.c.nm, m
    if out.shape[0] < nm:
        raise ValueError(f"out must hold {nm} values")
    if not isinstance(observation, (list, tuple, np.ndarray)) or len(observation) != nm:
        raise ValueError(f"observation must have one outcome per modality ({nm}), got "
                         f"{observation!r}")
    for m in range(nm):
        o = observation[m]
        if not isinstance(o, (int, np.integer)) or isinstance(o, (bool, np.bool_)):
            raise TypeError(f"observation[{m}] must be an integer outcome index, got {o!r}")
        if not 0 <= o < model.c.no[m]:
            raise ValueError(f"observation[{m}] = {o} out of range: modality {m} has "
                             f"{model.c.no[m]} outcomes (0..{model.c.no[m] - 1})")
    for m in range(nm):
        out[m] = observation[m]
