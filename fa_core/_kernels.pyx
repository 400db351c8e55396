# cython: language_level=3
"""Compiled float32 kernels of fa_core.

Everything here works on preallocated buffers handed in by the caller and
never allocates in the per-step path. Inputs are validated in Python
(``fa_core.model`` and ``fa_core.agent``) before any kernel runs, so the
loops below run without bounds checks and cannot fail.

A model is described to C by :class:`KModel`: a table of matrices (each a
likelihood ``A[m]``, a transition slice ``B[f][..., u]`` or a parameter
information-gain weight), dense or sparse (CSC), plus per-model constants.
Every matrix maps a flattened joint state of its parent factors (column
``k``, C order over the factor list) to a distribution over rows.

Dense matrices are stored row-major, ``(rows, cols)``: a row is the
likelihood of one outcome over joint states (contiguous to read), and
``M @ x`` is one dot product per row, summed with four accumulators so the
additions pipeline. Sparse matrices are CSC, whose product skips the zero
entries of ``x`` column by column.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cython.parallel cimport prange, threadid
from libc.math cimport expf, logf, exp, log, INFINITY
from libc.string cimport memset, memcpy

import numpy as np
cimport numpy as cnp

cdef extern from "_simd.h":
    double fa_dot(const float* a, const float* x, int n) noexcept nogil
    void fa_exp_shifted(float* x, const float* sub, int n, int lanes) noexcept nogil
    void fa_sub_xlogx(const float* q, int n, int lanes, float eps, double* acc) noexcept nogil

cdef extern from *:
    """
    #ifndef FA_CORE_CHECKED
    #define FA_CORE_CHECKED 0
    #endif
    """
    int FA_CORE_CHECKED

# True in the debugging build of setup.py's FA_CORE_CHECKED_BUILD=1 (bounds checks, sanitizers)
CHECKED_BUILD = bool(FA_CORE_CHECKED)

cnp.import_array()

# pymdp's epsilons: spm_log adds 1e-16, spm_MDP_G adds exp(-16) inside the
# column entropy and prunes joint states with probability <= exp(-16).
cdef float EPS = 1e-16
cdef double EPS_D = 1e-16
cdef float LOG_EPS = -36.841361487904734  # log(1e-16)
cdef float PRUNE = 1.1253517471925912e-07  # exp(-16)

# Populations of small models evaluate policies for BL agents at a time, agents
# innermost (see c_infer_policies_block); models whose joint parent states exceed
# BLOCK_MAX_K gain nothing from it and keep the per-agent kernel.
cdef enum:
    BL = 8
    BLOCK_MAX_K = 64
    MAX_ND = 32         # parents of a modality group, for the block fixed-point iteration


cdef struct Mat:
    int rows
    int cols
    int sparse
    int onehot      # sparse with exactly one stored value per column (deterministic maps)
    float* val      # dense: rows*cols, row r at val + r*cols; sparse: nnz
    float* logval   # log(val + 1e-16), same layout; NULL when not needed
    int* indptr     # sparse only: cols + 1
    int* idx        # sparse only: row of each stored value
    int* rptr       # onehot in a blocked model: the columns of row r are rcol[rptr[r]:rptr[r+1]]
    int* rcol       # (mat_vec_bl gathers rows: no zeroing pass, fewer stores than a scatter)


cdef struct ModelC:
    int nf              # hidden-state factors
    int nm              # observation modalities
    int S               # sum of num_states
    int n_pol           # number of policies
    int T               # policy length
    int* ns             # num_states[f]
    int* no             # num_obs[m]
    int* nc             # num_controls[f]
    int* s_off          # offset of factor f in a flat belief vector (nf + 1)
    int* nc_off         # offset of factor f in a flat action-marginal vector (nf + 1)
    # modality m: parent factors a_dep[a_dep_off[m]:a_dep_off[m+1]], K = a_K[m]
    int* a_dep
    int* a_dep_off
    int* a_K
    # groups of modalities with the same parent list: their log likelihoods are summed
    # once per step, so the fixed-point iteration contracts one tensor per group
    int ng
    int* a_group        # group of modality m
    int* a_group_first  # 1 if m is the first modality of its group
    int* g_dep          # parents of group g at g_dep[g_dep_off[g]:...]
    int* g_dep_off
    int* g_dep_vfe      # sorted parents: the axis order pymdp's free energy reads
    int* g_K
    int* g_off          # offset of group g in the summed log likelihood
    int* a_mat          # index of A[m] in mats
    # policy-invariant tails: the last a_ntail[m] parents of modality m are predicted
    # alike under every policy, so A[m] is contracted over them once per time step into
    # a (no[m], a_Khead[m]) block (+ its column entropies and the tail's smallest
    # joint probability) at a_red_off[m] within a per-step block of red_stride floats
    int* a_ntail
    int* a_Khead
    int* a_red_off
    int red_stride
    int* wa_mat         # index of the pA information-gain weight, or -1
    float** a_H         # per column sum_o A log(A + exp(-16)) (length K)
    float* lnC          # log softmax C, per modality (no[m], T) row-major at lnC_off[m]
    int* lnC_off
    # factor f: parents b_dep[b_dep_off[f]:...], K = b_K[f], slice u at mats[b_mat[f] + u]
    int* b_dep
    int* b_dep_off
    int* b_K
    int* b_mat
    int* wb_mat         # first of nc[f] pB weight matrices, or -1
    int* policies       # (n_pol, T, nf)
    float* lnE          # log(E + 1e-16), n_pol
    float* logD         # log(D + 1e-16), flat length S
    # inductive inference: I[f] of shape (ii_depth, ns[f]) at I + I_off[f]
    int has_I
    int ii_depth
    float* ind
    int* I_off
    Mat* mats
    int n_mats
    int max_K           # largest joint-parent size over A and B
    int max_rows        # largest num_obs / num_states
    int nll             # floats of the summed log likelihoods (sum of a_K: room for every group)
    int fpi_blocked     # populations run the fixed-point iteration BL agents at a time


# ---------------------------------------------------------------------------
# Small building blocks
# ---------------------------------------------------------------------------

cdef inline void softmax_inplace(float* x, int n) noexcept nogil:
    cdef int i
    cdef float mx = x[0]
    cdef double tot = 0.0
    for i in range(1, n):
        if x[i] > mx:
            mx = x[i]
    for i in range(n):
        x[i] = expf(x[i] - mx)
        tot += x[i]
    for i in range(n):
        x[i] = <float>(x[i] / tot)


cdef inline int joint_of(const ModelC* m, const float* qs, const int* dep,
                         int ndep, float* out) noexcept nogil:
    """Outer product of the marginals of ``dep`` (C order); returns its size."""
    cdef int K = 1, d, f, n, i, j
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
    out[0] = 1.0
    for d in range(ndep):
        f = dep[d]
        n = m.ns[f]
        # expand in place from the back so earlier entries are still unread
        for i in range(K - 1, -1, -1):
            v = out[i]
            for j in range(n):
                out[i * n + j] = v * qs[m.s_off[f] + j]
        K *= n
    return K


cdef inline double dot4(const float* a, const float* x, int n) noexcept nogil:
    """Dot product: float partial sums (eight, in SSE lanes on x86-64), summed in double."""
    return fa_dot(a, x, n)


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


cdef inline void mat_row_log(const Mat* M, int o, float* out) noexcept nogil:
    """out[k] = log(M[o, k] + 1e-16): log likelihood of outcome ``o``."""
    cdef int k, j
    cdef const float* row
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
        row = M.val + <long long>o * M.cols
        for k in range(M.cols):
            out[k] = logf(row[k] + EPS)


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
            out[k] = logf(<float>acc + EPS)
    else:
        memset(out, 0, M.cols * sizeof(float))
        for r in range(M.rows):
            pr = p[r]
            if pr != 0.0:
                row = M.val + <long long>r * M.cols
                for k in range(M.cols):
                    out[k] += pr * row[k]
        for k in range(M.cols):
            out[k] = logf(out[k] + EPS)


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


cdef inline int joint_size(const ModelC* m, const int* dep, int ndep) noexcept nogil:
    cdef int d, K = 1
    for d in range(ndep):
        K *= m.ns[dep[d]]
    return K


cdef double add_marginals(const ModelC* m, const float* t, const int* dep, int nd,
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


cdef double all_marginals(const ModelC* m, const float* ll_all, const float* qs, float* qL,
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


cdef inline double free_energy(const ModelC* m, const float* qs, const float* logprior,
                               const float* ll_all, int with_ll, double ell, float* buf_a,
                               float* buf_b) noexcept nogil:
    """pymdp's calc_free_energy: sum_f q.(log q - log prior) - E_q[log likelihood].

    ``ell`` is the expected log likelihood of the groups with sorted parents
    (from :func:`all_marginals` on the same ``qs``); the other groups are
    contracted here.
    """
    cdef int f, i, g
    cdef double F = 0.0
    cdef float q
    for f in range(m.nf):
        for i in range(m.ns[f]):
            q = qs[m.s_off[f] + i]
            F += q * (logf(q + EPS) - logprior[m.s_off[f] + i])
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


# ---------------------------------------------------------------------------
# Per-agent kernels (shared by Agent and, later, Population)
# ---------------------------------------------------------------------------

cdef void c_predict_states(const ModelC* m, const float* qs, const int* action,
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


cdef void c_log_prior(const ModelC* m, const float* qs, const int* action,
                      float* logprior, float* joint) noexcept nogil:
    cdef int i
    c_predict_states(m, qs, action, logprior, joint)
    for i in range(m.S):
        logprior[i] = logf(logprior[i] + EPS)


cdef void c_log_likelihood(const ModelC* m, const int* obs, const float* obs_distr,
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


cdef int c_infer_states(const ModelC* m, const float* ll_all, const float* logprior,
                        float* qs, int num_iter, double dF, double dF_tol,
                        int compute_vfe, float* scratch) noexcept nogil:
    """Fixed-point iteration (pymdp's run_vanilla_fpi_factorized); returns iterations run.

    Jacobi sweeps: every factor is updated from the previous iterate, so one
    call of :func:`all_marginals` per iterate gives every factor's message and,
    from the same contractions, the expected log likelihood that the free
    energy of that iterate needs (the stopping rule).

    Scratch needs 2 * S + (max group parents + 1) * max_K floats.
    """
    cdef float* qs_new = scratch
    cdef float* qL = scratch + m.S
    cdef float* work = qL + m.S
    cdef float* qs_cur = qs
    cdef float* swap
    cdef int f, i, it = 0
    cdef double prev_vfe = 0.0, vfe, ell
    if m.nf == 1:  # one group: closed form
        for i in range(m.S):
            qs[i] = logprior[i] + ll_all[i]
        softmax_inplace(qs, m.S)
        return 1
    for f in range(m.nf):
        for i in range(m.ns[f]):
            qs[m.s_off[f] + i] = 1.0 / m.ns[f]
    if compute_vfe:
        prev_vfe = free_energy(m, qs, logprior, ll_all, 0, 0.0, NULL, NULL)
    all_marginals(m, ll_all, qs_cur, qL, work)
    while it < num_iter and (not compute_vfe or dF >= dF_tol):
        for i in range(m.S):
            qs_new[i] = logprior[i] + qL[i]
        for f in range(m.nf):
            softmax_inplace(qs_new + m.s_off[f], m.ns[f])
        swap = qs_cur
        qs_cur = qs_new
        qs_new = swap
        it += 1
        if it == num_iter:  # no further sweep: its messages and free energy are not needed
            break
        ell = all_marginals(m, ll_all, qs_cur, qL, work)
        if compute_vfe:
            vfe = free_energy(m, qs_cur, logprior, ll_all, 1, ell, work, work + m.max_K)
            dF = vfe - prev_vfe
            if dF < 0:
                dF = -dF
            prev_vfe = vfe
    if qs_cur != qs:
        memcpy(qs, qs_cur, m.S * sizeof(float))
    return it


cdef inline float min_of(const float* x, int n) noexcept nogil:
    cdef int i
    cdef float mn = x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
    return mn


cdef inline double utility(const ModelC* m, int mm, int t, const float* qo,
                          const float* lnC) noexcept nogil:
    """Expected log preference of predicted outcomes ``qo`` of modality ``mm`` at step ``t``."""
    cdef int o
    cdef double ut = 0.0
    for o in range(m.no[mm]):
        ut += <double>qo[o] * lnC[m.lnC_off[mm] + o * m.T + t]
    return ut


cdef void reduce_tail(const ModelC* m, int mm, const float* cur, float* red,
                      float* tail_joint) noexcept nogil:
    """Contract A[mm] and its column entropies over the modality's invariant tail.

    Writes the (no, Kh) block, then Kh entropies, then the smallest joint
    probability of the tail (for the pruning test of spm_MDP_G).
    """
    cdef const int* dep = m.a_dep + m.a_dep_off[mm]
    cdef int nd = m.a_dep_off[mm + 1] - m.a_dep_off[mm]
    cdef int nt = m.a_ntail[mm], Kh = m.a_Khead[mm], Kt, o, h, k, j, i
    cdef const Mat* A = &m.mats[m.a_mat[mm]]
    cdef float* H = red + m.no[mm] * Kh
    cdef float mn = 1.0
    Kt = joint_of(m, cur, dep + nd - nt, nt, tail_joint)
    if A.sparse:
        memset(red, 0, m.no[mm] * Kh * sizeof(float))
        for k in range(A.cols):
            h = k // Kt
            for j in range(A.indptr[k], A.indptr[k + 1]):
                red[A.idx[j] * Kh + h] += A.val[j] * tail_joint[k - h * Kt]
    else:
        for o in range(m.no[mm]):
            for h in range(Kh):
                red[o * Kh + h] = <float>dot4(A.val + <long long>o * A.cols + h * Kt, tail_joint, Kt)
    for h in range(Kh):
        H[h] = <float>dot4(m.a_H[mm] + h * Kt, tail_joint, Kt)
    for i in range(nd - nt, nd):
        mn *= min_of(cur + m.s_off[dep[i]], m.ns[dep[i]])
    H[Kh] = mn


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


cdef double info_gain(const ModelC* m, int mm, const float* qx, int K, const float* qo,
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
    cdef int k, o, j
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
    for o in range(m.no[mm]):
        if qop[o] > 0.0:  # 0 * log(eps) adds nothing; skip the log
            sig -= <double>qop[o] * logf(qop[o] + EPS)
    return sig


cdef void c_infer_policies(const ModelC* m, const float* qs, double gamma,
                           int use_utility, int use_sig, int use_pA, int use_pB, int use_I,
                           const float* lnC, const float* lnE, float* G, float* q_pi,
                           float* scratch) noexcept nogil:
    """Expected free energy of every policy and the policy posterior.

    ``lnC`` and ``lnE`` are the model's (``m.lnC``, ``m.lnE``) or one agent's own.

    Scratch needs (T + 1) * S + 3 * max_K + 3 * max_rows + nf + T * red_stride floats.
    """
    cdef float* qs_pi = scratch                      # (T + 1) * S: [qs, qs_1, ..., qs_T]
    cdef float* joint = qs_pi + (m.T + 1) * m.S
    cdef float* head = joint + m.max_K               # joint of a modality's policy-dependent head
    cdef int* kept = <int*>(head + m.max_K)        # max_K ints: joint states kept by SIG
    cdef float* qo = <float*>(kept + m.max_K)
    cdef float* qo_p = qo + m.max_rows
    cdef float* ind_row = qo_p + m.max_rows          # nf ints stored as floats
    cdef float* reduced = ind_row + m.nf             # T * red_stride: per-step tail contractions
    cdef int p, t, f, mm, K, k, o, a, nd, row, i, nh, Kh
    cdef double g, sig
    cdef float* red
    cdef const float* qh
    cdef float mn
    cdef int joint_group    # modality group whose joint `joint` holds (-1: none)
    cdef Pruned pr          # the joint states SIG keeps, for the modalities of pr.group
    cdef const int* pol
    cdef const int* dep
    cdef const Mat* A
    cdef const float* prev
    cdef const float* cur
    cdef const float* qx
    cdef float mx

    if use_I:
        # pymdp's calc_inductive_cost: the row before the first depth at which the
        # most likely current state is already marked reachable
        for f in range(m.nf):
            k = 0
            mx = qs[m.s_off[f]]
            for i in range(1, m.ns[f]):
                if qs[m.s_off[f] + i] > mx:
                    mx = qs[m.s_off[f] + i]
                    k = i
            row = -1
            for i in range(m.ii_depth):
                if m.ind[m.I_off[f] + i * m.ns[f] + k] == 1.0:
                    row = i
                    break
            if row > 0:
                row -= 1
            ind_row[f] = row

    memcpy(qs_pi, qs, m.S * sizeof(float))
    if m.red_stride > 0:
        # invariant factors are predicted alike by every policy: roll out policy 0
        for t in range(m.T):
            c_predict_states(m, qs_pi + t * m.S, m.policies + t * m.nf,
                             qs_pi + (t + 1) * m.S, joint)
            for mm in range(m.nm):
                if m.a_ntail[mm] > 0:
                    reduce_tail(m, mm, qs_pi + (t + 1) * m.S,
                                reduced + t * m.red_stride + m.a_red_off[mm], joint)
    for p in range(m.n_pol):
        pol = m.policies + p * m.T * m.nf
        g = 0.0
        for t in range(m.T):
            prev = qs_pi + t * m.S
            cur = qs_pi + (t + 1) * m.S
            c_predict_states(m, prev, pol + t * m.nf, qs_pi + (t + 1) * m.S, joint)
            joint_group = -1
            pr.group = -1
            for mm in range(m.nm):
                dep = m.a_dep + m.a_dep_off[mm]
                nd = m.a_dep_off[mm + 1] - m.a_dep_off[mm]
                A = &m.mats[m.a_mat[mm]]
                if m.a_ntail[mm] > 0 and not (use_pA and m.wa_mat[mm] >= 0):
                    # contract only the policy-dependent head with the reduced block
                    red = reduced + t * m.red_stride + m.a_red_off[mm]
                    nh = nd - m.a_ntail[mm]
                    Kh = m.a_Khead[mm]
                    if nh == 1:
                        qh = cur + m.s_off[dep[0]]
                    else:
                        joint_of(m, cur, dep, nh, head)
                        qh = head
                    for o in range(m.no[mm]):
                        qo[o] = <float>dot4(red + o * Kh, qh, Kh)
                    if use_utility:
                        g += utility(m, mm, t, qo, lnC)
                    if use_sig:
                        mn = red[m.no[mm] * Kh + Kh]
                        for i in range(nh):
                            mn *= min_of(cur + m.s_off[dep[i]], m.ns[dep[i]])
                        if mn > PRUNE:  # no joint state is pruned
                            sig = dot4(red + m.no[mm] * Kh, qh, Kh)
                            for o in range(m.no[mm]):
                                if qo[o] > 0.0:
                                    sig -= <double>qo[o] * logf(qo[o] + EPS)
                        else:  # the joint over all parents, to find the pruned states
                            if m.a_group[mm] != joint_group:
                                joint_of(m, cur, dep, nd, joint)
                                joint_group = m.a_group[mm]
                            if m.a_group[mm] != pr.group:
                                scan_pruned(joint, m.a_K[mm], kept, &pr)
                                pr.group = m.a_group[mm]
                            sig = info_gain(m, mm, joint, m.a_K[mm], qo, kept, &pr, qo_p)
                        g += sig
                    continue
                if nd == 1:  # the joint is the factor's own marginal: no copy
                    qx = cur + m.s_off[dep[0]]
                    K = m.ns[dep[0]]
                else:
                    if m.a_group[mm] != joint_group:  # modalities sharing parents share it
                        joint_of(m, cur, dep, nd, joint)
                        joint_group = m.a_group[mm]
                    K = m.a_K[mm]
                    qx = joint
                mat_vec(A, qx, qo)
                if use_utility:
                    g += utility(m, mm, t, qo, lnC)
                if use_sig:
                    if m.a_group[mm] != pr.group:  # same parents, same joint: same scan
                        scan_pruned(qx, K, kept, &pr)
                        pr.group = m.a_group[mm]
                    g += info_gain(m, mm, qx, K, qo, kept, &pr, qo_p)
                if use_pA and m.wa_mat[mm] >= 0:
                    g -= mat_quad(&m.mats[m.wa_mat[mm]], qo, qx)
            if use_pB:
                for f in range(m.nf):
                    if m.wb_mat[f] >= 0:
                        a = pol[t * m.nf + f]
                        joint_of(m, prev, m.b_dep + m.b_dep_off[f],
                                 m.b_dep_off[f + 1] - m.b_dep_off[f], joint)
                        g -= mat_quad(&m.mats[m.wb_mat[f] + a], cur + m.s_off[f], joint)
            if use_I:
                for f in range(m.nf):
                    row = <int>ind_row[f]
                    if row >= 0:
                        for i in range(m.ns[f]):
                            # (1 - I[row]) * log(1e-3), as pymdp
                            g += (1.0 - m.ind[m.I_off[f] + row * m.ns[f] + i]) * -6.907755278982137 * cur[m.s_off[f] + i]
        G[p] = <float>g
        q_pi[p] = <float>(gamma * g) + lnE[p]
    softmax_inplace(q_pi, m.n_pol)


# ---------------------------------------------------------------------------
# Policies of BL agents at once (populations of small models)
#
# Per-agent loops over a small model are short (2-8 states) and branchy, so a
# step is bound by loop and call overhead, not arithmetic. Here every vector
# holds BL agents, agent innermost (x[i * BL + b]): the model's loops run once
# per block and the inner loops over agents are straight and vectorisable.
# Same quantities as c_infer_policies (whose policy-invariant tail contraction
# only pays off on large models); sums run in a different order, so results
# agree to float32 rounding.
# ---------------------------------------------------------------------------

cdef inline void joint_of_bl(const ModelC* m, const float* qs, const int* dep, int ndep,
                             float* out) noexcept nogil:
    """:func:`joint_of` for BL agents: ``qs`` is (S, BL), ``out`` (K, BL)."""
    cdef int K = 1, d, n, i, j, b
    cdef const float* q
    cdef float v[BL]
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


cdef inline void mat_vec_bl(const Mat* M, const float* x, float* out) noexcept nogil:
    """:func:`mat_vec` for BL agents: ``x`` is (cols, BL), ``out`` (rows, BL).

    Rows are summed in double (one-hot ones gathered through ``rptr``); other
    sparse matrices scatter their columns, BL agents at a time.
    """
    cdef int k, r, j, b
    cdef float a
    cdef double acc[BL]
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
    for r in range(M.rows):
        for b in range(BL):
            acc[b] = 0.0
        if M.onehot:
            for j in range(M.rptr[r], M.rptr[r + 1]):
                k = M.rcol[j]
                a = M.val[k]
                for b in range(BL):
                    acc[b] += a * x[k * BL + b]
        else:
            for k in range(M.cols):
                a = M.val[<long long>r * M.cols + k]
                for b in range(BL):
                    acc[b] += a * x[k * BL + b]
        for b in range(BL):
            out[r * BL + b] = <float>acc[b]


cdef void c_infer_policies_block(const ModelC* m, const float* qs, int nb, const float* gamma,
                                 int use_utility, int use_sig, const float* lnC, int lnC_stride,
                                 const float* lnE, int lnE_stride, float* G, float* q_pi,
                                 float* scratch) noexcept nogil:
    """:func:`c_infer_policies` for ``nb`` <= BL consecutive agents (no parameter
    information gain, no inductive cost).

    ``qs``, ``G``, ``q_pi`` and ``gamma`` point at the first agent's rows; ``lnC``
    and ``lnE`` too, with a stride of 0 when the agents share the model's.
    Scratch needs (T + 1) * S * BL + 3 * max_K * BL + 2 * max_rows * BL floats.
    """
    cdef float* qs_pi = scratch                          # (T + 1, S, BL)
    cdef float* bj = qs_pi + (m.T + 1) * m.S * BL        # joint of a factor's B parents
    cdef float* qx = bj + m.max_K * BL                   # joint of a modality's parents
    cdef float* xm = qx + m.max_K * BL                   # qx without the pruned states
    cdef float* qo = xm + m.max_K * BL
    cdef float* qok = qo + m.max_rows * BL
    cdef double g[BL]
    cdef double sig[BL]
    cdef const float* lnc[BL]
    cdef const float* prev
    cdef float* cur
    cdef const float* x
    cdef const float* H
    cdef const int* pol
    cdef const int* dep
    cdef const Mat* A
    cdef int p, t, f, mm, b, i, k, o, nd, K, group, pruned
    cdef float v
    # agents' rows into columns; lanes past nb repeat agent 0 (computed, not stored)
    for b in range(BL):
        for i in range(m.S):
            qs_pi[i * BL + b] = qs[(b if b < nb else 0) * m.S + i]
        lnc[b] = lnC + (b if b < nb else 0) * lnC_stride
    for p in range(m.n_pol):
        pol = m.policies + p * m.T * m.nf
        for b in range(BL):
            g[b] = 0.0
        for t in range(m.T):
            prev = qs_pi + t * m.S * BL
            cur = qs_pi + (t + 1) * m.S * BL
            for f in range(m.nf):
                dep = m.b_dep + m.b_dep_off[f]
                nd = m.b_dep_off[f + 1] - m.b_dep_off[f]
                if nd == 1:
                    x = prev + m.s_off[dep[0]] * BL
                else:
                    joint_of_bl(m, prev, dep, nd, bj)
                    x = bj
                mat_vec_bl(&m.mats[m.b_mat[f] + pol[t * m.nf + f]], x, cur + m.s_off[f] * BL)
            group = -1
            pruned = 0
            x = qx  # set with the first modality's group (this quiets -Wmaybe-uninitialized)
            for mm in range(m.nm):
                dep = m.a_dep + m.a_dep_off[mm]
                nd = m.a_dep_off[mm + 1] - m.a_dep_off[mm]
                A = &m.mats[m.a_mat[mm]]
                K = m.a_K[mm]
                if m.a_group[mm] != group:  # modalities with the same parents share these
                    group = m.a_group[mm]
                    if nd == 1:
                        x = cur + m.s_off[dep[0]] * BL
                    else:
                        joint_of_bl(m, cur, dep, nd, qx)
                        x = qx
                    if use_sig:  # spm_MDP_G leaves out joint states at or below exp(-16)
                        pruned = 0   # whether one has nonzero probability (pr.mass != 0)
                        for k in range(K * BL):
                            v = x[k]
                            xm[k] = v if v > PRUNE else 0.0
                            pruned |= (not v > PRUNE) & (v != 0.0)
                mat_vec_bl(A, x, qo)
                if use_utility:
                    for o in range(m.no[mm]):
                        i = m.lnC_off[mm] + o * m.T + t
                        for b in range(BL):
                            g[b] += <double>qo[o * BL + b] * lnc[b][i]
                if use_sig:
                    H = m.a_H[mm]
                    for b in range(BL):
                        sig[b] = 0.0
                    for k in range(K):
                        for b in range(BL):
                            sig[b] += <double>xm[k * BL + b] * H[k]
                    if pruned:  # outcomes of the kept states only
                        mat_vec_bl(A, xm, qok)
                    else:
                        memcpy(qok, qo, m.no[mm] * BL * sizeof(float))
                    fa_sub_xlogx(qok, m.no[mm] * BL, BL, EPS, sig)  # 0 log 0 adds nothing
                    for b in range(BL):
                        g[b] += sig[b]
        for b in range(nb):
            G[b * m.n_pol + p] = <float>g[b]
            q_pi[b * m.n_pol + p] = <float>(gamma[b] * g[b]) + lnE[b * lnE_stride + p]
    for b in range(nb):
        softmax_inplace(q_pi + b * m.n_pol, m.n_pol)


cdef void c_action_marginals(const ModelC* m, const float* q_pi, float* marg) noexcept nogil:
    """Per-factor marginal of q_pi over each policy's first action, normalised."""
    cdef int p, f, i
    cdef double tot
    memset(marg, 0, m.nc_off[m.nf] * sizeof(float))
    for p in range(m.n_pol):
        for f in range(m.nf):
            marg[m.nc_off[f] + m.policies[p * m.T * m.nf + f]] += q_pi[p]
    for f in range(m.nf):
        tot = 0.0
        for i in range(m.nc[f]):
            tot += marg[m.nc_off[f] + i]
        for i in range(m.nc[f]):
            marg[m.nc_off[f] + i] = <float>(marg[m.nc_off[f] + i] / tot)


# ---------------------------------------------------------------------------
# Python-visible model and entry points
# ---------------------------------------------------------------------------

cdef class KModel:
    """C view of a validated generative model.

    Built by :class:`fa_core.model.GenerativeModel` only. Holds references to
    every numpy array it points into, so the pointers stay valid for the
    object's lifetime. Immutable after construction.
    """
    cdef ModelC c
    cdef readonly object _keep   # arrays the integer tables and vectors point into
    cdef list _mat_keep          # per matrix: the arrays mats[i] points into
    cdef list _aH_keep           # per modality: the array a_H[m] points into
    cdef list _rows_keep         # per one-hot matrix of a blocked model: (idx, rcol, rptr)
    cdef object _I_keep          # the inductive arrays, or None
    cdef readonly int scratch_size
    cdef readonly int sum_obs
    cdef readonly int sum_controls
    cdef readonly int lnC_size
    cdef readonly bint blocked   # populations evaluate policies BL agents at a time
    cdef readonly object s_off
    cdef float** _aH

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
        self.c.a_red_off = self._ints(ints, "a_red_off"); self.c.red_stride = int(ints["red_stride"])
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
        T1 = self.c.T + 1
        self.scratch_size = int(max(
            sum(ints["a_K"]) + self.c.S * 3 + (max_nd + 1) * self.c.max_K,          # infer_states
            T1 * self.c.S + 3 * self.c.max_K + 3 * self.c.max_rows + self.c.nf
            + self.c.T * self.c.red_stride,                                        # infer_policies
            (T1 * self.c.S + 3 * self.c.max_K + 2 * self.c.max_rows) * BL
            if self.blocked else 0,                                   # c_infer_policies_block
            (self.c.nll + 5 * self.c.S + 2 * (MAX_ND + 1)) * BL + self.c.nll + self.c.S
            + self.c.max_K if self.c.fpi_blocked else 0,                # c_infer_states_block
            # c_sample_action: action marginals, then a softmax over the policies (full
            # sampling) or over one factor's actions (marginal) when selection is stochastic
            self.sum_controls + max(self.c.n_pol, int(np.max(ints["nc"]))),
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

    def with_changes(self, dict mats, dict a_H):
        """This model with some matrices replaced, in O(changes): what learning needs.

        ``mats`` maps a matrix index to its new spec (same shape), ``a_H`` a
        modality to its new column entropies. Everything else is shared with
        this model.
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
        return new

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


def infer_states(KModel model, float[::1] qs, float[::1] qs_prev, int[::1] action,
                 int has_action, int[::1] obs, float[::1] obs_distr, bint distr,
                 int num_iter, double dF, double dF_tol, bint compute_vfe,
                 float[::1] scratch, object prior=None):
    """Posterior over hidden states, written into ``qs``.

    The prior is ``prior`` (S probabilities, every factor's concatenated) when
    given, else ``log D`` when ``has_action`` is false, else the prediction of
    ``qs_prev`` through ``B[..., action]``. ``qs`` and ``qs_prev`` may alias.
    Returns the number of fixed-point iterations run.
    """
    cdef const ModelC* m = &model.c
    cdef float* ll_all = &scratch[0]
    cdef int nll = 0, mm, it, i
    cdef const float[::1] pv
    for mm in range(m.nm):
        nll += m.a_K[mm]
    cdef float* logprior = ll_all + nll
    cdef float* rest = logprior + m.S
    if prior is not None:
        pv = prior
        if pv.shape[0] != m.S:
            raise ValueError(f"prior must hold {m.S} values, got {pv.shape[0]}")
    with nogil:
        if prior is not None:
            for i in range(m.S):
                logprior[i] = logf(pv[i] + EPS)
        elif has_action:
            c_log_prior(m, &qs_prev[0], &action[0], logprior, rest)
        else:
            memcpy(logprior, m.logD, m.S * sizeof(float))
        c_log_likelihood(m, &obs[0], &obs_distr[0], distr, ll_all, rest)
        it = c_infer_states(m, ll_all, logprior, &qs[0], num_iter, dF, dF_tol,
                            compute_vfe, rest)
    return it


def infer_policies(KModel model, const float[::1] qs, double gamma, bint use_utility,
                   bint use_states_info_gain, bint use_pA, bint use_pB, bint use_I,
                   float[::1] G, float[::1] q_pi, float[::1] scratch):
    """Expected free energy ``G`` (negative, as pymdp) and ``q_pi = softmax(gamma G + ln E)``."""
    cdef const ModelC* m = &model.c
    with nogil:
        c_infer_policies(m, &qs[0], gamma, use_utility, use_states_info_gain,
                         use_pA, use_pB, use_I and m.has_I, m.lnC, m.lnE, &G[0], &q_pi[0],
                         &scratch[0])


def action_marginals(KModel model, const float[::1] q_pi, float[::1] marg):
    """Normalised marginal over each factor's first action, flat over factors."""
    with nogil:
        c_action_marginals(&model.c, &q_pi[0], &marg[0])


def predict_states(KModel model, const float[::1] qs, int[::1] action, float[::1] out,
                   float[::1] scratch):
    """One step of ``B`` under ``action`` for every factor, written into ``out``."""
    with nogil:
        c_predict_states(&model.c, &qs[0], &action[0], &out[0], &scratch[0])


cdef double c_tie_rtol(const ModelC* m, const float* G, double gamma,
                       const float* lnE) noexcept nogil:
    """Relative band within which two probabilities are a tie.

    pymdp breaks exact float64 ties at random. In float32 the policy logits
    ``gamma * G + ln E`` carry a rounding error proportional to their size,
    so symmetric choices differ by up to that much: the band is 16 float32
    epsilons times ``1 + max |logit|``. Leads larger than that decide the
    choice, as in pymdp.
    """
    cdef int p
    cdef double mx = 0.0, v
    for p in range(m.n_pol):
        v = gamma * G[p] + lnE[p]
        if v < 0:
            v = -v
        if v > mx:
            mx = v
    return 16.0 * 1.1920928955078125e-07 * (1.0 + mx)


def tie_rtol(KModel model, const float[::1] G, double gamma):
    """The tie band (relative) for an agent whose last ``infer_policies`` gave ``G``."""
    return c_tie_rtol(&model.c, &G[0], gamma, model.c.lnE)


def select_highest(const float[::1] x, const int[::1] sizes, int[::1] out, double rtol,
                   object randint):
    """pymdp's select_highest on each consecutive block of ``x`` (block ``b`` has
    ``sizes[b]`` entries), written into ``out[b]``.

    Entries within ``rtol`` (relative) of a block's maximum are tied; a block
    with ``c > 1`` tied entries takes the ``randint(c)``-th of them (``randint``
    is the agent's generator, drawn once per tied block in block order, as pymdp
    draws), else its first maximum.
    """
    cdef Py_ssize_t nb = sizes.shape[0], b, i, off = 0, best, n, c, r
    cdef float mx, tol
    for b in range(nb):
        if sizes[b] < 1:
            raise ValueError("every block needs at least one entry")
        off += sizes[b]
    if off > x.shape[0] or out.shape[0] < nb:
        raise ValueError(f"x must hold {off} values and out {nb}")
    off = 0
    for b in range(nb):
        n = sizes[b]
        best = 0
        mx = x[off]
        for i in range(1, n):
            if x[off + i] > mx:
                mx = x[off + i]
                best = i
        tol = <float>(rtol * mx)
        c = 0
        for i in range(n):
            if mx - x[off + i] <= tol:
                c += 1
        if c > 1:
            r = randint(c)
            for i in range(n):
                if mx - x[off + i] <= tol:
                    if r == 0:
                        best = i
                        break
                    r -= 1
        out[b] = <int>best
        off += n


# ---------------------------------------------------------------------------
# Populations: the per-agent kernels above in one parallel loop
# ---------------------------------------------------------------------------

cdef inline unsigned long long splitmix64(unsigned long long* state) noexcept nogil:
    """SplitMix64: one 64-bit word of state per agent, so streams are independent of threads."""
    cdef unsigned long long z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double uniform01(unsigned long long* state) noexcept nogil:
    return (splitmix64(state) >> 11) * (1.0 / 9007199254740992.0)


cdef int c_select(const float* p, int n, int deterministic, double alpha, double rtol,
                  unsigned long long* rng, float* tmp) noexcept nogil:
    """pymdp's choice rule on one distribution, with this agent's random stream.

    Deterministic: the maximum, ties (within ``rtol``, relative) broken uniformly at random.
    Stochastic: a draw from ``softmax(alpha * log(p + 1e-16))``.
    """
    cdef int i, best = 0, count = 0, r
    cdef float mx = p[0], tol
    cdef double u, acc
    if deterministic:
        for i in range(1, n):
            if p[i] > mx:
                mx = p[i]
                best = i
        tol = <float>(rtol * mx)
        for i in range(n):
            if mx - p[i] <= tol:
                count += 1
        if count == 1:
            return best
        r = <int>(uniform01(rng) * count)
        for i in range(n):
            if mx - p[i] <= tol:
                if r == 0:
                    return i
                r -= 1
        return best
    for i in range(n):
        tmp[i] = <float>(alpha * logf(p[i] + EPS))
    softmax_inplace(tmp, n)
    u = uniform01(rng)
    acc = 0.0
    for i in range(n):
        acc += tmp[i]
        if u < acc:
            return i
    return n - 1


cdef void c_sample_action(const ModelC* m, const float* q_pi, int full, int deterministic,
                          double alpha, double rtol, unsigned long long* rng, int* action,
                          float* scratch) noexcept nogil:
    """Action per factor from the policy posterior (marginal or full sampling mode)."""
    cdef int f, p
    cdef float* marg = scratch
    cdef float* tmp = scratch + m.nc_off[m.nf]
    if full:
        p = c_select(q_pi, m.n_pol, deterministic, alpha, rtol, rng, tmp)
        for f in range(m.nf):
            action[f] = m.policies[p * m.T * m.nf + f]
    else:
        c_action_marginals(m, q_pi, marg)
        for f in range(m.nf):
            action[f] = c_select(marg + m.nc_off[f], m.nc[f], deterministic, alpha, rtol, rng,
                                 tmp)


cdef struct PopArgs:
    const ModelC* m
    float* qs               # (n, S)
    float* q_pi             # (n, P)
    float* G                # (n, P)
    int* action             # (n, nf)
    unsigned char* has_action
    const int* obs          # (n, nm)
    const float* gamma      # per agent
    const float* alpha      # per agent
    const float* lnC        # per agent (n, lnC_size) or NULL (the model's)
    const float* lnE        # per agent (n, P) or NULL (the model's)
    const float* prior      # per agent (n, S) prior probabilities, or NULL (D / prediction)
    unsigned long long* rng
    float* scratch          # (threads, scratch_size)
    long long scratch_size
    int num_iter
    double dF
    double dF_tol
    int compute_vfe
    int use_utility
    int use_sig
    int use_pA
    int use_pB
    int use_I
    int full
    int deterministic
    int lnC_size


cdef inline void c_agent_evidence(const PopArgs* a, Py_ssize_t i, float* ll_all,
                                  float* logprior, float* tmp) noexcept nogil:
    """Agent ``i``'s summed log likelihoods (m.nll floats) and log prior (S floats)."""
    cdef const ModelC* m = a.m
    cdef int k
    if a.prior != NULL:
        for k in range(m.S):
            logprior[k] = logf(a.prior[i * m.S + k] + EPS)
    elif a.has_action[i]:
        c_log_prior(m, a.qs + i * m.S, a.action + i * m.nf, logprior, tmp)
    else:
        memcpy(logprior, m.logD, m.S * sizeof(float))
    c_log_likelihood(m, a.obs + i * m.nm, NULL, 0, ll_all, tmp)


cdef void c_agent_stages(const PopArgs* a, Py_ssize_t i, int stages, float* sc) noexcept nogil:
    """Run stages (1 infer_states, 2 infer_policies, 4 sample_action) for agent ``i``."""
    cdef const ModelC* m = a.m
    cdef float* qs = a.qs + i * m.S
    cdef float* ll_all = sc
    cdef float* logprior = sc + m.nll
    if stages & 1:
        c_agent_evidence(a, i, ll_all, logprior, logprior + m.S)
        c_infer_states(m, ll_all, logprior, qs, a.num_iter, a.dF, a.dF_tol, a.compute_vfe,
                       logprior + m.S)
    if stages & 2:
        c_infer_policies(m, qs, a.gamma[i], a.use_utility, a.use_sig, a.use_pA, a.use_pB,
                         a.use_I, a.lnC + i * a.lnC_size if a.lnC != NULL else m.lnC,
                         a.lnE + i * m.n_pol if a.lnE != NULL else m.lnE,
                         a.G + i * m.n_pol, a.q_pi + i * m.n_pol, sc)
    if stages & 4:
        c_sample_action(m, a.q_pi + i * m.n_pol, a.full, a.deterministic, a.alpha[i],
                        c_tie_rtol(m, a.G + i * m.n_pol, a.gamma[i],
                                   a.lnE + i * m.n_pol if a.lnE != NULL else m.lnE),
                        a.rng + i, a.action + i * m.nf, sc)
        a.has_action[i] = 1


cdef void marginals_bl(const ModelC* m, const float* ll, const float* qs, float* qL,
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
    cdef float w
    memset(qL, 0, m.S * BL * sizeof(float))
    for b in range(BL):
        ell[b] = 0.0
    for g in range(m.ng):
        dep = m.g_dep + m.g_dep_off[g]
        nd = m.g_dep_off[g + 1] - m.g_dep_off[g]
        K = m.g_K[g]
        t = ll + m.g_off[g] * BL
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


cdef void c_infer_states_block(const PopArgs* a, Py_ssize_t i0, int nb,
                               float* sc) noexcept nogil:
    """:func:`c_infer_states` for agents ``i0 .. i0 + nb`` (nb <= BL), agents innermost.

    Every agent iterates as it would alone and keeps the iterate at which it
    stops (the free energy settles, or ``num_iter``); the block runs until the
    last one stops. Sums run in another order than the per-agent kernel.
    """
    cdef const ModelC* m = a.m
    cdef float* llT = sc                         # (nll, BL)
    cdef float* lpT = llT + m.nll * BL           # (S, BL) log prior
    cdef float* cur = lpT + m.S * BL             # (S, BL) iterate
    cdef float* nxt = cur + m.S * BL
    cdef float* logq = nxt + m.S * BL            # log of the newest iterate
    cdef float* qL = logq + m.S * BL             # messages
    cdef float* pre = qL + m.S * BL              # 2 * (MAX_ND + 1) * BL
    cdef float* ll1 = pre + 2 * (MAX_ND + 1) * BL    # one agent's evidence, then its joint
    cdef float* lp1 = ll1 + m.nll
    cdef float* swap
    cdef double ell[BL]
    cdef double prev[BL]
    cdef double dF
    cdef double tot[BL]
    cdef float mx[BL]
    cdef int active[BL]
    cdef int b, i, f, n, it = 0, left
    cdef float* x
    cdef float lt
    for b in range(BL):  # lanes past nb repeat agent 0 (computed, never written back)
        if b < nb or b == 0:
            c_agent_evidence(a, i0 + b, ll1, lp1, lp1 + m.S)
        for i in range(m.nll):
            llT[i * BL + b] = ll1[i] if b < nb or b == 0 else llT[i * BL]
        for i in range(m.S):
            lpT[i * BL + b] = lp1[i] if b < nb or b == 0 else lpT[i * BL]
        active[b] = b < nb
    for f in range(m.nf):  # uniform start, as pymdp
        n = m.ns[f]
        for i in range(m.s_off[f], m.s_off[f] + n):
            for b in range(BL):
                cur[i * BL + b] = 1.0 / n
                logq[i * BL + b] = logf(1.0 / n + EPS)
    if a.num_iter <= 0 or (a.compute_vfe and not a.dF >= a.dF_tol):
        for b in range(nb):  # no sweep at all: beliefs stay uniform
            for i in range(m.S):
                a.qs[(i0 + b) * m.S + i] = cur[i * BL + b]
        return
    if a.compute_vfe:
        free_energy_bl(m, cur, logq, lpT, NULL, prev)
    marginals_bl(m, llT, cur, qL, ell, pre)
    left = nb
    while left > 0:
        for i in range(m.S * BL):
            nxt[i] = lpT[i] + qL[i]
        for f in range(m.nf):  # softmax per factor and agent, with its log
            n = m.ns[f]
            x = nxt + m.s_off[f] * BL
            for b in range(BL):
                mx[b] = x[b]
                tot[b] = 0.0
            for i in range(1, n):
                for b in range(BL):
                    if x[i * BL + b] > mx[b]:
                        mx[b] = x[i * BL + b]
            for i in range(n * BL):
                logq[m.s_off[f] * BL + i] = x[i] - mx[i % BL]
            fa_exp_shifted(x, mx, n * BL, BL)
            for i in range(n * BL):
                tot[i % BL] += x[i]
            for b in range(BL):
                lt = <float>log(tot[b])
                for i in range(n):
                    x[i * BL + b] = <float>(x[i * BL + b] / tot[b])
                    logq[(m.s_off[f] + i) * BL + b] -= lt
        swap = cur
        cur = nxt
        nxt = swap
        it += 1
        if it == a.num_iter:  # every agent still iterating stops here
            break
        marginals_bl(m, llT, cur, qL, ell, pre)
        if a.compute_vfe:
            free_energy_bl(m, cur, logq, lpT, ell, tot)
            for b in range(nb):
                dF = tot[b] - prev[b]
                prev[b] = tot[b]
                if active[b] and not (dF if dF >= 0 else -dF) >= a.dF_tol:
                    active[b] = 0
                    left -= 1
                    for i in range(m.S):
                        a.qs[(i0 + b) * m.S + i] = cur[i * BL + b]
    for b in range(nb):
        if active[b]:
            for i in range(m.S):
                a.qs[(i0 + b) * m.S + i] = cur[i * BL + b]


cdef inline void free_energy_bl(const ModelC* m, const float* qs, const float* logq,
                                const float* logprior, const double* ell,
                                double* F) noexcept nogil:
    """:func:`free_energy` for BL agents, with exact log q (``ell`` NULL: no likelihood)."""
    cdef int i, b
    cdef float q
    for b in range(BL):
        F[b] = -ell[b] if ell != NULL else 0.0
    for i in range(m.S * BL):
        q = qs[i]
        if q != 0.0:  # 0 log 0 = 0
            F[i % BL] += q * (logq[i] - logprior[i])


cdef void c_block_stages(const PopArgs* a, Py_ssize_t i0, int nb, int stages,
                         float* sc) noexcept nogil:
    """:func:`c_agent_stages` for agents ``i0 .. i0 + nb``, policies evaluated together."""
    cdef const ModelC* m = a.m
    cdef int b
    if stages & 1:
        if m.fpi_blocked:
            c_infer_states_block(a, i0, nb, sc)
        else:
            for b in range(nb):
                c_agent_stages(a, i0 + b, 1, sc)
    if (stages & 2) and (a.use_pA or a.use_pB or a.use_I):  # not in the block kernel
        for b in range(nb):
            c_agent_stages(a, i0 + b, 2, sc)
    elif stages & 2:
        c_infer_policies_block(
            m, a.qs + i0 * m.S, nb, a.gamma + i0, a.use_utility, a.use_sig,
            a.lnC + i0 * a.lnC_size if a.lnC != NULL else m.lnC,
            a.lnC_size if a.lnC != NULL else 0,
            a.lnE + i0 * m.n_pol if a.lnE != NULL else m.lnE,
            m.n_pol if a.lnE != NULL else 0,
            a.G + i0 * m.n_pol, a.q_pi + i0 * m.n_pol, sc)
    if stages & 4:
        for b in range(nb):
            c_agent_stages(a, i0 + b, 4, sc)


def population_stages(KModel model, int stages, float[:, ::1] qs, float[:, ::1] q_pi,
                      float[:, ::1] G, int[:, ::1] action, unsigned char[::1] has_action,
                      const int[:, ::1] obs, const float[::1] gamma, const float[::1] alpha,
                      object lnC, object lnE, unsigned long long[::1] rng,
                      float[:, ::1] scratch, int num_iter, double dF, double dF_tol,
                      bint compute_vfe, bint use_utility, bint use_states_info_gain,
                      bint use_pA, bint use_pB, bint use_I, bint full, bint deterministic,
                      int n_threads, object prior=None):
    """Run ``stages`` (bit mask: 1 infer_states, 2 infer_policies, 4 sample_action)
    for every agent of a population, in parallel over agents.

    All arrays are (n_agents, ...) and C-contiguous; shapes were checked by
    :class:`fa_core.population.Population`. ``scratch`` has one row per thread.
    Each agent draws only from its own ``rng`` word, so results do not depend
    on the number of threads. ``prior`` (n_agents, S) float32, when given, is
    every agent's prior over states for stage 1 instead of ``D`` / the
    prediction from ``qs`` and ``action``.
    """
    cdef PopArgs a
    cdef Py_ssize_t i, n = qs.shape[0]
    cdef float[:, ::1] lnC_v
    cdef float[:, ::1] lnE_v
    cdef const float[:, ::1] prior_v
    if n == 0:
        return
    a.prior = NULL
    if prior is not None:
        prior_v = prior
        if prior_v.shape[0] != n or prior_v.shape[1] != model.c.S:
            raise ValueError(f"prior must have shape ({n}, {model.c.S})")
        a.prior = &prior_v[0, 0]
    a.m = &model.c
    a.qs = &qs[0, 0]; a.q_pi = &q_pi[0, 0]; a.G = &G[0, 0]
    a.action = &action[0, 0]; a.has_action = &has_action[0]
    a.obs = &obs[0, 0]; a.gamma = &gamma[0]; a.alpha = &alpha[0]
    a.lnC = NULL; a.lnE = NULL; a.lnC_size = model.lnC_size
    if lnC is not None:
        lnC_v = lnC
        a.lnC = &lnC_v[0, 0]
    if lnE is not None:
        lnE_v = lnE
        a.lnE = &lnE_v[0, 0]
    a.rng = &rng[0]
    a.scratch = &scratch[0, 0]; a.scratch_size = scratch.shape[1]
    a.num_iter = num_iter; a.dF = dF; a.dF_tol = dF_tol; a.compute_vfe = compute_vfe
    a.use_utility = use_utility; a.use_sig = use_states_info_gain
    a.use_pA = use_pA; a.use_pB = use_pB; a.use_I = use_I and model.c.has_I
    a.full = full; a.deterministic = deterministic
    if n_threads < 1:
        n_threads = 1
    if model.blocked:
        for i in prange((n + BL - 1) // BL, nogil=True, num_threads=n_threads,
                        schedule="static", chunksize=8):
            c_block_stages(&a, i * BL, BL if n - i * BL > BL else n - i * BL, stages,
                           a.scratch + threadid() * a.scratch_size)
        return
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static", chunksize=64):
        c_agent_stages(&a, i, stages, a.scratch + threadid() * a.scratch_size)


# ---------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------

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


cdef int c_pack_counts(const double[:, :] p, const int[::1] indptr, const int[::1] idx,
                       float[::1] val, float[::1] logval, float[::1] col_H, float[::1] wval,
                       double* colsum, double* H, double* wq, bint sparse, bint do_log,
                       bint do_H, bint do_w, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t rows = p.shape[0], cols = p.shape[1], r, k, j, nz = 0
    cdef double x, a, h
    cdef double ent_eps = exp(-16.0)
    memset(colsum, 0, 2 * cols * sizeof(double))
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
    for k in range(cols):  # per-column reciprocals: one division per entry, not three
        wq[k] = 1.0 / (colsum[k] + rows * EPS_D)
        colsum[k] = 1.0 / colsum[k]  # from here on colsum holds 1 / column sum
    if sparse:
        if nz != n:
            return 3
        for k in range(cols):
            h = 0.0
            for j in range(indptr[k], indptr[k + 1]):
                x = p[idx[j], k]
                if x <= 0.0:
                    return 3
                a = x * colsum[k]
                val[j] = <float>a
                if do_log:
                    logval[j] = logf(<float>a + EPS)
                h += a * logf(<float>(a + ent_eps))
                if do_w:
                    wval[j] = <float>(wq[k] - 1.0 / (x + EPS_D))
            if do_H:
                col_H[k] = <float>h
    else:
        for r in range(rows):
            for k in range(cols):
                x = p[r, k]
                j = r * cols + k
                a = x * colsum[k]
                val[j] = <float>a
                if do_log:
                    logval[j] = logf(<float>a + EPS)
                H[k] += a * logf(<float>(a + ent_eps))
                if do_w:
                    wval[j] = <float>(wq[k] - 1.0 / (x + EPS_D)) if x > 0.0 else 0.0
        if do_H:
            for k in range(cols):
                col_H[k] = <float>H[k]
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
    cdef double* colsum = &work[0]
    cdef double* H = &work[cols]
    cdef double* wq = &work[2 * cols]
    cdef Py_ssize_t n = idx.shape[0] if sparse else rows * cols
    if (val.shape[0] != n or (do_log and logval.shape[0] != n) or (do_w and wval.shape[0] != n)
            or (do_H and col_H.shape[0] != cols) or (sparse and indptr.shape[0] != cols + 1)):
        raise ValueError("output arrays do not match the layout")
    with nogil:
        code = c_pack_counts(p, indptr, idx, val, logval, col_H, wval, colsum, H, wq, sparse,
                             do_log, do_H, do_w, n)
    return code
