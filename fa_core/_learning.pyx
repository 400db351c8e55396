# cython: language_level=3
"""Compiled Dirichlet learning: one agent's update, and a population's in one parallel call.

The per-agent functions (joint of factor beliefs, the masked count update, the
normalisation of counts into a matrix's kernel values) are declared once, in
``_learning.pxd``, and used here by:

* :func:`dirichlet_add` and :func:`pack_counts`, what ``fa_core.Agent`` and
  ``fa_core.model`` call for one agent's dense counts;
* :func:`population_learn`, which updates every agent of a
  :class:`fa_core.Population` in one ``nogil`` loop (OpenMP over agents).

How a population's learned values reach its inference kernels
-------------------------------------------------------------
A population's counts live in :class:`fa_core.population_learning.LearnedParams`:
per learned matrix, one row per agent of counts (float64) and of the values
derived from them (``val``, ``logval``, the information-gain weight ``wval``,
column entropies), all in the *pattern* of the shared model's matrix (its CSC
positions when sparse), so a learning agent never holds a dense copy of a
sparse matrix. Each agent that has learned gets a private ``KModel`` derived
from the shared one with ``KModel.with_changes``: it shares every unlearned
matrix and table with the shared model and points its learned matrices at the
agent's rows. The population driver (``_kernels.population_stages``) takes a
table of these models' C structs, one per agent (0: the shared model), and runs
each agent's kernels on its own struct; an agent that never learned reads the
shared model. This module updates the rows in place, so a learning step
allocates nothing and rebuilds no model.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cython.parallel cimport prange, threadid
from libc.math cimport log, INFINITY

cimport numpy as cnp

from fa_core._learning cimport dirichlet_update, normalise_counts
from fa_core._math cimport EPS_D, joint_of_marginals

cnp.import_array()


def dirichlet_add(double[::1] counts, const double[::1] a, const double[::1] b, double lr,
                  Py_ssize_t stride, Py_ssize_t offset):
    """Dirichlet count update in place: ``counts[r, c] += lr * a[r] * b[c]`` where ``counts > 0``.

    ``counts`` is a flat float64 array read as a (len(a), len(b)) matrix whose
    element (r, c) is at ``(r * len(b) + c) * stride + offset`` (stride and
    offset pick one control's slice of pB, whose last axis is the control).
    Entries that are zero stay zero: pymdp masks its update with ``A > 0``.
    """
    cdef Py_ssize_t r, c, nr = a.shape[0], nc = b.shape[0], j
    cdef double ar
    if (nr * nc - 1) * stride + offset >= counts.shape[0]:
        raise ValueError("counts is smaller than the update it receives")
    with nogil:
        for r in range(nr):
            ar = lr * a[r]
            if ar != 0.0:
                for c in range(nc):
                    j = (r * nc + c) * stride + offset
                    if counts[j] > 0.0:
                        counts[j] += ar * b[c]


cdef int c_gather_counts(const double[:, :] p, const int* indptr, const int* idx, bint sparse,
                         Py_ssize_t n, double* out, double* colsum) noexcept nogil:
    """Check dense counts ``p`` and copy them into a pattern (``out``, ``n`` values).

    Returns pack_counts's codes: 1 a count negative or not finite, 2 a column
    of zeros, 3 non-zeros other than the pattern's positions.
    """
    cdef Py_ssize_t rows = p.shape[0], cols = p.shape[1], r, k, j, nz = 0
    cdef double x
    for k in range(cols):
        colsum[k] = 0.0
    for r in range(rows):
        for k in range(cols):
            x = p[r, k]
            if not (x >= 0.0 and x < INFINITY):  # NaN fails both
                return 1
            if x != 0.0:
                colsum[k] += x
                nz += 1
    for k in range(cols):
        if colsum[k] <= 0.0:
            return 2
    if not sparse:
        for r in range(rows):
            for k in range(cols):
                out[r * cols + k] = p[r, k]
        return 0
    if nz != n:
        return 3
    for k in range(cols):
        for j in range(indptr[k], indptr[k + 1]):
            x = p[idx[j], k]
            if x <= 0.0:
                return 3
            out[j] = x
    return 0


def pack_counts(const double[:, :] p, const int[::1] indptr, const int[::1] idx,
                float[::1] val, float[::1] logval, float[::1] col_H, float[::1] wval,
                double[::1] work):
    """Normalise Dirichlet counts ``p`` (rows, cols) by column into a matrix's kernel layout.

    Writes, in one pass and in place, what a learning update changes:
    ``val`` = p / column sums (dense row-major, or at the CSC positions
    ``indptr`` / ``idx`` when these are given), ``logval`` = log(val + 1e-16),
    ``col_H`` = per-column sum of val log(val + exp(-16)), and ``wval`` =
    pymdp's masked spm_wnorm of ``p``; each of the last three may be None.
    ``work`` (length 3 * cols) is work space.

    Returns 0; 1 if a count is negative or not finite; 2 if a column sums to
    zero; 3 if the non-zeros of ``p`` are not exactly the CSC positions (the
    caller then builds a new pattern).
    """
    cdef Py_ssize_t rows = p.shape[0], cols = p.shape[1]
    cdef int code
    cdef bint sparse = indptr is not None
    cdef bint do_log = logval is not None, do_H = col_H is not None, do_w = wval is not None
    if work.shape[0] < 3 * cols:
        raise ValueError("work must hold 3 * cols values")
    cdef Py_ssize_t n = idx.shape[0] if sparse else rows * cols
    if (val.shape[0] != n or (do_log and logval.shape[0] != n) or (do_w and wval.shape[0] != n)
            or (do_H and col_H.shape[0] != cols) or (sparse and indptr.shape[0] != cols + 1)):
        raise ValueError("output arrays do not match the layout")
    cdef double* counts = <double*>PyMem_Malloc(max(n, 1) * sizeof(double))
    if counts == NULL:
        raise MemoryError()
    cdef const int* ip = &indptr[0] if sparse else NULL
    cdef const int* ix = &idx[0] if sparse else NULL
    try:
        with nogil:
            code = c_gather_counts(p, ip, ix, sparse, n, counts, &work[0])
            if code == 0:
                normalise_counts(counts, <int>rows, <int>cols, ip, ix, &val[0],
                                 &logval[0] if do_log else NULL, &col_H[0] if do_H else NULL,
                                 &wval[0] if do_w else NULL, &work[0], NULL)
    finally:
        PyMem_Free(counts)
    return code


cdef struct LearnMat:
    int rows
    int cols
    Py_ssize_t n        # values per agent in the pattern
    const int* indptr   # CSC, or NULL (dense row-major)
    const int* idx
    const int* dep      # parent factors of the columns
    int nd
    int index           # modality (A) or factor (B, D)
    int control         # B: the control whose slice this is
    double* counts      # (agents, n) rows
    float* val          # (agents, n)
    float* logval       # (agents, n) or NULL
    float* wval         # (agents, n) or NULL
    float* col_H        # (agents, cols) or NULL


cdef inline void _log_normalised(const double* counts, int n, float* out) noexcept nogil:
    """``out = log(counts / sum(counts) + 1e-16)``: log D from pD (one factor)."""
    cdef double tot = 0.0
    cdef int r
    for r in range(n):
        tot += counts[r]
    for r in range(n):
        out[r] = <float>log(counts[r] / tot + EPS_D)


cdef void c_learn_agent(const LearnMat* mats, int n_mats, int kind, int update, Py_ssize_t i,
                        const float* qs, const float* qs_prev, const int* obs, const int* action,
                        double lr, const int* s_off, const int* ns, int nf, int nm,
                        double* sc) noexcept nogil:
    """Agent ``i``'s update of every matrix in ``mats`` (kind 0: A, 1: B, 2: D); with
    ``update`` 0 only the values derived from the counts are recomputed (restoring)."""
    cdef int t, r, f
    cdef const LearnMat* M
    cdef double* joint
    cdef double* a
    cdef double* work
    cdef unsigned char* changed
    cdef Py_ssize_t S = s_off[nf]
    for t in range(n_mats):
        M = &mats[t]
        joint = sc
        a = sc + M.cols
        work = a + M.rows
        changed = <unsigned char*>(work + 3 * M.cols)  # cols flags (M.cols doubles of room)
        for r in range(M.cols):
            changed[r] = 0
        if kind == 2:
            # pD[f] read as a (1, ns[f]) matrix, as Agent.update_D does; D = pD / sum(pD).
            # D's rows hold every factor (S values, log D in val): factor f at s_off[f]
            f = M.index
            if update:
                for r in range(M.cols):
                    joint[r] = qs[i * S + s_off[f] + r]
                dirichlet_update(M.counts + i * M.n + s_off[f], 1, M.cols, NULL, NULL, NULL,
                                 0, joint, lr, NULL)
            _log_normalised(M.counts + i * M.n + s_off[f], M.cols, M.val + i * M.n + s_off[f])
            continue
        if update and kind == 0:
            joint_of_marginals(ns, s_off, qs + i * S, M.dep, M.nd, -1, joint)
            dirichlet_update(M.counts + i * M.n, M.rows, M.cols, M.indptr, M.idx, NULL,
                             obs[i * nm + M.index], joint, lr, changed)
        elif update:  # kind 1
            f = M.index
            if action[i * nf + f] != M.control:
                continue  # only the slice of the action taken learns
            joint_of_marginals(ns, s_off, qs_prev + i * S, M.dep, M.nd, -1, joint)
            for r in range(M.rows):
                a[r] = qs[i * S + s_off[f] + r]
            dirichlet_update(M.counts + i * M.n, M.rows, M.cols, M.indptr, M.idx, a, 0,
                             joint, lr, changed)
        normalise_counts(M.counts + i * M.n, M.rows, M.cols, M.indptr, M.idx, M.val + i * M.n,
                         M.logval + i * M.n if M.logval != NULL else NULL,
                         M.col_H + i * M.cols if M.col_H != NULL else NULL,
                         M.wval + i * M.n if M.wval != NULL else NULL, work,
                         changed if update else NULL)


cdef inline int _ints_ptr(object arr, const int** out) except -1:
    cdef const int[::1] v
    if arr is None:
        out[0] = NULL
        return 0
    v = arr
    out[0] = &v[0]
    return 0


def population_learn(int kind, list mats, const float[:, ::1] qs, object qs_prev, object obs,
                     object actions, double lr, const int[::1] s_off, const int[::1] ns,
                     double[:, ::1] scratch, int n_threads, bint update=True):
    """Dirichlet update of every agent's counts, in place, in one parallel loop.

    ``kind`` 0 learns A from ``obs`` (n, num_modalities) int32 and ``qs``; 1
    learns B from ``qs`` (next states), ``qs_prev`` (parents) and ``actions``
    (n, num_factors) int32, one control's slice per factor; 2 learns D from
    ``qs`` (the initial beliefs). ``mats`` lists the matrices to learn as dicts
    (``rows``, ``cols``, ``indptr`` / ``idx`` or None, ``dep``, ``index``,
    ``control``, and the agents' rows ``counts``, ``val``, ``logval``, ``wval``,
    ``col_H``; for D ``val`` holds log D); their first dimension is at least
    the number of agents. ``scratch`` has one row per thread of at least
    5 * cols + rows doubles for every matrix. Only the columns whose counts
    changed value are renormalised. Shapes were checked by the caller
    (:class:`fa_core.population_learning.LearnedParams`); counts stay positive
    because learning rates are non-negative, so no agent can fail. ``update``
    False recomputes every matrix's values from its counts without learning
    (a restored population).
    """
    cdef Py_ssize_t n = qs.shape[0], i
    cdef int t, n_mats = len(mats), nf = ns.shape[0]
    cdef int nm = 0
    cdef const float[:, ::1] prev_v
    cdef const int[:, ::1] obs_v
    cdef const int[:, ::1] act_v
    cdef const float* prev_p = NULL
    cdef const int* obs_p = NULL
    cdef const int* act_p = NULL
    cdef double[:, ::1] c64
    cdef float[:, ::1] f32
    cdef const int[::1] dep_v
    if n == 0 or n_mats == 0:
        return
    if not update:
        pass
    elif kind == 0:
        obs_v = obs
        obs_p = &obs_v[0, 0]
        nm = obs_v.shape[1]
    elif kind == 1:
        prev_v = qs_prev
        prev_p = &prev_v[0, 0]
        act_v = actions
        act_p = &act_v[0, 0]
    cdef LearnMat* tab = <LearnMat*>PyMem_Malloc(n_mats * sizeof(LearnMat))
    if tab == NULL:
        raise MemoryError()
    keep = []  # the memoryviews' arrays stay alive through the loop (mats holds them too)
    try:
        for t in range(n_mats):
            d = mats[t]
            tab[t].rows = d["rows"]
            tab[t].cols = d["cols"]
            _ints_ptr(d["indptr"], &tab[t].indptr)
            _ints_ptr(d["idx"], &tab[t].idx)
            dep_v = d["dep"]
            tab[t].dep = &dep_v[0]
            tab[t].nd = dep_v.shape[0]
            tab[t].index = d["index"]
            tab[t].control = d["control"]
            c64 = d["counts"]
            tab[t].counts = &c64[0, 0]
            tab[t].n = c64.shape[1]
            f32 = d["val"]
            tab[t].val = &f32[0, 0]
            tab[t].logval = tab[t].wval = tab[t].col_H = NULL
            if d.get("logval") is not None:
                f32 = d["logval"]
                tab[t].logval = &f32[0, 0]
            if d.get("wval") is not None:
                f32 = d["wval"]
                tab[t].wval = &f32[0, 0]
            if d.get("col_H") is not None:
                f32 = d["col_H"]
                tab[t].col_H = &f32[0, 0]
            keep.append(d)
        if n_threads < 1:
            n_threads = 1
        for i in prange(n, nogil=True, num_threads=n_threads, schedule="static", chunksize=16):
            c_learn_agent(tab, n_mats, kind, update, i, &qs[0, 0], prev_p, obs_p, act_p, lr,
                          &s_off[0], &ns[0], nf, nm, &scratch[threadid(), 0])
    finally:
        PyMem_Free(tab)
