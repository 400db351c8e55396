# cython: language_level=3
"""pymdp-typed (float64) copies of an agent's float32 state, and the check that they are unchanged.

The kernels keep beliefs and policy posteriors in float32 buffers; pymdp's API
hands out float64 arrays that the user may write into. These helpers build
those copies without numpy's per-call overhead, and tell at the next call
whether the user changed one (item assignment, in-place arithmetic, any
write), so the agent can load it back. Nothing here allocates but the copies.
"""

cimport numpy as cnp
import numpy as np

cnp.import_array()


cdef cnp.ndarray _f64(const float* src, Py_ssize_t n):
    cdef cnp.npy_intp dim = n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_FLOAT64, 0)
    cdef double* d = <double*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t i
    for i in range(n):
        d[i] = src[i]
    return out


def f64_vector(const float[::1] buf):
    """``buf`` as a new float64 array."""
    return _f64(&buf[0], buf.shape[0]) if buf.shape[0] else np.empty(0)


def f64_factors(const float[::1] buf, const cnp.int64_t[::1] bounds):
    """Object array of float64 copies of ``buf[bounds[f]:bounds[f + 1]]``, one per factor."""
    cdef Py_ssize_t f, nf = bounds.shape[0] - 1
    cdef cnp.npy_intp dim = nf
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_OBJECT, 0)
    for f in range(nf):
        out[f] = _f64(&buf[0] + bounds[f], bounds[f + 1] - bounds[f])
    return out


cdef bint _differs(object a, const float* src, Py_ssize_t n):
    """Whether ``a`` is anything but a 1-D float64 array equal to ``src[:n]``."""
    if not cnp.PyArray_Check(a):
        return True
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != cnp.NPY_FLOAT64 or cnp.PyArray_NDIM(arr) != 1
            or cnp.PyArray_DIMS(arr)[0] != n):
        return True
    cdef char* p = <char*>cnp.PyArray_DATA(arr)
    cdef cnp.npy_intp stride = cnp.PyArray_STRIDES(arr)[0]
    cdef Py_ssize_t i
    for i in range(n):
        # exact: the copy was made from these float32 values; NaN != NaN also counts
        if (<double*>(p + i * stride))[0] != <double>src[i]:
            return True
    return False


def vector_differs(object a, const float[::1] buf):
    """Whether the float64 copy ``a`` no longer equals ``buf``."""
    return _differs(a, &buf[0] if buf.shape[0] else NULL, buf.shape[0])


def factors_differ(object container, const float[::1] buf, const cnp.int64_t[::1] bounds):
    """Whether a :func:`f64_factors` container (or its entries) was changed."""
    cdef Py_ssize_t f, nf = bounds.shape[0] - 1
    if not cnp.PyArray_Check(container) or container.dtype != object or container.shape != (nf,):
        return True
    for f in range(nf):
        if _differs(container[f], &buf[0] + bounds[f], bounds[f + 1] - bounds[f]):
            return True
    return False


# ---------------------------------------------------------------------------
# Trees of views that nobody else holds, refilled in place (MMP's qs[p][t][f])
# ---------------------------------------------------------------------------

from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE

cdef extern from *:
    """
    /* whether o has live weak references (a weakref could reach it later) */
    static inline int fa_views_has_weakrefs(PyObject* o) {
        Py_ssize_t off = Py_TYPE(o)->tp_weaklistoffset;
        return off > 0 && *(PyObject**)((char*)o + off) != NULL;
    }
    """
    bint fa_views_has_weakrefs(PyObject* o)


cdef extern from *:
    """
    #define FA_AO(o) ((PyArrayObject*)(o))
    #define fa_views_ndim(o) PyArray_NDIM(FA_AO(o))
    #define fa_views_type(o) PyArray_TYPE(FA_AO(o))
    #define fa_views_flags(o) PyArray_FLAGS(FA_AO(o))
    #define fa_views_data(o) PyArray_DATA(FA_AO(o))
    #define fa_views_dims(o) PyArray_DIMS(FA_AO(o))
    #define fa_views_strides(o) PyArray_STRIDES(FA_AO(o))
    #define fa_views_size(o) PyArray_SIZE(FA_AO(o))
    #define fa_views_c_contiguous(o) PyArray_IS_C_CONTIGUOUS(FA_AO(o))
    #define fa_views_is_array(o) PyArray_Check(o)
    """
    int fa_views_ndim(PyObject* o)
    int fa_views_type(PyObject* o)
    int fa_views_flags(PyObject* o)
    void* fa_views_data(PyObject* o)
    cnp.npy_intp* fa_views_dims(PyObject* o)
    cnp.npy_intp* fa_views_strides(PyObject* o)
    cnp.npy_intp fa_views_size(PyObject* o)
    bint fa_views_c_contiguous(PyObject* o)
    bint fa_views_is_array(PyObject* o)


cdef inline bint _put(cnp.int64_t* rec, Py_ssize_t n_rec, Py_ssize_t* k, cnp.int64_t v,
                      bint compare) noexcept:
    """Record ``v`` at ``rec[k]`` (or, with ``compare``, whether it is there); advance k."""
    cdef Py_ssize_t i = k[0]
    k[0] = i + 1
    if compare:
        return i < n_rec and rec[i] == v
    if rec != NULL:
        rec[i] = v
    return True


cdef Py_ssize_t _walk(list nodes, cnp.int64_t* rec, Py_ssize_t n_rec, bint compare):
    """Fingerprint of ``nodes`` (ndarrays): per node its reference count, data pointer,
    flags, dtype, shape and strides and, for object arrays, the addresses of the items.

    Without ``compare`` writes it to ``rec`` (if not NULL) and returns its length; with
    ``compare`` returns -1 at the first difference from ``rec``. Borrowed references only:
    reading changes no count.
    """
    cdef Py_ssize_t i, j, k = 0, n = PyList_GET_SIZE(nodes), size
    cdef PyObject* o
    cdef PyObject** items
    cdef int d, nd, typ
    cdef bint ok = True
    for i in range(n):
        o = <PyObject*>PyList_GET_ITEM(nodes, i)
        if not fa_views_is_array(o) or fa_views_has_weakrefs(o):
            return -1
        nd = fa_views_ndim(o)
        typ = fa_views_type(o)
        ok = (_put(rec, n_rec, &k, o.ob_refcnt, compare)
              and _put(rec, n_rec, &k, <cnp.int64_t><size_t>fa_views_data(o), compare)
              and _put(rec, n_rec, &k, fa_views_flags(o), compare)
              and _put(rec, n_rec, &k, typ, compare) and _put(rec, n_rec, &k, nd, compare))
        for d in range(nd):
            ok = ok and _put(rec, n_rec, &k, fa_views_dims(o)[d], compare) \
                and _put(rec, n_rec, &k, fa_views_strides(o)[d], compare)
        if typ == cnp.NPY_OBJECT:
            if not fa_views_c_contiguous(o):
                return -1
            items = <PyObject**>fa_views_data(o)
            size = fa_views_size(o)
            for j in range(size):
                ok = ok and _put(rec, n_rec, &k, <cnp.int64_t><size_t>items[j], compare)
        if not ok:
            return -1
    if compare and k != n_rec:
        return -1
    return k


def tree_state(list nodes):
    """The fingerprint :func:`refill_tree` checks: call it when ``nodes`` (the list of
    every ndarray of a tree of views, the float64 array they view last) and the tree's
    own links hold the only references to them."""
    cdef Py_ssize_t n = _walk(nodes, NULL, 0, False)
    if n < 0:
        raise ValueError("tree_state needs ndarrays without weak references (object arrays "
                         "C-contiguous)")
    cdef cnp.npy_intp dim = n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_INT64, 0)
    _walk(nodes, <cnp.int64_t*>cnp.PyArray_DATA(out), n, False)
    return out


def refill_tree(list nodes, const cnp.int64_t[::1] state, const float[:, :, ::1] values,
                Py_ssize_t n_steps):
    """If the tree ``nodes`` is as :func:`tree_state` recorded it (no reference, weak
    reference or change from outside since: nobody can see it), write
    ``values[:, :n_steps]`` into its last node (float64, C-contiguous, shape
    ``(values.shape[0], n_steps, values.shape[2])``) and return True; else False and
    nothing is written.
    """
    if PyList_GET_SIZE(nodes) == 0 or state.shape[0] == 0 \
            or _walk(nodes, &state[0], state.shape[0], True) < 0:
        return False
    cdef cnp.ndarray dst = <cnp.ndarray>PyList_GET_ITEM(nodes, PyList_GET_SIZE(nodes) - 1)
    cdef Py_ssize_t a, t, n_a = values.shape[0], n_s = values.shape[2]
    if (cnp.PyArray_TYPE(dst) != cnp.NPY_FLOAT64 or not cnp.PyArray_IS_C_CONTIGUOUS(dst)
            or cnp.PyArray_NDIM(dst) != 3 or cnp.PyArray_DIMS(dst)[0] != n_a
            or cnp.PyArray_DIMS(dst)[1] != n_steps or cnp.PyArray_DIMS(dst)[2] != n_s
            or n_steps > values.shape[1]):
        return False
    cdef double* out = <double*>cnp.PyArray_DATA(dst)
    cdef const float* v
    for a in range(n_a):
        v = &values[a, 0, 0]
        for t in range(n_steps * n_s):
            out[a * n_steps * n_s + t] = v[t]
    return True
