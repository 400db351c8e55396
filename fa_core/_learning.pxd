# Per-agent Dirichlet learning, declared once for every compiled module that cimports it
# (fa_core/_learning.pyx runs them over a population; see its docstring).
#
# A matrix's counts are stored in its kernel layout (the "pattern"): dense row-major
# (rows * cols values; indptr NULL) or CSC at the stored positions of the shared model's
# matrix (indptr / idx). Learning never creates non-zeros (pymdp masks with A > 0), so a
# pattern, once fixed, holds every count an agent can ever have.

from libc.math cimport logf

from fa_core._math cimport EPS, EPS_D, PRUNE_D


cdef inline void dirichlet_update(double* counts, int rows, int cols, const int* indptr,
                                  const int* idx, const double* a, int row, const double* b,
                                  double lr, unsigned char* changed) noexcept nogil:
    """``counts[r, c] += lr * a[r] * b[c]`` where ``counts > 0`` (pymdp's ``A > 0`` mask).

    ``a`` NULL: ``a`` is one-hot at ``row`` (an observed outcome index). ``changed``
    (optional, ``cols`` flags set by the caller to 0): columns a count of which changed
    value (beliefs of 1e-16 leave counts of order 1 as they are, so most columns of a
    large model do not change and need no renormalising).
    """
    cdef int r, k
    cdef Py_ssize_t j
    cdef double ar, x
    if indptr == NULL:
        for r in range(rows):
            if a == NULL:
                if r != row:
                    continue
                ar = lr
            else:
                ar = lr * a[r]
            if ar != 0.0:
                for k in range(cols):
                    j = <Py_ssize_t>r * cols + k
                    if counts[j] > 0.0:
                        x = counts[j] + ar * b[k]
                        if changed != NULL and x != counts[j]:
                            changed[k] = 1
                        counts[j] = x
        return
    for k in range(cols):
        for j in range(indptr[k], indptr[k + 1]):
            r = idx[j]
            if a == NULL:
                if r != row:
                    continue
                ar = lr
            else:
                ar = lr * a[r]
            if ar != 0.0 and counts[j] > 0.0:
                x = counts[j] + ar * b[k]
                if changed != NULL and x != counts[j]:
                    changed[k] = 1
                counts[j] = x


cdef inline void normalise_counts(const double* counts, int rows, int cols, const int* indptr,
                                  const int* idx, float* val, float* logval, float* col_H,
                                  float* wval, double* work,
                                  const unsigned char* only) noexcept nogil:
    """The matrix's kernel values from its counts, in the counts' pattern, in one pass.

    ``val`` = counts / column sums, ``logval`` = log(val + 1e-16) (pymdp's spm_log),
    ``col_H`` = per column sum of val log(val + exp(-16)) (the entropy term of spm_MDP_G)
    and ``wval`` = pymdp's spm_wnorm of the counts, masked to the non-zeros (the
    parameter information-gain weight); each of the last three may be NULL.
    Every column must hold a positive count (callers check). ``work``: 3 * cols doubles.
    ``only`` (optional, ``cols`` flags): the columns to compute; the others keep their
    values (computed before from the same counts, so the same).
    """
    cdef double* colsum = work
    cdef double* H = work + cols
    cdef double* wq = work + 2 * cols
    cdef int r, k
    cdef Py_ssize_t j
    cdef double x, p, h
    cdef double ent_eps = PRUNE_D  # exp(-16)
    cdef float eps = EPS
    cdef double eps_d = EPS_D
    for k in range(3 * cols):
        work[k] = 0.0
    if indptr == NULL:
        for r in range(rows):  # row order, as numpy's column sums of a row-major matrix
            for k in range(cols):
                if only != NULL and not only[k]:
                    continue
                x = counts[<Py_ssize_t>r * cols + k]
                if x != 0.0:
                    colsum[k] += x
    else:
        for k in range(cols):
            if only != NULL and not only[k]:
                continue
            for j in range(indptr[k], indptr[k + 1]):
                x = counts[j]
                if x != 0.0:
                    colsum[k] += x
    for k in range(cols):  # per-column reciprocals: one division per entry, not three
        if only != NULL and not only[k]:
            continue
        wq[k] = 1.0 / (colsum[k] + rows * eps_d)
        colsum[k] = 1.0 / colsum[k]
    if indptr == NULL:
        for r in range(rows):
            for k in range(cols):
                if only != NULL and not only[k]:
                    continue
                j = <Py_ssize_t>r * cols + k
                x = counts[j]
                p = x * colsum[k]
                val[j] = <float>p
                if logval != NULL:
                    logval[j] = logf(<float>p + eps)
                if col_H != NULL:
                    H[k] += p * logf(<float>(p + ent_eps))
                if wval != NULL:
                    wval[j] = <float>(wq[k] - 1.0 / (x + eps_d)) if x > 0.0 else 0.0
        if col_H != NULL:
            for k in range(cols):
                if only == NULL or only[k]:
                    col_H[k] = <float>H[k]
        return
    for k in range(cols):
        if only != NULL and not only[k]:
            continue
        h = 0.0
        for j in range(indptr[k], indptr[k + 1]):
            x = counts[j]
            p = x * colsum[k]
            val[j] = <float>p
            if logval != NULL:
                logval[j] = logf(<float>p + eps)
            if col_H != NULL:
                h += p * logf(<float>(p + ent_eps))
            if wval != NULL:
                wval[j] = <float>(wq[k] - 1.0 / (x + eps_d))
        if col_H != NULL:
            col_H[k] = <float>h
