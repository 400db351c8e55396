# cython: language_level=3
"""Test-only Python hooks on the shared math of ``_math.pxd`` (never used by fa_core itself).

Each ``*_pair`` function runs a per-agent function on each of BL agents and its
block twin on the same BL agents at once, and returns both results as
(BL, ...) arrays, so ``tests/test_kernel_library.py`` can check that a twin
computes the same quantity. The ``*_precisions`` functions run a fused
function in float and in double.
"""

import numpy as np
cimport numpy as cnp

from libc.math cimport logf

from fa_core._math cimport (EPS, Pruned, agent_evidence, fa_dot_d, fa_exp1, fa_exp_sum,
                            fa_log1, fa_log_eps, fa_max, fa_simd_level, fa_xlogx_diff_sum,
                            fa_xlogx_sum, all_marginals, expected_utility,
                            fpi_sweep, fpi_sweep_bl, free_energy, free_energy_bl,
                            inductive_cost, inductive_row, info_gain, info_gain_bl, joint_of,
                            joint_of_bl, joint_of_marginals, marginals_bl, mat_vec,
                            mat_vec_bl, predicted_outcomes, scan_pruned, scan_pruned_bl,
                            softmax, softmax_log_bl, state_info_gain_dense, utility, utility_bl)
from fa_core._model cimport BL, MAX_ND, KModel, ModelC
from fa_core._policies cimport (c_infer_policies, c_infer_policies_block,
                                infer_policies_block_scratch, infer_policies_scratch)
from fa_core._states cimport (c_infer_states, c_infer_states_block, infer_states_block_scratch,
                              infer_states_scratch)

cnp.import_array()

#: agents in a block
BLOCK = BL


cdef float[:, ::1] _cols(const float[:, ::1] rows):
    """(BL, n) agent rows as (n, BL) columns, agents innermost."""
    return np.ascontiguousarray(np.asarray(rows).T)


cdef object _rows(float[:, ::1] cols):
    return np.ascontiguousarray(np.asarray(cols).T)


def layout(KModel model):
    """The sizes a test needs to build inputs: a dict of ints and lists from ``model.c``."""
    cdef const ModelC* m = &model.c
    return dict(S=m.S, nll=m.nll, n_pol=m.n_pol, T=m.T, nm=m.nm, nf=m.nf,
                no=[m.no[i] for i in range(m.nm)], a_K=[m.a_K[i] for i in range(m.nm)],
                mats=[(m.mats[i].rows, m.mats[i].cols, m.mats[i].sparse, m.mats[i].onehot)
                      for i in range(m.n_mats)],
                fpi_blocked=bool(m.fpi_blocked), blocked=bool(model.blocked))


def _check(a, int n, str what):
    if a.shape[0] != BL or a.shape[1] != n:
        raise ValueError(f"{what} must be ({BL}, {n}), got {a.shape}")


def joint_pair(KModel model, int mm, const float[:, ::1] qs):
    """Joint of modality ``mm``'s parents: :func:`joint_of` per agent, :func:`joint_of_bl`."""
    cdef const ModelC* m = &model.c
    cdef const int* dep = m.a_dep + m.a_dep_off[mm]
    cdef int nd = m.a_dep_off[mm + 1] - m.a_dep_off[mm], K = m.a_K[mm], b
    _check(qs, m.S, "qs")
    cdef float[:, ::1] one = np.zeros((BL, K), np.float32)
    cdef float[:, ::1] blk = np.zeros((K, BL), np.float32)
    cdef float[:, ::1] qT = _cols(qs)
    for b in range(BL):
        joint_of(m, &qs[b, 0], dep, nd, &one[b, 0])
    joint_of_bl(m, &qT[0, 0], dep, nd, &blk[0, 0])
    return np.asarray(one), _rows(blk)


def mat_vec_pair(KModel model, int i, const float[:, ::1] x):
    """Matrix ``i`` of the model times each agent's ``x``: :func:`mat_vec`, :func:`mat_vec_bl`."""
    cdef const ModelC* m = &model.c
    cdef int b, rows = m.mats[i].rows
    _check(x, m.mats[i].cols, "x")
    cdef float[:, ::1] one = np.zeros((BL, rows), np.float32)
    cdef float[:, ::1] blk = np.zeros((rows, BL), np.float32)
    cdef float[:, ::1] xT = _cols(x)
    for b in range(BL):
        mat_vec(&m.mats[i], &x[b, 0], &one[b, 0])
    mat_vec_bl(&m.mats[i], &xT[0, 0], &blk[0, 0])
    return np.asarray(one), _rows(blk)


def softmax_pair(const float[:, ::1] x):
    """:func:`softmax` per agent, :func:`softmax_log_bl` (values, and its log)."""
    cdef int b, n = x.shape[1]
    _check(x, n, "x")
    cdef float[:, ::1] one = np.array(x, np.float32)
    cdef float[:, ::1] blk = _cols(x)
    cdef float[:, ::1] logq = np.zeros((n, BL), np.float32)
    for b in range(BL):
        softmax(&one[b, 0], n)
    softmax_log_bl(&blk[0, 0], &logq[0, 0], n)
    return np.asarray(one), _rows(blk), _rows(logq)


def messages_pair(KModel model, const float[:, ::1] ll, const float[:, ::1] qs):
    """Messages and expected log likelihood: :func:`all_marginals`, :func:`marginals_bl`
    (``ll``: (BL, nll) summed log likelihoods; every group's parents sorted)."""
    cdef const ModelC* m = &model.c
    cdef int b
    _check(ll, m.nll, "ll")
    _check(qs, m.S, "qs")
    cdef float[:, ::1] one = np.zeros((BL, m.S), np.float32)
    cdef double[::1] ell1 = np.zeros(BL)
    cdef float[::1] work = np.zeros((m.max_nd + 1) * m.max_K, np.float32)
    cdef float[:, ::1] llT = _cols(ll)
    cdef float[:, ::1] qT = _cols(qs)
    cdef float[:, ::1] blk = np.zeros((m.S, BL), np.float32)
    cdef double[::1] ellb = np.zeros(BL)
    cdef float[::1] pre = np.zeros(2 * (MAX_ND + 1) * BL, np.float32)
    for b in range(BL):
        ell1[b] = all_marginals(m, &ll[b, 0], &qs[b, 0], &one[b, 0], &work[0])
    marginals_bl(m, &llT[0, 0], &qT[0, 0], &blk[0, 0], &ellb[0], &pre[0])
    return np.asarray(one), np.asarray(ell1), _rows(blk), np.asarray(ellb)


def free_energy_pair(KModel model, const float[:, ::1] ll, const float[:, ::1] qs,
                     const float[:, ::1] logprior):
    """Free energy of ``qs``: :func:`free_energy` per agent, :func:`free_energy_bl` (with the
    exact log of ``qs`` and the expected log likelihood of :func:`marginals_bl`)."""
    cdef const ModelC* m = &model.c
    cdef int b, i
    _check(ll, m.nll, "ll")
    _check(qs, m.S, "qs")
    _check(logprior, m.S, "logprior")
    cdef float[::1] qL = np.zeros(m.S, np.float32)
    cdef float[::1] work = np.zeros((m.max_nd + 1) * m.max_K + 2 * m.max_K, np.float32)
    cdef double[::1] one = np.zeros(BL)
    cdef double ell
    cdef float[:, ::1] llT = _cols(ll)
    cdef float[:, ::1] qT = _cols(qs)
    cdef float[:, ::1] lpT = _cols(logprior)
    cdef float[:, ::1] logq = np.zeros((m.S, BL), np.float32)
    cdef float[:, ::1] qLb = np.zeros((m.S, BL), np.float32)
    cdef double[::1] ellb = np.zeros(BL)
    cdef double[::1] blk = np.zeros(BL)
    cdef float[::1] pre = np.zeros(2 * (MAX_ND + 1) * BL, np.float32)
    for b in range(BL):
        ell = all_marginals(m, &ll[b, 0], &qs[b, 0], &qL[0], &work[0])
        one[b] = free_energy(m, &qs[b, 0], &logprior[b, 0], &ll[b, 0], 1, ell, &work[0],
                             &work[m.max_K])
    for i in range(m.S):
        for b in range(BL):
            logq[i, b] = logf(qT[i, b])
    marginals_bl(m, &llT[0, 0], &qT[0, 0], &qLb[0, 0], &ellb[0], &pre[0])
    free_energy_bl(m, &qT[0, 0], &logq[0, 0], &lpT[0, 0], &ellb[0], &blk[0])
    return np.asarray(one), np.asarray(blk)


def fpi_sweep_pair(KModel model, const float[:, ::1] logprior, const float[:, ::1] qL):
    """One sweep: :func:`fpi_sweep` per agent, :func:`fpi_sweep_bl` (and its log q)."""
    cdef const ModelC* m = &model.c
    cdef int b
    _check(logprior, m.S, "logprior")
    _check(qL, m.S, "qL")
    cdef float[:, ::1] one = np.zeros((BL, m.S), np.float32)
    cdef float[:, ::1] lpT = _cols(logprior)
    cdef float[:, ::1] qLT = _cols(qL)
    cdef float[:, ::1] blk = np.zeros((m.S, BL), np.float32)
    cdef float[:, ::1] logq = np.zeros((m.S, BL), np.float32)
    for b in range(BL):
        fpi_sweep(m, &logprior[b, 0], &qL[b, 0], &one[b, 0])
    fpi_sweep_bl(m, &lpT[0, 0], &qLT[0, 0], &blk[0, 0], &logq[0, 0])
    return np.asarray(one), _rows(blk), _rows(logq)


def utility_pair(KModel model, int mm, int t, const float[:, ::1] qo):
    """Utility of outcomes ``qo`` of modality ``mm`` at step ``t`` under the model's C:
    :func:`utility` per agent, :func:`utility_bl`."""
    cdef const ModelC* m = &model.c
    cdef int b
    _check(qo, m.no[mm], "qo")
    cdef double[::1] one = np.zeros(BL)
    cdef double[::1] blk = np.zeros(BL)
    cdef float[:, ::1] qT = _cols(qo)
    cdef const float* lnc[BL]
    for b in range(BL):
        one[b] = utility(m, mm, t, &qo[b, 0], m.lnC)
        lnc[b] = m.lnC
    utility_bl(m, mm, t, &qT[0, 0], lnc, &blk[0])
    return np.asarray(one), np.asarray(blk)


def info_gain_pair(KModel model, int mm, const float[:, ::1] qx):
    """State information gain of modality ``mm`` for joint beliefs ``qx`` over its parents:
    :func:`scan_pruned` + :func:`info_gain` per agent, :func:`scan_pruned_bl` +
    :func:`info_gain_bl`."""
    cdef const ModelC* m = &model.c
    cdef int b, K = m.a_K[mm], no = m.no[mm]
    _check(qx, K, "qx")
    cdef Pruned pr
    cdef int[::1] idx = np.zeros(K, np.int32)
    cdef float[::1] qo = np.zeros(no, np.float32)
    cdef float[::1] qo_p = np.zeros(no, np.float32)
    cdef double[::1] one = np.zeros(BL)
    cdef float[:, ::1] xT = _cols(qx)
    cdef float[:, ::1] xm = np.zeros((K, BL), np.float32)
    cdef float[:, ::1] qoT = np.zeros((no, BL), np.float32)
    cdef float[:, ::1] qok = np.zeros((no, BL), np.float32)
    cdef double[::1] blk = np.zeros(BL)
    cdef int pruned
    for b in range(BL):
        mat_vec(&m.mats[m.a_mat[mm]], &qx[b, 0], &qo[0])
        scan_pruned(&qx[b, 0], K, &idx[0], &pr)
        one[b] = info_gain(m, mm, &qx[b, 0], K, &qo[0], &idx[0], &pr, &qo_p[0])
    mat_vec_bl(&m.mats[m.a_mat[mm]], &xT[0, 0], &qoT[0, 0])
    pruned = scan_pruned_bl(&xT[0, 0], K, &xm[0, 0])
    info_gain_bl(m, mm, &xm[0, 0], pruned, &qoT[0, 0], &qok[0, 0], &blk[0])
    return np.asarray(one), np.asarray(blk)


def infer_states_pair(KModel model, float[:, ::1] qs_prev, const int[:, ::1] action,
                      const unsigned char[::1] has_action, const int[:, ::1] obs, int num_iter,
                      double dF_tol):
    """Posterior beliefs: :func:`c_infer_states` per agent, :func:`c_infer_states_block`
    (the model must be ``fpi_blocked``)."""
    cdef const ModelC* m = &model.c
    cdef int b
    if not m.fpi_blocked:
        raise ValueError("the block fixed-point iteration does not run this model")
    _check(qs_prev, m.S, "qs_prev")
    cdef float[:, ::1] one = np.array(qs_prev, np.float32)
    cdef float[:, ::1] blk = np.array(qs_prev, np.float32)
    cdef float[::1] sc = np.zeros(m.nll + m.S + infer_states_scratch(m), np.float32)
    cdef float[::1] scb = np.zeros(infer_states_block_scratch(m), np.float32)
    for b in range(BL):
        agent_evidence(m, has_action[b], &qs_prev[b, 0], &action[b, 0], &obs[b, 0], &sc[0],
                       &sc[m.nll], &sc[m.nll + m.S])
        c_infer_states(m, &sc[0], &sc[m.nll], &one[b, 0], num_iter, 1.0, dF_tol, 1,
                       &sc[m.nll + m.S])
    c_infer_states_block(m, &blk[0, 0], &action[0, 0], &has_action[0], &obs[0, 0], BL,
                         num_iter, 1.0, dF_tol, 1, &scb[0])
    return np.asarray(one), np.asarray(blk)


def infer_policies_pair(KModel model, const float[:, ::1] qs, double gamma):
    """Expected free energy and policy posterior: :func:`c_infer_policies` per agent
    (utility and state information gain), :func:`c_infer_policies_block`."""
    cdef const ModelC* m = &model.c
    cdef int b
    if not model.blocked:
        raise ValueError("the block policy kernel does not run this model")
    _check(qs, m.S, "qs")
    cdef float[:, ::1] G1 = np.zeros((BL, m.n_pol), np.float32)
    cdef float[:, ::1] q1 = np.zeros((BL, m.n_pol), np.float32)
    cdef float[:, ::1] Gb = np.zeros((BL, m.n_pol), np.float32)
    cdef float[:, ::1] qb = np.zeros((BL, m.n_pol), np.float32)
    cdef float[::1] gam = np.full(BL, gamma, np.float32)
    cdef float[::1] sc = np.zeros(infer_policies_scratch(m), np.float32)
    cdef float[::1] scb = np.zeros(infer_policies_block_scratch(m), np.float32)
    for b in range(BL):
        c_infer_policies(m, &qs[b, 0], gam[b], 1, 1, 0, 0, 0, m.lnC, m.lnE, &G1[b, 0],
                         &q1[b, 0], &sc[0])
    c_infer_policies_block(m, &qs[0, 0], BL, &gam[0], 1, 1, m.lnC, 0, m.lnE, 0, &Gb[0, 0],
                           &qb[0, 0], &scb[0])
    return np.asarray(G1), np.asarray(q1), np.asarray(Gb), np.asarray(qb)


# -- fused functions in both precisions ---------------------------------------------------

def softmax_precisions(const double[::1] x):
    """:func:`softmax` of ``x`` in float and in double."""
    cdef int n = x.shape[0]
    cdef float[::1] f = np.asarray(x, np.float32).copy()
    cdef double[::1] d = np.array(x, np.float64)
    softmax(&f[0], n)
    softmax(&d[0], n)
    return np.asarray(f), np.asarray(d)


def joint_precisions(const int[::1] ns, const int[::1] s_off, const double[::1] q,
                     const int[::1] dep, int skip):
    """:func:`joint_of_marginals` in float and in double."""
    cdef int K = 1, d
    for d in range(dep.shape[0]):
        K *= ns[dep[d]]
    cdef float[::1] qf = np.asarray(q, np.float32).copy()
    cdef float[::1] of = np.zeros(K, np.float32)
    cdef double[::1] od = np.zeros(K)
    joint_of_marginals(&ns[0], &s_off[0], &qf[0], &dep[0], dep.shape[0], skip, &of[0])
    joint_of_marginals(&ns[0], &s_off[0], &q[0], &dep[0], dep.shape[0], skip, &od[0])
    return np.asarray(of), np.asarray(od)


def joint_float_to_double(const int[::1] ns, const int[::1] s_off, const float[::1] q,
                          const int[::1] dep):
    """:func:`joint_of_marginals` of float32 marginals into a double joint (as learning
    builds the joint it adds to the counts)."""
    cdef int K = 1, d
    for d in range(dep.shape[0]):
        K *= ns[dep[d]]
    cdef double[::1] od = np.zeros(K)
    joint_of_marginals(&ns[0], &s_off[0], &q[0], &dep[0], dep.shape[0], -1, &od[0])
    return np.asarray(od)


def inductive_precisions(const double[:, ::1] I, const double[::1] q_now,
                         const double[::1] q_next):
    """(row, cost) of :func:`inductive_row` / :func:`inductive_cost` in float and in double
    (cost 0 when the row is -1)."""
    cdef int n = q_now.shape[0], depth = I.shape[0]
    cdef float[:, ::1] If = np.asarray(I, np.float32).copy()
    cdef float[::1] qf = np.asarray(q_now, np.float32).copy()
    cdef float[::1] qnf = np.asarray(q_next, np.float32).copy()
    cdef int rf = inductive_row(&If[0, 0], depth, n, &qf[0])
    cdef int rd = inductive_row(&I[0, 0], depth, n, &q_now[0])
    cdef double cf = inductive_cost(0.0, &If[rf, 0], &qnf[0], n) if rf >= 0 else 0.0
    cdef double cd = inductive_cost(0.0, &I[rd, 0], &q_next[0], n) if rd >= 0 else 0.0
    return (rf, cf), (rd, cd)


def dense_terms_precisions(const float[:, ::1] A, const float[::1] aH, const double[::1] qx,
                           const double[::1] lnC):
    """(utility, state information gain) of joint beliefs ``qx`` on a dense ``A`` (no, K):
    :func:`predicted_outcomes`, :func:`expected_utility`, :func:`state_info_gain_dense`
    with float and with double beliefs."""
    cdef int no = A.shape[0], K = A.shape[1]
    cdef float[::1] xf = np.asarray(qx, np.float32).copy()
    cdef double[::1] qo = np.zeros(no)
    cdef double[::1] qk = np.zeros(no)
    out = []
    predicted_outcomes(&A[0, 0], &xf[0], K, no, &qo[0], &qk[0])
    out.append((expected_utility(&qo[0], &lnC[0], 1, no),
                state_info_gain_dense(&aH[0], &xf[0], K, &qk[0], no)))
    predicted_outcomes(&A[0, 0], &qx[0], K, no, &qo[0], &qk[0])
    out.append((expected_utility(&qo[0], &lnC[0], 1, no),
                state_info_gain_dense(&aH[0], &qx[0], K, &qk[0], no)))
    return out[0], out[1]


# -- the vector polynomials of _simd.h ------------------------------------------------------

def simd_level():
    """Instruction set of the array functions in this module: 2 AVX2+FMA, 1 SSE2, 0 libm."""
    return fa_simd_level()


def vector_exp(const float[::1] x, int isa):
    """exp of every ``x`` through the vector polynomial (``isa`` 2: the AVX2+FMA body if this
    CPU has it, 1: the SSE2 body), one element at a time (the tail path)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef float[::1] out = np.empty(n, np.float32)
    with nogil:
        for i in range(n):
            out[i] = fa_exp1(x[i], isa)
    return np.asarray(out)


def vector_log(const float[::1] x, int isa):
    """:func:`vector_exp` for the log polynomial (positive normal ``x``)."""
    cdef Py_ssize_t i, n = x.shape[0]
    cdef float[::1] out = np.empty(n, np.float32)
    with nogil:
        for i in range(n):
            out[i] = fa_log1(x[i], isa)
    return np.asarray(out)


def array_math(const float[::1] x, const float[::1] y):
    """The dispatched array functions on whole arrays (full vectors and a tail):
    (exp(x - max x) with its sum, log(x + 1e-16), sum x log(x + 1e-16) over x > 0,
    sum x (log(x + 1e-16) - y), sum x y, max x)."""
    cdef int n = x.shape[0]
    cdef float[::1] e = np.array(x, np.float32)
    cdef float[::1] lg = np.empty(n, np.float32)
    cdef float mx = fa_max(&x[0], n)
    cdef double tot = fa_exp_sum(&e[0], n, mx)
    fa_log_eps(&x[0], &lg[0], n, EPS)
    return (np.asarray(e), tot, np.asarray(lg), fa_xlogx_sum(&x[0], n, EPS),
            fa_xlogx_diff_sum(&x[0], &y[0], n, EPS), fa_dot_d(&x[0], &y[0], n), mx)
