"""The math of fa_core's kernels, each piece written once: ``cdef inline`` point functions.

Every compiled module cimports what it needs from here (as numpy's
``numpy/random/*.pxd`` and scikit-learn's ``sklearn/_loss/_loss.pxd`` share their
point functions); the stage modules (``_states``, ``_policies``, ``_selection``,
``_kernels``' population driver, ``_mmp``, ``_sophisticated``) are the loops
around them. Each per-agent function that the 8-agent block kernels also need
has its twin right after it, suffixed ``_bl``: the same quantity for BL agents
with agents innermost (``x[i * BL + b]``), whose sums may run in another order
(results agree to float32 rounding; ``tests/test_kernel_library.py`` checks
each pair).

Precision: the Agent / Population kernels are float32 (``float``) with double
accumulators. Fused ``floating`` appears only where a double path is truly
needed: the sophisticated-inference search (``_sophisticated``) keeps its
beliefs in double, as pymdp's recursive search accumulates tiny branch
probabilities over many levels, so :func:`softmax`, :func:`joint_of_marginals` (whose
output precision is a second fused type, for learning's double joints of float32 beliefs),
:func:`inductive_row` / :func:`inductive_cost` and the dense spm_MDP_G terms
(:func:`predicted_outcomes`, :func:`state_info_gain_dense`) are fused, their
float instantiation serving the float32 kernels and marginal message passing.
"""

from cython cimport floating
from libc.math cimport logf, exp, log
from libc.string cimport memset, memcpy

from fa_core._model cimport BL, MAX_ND, Mat, ModelC

# two independent precisions for functions of two arrays (expected_utility,
# joint_of_marginals)
ctypedef fused real_a:
    float
    double

ctypedef fused real_b:
    float
    double

# pymdp's epsilons, the one place they are defined: spm_log adds 1e-16; spm_MDP_G adds
# exp(-16) inside the column entropy and prunes joint states with probability <= exp(-16);
# calc_inductive_cost uses log(1e-3). Float32 kernels compare and add the float values
# (EPS, LOG_EPS, PRUNE), double paths the double ones (EPS_D, PRUNE_D).
cdef extern from *:
    """
    #define FA_EPS ((float)1e-16)
    #define FA_EPS_D 1e-16
    #define FA_LOG_EPS ((float)-36.841361487904734)
    #define FA_PRUNE ((float)1.1253517471925912e-07)
    #define FA_PRUNE_D 1.1253517471925912e-07
    #define FA_LOG_INDUCTIVE_EPS -6.907755278982137
    """
    float EPS "FA_EPS"
    double EPS_D "FA_EPS_D"
    float LOG_EPS "FA_LOG_EPS"                  # log(1e-16)
    float PRUNE "FA_PRUNE"                      # exp(-16)
    double PRUNE_D "FA_PRUNE_D"
    double LOG_INDUCTIVE_EPS "FA_LOG_INDUCTIVE_EPS"   # log(1e-3)

cdef extern from "_simd.h":
    double fa_dot(const float* a, const float* x, int n) noexcept nogil
    void fa_exp_shifted(float* x, const float* sub, int n, int lanes) noexcept nogil
    void fa_sub_xlogx(const float* q, int n, int lanes, float eps, double* acc) noexcept nogil
    # vectorised array math (SSE2, or AVX2+FMA chosen at load time: see _simd.h)
    int fa_simd_level() noexcept nogil
    double fa_exp_sum(float* x, int n, float sub) noexcept nogil
    void fa_log_eps(const float* x, float* out, int n, float eps) noexcept nogil
    double fa_xlogx_sum(const float* q, int n, float eps) noexcept nogil
    double fa_xlogx_diff_sum(const float* q, const float* lp, int n, float eps) noexcept nogil
    double fa_dot_d(const float* a, const float* b, int n) noexcept nogil
    float fa_max(const float* x, int n) noexcept nogil
    float fa_exp1(float x, int isa) noexcept nogil
    float fa_log1(float x, int isa) noexcept nogil
    # the block kernels' rows of BL = 8 agents (bitwise the scalar loops they replace)
    void fa_marg1_bl8(const float* t, const float* q, float* o, double* ell, int n) noexcept nogil
    void fa_marg2_bl8(const float* t, const float* q0, const float* q1, float* o0, float* o1,
                      double* ell, int n0, int n1) noexcept nogil
    void fa_divergence_bl8(const float* q, const float* lq, const float* lp, int n,
                           double* F) noexcept nogil
    void fa_wsum_bl8(const float* a, const int* idx, int n, const float* x,
                     float* out) noexcept nogil
    void fa_softmax_log_bl8(float* x, float* logq, int n) noexcept nogil
    void fa_outer_bl8(const float* q0, int n0, const float* q1, int n1,
                      float* out) noexcept nogil
    void fa_wdot_bl8(const float* w, const float* x, int n, double* acc) noexcept nogil


# ---------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------

cdef inline void softmax(floating* x, int n) noexcept nogil:
    """``x = exp(x - max x) / sum`` in place (pymdp's softmax); the sum is double.

    The float instantiation runs the vector exp of ``_simd.h``; the double one libm's."""
    cdef int i
    cdef floating mx = x[0]
    cdef double tot = 0.0
    if floating is float:
        tot = fa_exp_sum(x, n, fa_max(x, n))
    else:
        for i in range(1, n):
            if x[i] > mx:
                mx = x[i]
        for i in range(n):
            x[i] = exp(x[i] - mx)
            tot += x[i]
    for i in range(n):
        x[i] = <floating>(x[i] / tot)


cdef inline void softmax_log_bl(float* x, float* logq, int n) noexcept nogil:
    """:func:`softmax` for BL agents, ``x`` (n, BL) in place, and its exact log into ``logq``:
    per agent the max, ``exp(x - max)`` (the vector polynomial), the sum in double, ``log`` of
    it and each division in double, rows of BL lanes at a time in ``_simd.h`` (whose plain C
    version spells out the loops)."""
    fa_softmax_log_bl8(x, logq, n)


# ---------------------------------------------------------------------------
# Joint of factor beliefs (outer product of marginals, C order)
# ---------------------------------------------------------------------------

cdef inline int joint_of_marginals(const int* ns, const int* s_off, const real_a* q,
                                   const int* dep, int nd, int skip,
                                   real_b* out) noexcept nogil:
    """Outer product (C order) of the marginals ``q[s_off[f]:s_off[f] + ns[f]]`` of the
    factors ``dep``; axis ``skip`` (if >= 0) contributes ones. Returns the joint size.

    Each entry is the product in factor order, as pymdp's ``spm_cross``, in ``out``'s
    precision: float32 beliefs into a double joint serve learning (``_learning``),
    one precision throughout the search (double) and the float32 kernels."""
    cdef int K = 1, d, f, n, i, j
    cdef real_b v
    out[0] = 1.0
    for d in range(nd):
        f = dep[d]
        n = ns[f]
        # expand in place from the back so earlier entries are still unread
        for i in range(K - 1, -1, -1):
            v = out[i]
            if d == skip:
                for j in range(n):
                    out[i * n + j] = v
            else:
                for j in range(n):
                    out[i * n + j] = v * q[s_off[f] + j]
        K *= n
    return K


cdef inline int joint_of(const ModelC* m, const float* qs, const int* dep,
                         int ndep, float* out) noexcept nogil:
    """Outer product of the marginals of ``dep`` (C order); returns its size."""
    cdef int n, i, j
    cdef float v
    cdef const float* q0
    cdef const float* q1
    if ndep == 2:  # the common case, written out (same products, no in-place expansion)
        q0 = qs + m.s_off[dep[0]]
        q1 = qs + m.s_off[dep[1]]
        n = m.ns[dep[1]]
        for i in range(m.ns[dep[0]]):
            v = q0[i]
            for j in range(n):
                out[i * n + j] = v * q1[j]
        return m.ns[dep[0]] * n
    return joint_of_marginals(m.ns, m.s_off, qs, dep, ndep, -1, out)


cdef inline void joint_of_bl(const ModelC* m, const float* qs, const int* dep, int ndep,
                             float* out) noexcept nogil:
    """:func:`joint_of` for BL agents: ``qs`` is (S, BL), ``out`` (K, BL)."""
    cdef int K = 1, d, n, i, j, b
    cdef const float* q
    cdef float v[BL]
    if ndep == 2:  # the common case, rows of BL lanes (the same products: 1 * q0 is q0)
        fa_outer_bl8(qs + m.s_off[dep[0]] * BL, m.ns[dep[0]], qs + m.s_off[dep[1]] * BL,
                     m.ns[dep[1]], out)
        return
    for b in range(BL):
        out[b] = 1.0
    for d in range(ndep):
        n = m.ns[dep[d]]
        q = qs + m.s_off[dep[d]] * BL
        for i in range(K - 1, -1, -1):  # in place from the back, as joint_of
            for b in range(BL):
                v[b] = out[i * BL + b]
            for j in range(n):
                for b in range(BL):
                    out[(i * n + j) * BL + b] = v[b] * q[j * BL + b]
        K *= n


# ---------------------------------------------------------------------------
# Small sums
# ---------------------------------------------------------------------------

cdef inline double dot4(const float* a, const float* x, int n) noexcept nogil:
    """Dot product: float partial sums (eight, in SSE lanes on x86-64), summed in double."""
    return fa_dot(a, x, n)


cdef inline double gather_dot(const float* a, const float* x, const int* idx,
                              int n) noexcept nogil:
    """sum over the listed k of a[k] * x[k], in four independent double sums (a single
    running sum would make every addition wait for the previous one)."""
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    cdef int c = 0
    while c + 4 <= n:
        s0 += <double>a[idx[c]] * x[idx[c]]
        s1 += <double>a[idx[c + 1]] * x[idx[c + 1]]
        s2 += <double>a[idx[c + 2]] * x[idx[c + 2]]
        s3 += <double>a[idx[c + 3]] * x[idx[c + 3]]
        c += 4
    while c < n:
        s0 += <double>a[idx[c]] * x[idx[c]]
        c += 1
    return (s0 + s1) + (s2 + s3)


cdef inline float min_of(const float* x, int n) noexcept nogil:
    cdef int i
    cdef float mn = x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
    return mn


cdef inline int joint_size(const ModelC* m, const int* dep, int ndep) noexcept nogil:
    cdef int d, K = 1
    for d in range(ndep):
        K *= m.ns[dep[d]]
    return K


# ---------------------------------------------------------------------------
# Matrices (dense row-major or CSC)
# ---------------------------------------------------------------------------

cdef inline void mat_vec(const Mat* M, const float* x, float* out) noexcept nogil:
    """out[rows] = M @ x."""
    cdef int k, r, j
    cdef float xk
    if M.onehot:
        memset(out, 0, M.rows * sizeof(float))
        for k in range(M.cols):
            out[M.idx[k]] += M.val[k] * x[k]
    elif M.sparse:
        memset(out, 0, M.rows * sizeof(float))
        for k in range(M.cols):
            xk = x[k]
            if xk != 0.0:
                for j in range(M.indptr[k], M.indptr[k + 1]):
                    out[M.idx[j]] += M.val[j] * xk
    else:
        for r in range(M.rows):
            out[r] = <float>dot4(M.val + <long long>r * M.cols, x, M.cols)


cdef inline void mat_vec_bl(const Mat* M, const float* x, float* out) noexcept nogil:
    """:func:`mat_vec` for BL agents: ``x`` is (cols, BL), ``out`` (rows, BL).

    Rows are summed in double (one-hot ones gathered through ``rptr``); other
    sparse matrices scatter their columns, BL agents at a time.
    """
    cdef int k, r, j, b
    cdef float a
    if M.sparse and not M.onehot:
        for r in range(M.rows * BL):
            out[r] = 0.0
        for k in range(M.cols):
            for j in range(M.indptr[k], M.indptr[k + 1]):
                a = M.val[j]
                r = M.idx[j]
                for b in range(BL):
                    out[r * BL + b] += a * x[k * BL + b]
        return
    # per row and agent: the float products a x summed in double (a zero entry adds +0 to
    # every lane, x is finite: skipped), rows of BL lanes in _simd.h
    for r in range(M.rows):
        if M.onehot:
            fa_wsum_bl8(M.val, M.rcol + M.rptr[r], M.rptr[r + 1] - M.rptr[r], x, out + r * BL)
        else:
            fa_wsum_bl8(M.val + <long long>r * M.cols, NULL, M.cols, x, out + r * BL)


cdef inline void mat_cols(const Mat* M, const float* x, const int* cols, int ncols,
                          float* out) noexcept nogil:
    """out[rows] = sum over the listed columns k of M[:, k] * x[k]."""
    cdef int c, k, r, j
    cdef float xk
    if M.sparse:
        memset(out, 0, M.rows * sizeof(float))
        for c in range(ncols):
            k = cols[c]
            xk = x[k]
            for j in range(M.indptr[k], M.indptr[k + 1]):
                out[M.idx[j]] += M.val[j] * xk
    else:  # row by row: each row is contiguous
        for r in range(M.rows):
            out[r] = <float>gather_dot(M.val + <long long>r * M.cols, x, cols, ncols)


# Sparse beliefs: a factor whose belief sits on a few states is rolled forward (and its
# outcomes predicted) over those states only. States at or below SPARSE_EPS are left out
# when the support is first listed, and only while their total mass is at most
# SPARSE_BUDGET: every belief and outcome predicted from it then differs from the dense
# one by at most that mass in L1 (stochastic columns do not grow it), far below float32
# rounding of the kept probabilities and the parity tolerances (1e-4).
cdef extern from *:
    """
    #define FA_SPARSE_EPS ((float)1e-10)
    #define FA_SPARSE_BUDGET 1e-9
    """
    float SPARSE_EPS "FA_SPARSE_EPS"
    double SPARSE_BUDGET "FA_SPARSE_BUDGET"


# Sparse beliefs, listing (sparse_support, list_nonzero): the nonzero states of a belief
# listed by skipping all-zero runs of 32 (their bits OR to 0; read through memcpy, so no
# aliasing question), the entries of a likelihood row read one column at a time, and a
# transition applied to packed (state, value) pairs (_states.c_infer_states_sparse).
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    static inline int fa_nonzero32(const float* x) {
        uint32_t a[32], o = 0;
        int i;
        memcpy(a, x, sizeof a);
        for (i = 0; i < 32; i++)  /* vectorised at -O3: eight 4-lane ORs */
            o |= a[i];
        return o != 0;
    }
    """
    int fa_nonzero32(const float* x) noexcept nogil


cdef inline int sparse_support(const float* x, int n, int* idx) noexcept nogil:
    """List (in ``idx``, ascending) the states of ``x`` above SPARSE_EPS; their count, or
    -1 when the sparse path does not pay (at least n / 4 states) or would move more than
    SPARSE_BUDGET of probability. ``idx`` may be NULL (count only). Runs of 32 zeros
    cost one test (adding them to the skipped mass would change nothing)."""
    cdef int k = 0, i, e, c = 0, lim = n // 4
    cdef double skipped = 0.0
    cdef float v
    while k < n:
        e = k + 32
        if e <= n and not fa_nonzero32(x + k):
            k = e
            continue
        if e > n:
            e = n
        for i in range(k, e):
            v = x[i]
            if v > SPARSE_EPS:
                if c >= lim:
                    return -1
                if idx != NULL:
                    idx[c] = i
                c += 1
            else:
                skipped += v
        k = e
    if skipped > SPARSE_BUDGET:
        return -1
    return c


cdef inline int mat_scatter_cols(const Mat* M, const float* x, const int* cols, int ncols,
                                 float* out, int* rows) noexcept nogil:
    """out += sum over the listed columns k of M[:, k] * x[k] for a sparse ``M``, with ``out``
    zero at every row it touches first; lists those rows in ``rows`` and returns their
    count. The terms are nonnegative, so a row is listed once."""
    cdef int c, k, j, r, nr = 0
    cdef float xk, v
    for c in range(ncols):
        k = cols[c]
        xk = x[k]
        for j in range(M.indptr[k], M.indptr[k + 1]):
            v = M.val[j] * xk
            if v != 0.0:
                r = M.idx[j]
                if out[r] == 0.0:
                    rows[nr] = r
                    nr += 1
                out[r] += v
    return nr


cdef inline void zero_listed(float* x, int n, const int* rows, int nr, int listed) noexcept nogil:
    """Zero ``x`` (n) given that only its ``nr`` listed rows can be nonzero when ``listed``."""
    cdef int i
    if listed:
        for i in range(nr):
            x[rows[i]] = 0.0
    else:
        memset(x, 0, n * sizeof(float))


cdef inline void mat_row_log(const Mat* M, int o, float* out) noexcept nogil:
    """out[k] = log(M[o, k] + 1e-16): log likelihood of outcome ``o``."""
    cdef int k, j
    if M.onehot:
        for k in range(M.cols):
            out[k] = M.logval[k] if M.idx[k] == o else LOG_EPS
    elif M.sparse:
        for k in range(M.cols):
            out[k] = LOG_EPS
            for j in range(M.indptr[k], M.indptr[k + 1]):
                if M.idx[j] == o:
                    out[k] = M.logval[j]
                    break
    elif M.logval != NULL:
        memcpy(out, M.logval + <long long>o * M.cols, M.cols * sizeof(float))
    else:  # large dense matrix: no log cache (see model.LOG_CACHE_MAX_ENTRIES)
        fa_log_eps(M.val + <long long>o * M.cols, out, M.cols, EPS)


cdef inline void mat_row_log_distr(const Mat* M, const float* p, float* out) noexcept nogil:
    """out[k] = log(sum_o p[o] M[o, k] + 1e-16): log likelihood of a distribution."""
    cdef int k, j, r
    cdef double acc
    cdef const float* row
    cdef float pr
    if M.sparse:
        for k in range(M.cols):
            acc = 0.0
            for j in range(M.indptr[k], M.indptr[k + 1]):
                acc += p[M.idx[j]] * M.val[j]
            out[k] = <float>acc
        fa_log_eps(out, out, M.cols, EPS)
    else:
        memset(out, 0, M.cols * sizeof(float))
        for r in range(M.rows):
            pr = p[r]
            if pr != 0.0:
                row = M.val + <long long>r * M.cols
                for k in range(M.cols):
                    out[k] += pr * row[k]
        fa_log_eps(out, out, M.cols, EPS)


cdef inline int list_nonzero(const float* x, int n, int* idx) noexcept nogil:
    """List (in ``idx``, ascending) the states where ``x`` is not zero; their count.

    Runs of 32 zeros cost one test, so a belief held at exact zeros outside a few
    states is listed at a fraction of an instruction per state."""
    cdef int k = 0, i, c = 0
    while k + 32 <= n:
        if fa_nonzero32(x + k):
            for i in range(k, k + 32):
                if x[i] != 0.0:
                    idx[c] = i
                    c += 1
        k += 32
    for i in range(k, n):
        if x[i] != 0.0:
            idx[c] = i
            c += 1
    return c


cdef inline float mat_log_at(const Mat* M, int o, int k) noexcept nogil:
    """log(M[o, k] + 1e-16): entry ``k`` of :func:`mat_row_log` (the same float)."""
    cdef int j
    if M.onehot:
        return M.logval[k] if M.idx[k] == o else LOG_EPS
    if M.sparse:
        for j in range(M.indptr[k], M.indptr[k + 1]):
            if M.idx[j] == o:
                return M.logval[j]
        return LOG_EPS
    if M.logval != NULL:
        return M.logval[<long long>o * M.cols + k]
    return fa_log1(M.val[<long long>o * M.cols + k] + EPS, fa_simd_level())


cdef inline int mat_scatter_vals(const Mat* M, const int* cols, const float* vals, int ncols,
                                 float* out, int* rows) noexcept nogil:
    """:func:`mat_scatter_cols` with the column weights packed (``vals[c]`` for column
    ``cols[c]``): out += M[:, cols] @ vals, ``out`` zero at every row it touches first;
    lists those rows in ``rows`` and returns their count."""
    cdef int c, k, j, r, nr = 0
    cdef float xk, v
    for c in range(ncols):
        k = cols[c]
        xk = vals[c]
        for j in range(M.indptr[k], M.indptr[k + 1]):
            v = M.val[j] * xk
            if v != 0.0:
                r = M.idx[j]
                if out[r] == 0.0:
                    rows[nr] = r
                    nr += 1
                out[r] += v
    return nr


cdef inline double mat_quad(const Mat* M, const float* y, const float* x) noexcept nogil:
    """y . (M @ x) without forming M @ x."""
    cdef int k, r, j
    cdef double acc = 0.0, colsum
    if M.sparse:
        for k in range(M.cols):
            if x[k] != 0.0:
                colsum = 0.0
                for j in range(M.indptr[k], M.indptr[k + 1]):
                    colsum += M.val[j] * y[M.idx[j]]
                acc += colsum * x[k]
    else:
        for r in range(M.rows):
            if y[r] != 0.0:
                acc += y[r] * dot4(M.val + <long long>r * M.cols, x, M.cols)
    return acc


# ---------------------------------------------------------------------------
# Prediction, prior and log likelihood
# ---------------------------------------------------------------------------

cdef inline void predict_states(const ModelC* m, const float* qs, const int* action,
                                float* out, float* joint) noexcept nogil:
    """out[f] = B[f][..., action[f]] @ joint(qs[B_factor_list[f]]) for every factor."""
    cdef int f, nd
    cdef const int* dep
    for f in range(m.nf):
        dep = m.b_dep + m.b_dep_off[f]
        nd = m.b_dep_off[f + 1] - m.b_dep_off[f]
        if nd == 1:  # the parent's own marginal: no copy
            mat_vec(&m.mats[m.b_mat[f] + action[f]], qs + m.s_off[dep[0]], out + m.s_off[f])
        else:
            joint_of(m, qs, dep, nd, joint)
            mat_vec(&m.mats[m.b_mat[f] + action[f]], joint, out + m.s_off[f])


cdef inline void log_prior(const ModelC* m, const float* qs, const int* action,
                           float* logprior, float* joint) noexcept nogil:
    predict_states(m, qs, action, logprior, joint)
    fa_log_eps(logprior, logprior, m.S, EPS)


cdef inline void log_likelihood(const ModelC* m, const int* obs, const float* obs_distr,
                                int distr, float* ll_all, float* tmp) noexcept nogil:
    """Log likelihoods over parent joint states, summed within each modality group.

    ``tmp`` needs max_K floats.
    """
    cdef int mm, k, K, poff = 0
    cdef float* dst
    for mm in range(m.nm):
        dst = ll_all + m.g_off[m.a_group[mm]]
        if not m.a_group_first[mm]:
            dst = tmp
        if distr:
            mat_row_log_distr(&m.mats[m.a_mat[mm]], obs_distr + poff, dst)
        else:
            mat_row_log(&m.mats[m.a_mat[mm]], obs[mm], dst)
        if not m.a_group_first[mm]:
            K = m.a_K[mm]
            dst = ll_all + m.g_off[m.a_group[mm]]
            for k in range(K):
                dst[k] += tmp[k]
        poff += m.no[mm]


cdef inline void agent_evidence(const ModelC* m, int has_action, const float* qs_prev,
                                const int* action, const int* obs, float* ll_all,
                                float* logprior, float* tmp) noexcept nogil:
    """One agent's summed log likelihoods of outcomes ``obs`` (m.nll floats) and log prior
    (S floats: log D, or the prediction of ``qs_prev`` under ``action``); ``tmp`` max_K."""
    if has_action:
        log_prior(m, qs_prev, action, logprior, tmp)
    else:
        memcpy(logprior, m.logD, m.S * sizeof(float))
    log_likelihood(m, obs, NULL, 0, ll_all, tmp)


# ---------------------------------------------------------------------------
# Fixed-point iteration: messages, one sweep, free energy
# ---------------------------------------------------------------------------

cdef inline double contract_except(const ModelC* m, const float* t, const int* dep, int ndep,
                                   int pos, const float* qs, float* out, float* buf_a,
                                   float* buf_b) noexcept nogil:
    """Contract tensor ``t`` over its factors' marginals, keeping axis ``pos``.

    Axes are contracted last to first, so each pass shrinks the tensor by one
    factor's size: a few times fewer multiplications than walking the joint.
    With ``pos = -1`` every axis is contracted and the scalar is returned;
    otherwise the kept marginal (length ns[dep[pos]]) is written to ``out``.
    """
    cdef int d, o, j, k, n, inner = 1, outer = 1
    cdef int last = 1 if pos == 0 else 0   # the last axis contracted
    cdef const float* src = t
    cdef float* dst
    cdef const float* q
    cdef double acc
    for d in range(ndep):
        outer *= m.ns[dep[d]]
    for d in range(ndep - 1, -1, -1):
        n = m.ns[dep[d]]
        outer //= n
        if d == pos:
            inner = n
            continue
        q = qs + m.s_off[dep[d]]
        if d == last and pos >= 0:
            dst = out  # the kept marginal lands where the caller wants it
        else:
            dst = buf_a if src != buf_a else buf_b
        for o in range(outer):
            for j in range(inner):
                acc = 0.0
                for k in range(n):
                    acc += src[(o * n + k) * inner + j] * q[k]
                dst[o * inner + j] = <float>acc
        src = dst
    if pos < 0:
        return src[0]
    if ndep == 1:  # nothing to contract: the tensor is the marginal
        for j in range(m.ns[dep[0]]):
            out[j] = t[j]
    return 0.0


cdef inline double add_marginals(const ModelC* m, const float* t, const int* dep, int nd,
                                 const float* qs, float* qL, float* work, int first) noexcept nogil:
    """Add to ``qL`` (flat over factors) the contraction of ``t`` over all axes but each one.

    ``t`` has axes ``dep`` (C order). Divide and conquer: the leading half of the
    axes is kept by contracting the trailing half out (a dot product per row),
    the trailing half by contracting the leading half out (a weighted sum of
    rows), and each half recurses; so every marginal shares the first, largest
    contraction, which costs about twice the tensor size in all, instead of
    once per axis. When ``first`` is set, returns the full contraction
    ``E_q[t]``, read off the first axis's marginal; else 0.

    ``work`` needs nd * (size of t) floats.
    """
    cdef int mid, r, c, R, Cc, j
    cdef float* part = work
    cdef float* jq
    cdef const float* row
    cdef const float* q
    cdef const float* q1
    cdef float* out
    cdef float w
    cdef double ell = 0.0
    if nd == 1:
        q = qs + m.s_off[dep[0]]
        out = qL + m.s_off[dep[0]]
        for j in range(m.ns[dep[0]]):
            out[j] += t[j]
        if first:
            ell = dot4(t, q, m.ns[dep[0]])
        return ell
    if nd == 2:  # both marginals in one pass over the matrix
        R = m.ns[dep[0]]
        Cc = m.ns[dep[1]]
        q = qs + m.s_off[dep[0]]
        q1 = qs + m.s_off[dep[1]]
        out = qL + m.s_off[dep[1]]
        for r in range(R):
            row = t + r * Cc
            w = q[r]
            for c in range(Cc):
                out[c] += w * row[c]
            part[r] = <float>dot4(row, q1, Cc)
            ell += <double>part[r] * w
        out = qL + m.s_off[dep[0]]
        for r in range(R):
            out[r] += part[r]
        return ell if first else 0.0
    mid = nd // 2
    R = joint_size(m, dep, mid)
    Cc = joint_size(m, dep + mid, nd - mid)
    jq = work + (R if R > Cc else Cc)
    # leading axes kept: contract the trailing ones out
    joint_of(m, qs, dep + mid, nd - mid, jq)
    for r in range(R):
        part[r] = <float>dot4(t + <long long>r * Cc, jq, Cc)
    ell = add_marginals(m, part, dep, mid, qs, qL, work + R, first)
    # trailing axes kept: contract the leading ones out
    joint_of(m, qs, dep, mid, jq)
    memset(part, 0, Cc * sizeof(float))
    for r in range(R):
        w = jq[r]
        row = t + <long long>r * Cc
        for c in range(Cc):
            part[c] += w * row[c]
    add_marginals(m, part, dep + mid, nd - mid, qs, qL, work + Cc, 0)
    return ell


cdef inline int vfe_order_differs(const ModelC* m, int g) noexcept nogil:
    """Whether group ``g``'s parents are unsorted (pymdp's free energy reads them reshaped)."""
    cdef int d
    for d in range(m.g_dep_off[g], m.g_dep_off[g + 1]):
        if m.g_dep[d] != m.g_dep_vfe[d]:
            return 1
    return 0


cdef inline double all_marginals(const ModelC* m, const float* ll_all, const float* qs, float* qL,
                                 float* work) noexcept nogil:
    """qL[f] = sum over groups of E_q[log likelihood] over all factors but f.

    Returns the expected log likelihood of the groups with sorted parents.
    """
    cdef int g
    cdef double ell = 0.0, e
    memset(qL, 0, m.S * sizeof(float))
    for g in range(m.ng):
        e = add_marginals(m, ll_all + m.g_off[g], m.g_dep + m.g_dep_off[g],
                          m.g_dep_off[g + 1] - m.g_dep_off[g], qs, qL, work, 1)
        if not vfe_order_differs(m, g):
            ell += e
    return ell


cdef inline void marginals_bl_2(const ModelC* m, const int* dep, int nd, const float* t,
                                const float* qs, float* qL, double* ell) noexcept nogil:
    """:func:`marginals_bl`'s sums for one group of one or two parents: there the prefix
    and suffix products of the other parents are 1, one marginal or their product."""
    # per agent and joint state (i, j): o0[i] += t q1[j], o1[j] += t q0[i] and
    # ell += t (q0[i] q1[j]) in double; rows of BL lanes in _simd.h, the same floats
    cdef int n1 = m.ns[dep[nd - 1]]
    cdef const float* q0 = qs + m.s_off[dep[0]] * BL
    cdef const float* q1 = qs + m.s_off[dep[nd - 1]] * BL
    cdef float* o0 = qL + m.s_off[dep[0]] * BL
    cdef float* o1 = qL + m.s_off[dep[nd - 1]] * BL
    if nd == 1:
        fa_marg1_bl8(t, q0, o0, ell, n1)
    else:
        fa_marg2_bl8(t, q0, q1, o0, o1, ell, m.ns[dep[0]], n1)


cdef inline void marginals_bl(const ModelC* m, const float* ll, const float* qs, float* qL,
                              double* ell, float* pre) noexcept nogil:
    """:func:`all_marginals` for BL agents (every group's parents sorted).

    For each joint state the product of the other parents' marginals comes from
    prefix and suffix products (``pre`` needs 2 * (MAX_ND + 1) * BL floats).
    """
    cdef int g, nd, K, k, d, b
    cdef int c[MAX_ND]
    cdef const int* dep
    cdef const float* t
    cdef const float* q
    cdef float* suf
    cdef float* out
    memset(qL, 0, m.S * BL * sizeof(float))
    for b in range(BL):
        ell[b] = 0.0
    for g in range(m.ng):
        dep = m.g_dep + m.g_dep_off[g]
        nd = m.g_dep_off[g + 1] - m.g_dep_off[g]
        K = m.g_K[g]
        t = ll + m.g_off[g] * BL
        if nd <= 2:  # the loop below without its products by 1 (the same floats)
            marginals_bl_2(m, dep, nd, t, qs, qL, ell)
            continue
        suf = pre + (nd + 1) * BL
        for d in range(nd):
            c[d] = 0
        for k in range(K):
            # pre[d] = product of parents before d, suf[d] = after d
            for b in range(BL):
                pre[b] = 1.0
                suf[nd * BL + b] = 1.0
            for d in range(nd):
                q = qs + (m.s_off[dep[d]] + c[d]) * BL
                for b in range(BL):
                    pre[(d + 1) * BL + b] = pre[d * BL + b] * q[b]
            for d in range(nd - 1, -1, -1):
                q = qs + (m.s_off[dep[d]] + c[d]) * BL
                for b in range(BL):
                    suf[d * BL + b] = suf[(d + 1) * BL + b] * q[b]
            for d in range(nd):
                out = qL + (m.s_off[dep[d]] + c[d]) * BL
                for b in range(BL):
                    out[b] += t[k * BL + b] * (pre[d * BL + b] * suf[(d + 1) * BL + b])
            for b in range(BL):
                ell[b] += <double>t[k * BL + b] * pre[nd * BL + b]
            d = nd - 1  # next joint state, last parent fastest (C order)
            c[d] += 1
            while d > 0 and c[d] == m.ns[dep[d]]:
                c[d] = 0
                d -= 1
                c[d] += 1


cdef inline void fpi_sweep_of(int nf, const int* ns, const int* s_off, int S,
                              const floating* logprior, const floating* qL,
                              floating* qs_new) noexcept nogil:
    """One Jacobi sweep of the fixed-point iteration: ``q_f = softmax(log prior_f +
    message_f)`` for every factor (flat over factors). Fused: float32 for the kernels,
    double for the search."""
    cdef int i, f
    for i in range(S):
        qs_new[i] = logprior[i] + qL[i]
    for f in range(nf):
        softmax(qs_new + s_off[f], ns[f])


cdef inline void fpi_sweep(const ModelC* m, const float* logprior, const float* qL,
                           float* qs_new) noexcept nogil:
    """:func:`fpi_sweep_of` on the model's factors."""
    fpi_sweep_of(m.nf, m.ns, m.s_off, m.S, logprior, qL, qs_new)


cdef inline void fpi_sweep_bl(const ModelC* m, const float* logprior, const float* qL,
                              float* qs_new, float* logq) noexcept nogil:
    """:func:`fpi_sweep` for BL agents, with the exact log of the new iterate in ``logq``."""
    cdef int i, f
    for i in range(m.S * BL):
        qs_new[i] = logprior[i] + qL[i]
    for f in range(m.nf):  # softmax per factor and agent, with its log
        softmax_log_bl(qs_new + m.s_off[f] * BL, logq + m.s_off[f] * BL, m.ns[f])


cdef inline double divergence_from_prior(double F, const floating* q,
                                         const floating* logprior, int n) noexcept nogil:
    """``F`` plus ``sum q (log(q + 1e-16) - log prior)``: the free energy's terms without the
    likelihood (pymdp's calc_free_energy), flat over factors. Fused: the search's beliefs
    are double."""
    cdef int i
    if floating is float:
        F += fa_xlogx_diff_sum(q, logprior, n, EPS)
    else:
        for i in range(n):
            F += q[i] * (log(q[i] + EPS_D) - logprior[i])
    return F


cdef inline double free_energy(const ModelC* m, const float* qs, const float* logprior,
                               const float* ll_all, int with_ll, double ell, float* buf_a,
                               float* buf_b) noexcept nogil:
    """pymdp's calc_free_energy: sum_f q.(log q - log prior) - E_q[log likelihood].

    ``ell`` is the expected log likelihood of the groups with sorted parents
    (from :func:`all_marginals` on the same ``qs``); the other groups are
    contracted here.
    """
    cdef int g
    cdef double F = divergence_from_prior(0.0, qs, logprior, m.S)
    if with_ll:
        F -= ell
        for g in range(m.ng):
            if vfe_order_differs(m, g):
                # pymdp reshapes (not transposes) each log likelihood into sorted factor
                # order for its stopping rule; reading it the same way stops where it stops
                F -= contract_except(m, ll_all + m.g_off[g], m.g_dep_vfe + m.g_dep_off[g],
                                     m.g_dep_off[g + 1] - m.g_dep_off[g], -1, qs, NULL,
                                     buf_a, buf_b)
    return F


cdef inline void free_energy_bl(const ModelC* m, const float* qs, const float* logq,
                                const float* logprior, const double* ell,
                                double* F) noexcept nogil:
    """:func:`free_energy` for BL agents, with exact log q (``ell`` NULL: no likelihood)."""
    cdef int b
    for b in range(BL):
        F[b] = -ell[b] if ell != NULL else 0.0
    # F += q (log q - log prior) per agent over q != 0 (0 log 0 = 0), rows of BL lanes
    fa_divergence_bl8(qs, logq, logprior, m.S, F)


# ---------------------------------------------------------------------------
# Expected free energy terms: utility, state and parameter information gain,
# inductive cost
# ---------------------------------------------------------------------------

cdef inline double expected_utility(const real_a* qo, const real_b* lnC, int stride,
                                    int no) noexcept nogil:
    """Expected log preference ``sum_o qo[o] lnC[o * stride]`` of predicted outcomes ``qo``
    (pymdp's calc_expected_utility for one modality and step), summed in double. Fused
    over both precisions: float32 outcomes and preferences in the kernels, double
    outcomes in MMP (float ln C) and in the search (double ln C)."""
    cdef int o
    cdef double ut = 0.0
    for o in range(no):
        ut += <double>qo[o] * lnC[o * stride]
    return ut


cdef inline double utility(const ModelC* m, int mm, int t, const float* qo,
                           const float* lnC) noexcept nogil:
    """Expected log preference of predicted outcomes ``qo`` of modality ``mm`` at step ``t``."""
    if m.T == 1:  # contiguous preferences: the vectorised double dot product
        return fa_dot_d(qo, lnC + m.lnC_off[mm], m.no[mm])
    return expected_utility(qo, lnC + m.lnC_off[mm] + t, m.T, m.no[mm])


cdef inline void utility_bl(const ModelC* m, int mm, int t, const float* qo,
                            const float** lnc, double* g) noexcept nogil:
    """:func:`utility` for BL agents (``qo`` (no, BL), agent b's ln C at ``lnc[b]``),
    added to ``g``."""
    cdef int o, i, b, shared = 1
    for b in range(1, BL):
        shared &= lnc[b] == lnc[0]
    for o in range(m.no[mm]):
        i = m.lnC_off[mm] + o * m.T + t
        if shared:  # the model's ln C: one load, and a zero preference adds +0 (qo finite)
            fa_wdot_bl8(lnc[0] + i, qo + o * BL, 1, g)
        else:
            for b in range(BL):
                g[b] += <double>qo[o * BL + b] * lnc[b][i]


cdef struct Pruned:
    int group       # modality group whose joint states were scanned (-1: none yet)
    int nk          # kept states, listed first in idx
    int npr         # pruned states, listed after the kept ones (-1: not listed yet)
    float mass      # pruned probability: 0 exactly when every pruned state is 0


cdef inline void scan_pruned(const float* qx, int K, int* idx, Pruned* pr) noexcept nogil:
    """List the joint states spm_MDP_G keeps (probability above exp(-16))."""
    cdef int k
    cdef float v
    pr.nk = 0
    pr.npr = -1
    pr.mass = 0.0
    for k in range(K):
        v = qx[k]
        if v > PRUNE:
            idx[pr.nk] = k
            pr.nk += 1
        else:
            pr.mass += v


cdef inline double info_gain(const ModelC* m, int mm, const float* qx, int K, const float* qo,
                             int* idx, Pruned* pr, float* qo_p) noexcept nogil:
    """State information gain of modality ``mm`` as spm_MDP_G: joint states ``qx``
    at or below exp(-16) are left out of both terms.

    ``qo`` holds the outcomes predicted from all joint states; ``idx`` and
    ``pr`` are :func:`scan_pruned` of ``qx`` (shared by the modalities of a
    group). The kept states predict the same outcomes when every pruned state
    has probability 0; otherwise they are summed afresh over the kept states
    or, when fewer, the pruned states' share is subtracted. ``idx`` needs K
    ints, ``qo_p`` no[mm] floats.
    """
    cdef const Mat* A = &m.mats[m.a_mat[mm]]
    cdef const float* H = m.a_H[mm]
    cdef const float* qop = qo
    cdef int k, o
    cdef double sig = gather_dot(H, qx, idx, pr.nk)
    if pr.mass != 0.0:
        qop = qo_p
        if 2 * pr.nk <= K:
            mat_cols(A, qx, idx, pr.nk, qo_p)
        else:
            if pr.npr < 0:  # list the pruned states after the kept ones
                pr.npr = 0
                for k in range(K):
                    if not qx[k] > PRUNE:
                        idx[pr.nk + pr.npr] = k
                        pr.npr += 1
            mat_cols(A, qx, idx + pr.nk, pr.npr, qo_p)
            for o in range(m.no[mm]):
                qo_p[o] = qo[o] - qo_p[o]
    return sig - fa_xlogx_sum(qop, m.no[mm], EPS)  # 0 log 0 adds nothing


cdef inline int scan_pruned_bl(const float* qx, int K, float* xm) noexcept nogil:
    """:func:`scan_pruned` for BL agents: ``xm`` = ``qx`` (K, BL) without the states at or
    below exp(-16); returns whether a left-out state has nonzero probability."""
    cdef int k, pruned = 0
    cdef float v
    for k in range(K * BL):
        v = qx[k]
        xm[k] = v if v > PRUNE else 0.0
        pruned |= (not v > PRUNE) & (v != 0.0)
    return pruned


cdef inline void info_gain_bl(const ModelC* m, int mm, const float* xm, int pruned,
                              const float* qo, float* qok, double* sig) noexcept nogil:
    """:func:`info_gain` for BL agents into ``sig``: ``xm`` and ``pruned`` from
    :func:`scan_pruned_bl`, ``qo`` the outcomes of all states; ``qok`` (no, BL) is work."""
    cdef const float* H = m.a_H[mm]
    cdef int b
    for b in range(BL):
        sig[b] = 0.0
    # sig += xm . H per agent in double; a deterministic column (H 0) adds +0 to every
    # lane (xm finite): skipped
    fa_wdot_bl8(H, xm, m.a_K[mm], sig)
    if pruned:  # outcomes of the kept states only
        mat_vec_bl(&m.mats[m.a_mat[mm]], xm, qok)
    else:
        memcpy(qok, qo, m.no[mm] * BL * sizeof(float))
    fa_sub_xlogx(qok, m.no[mm] * BL, BL, EPS, sig)  # 0 log 0 adds nothing


cdef inline int predicted_outcomes(const float* A, const floating* qx, int K, int no,
                                   double* qo, double* qk) noexcept nogil:
    """Dense ``qo = A @ qx`` (``A`` (no, K) row-major) in double, and ``qk`` the same over the
    joint states spm_MDP_G keeps (above exp(-16)). For the search and MMP."""
    cdef int o, k
    cdef double acc, acck, x
    cdef const float* row
    for o in range(no):
        row = A + <long long>o * K
        acc = 0.0
        acck = 0.0
        for k in range(K):
            x = <double>row[k] * qx[k]
            acc += x
            if qx[k] > PRUNE_D:
                acck += x
        qo[o] = acc
        qk[o] = acck
    return K


cdef inline double state_info_gain_dense(const float* aH, const floating* qx, int K,
                                         const double* qk, int no) noexcept nogil:
    """spm_MDP_G in double on a dense ``A``: the column entropies ``aH`` of the kept joint
    states minus the entropy of the outcomes ``qk`` they predict (:func:`predicted_outcomes`)."""
    cdef int k, o
    cdef double sig = 0.0
    for k in range(K):
        if qx[k] > PRUNE_D:
            sig += <double>qx[k] * aH[k]
    for o in range(no):
        sig -= qk[o] * log(qk[o] + EPS_D)
    return sig


cdef inline double param_info_gain(const Mat* W, const float* qo, const float* qx) noexcept nogil:
    """Parameter information gain (pymdp's calc_pA_info_gain / calc_pB_info_gain):
    ``qo . (W @ qx)`` with ``W`` the spm_wnorm weights of the Dirichlet counts."""
    return mat_quad(W, qo, qx)


cdef inline int inductive_row(const floating* I, int depth, int n,
                              const floating* q) noexcept nogil:
    """pymdp's calc_inductive_cost, first half: for the most likely state of ``q`` (first
    maximum), the row of ``I`` (depth, n) before the first depth at which it is marked
    reachable (-1: never)."""
    cdef int i, k = 0, row = -1
    cdef floating mx = q[0]
    for i in range(1, n):
        if q[i] > mx:
            mx = q[i]
            k = i
    for i in range(depth):
        if I[i * n + k] == 1.0:
            row = i
            break
    if row > 0:
        row -= 1
    return row


cdef inline double inductive_cost(double g, const floating* I_row, const floating* q,
                                  int n) noexcept nogil:
    """``g`` plus the inductive cost of predicted beliefs ``q``: (1 - I[row]) . q log(1e-3)."""
    cdef int i
    for i in range(n):
        g += (1.0 - I_row[i]) * LOG_INDUCTIVE_EPS * q[i]
    return g
