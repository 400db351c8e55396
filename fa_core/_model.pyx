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
from fa_core._states cimport evidence_scratch, infer_states_block_scratch

cnp.import_array()


cdef class KModel:
    """C view of a validated generative model.

    Built by :class:`fa_core.model.GenerativeModel` only. Holds references to
    every numpy array it points into, so the pointers stay valid for the
    object's lifetime. Immutable after construction.
    """
    def __cinit__(self):
        self.c.mats = NULL
        self._aH = NULL

    def __init__(self, dict ints, list mats, list a_H, list lnC, object lnE, object logD,
                 object I, int ii_depth):
        cdef int i
        keep = []
        self._keep = keep
        self.c.ns = self._ints(ints, "ns"); self.c.no = self._ints(ints, "no")
        self.c.nc = self._ints(ints, "nc"); self.c.s_off = self._ints(ints, "s_off")
        self.c.nc_off = self._ints(ints, "nc_off")
        self.c.a_dep = self._ints(ints, "a_dep"); self.c.a_dep_off = self._ints(ints, "a_dep_off")
        self.c.ng = len(ints["g_K"])
        self.c.a_group = self._ints(ints, "a_group")
        self.c.a_group_first = self._ints(ints, "a_group_first")
        self.c.g_dep = self._ints(ints, "g_dep"); self.c.g_dep_off = self._ints(ints, "g_dep_off")
        self.c.g_dep_vfe = self._ints(ints, "g_dep_vfe"); self.c.g_K = self._ints(ints, "g_K")
        self.c.g_off = self._ints(ints, "g_off")
        self.c.a_K = self._ints(ints, "a_K"); self.c.a_mat = self._ints(ints, "a_mat")
        self.c.wa_mat = self._ints(ints, "wa_mat")
        self.c.a_ntail = self._ints(ints, "a_ntail"); self.c.a_Khead = self._ints(ints, "a_Khead")
        self.c.a_red_off = self._ints(ints, "a_red_off")
        self.c.red_stride = int(ints["red_stride"])
        self.c.b_dep = self._ints(ints, "b_dep"); self.c.b_dep_off = self._ints(ints, "b_dep_off")
        self.c.b_K = self._ints(ints, "b_K"); self.c.b_mat = self._ints(ints, "b_mat")
        self.c.wb_mat = self._ints(ints, "wb_mat")
        self.c.policies = self._ints(ints, "policies")
        self.c.nf = len(ints["ns"]); self.c.nm = len(ints["no"])
        self.c.S = int(np.sum(ints["ns"]))
        self.c.n_pol = int(ints["policies"].shape[0]); self.c.T = int(ints["policies"].shape[1])
        self.c.max_K = int(max(max(ints["a_K"]), max(ints["b_K"])))
        self.c.max_rows = int(max(max(ints["no"]), max(ints["ns"])))

        # the block kernel has no policy-invariant tail contraction (large models only)
        self.blocked = self.c.max_K <= BLOCK_MAX_K and self.c.red_stride == 0
        self.c.nll = int(np.sum(ints["a_K"]))
        max_nd = int(np.max(np.diff(ints["g_dep_off"])))
        # one factor has a closed form; unsorted parents need pymdp's reshaped free energy
        self.c.fpi_blocked = (self.blocked and self.c.nf > 1 and max_nd <= MAX_ND
                              and np.array_equal(ints["g_dep"], ints["g_dep_vfe"]))
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
        self.c.lnC_off = self._ints({"o": np.cumsum([0] + [np.size(c) for c in lnC])}, "o")
        self.lnC_size = int(sum(np.size(c) for c in lnC))
        self.c.lnE = self._floats(lnE)
        self.c.logD = self._floats(logD)
        self._set_I(I, ii_depth)
        self.s_off = np.asarray(ints["s_off"], dtype=np.intp)
        self.sum_obs = int(np.sum(ints["no"]))
        self.sum_controls = int(np.sum(ints["nc"]))
        self.c.max_nd = max_nd
        self.c.max_nc = int(np.max(ints["nc"]))
        # each size is written next to the kernel that carves it
        self.scratch_size = int(max(
            evidence_scratch(&self.c),                                    # infer_states
            infer_policies_scratch(&self.c),
            infer_policies_block_scratch(&self.c) if self.blocked else 0,
            infer_states_block_scratch(&self.c) if self.c.fpi_blocked else 0,
            sample_action_scratch(&self.c),
        ))

    cdef int* _ints(self, dict d, str key, list keep=None) except NULL:
        cdef cnp.ndarray arr = np.ascontiguousarray(d[key], dtype=np.int32)
        if arr.size == 0:
            arr = np.zeros(1, dtype=np.int32)
        (self._keep if keep is None else keep).append(arr)
        return <int*>cnp.PyArray_DATA(arr)

    cdef float* _floats(self, object x, list keep=None) except NULL:
        cdef cnp.ndarray arr = np.ascontiguousarray(x, dtype=np.float32)
        if arr.size == 0:
            arr = np.zeros(1, dtype=np.float32)
        (self._keep if keep is None else keep).append(arr)
        return <float*>cnp.PyArray_DATA(arr)

    cdef int _set_mat(self, int i, dict spec) except -1:
        cdef list keep = []
        cdef Mat* M = &self.c.mats[i]
        M.rows = spec["rows"]
        M.cols = spec["cols"]
        M.sparse = spec["sparse"]
        M.onehot = spec["onehot"]
        M.val = self._floats(spec["val"], keep)
        M.logval = NULL
        M.indptr = NULL
        M.idx = NULL
        M.rptr = NULL
        M.rcol = NULL
        if spec.get("logval") is not None:
            M.logval = self._floats(spec["logval"], keep)
        if spec["sparse"]:
            M.indptr = self._ints(spec, "indptr", keep)
            M.idx = self._ints(spec, "idx", keep)
        if spec["onehot"] and self.blocked:
            idx = keep[len(keep) - 1]  # M.idx's array, which learning keeps with the layout
            rows = self._rows_keep[i]
            if rows is None or rows[0] is not idx:
                rows = (idx, np.argsort(idx, kind="stable").astype(np.int32),
                        np.concatenate([[0], np.cumsum(np.bincount(idx, minlength=M.rows))])
                        .astype(np.int32))
                self._rows_keep[i] = rows
            M.rcol = self._ints({"c": rows[1]}, "c", keep)
            M.rptr = self._ints({"p": rows[2]}, "p", keep)
        self._mat_keep[i] = keep
        return 0

    cdef int _set_aH(self, int m, object a_H) except -1:
        cdef list keep = []
        self._aH[m] = self._floats(a_H, keep)
        self._aH_keep[m] = keep
        return 0

    cdef int _set_I(self, object I, int ii_depth) except -1:
        cdef list keep = []
        if I is None:
            self.c.has_I = 0
            self.c.ii_depth = 0
            self.c.ind = NULL
            self.c.I_off = NULL
        else:
            self.c.has_I = 1
            self.c.ii_depth = ii_depth
            self.c.ind = self._floats(I[0], keep)
            self.c.I_off = self._ints({"I_off": I[1]}, "I_off", keep)
        self._I_keep = keep
        return 0

    def with_changes(self, dict mats, dict a_H, object logD=None):
        """This model with some matrices replaced, in O(changes): what learning needs.

        ``mats`` maps a matrix index to its new spec (same shape), ``a_H`` a
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
        new._keep, new._I_keep = self._keep, self._I_keep
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
        arrays = list(self._keep) + list(self._I_keep)
        for keep in self._mat_keep + self._aH_keep:
            arrays.extend(keep)
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
