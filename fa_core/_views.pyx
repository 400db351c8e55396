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
