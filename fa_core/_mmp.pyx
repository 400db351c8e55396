# cython: language_level=3
"""Compiled marginal message passing (pymdp's ``inference_algo="MMP"``).

pymdp.legacy's ``run_mmp_factorized`` / ``run_mmp`` and the expected free
energy of ``update_posterior_policies_full_factorized``, on dense float32
matrices held by :class:`MMPModel`, writing into buffers owned by the
caller (``fa_core.mmp.MMPState``). Beliefs are stored float32; the per-factor
messages, prediction errors and free energies are computed in double.

Index conventions: a tensor over the parent factors ``dep[0..nd-1]`` is
flattened in C order (the last parent varies fastest), as numpy does.
"""

from libc.math cimport log
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove, memset
from cython.parallel cimport prange, threadid

from fa_core._math cimport (EPS, EPS_D, expected_utility, fa_exp_shifted, fa_log_eps,
                            joint_of_marginals, predicted_outcomes, softmax,
                            state_info_gain_dense)
from fa_core._model cimport BL

import numpy as np
cimport numpy as cnp

cnp.import_array()


cdef void contract_except(const MC* m, const float* T, int rows, const int* dep, int nd,
                          int pos, const float* q, double* out) noexcept nogil:
    """``out[r, v] = sum_k T[r, k] prod_{j != pos} q_j(k_j)`` with ``k_pos = v``.

    ``T`` is (rows, prod ns[dep]) row-major; ``out`` is (rows, ns[dep[pos]]).
    """
    cdef int idx[64]
    cdef int K = 1, d, k, r, n_pos = m.ns[dep[pos]]
    cdef double w
    for d in range(nd):
        K *= m.ns[dep[d]]
        idx[d] = 0
    memset(out, 0, rows * n_pos * sizeof(double))
    for k in range(K):
        w = 1.0
        for d in range(nd):
            if d != pos:
                w *= q[m.s_off[dep[d]] + idx[d]]
        if w != 0.0:
            for r in range(rows):
                out[r * n_pos + idx[pos]] += T[<long long>r * K + k] * w
        d = nd - 1
        while d >= 0:  # odometer over the parents, last fastest
            idx[d] += 1
            if idx[d] < m.ns[dep[d]]:
                break
            idx[d] = 0
            d -= 1


cdef inline int index_of(const int* dep, int nd, int f) noexcept nogil:
    cdef int d
    for d in range(nd):
        if dep[d] == f:
            return d
    return -1


cdef double c_mmp(const MC* m, const float* lh, const double* lnlh, int past_len, int infer_len,
                  int future_cutoff, const int* acts, const float* prior, float* q, int num_iter,
                  double tau, double fut_w, float* fs, double* ds, float* xn,
                  float* vn) noexcept nogil:
    """One policy's marginal message passing (pymdp ``run_mmp_factorized``); returns F.

    ``lh``: past_len blocks of likelihood terms (``lnlh``: their logs + 1e-16);
    ``acts``: (infer_len - 1, nf) actions leading out of each step; ``prior``: flat
    beliefs before the window; ``q``: (infer_len, S) beliefs, written. Scratch:
    ``fs`` max(max_K, max_ns) floats, ``ds`` 7 * max_ns + max_ns * max_ns doubles.
    ``xn`` / ``vn``: NULL, or (num_iter, infer_len, S) records of each iteration's
    beliefs and prediction errors (pymdp's ``_run_mmp_testing`` outputs, for checks
    against SPM).
    """
    cdef int n = m.max_ns
    cdef double* lnA = ds
    cdef double* past = ds + n
    cdef double* fut = ds + 2 * n
    cdef double* sx = ds + 3 * n
    cdef double* lnq = ds + 4 * n
    cdef double* err = ds + 5 * n
    cdef double* tmp = ds + 6 * n
    cdef double* M = ds + 7 * n          # (ns[child], ns[f]) marginalised transition
    cdef int itr, t, f, i, v, s, li, l, nd, pos, ns_f, ns_i, u, c, K, k
    cdef long long j
    cdef const long long* cp
    cdef const float* rzp
    cdef int nf = m.nf
    cdef double F = 0.0, mean, tot, acc, coeff, e
    cdef float* qt
    cdef const float* qn
    cdef const float* Bm
    cdef const int* dep

    for t in range(infer_len):
        for f in range(nf):
            for v in range(m.ns[f]):
                q[t * m.S + m.s_off[f] + v] = <float>(1.0 / m.ns[f])

    for itr in range(num_iter):
        F = 0.0
        for t in range(infer_len):
            qt = q + t * m.S
            for f in range(nf):
                ns_f = m.ns[f]
                # likelihood: sum over terms of log E_{other parents}[lh]
                for v in range(ns_f):
                    lnA[v] = 0.0
                if t < past_len:
                    for li in range(m.f_l_off[f], m.f_l_off[f + 1]):
                        l = m.f_l[li]
                        dep = m.l_dep + m.l_dep_off[l]
                        nd = m.l_dep_off[l + 1] - m.l_dep_off[l]
                        if nd == 1:  # independent of the beliefs: logged once per call
                            for v in range(ns_f):
                                lnA[v] += lnlh[<long long>t * m.lh_stride + m.l_off[l] + v]
                            continue
                        pos = index_of(dep, nd, f)
                        contract_except(m, lh + <long long>t * m.lh_stride + m.l_off[l], 1,
                                        dep, nd, pos, qt, tmp)
                        for v in range(ns_f):
                            lnA[v] += log(tmp[v] + EPS_D)
                # past message
                if t == 0:
                    for v in range(ns_f):
                        past[v] = log(<double>prior[m.s_off[f] + v] + EPS_D)
                else:
                    dep = m.b_dep + m.b_dep_off[f]
                    nd = m.b_dep_off[f + 1] - m.b_dep_off[f]
                    K = joint_of_marginals(m.ns, m.s_off, q + (t - 1) * m.S, dep, nd, -1, fs)
                    u = acts[(t - 1) * nf + f]
                    cp = m.c_ptr + m.c_col[f] + <long long>u * (K + 1)
                    for v in range(ns_f):
                        tmp[v] = 0.0
                    for k in range(K):
                        if fs[k] != 0.0:
                            for j in range(cp[k], cp[k + 1]):
                                tmp[m.c_row[j]] += <double>m.c_val[j] * fs[k]
                    for v in range(ns_f):
                        past[v] = log(tmp[v] + EPS_D)
                # future message, from every factor f drives
                for v in range(ns_f):
                    fut[v] = 0.0
                if t < future_cutoff:
                    qn = q + (t + 1) * m.S
                    for c in range(m.ch_off[f], m.ch_off[f + 1]):
                        i = m.ch[c]
                        ns_i = m.ns[i]
                        u = acts[t * nf + i]
                        if m.rz_off[i] >= 0:
                            # spm_norm(B.T) q = B.T (q / Z) + 1e-16 * sum(q / Z), on the CSC entries
                            rzp = m.rz + m.rz_off[i] + u * ns_i
                            acc = 0.0
                            for s in range(ns_i):
                                tmp[s] = <double>qn[m.s_off[i] + s] * rzp[s]
                                acc += tmp[s]
                            acc *= EPS_D
                            cp = m.c_ptr + m.c_col[i] + <long long>u * (ns_f + 1)
                            for v in range(ns_f):
                                e = acc
                                for j in range(cp[v], cp[v + 1]):
                                    e += <double>m.c_val[j] * tmp[m.c_row[j]]
                                fut[v] += log(e + EPS_D)
                        else:
                            # marginalise B[i][..., u] over f's co-parents, then spm_norm its
                            # transpose
                            dep = m.b_dep + m.b_dep_off[i]
                            nd = m.b_dep_off[i + 1] - m.b_dep_off[i]
                            Bm = m.B + m.b_off[i] + <long long>u * ns_i * m.b_K[i]
                            contract_except(m, Bm, ns_i, dep, nd, index_of(dep, nd, f), qn, M)
                            for s in range(ns_i):
                                tot = 0.0
                                for v in range(ns_f):
                                    tot += M[s * ns_f + v] + EPS_D
                                for v in range(ns_f):
                                    M[s * ns_f + v] = (M[s * ns_f + v] + EPS_D) / tot
                            for v in range(ns_f):
                                acc = 0.0
                                for s in range(ns_i):
                                    acc += M[s * ns_f + v] * qn[m.s_off[i] + s]
                                fut[v] += log(acc + EPS_D)
                    for v in range(ns_f):
                        fut[v] *= fut_w
                # gradient step on the log beliefs
                coeff = 1.0 if t >= future_cutoff else 2.0
                mean = 0.0
                for v in range(ns_f):
                    sx[v] = qt[m.s_off[f] + v]
                    lnq[v] = log(sx[v] + EPS_D)
                    err[v] = coeff * lnA[v] + past[v] + fut[v] - coeff * lnq[v]
                    mean += err[v]
                mean /= ns_f
                for v in range(ns_f):
                    lnq[v] += tau * (err[v] - mean)
                softmax(lnq, ns_f)
                for v in range(ns_f):
                    qt[m.s_off[f] + v] = <float>lnq[v]
                if xn != NULL:
                    j = (<long long>itr * infer_len + t) * m.S + m.s_off[f]
                    for v in range(ns_f):
                        xn[j + v] = qt[m.s_off[f] + v]
                        vn[j + v] = <float>(err[v] - mean)
                # SPM's free energy of the policy (spm_MDP_VB_X), as pymdp
                for v in range(ns_f):
                    e = 0.5 * err[v]
                    if t != 0 and t != infer_len - 1:
                        e = 0.5 * (err[v] - (nf - 1) * lnA[v] / nf)
                    F += sx[v] * e
    return F


# ---------------------------------------------------------------------------
# Lockstep marginal message passing: BL policies at a time, lanes = policies.
#
# Every policy of a window runs the same schedule (iterations, steps, factors,
# past_len / infer_len / future_cutoff) on the same likelihoods; only the actions
# (and, with separate priors, the prior) differ. So c_mmp_bl keeps each quantity
# of c_mmp as (n, BL) arrays with the policies innermost: the arithmetic loops over
# lanes vectorise, and the logs and exps, which dominate c_mmp's cost, run through
# _simd.h's float32 polynomials (AVX2 when the CPU has it, chosen at run time) on
# contiguous n * BL floats. Messages are float32 (c_mmp: double); F's sums are double.
# tests/test_mmp.py's SPM references (atol 1e-6) and pymdp parity hold with that.
# Only for models whose every transition has one parent factor (the row-scaled CSC
# form of the future message, MC.rz): others keep c_mmp.
# ---------------------------------------------------------------------------

cdef inline void log_eps_bl(float* x, int n) noexcept nogil:
    """``x = log(x + 1e-16)`` over ``n`` (rows of BL) floats, in place (pymdp's spm_log)."""
    fa_log_eps(x, x, n * BL, EPS)


cdef inline void softmax_bl(float* x, int n) noexcept nogil:
    """:func:`fa_core._math.softmax` for BL lanes: ``x`` (n, BL) in place, sums in double."""
    cdef int i, b
    cdef float mx[BL]
    cdef double tot[BL]
    for b in range(BL):
        mx[b] = x[b]
        tot[b] = 0.0
    for i in range(1, n):
        for b in range(BL):
            if x[i * BL + b] > mx[b]:
                mx[b] = x[i * BL + b]
    fa_exp_shifted(x, mx, n * BL, BL)
    for i in range(n):
        for b in range(BL):
            tot[b] += x[i * BL + b]
    for i in range(n):
        for b in range(BL):
            x[i * BL + b] = <float>(x[i * BL + b] / tot[b])


cdef void contract_except_bl(const MC* m, const float* T, const int* dep, int nd, int pos,
                             const float* q, float* out) noexcept nogil:
    """:func:`contract_except` of one shared row ``T`` against BL lanes of beliefs ``q``
    (S, BL): ``out[v, b] = sum_k T[k] prod_{j != pos} q_j(k_j)[b]`` with ``k_pos = v``.
    Two parents (the common case) are written out; zero entries of ``T`` add +0 (q finite)
    and are skipped."""
    cdef int idx[64]
    cdef float wv[BL]
    cdef int K = 1, d, k, b, i, j, n0, n1, n_pos = m.ns[dep[pos]]
    cdef float tk
    cdef const float* qd
    cdef float* o
    memset(out, 0, n_pos * BL * sizeof(float))
    if nd == 2:
        n0 = m.ns[dep[0]]
        n1 = m.ns[dep[1]]
        for i in range(n0):
            for j in range(n1):
                tk = T[i * n1 + j]
                if tk != 0.0:
                    if pos == 0:
                        o = out + i * BL
                        qd = q + (m.s_off[dep[1]] + j) * BL
                    else:
                        o = out + j * BL
                        qd = q + (m.s_off[dep[0]] + i) * BL
                    for b in range(BL):
                        o[b] += tk * qd[b]
        return
    for d in range(nd):
        K *= m.ns[dep[d]]
        idx[d] = 0
    for k in range(K):
        tk = T[k]
        if tk != 0.0:
            for b in range(BL):
                wv[b] = tk
            for d in range(nd):
                if d != pos:
                    qd = q + (m.s_off[dep[d]] + idx[d]) * BL
                    for b in range(BL):
                        wv[b] *= qd[b]
            o = out + idx[pos] * BL
            for b in range(BL):
                o[b] += wv[b]
        d = nd - 1
        while d >= 0:  # odometer over the parents, last fastest
            idx[d] += 1
            if idx[d] < m.ns[dep[d]]:
                break
            idx[d] = 0
            d -= 1


cdef inline int lanes_share(const int* const* acts, int row) noexcept nogil:
    """Whether every lane takes the same action ``acts[b][row]`` (e.g. the window's past)."""
    cdef int b
    for b in range(1, BL):
        if acts[b][row] != acts[0][row]:
            return 0
    return 1


cdef void past_message_bl(const MC* m, int f, const int* const* acts, int row,
                          const float* qp, float* out) noexcept nogil:
    """``out = log(B[f][..., u] q_parent + 1e-16)`` per lane (one-parent B, CSC columns);
    ``qp`` is the previous step's (S, BL) beliefs, ``u = acts[b][row]``."""
    cdef int g = m.b_dep[m.b_dep_off[f]], K = m.ns[g], k, b, r
    cdef long long j
    cdef const long long* cp
    cdef const float* x = qp + m.s_off[g] * BL
    cdef float c
    memset(out, 0, m.ns[f] * BL * sizeof(float))
    if lanes_share(acts, row):
        cp = m.c_ptr + m.c_col[f] + <long long>acts[0][row] * (K + 1)
        for k in range(K):
            for j in range(cp[k], cp[k + 1]):
                r = m.c_row[j]
                c = m.c_val[j]
                for b in range(BL):
                    out[r * BL + b] += c * x[k * BL + b]
    else:
        for b in range(BL):
            cp = m.c_ptr + m.c_col[f] + <long long>acts[b][row] * (K + 1)
            for k in range(K):
                for j in range(cp[k], cp[k + 1]):
                    out[m.c_row[j] * BL + b] += m.c_val[j] * x[k * BL + b]
    log_eps_bl(out, m.ns[f])


cdef void future_message_bl(const MC* m, int i, int ns_f, const int* const* acts, int row,
                            const float* qn, float* tmp, float* out) noexcept nogil:
    """``out += log(spm_norm(B[i][..., u].T) q_i' + 1e-16)`` per lane: the message to a
    factor from its child ``i`` (one-parent B) at the next step ``qn`` (S, BL), computed as
    c_mmp's CSC form (``B.T (q / Z) + 1e-16 sum(q / Z)``). ``tmp`` is (ns_i + ns_f + 1, BL)."""
    cdef int ns_i = m.ns[i], s, v, b, same = lanes_share(acts, row)
    cdef long long j
    cdef const long long* cp
    cdef const float* rzp
    cdef const float* x = qn + m.s_off[i] * BL
    cdef float* acc = tmp + ns_i * BL
    cdef float* e = acc + BL
    cdef float c
    for b in range(BL):
        acc[b] = 0.0
    for b in range(BL):
        rzp = m.rz + m.rz_off[i] + <long long>acts[b][row] * ns_i
        for s in range(ns_i):
            tmp[s * BL + b] = x[s * BL + b] * rzp[s]
            acc[b] += tmp[s * BL + b]
    for b in range(BL):
        acc[b] *= EPS
    for v in range(ns_f):
        for b in range(BL):
            e[v * BL + b] = acc[b]
    if same:
        cp = m.c_ptr + m.c_col[i] + <long long>acts[0][row] * (ns_f + 1)
        for v in range(ns_f):
            for j in range(cp[v], cp[v + 1]):
                s = m.c_row[j]
                c = m.c_val[j]
                for b in range(BL):
                    e[v * BL + b] += c * tmp[s * BL + b]
    else:
        for b in range(BL):
            cp = m.c_ptr + m.c_col[i] + <long long>acts[b][row] * (ns_f + 1)
            for v in range(ns_f):
                for j in range(cp[v], cp[v + 1]):
                    e[v * BL + b] += m.c_val[j] * tmp[m.c_row[j] * BL + b]
    log_eps_bl(e, ns_f)
    for v in range(ns_f * BL):
        out[v] += e[v]


cdef inline bint lockstep_ok(const MC* m) noexcept nogil:
    """Whether :func:`c_mmp_bl` applies: every transition has one parent factor."""
    cdef int f
    for f in range(m.nf):
        if m.rz_off[f] < 0:
            return False
    return True


cdef inline long long lockstep_floats(const MC* m, int infer_len) noexcept nogil:
    """Scratch floats :func:`c_mmp_bl` needs for a window of ``infer_len`` steps."""
    return (<long long>(infer_len + 1) * m.S + 8 * m.max_ns + 2) * BL


cdef void c_mmp_bl(const MC* m, const float* lh, const double* lnlh, int past_len,
                   int infer_len, int future_cutoff, const int* const* acts,
                   const float* const* prior, float* const* q, int num_iter, double tau,
                   double fut_w, double* F, float* ws, float* const* xn,
                   float* const* vn) noexcept nogil:
    """:func:`c_mmp` for BL policies in lockstep (lane ``b``: ``acts[b]``, ``prior[b]``,
    ``q[b]``, ``F[b]``; ``xn`` / ``vn`` NULL or BL records). Lanes may repeat a policy to
    fill the block. ``ws``: :func:`lockstep_floats` floats."""
    cdef int n = m.max_ns, S = m.S, nf = m.nf
    cdef float* Q = ws                       # (infer_len, S, BL) beliefs
    cdef float* lnp = Q + infer_len * S * BL  # (S, BL) log prior: the same every iteration
    cdef float* lnA = lnp + S * BL
    cdef float* past = lnA + n * BL
    cdef float* fut = past + n * BL
    cdef float* sx = fut + n * BL
    cdef float* lnq = sx + n * BL
    cdef float* err = lnq + n * BL
    cdef float* tmp = err + n * BL           # (2 n + 2, BL): contractions, messages
    cdef int itr, t, f, c, li, l, nd, ns_f, v, b, s, i
    cdef long long j
    cdef const int* dep
    cdef const double* lnl
    cdef float* qt
    cdef float* qf
    cdef float coeff, ftau = <float>tau, ffw = <float>fut_w, x
    cdef double mean[BL]
    cdef double e
    for t in range(infer_len):
        for f in range(nf):
            for v in range(m.ns[f]):
                for b in range(BL):
                    Q[(t * S + m.s_off[f] + v) * BL + b] = <float>(1.0 / m.ns[f])
    for s in range(S):
        for b in range(BL):
            lnp[s * BL + b] = prior[b][s]
    log_eps_bl(lnp, S)
    for itr in range(num_iter):
        for b in range(BL):
            F[b] = 0.0
        for t in range(infer_len):
            qt = Q + t * S * BL
            for f in range(nf):
                ns_f = m.ns[f]
                # likelihood: sum over terms of log E_{other parents}[lh]
                memset(lnA, 0, ns_f * BL * sizeof(float))
                if t < past_len:
                    for li in range(m.f_l_off[f], m.f_l_off[f + 1]):
                        l = m.f_l[li]
                        dep = m.l_dep + m.l_dep_off[l]
                        nd = m.l_dep_off[l + 1] - m.l_dep_off[l]
                        if nd == 1:  # independent of the beliefs: logged once per call
                            lnl = lnlh + <long long>t * m.lh_stride + m.l_off[l]
                            for v in range(ns_f):
                                x = <float>lnl[v]
                                for b in range(BL):
                                    lnA[v * BL + b] += x
                            continue
                        contract_except_bl(m, lh + <long long>t * m.lh_stride + m.l_off[l],
                                           dep, nd, index_of(dep, nd, f), qt, tmp)
                        log_eps_bl(tmp, ns_f)
                        for v in range(ns_f * BL):
                            lnA[v] += tmp[v]
                # past message
                if t == 0:
                    memcpy(past, lnp + m.s_off[f] * BL, ns_f * BL * sizeof(float))
                else:
                    past_message_bl(m, f, acts, (t - 1) * nf + f, qt - S * BL, past)
                # future message, from every factor f drives
                memset(fut, 0, ns_f * BL * sizeof(float))
                if t < future_cutoff:
                    for c in range(m.ch_off[f], m.ch_off[f + 1]):
                        i = m.ch[c]
                        future_message_bl(m, i, ns_f, acts, t * nf + i, qt + S * BL, tmp, fut)
                    for v in range(ns_f * BL):
                        fut[v] *= ffw
                # gradient step on the log beliefs
                coeff = 1.0 if t >= future_cutoff else 2.0
                qf = qt + m.s_off[f] * BL
                memcpy(sx, qf, ns_f * BL * sizeof(float))
                memcpy(lnq, qf, ns_f * BL * sizeof(float))
                log_eps_bl(lnq, ns_f)
                for b in range(BL):
                    mean[b] = 0.0
                for v in range(ns_f):
                    for b in range(BL):
                        i = v * BL + b
                        err[i] = coeff * lnA[i] + past[i] + fut[i] - coeff * lnq[i]
                        mean[b] += err[i]
                for b in range(BL):
                    mean[b] /= ns_f
                for v in range(ns_f):
                    for b in range(BL):
                        i = v * BL + b
                        lnq[i] += ftau * <float>(err[i] - mean[b])
                softmax_bl(lnq, ns_f)
                memcpy(qf, lnq, ns_f * BL * sizeof(float))
                if xn != NULL:
                    for b in range(BL):
                        j = (<long long>itr * infer_len + t) * S + m.s_off[f]
                        for v in range(ns_f):
                            xn[b][j + v] = qf[v * BL + b]
                            vn[b][j + v] = <float>(err[v * BL + b] - mean[b])
                # SPM's free energy of the policy (spm_MDP_VB_X), as pymdp
                for v in range(ns_f):
                    for b in range(BL):
                        i = v * BL + b
                        e = 0.5 * err[i]
                        if t != 0 and t != infer_len - 1:
                            e = 0.5 * (err[i] - (nf - 1) * <double>lnA[i] / nf)
                        F[b] += sx[i] * e
    for b in range(BL):
        for t in range(infer_len):
            for s in range(S):
                q[b][t * S + s] = Q[(t * S + s) * BL + b]


cdef int mmp_policies(const MC* m, const float* lh, const double* lnlh, int past_len,
                      int infer_len, int future_cutoff, int n_pol, const int* acts,
                      long long acts_stride, const float* prior, long long prior_stride,
                      float* q, long long q_stride, int num_iter, double tau, double fut_w,
                      float* F, float* fs, double* ds, float* xn, float* vn,
                      long long rec_stride) noexcept nogil:
    """Every policy's :func:`c_mmp` (``F[p]``, ``q + p * q_stride``, ...; ``prior_stride`` 0:
    one shared prior), BL policies at a time through :func:`c_mmp_bl` where it applies
    (the last block repeats the last policy). The lockstep scratch is allocated per call
    (a malloc is ~0.1 us against the ~10 us of a window). Returns -1 if it could not be
    (nothing written), else 0."""
    cdef const int* pa[BL]
    cdef const float* pp[BL]
    cdef float* pq[BL]
    cdef float* px[BL]
    cdef float* pv[BL]
    cdef double Fb[BL]
    cdef int p, p0, b, k
    cdef float* ws
    if not lockstep_ok(m):
        for p in range(n_pol):
            F[p] = <float>c_mmp(m, lh, lnlh, past_len, infer_len, future_cutoff,
                                acts + p * acts_stride, prior + p * prior_stride,
                                q + p * q_stride, num_iter, tau, fut_w, fs, ds,
                                xn + p * rec_stride if xn != NULL else NULL,
                                vn + p * rec_stride if xn != NULL else NULL)
        return 0
    ws = <float*>malloc(lockstep_floats(m, infer_len) * sizeof(float))
    if ws == NULL:
        return -1
    p0 = 0
    while p0 < n_pol:
        for b in range(BL):
            k = p0 + b if p0 + b < n_pol else n_pol - 1
            pa[b] = acts + k * acts_stride
            pp[b] = prior + k * prior_stride
            # a repeated lane computes its policy's numbers again: writing them is harmless
            pq[b] = q + k * q_stride
            if xn != NULL:
                px[b] = xn + k * rec_stride
                pv[b] = vn + k * rec_stride
        c_mmp_bl(m, lh, lnlh, past_len, infer_len, future_cutoff, pa, pp, pq, num_iter, tau,
                 fut_w, Fb, ws, px if xn != NULL else NULL, pv if xn != NULL else NULL)
        for b in range(BL):
            if p0 + b < n_pol:
                F[p0 + b] = <float>Fb[b]
        p0 += BL
    free(ws)
    return 0


cdef double c_efe(const MC* m, const float* q, int t0, int use_util, int use_sig,
                  float* fs, double* ds) noexcept nogil:
    """Negative expected free energy of one policy over steps t0 .. t0 + n_steps - 1 of ``q``.

    pymdp's calc_expected_utility + calc_states_info_gain_factorized: for every
    step and modality, utility of the predicted outcomes and spm_MDP_G (joint
    parent states at or below exp(-16) are left out of the information gain).
    Scratch: ``fs`` max_K floats, ``ds`` 2 * max_no doubles.
    """
    cdef int tt, mm, K, no
    cdef double g = 0.0
    cdef const float* qt
    cdef double* qo = ds
    cdef double* qk = ds + m.max_no
    for tt in range(m.n_steps):
        qt = q + (t0 + tt) * m.S
        for mm in range(m.nm):
            no = m.no[mm]
            K = joint_of_marginals(m.ns, m.s_off, qt, m.a_dep + m.a_dep_off[mm],
                                   m.a_dep_off[mm + 1] - m.a_dep_off[mm], -1, fs)
            predicted_outcomes(m.A + m.a_off[mm], fs, K, no, qo, qk)
            if use_util:
                g += expected_utility(qo, m.lnC + m.lnc_off[mm] + tt, m.n_steps, no)
            if use_sig:
                g += state_info_gain_dense(m.aH + m.ah_off[mm], fs, K, qk, no)
    return g


cdef class MMPModel:
    """C view of the dense float32 arrays marginal message passing reads.

    Built by :class:`fa_core.mmp.MMPState` from a validated model; keeps the
    arrays it points into alive and never changes them.
    """
    def __init__(self, dict d):
        self._keep = []
        c = &self.c
        c.nf = d["nf"]
        c.S = d["S"]
        c.nm = d["nm"]
        c.lh_stride = d["lh_stride"]
        c.n_steps = d["n_steps"]
        c.max_ns = d["max_ns"]
        c.max_no = d["max_no"]
        c.ns = self._ints(d["ns"])
        c.s_off = self._ints(d["s_off"])
        c.l_dep = self._ints(d["l_dep"])
        c.l_dep_off = self._ints(d["l_dep_off"])
        c.l_off = self._ints(d["l_off"])
        c.f_l = self._ints(d["f_l"])
        c.f_l_off = self._ints(d["f_l_off"])
        c.B = self._floats(d["B"])
        c.b_off = self._longs(d["b_off"])
        c.b_dep = self._ints(d["b_dep"])
        c.b_dep_off = self._ints(d["b_dep_off"])
        c.b_K = self._ints(d["b_K"])
        c.ch = self._ints(d["ch"])
        c.ch_off = self._ints(d["ch_off"])
        c.c_col = self._longs(d["c_col"])
        c.c_ptr = self._longs(d["c_ptr"])
        c.c_row = self._ints(d["c_row"])
        c.c_val = self._floats(d["c_val"])
        c.rz = self._floats(d["rz"])
        c.rz_off = self._longs(d["rz_off"])
        c.no = self._ints(d["no"])
        c.A = self._floats(d["A"])
        c.a_off = self._longs(d["a_off"])
        c.aH = self._floats(d["aH"])
        c.ah_off = self._longs(d["ah_off"])
        c.a_dep = self._ints(d["a_dep"])
        c.a_dep_off = self._ints(d["a_dep_off"])
        c.lnC = self._floats(d["lnC"])
        c.lnc_off = self._longs(d["lnc_off"])
        self.n_fs = d["max_K"]
        self.n_ds = max(7 * c.max_ns + c.max_ns * c.max_ns, 2 * c.max_no)

    cdef int* _ints(self, x) except NULL:
        cdef cnp.ndarray a = np.ascontiguousarray(x, dtype=np.int32).reshape(-1)
        if a.shape[0] == 0:
            a = np.zeros(1, dtype=np.int32)
        self._keep.append(a)
        return <int*>cnp.PyArray_DATA(a)

    cdef long long* _longs(self, x) except NULL:
        cdef cnp.ndarray a = np.ascontiguousarray(x, dtype=np.int64).reshape(-1)
        if a.shape[0] == 0:
            a = np.zeros(1, dtype=np.int64)
        self._keep.append(a)
        return <long long*>cnp.PyArray_DATA(a)

    cdef float* _floats(self, x) except NULL:
        cdef cnp.ndarray a = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        if a.shape[0] == 0:
            a = np.zeros(1, dtype=np.float32)
        self._keep.append(a)
        return <float*>cnp.PyArray_DATA(a)

    @property
    def nbytes(self):
        return sum(a.nbytes for a in self._keep)


def infer_states(MMPModel model, const float[::1] lh, int past_len, int infer_len,
                 int future_cutoff, const int[:, :, ::1] acts, const float[:, ::1] prior,
                 float[:, :, ::1] q, float[::1] F, int num_iter, double tau, double fut_w,
                 float[::1] fs, double[::1] ds, double[::1] lnlh,
                 float[:, :, :, ::1] xn=None, float[:, :, :, ::1] vn=None):
    """Marginal message passing for every policy, in place on ``q`` (n_pol, >= infer_len, S), ``F``.

    ``acts[p]`` holds the actions out of each window step under policy ``p``
    (past actions, then the policy's); ``prior`` has one row per policy or
    one shared row; ``lnlh`` (>= past_len * lh_stride) is scratch. ``xn`` / ``vn``, if
    given, (n_pol, num_iter, >= infer_len, S): every iteration's beliefs and prediction
    errors. Shapes are checked by the caller.
    """
    cdef const MC* m = &model.c
    cdef int n_pol = q.shape[0], shared = prior.shape[0] == 1, rc
    cdef long long i
    cdef bint rec = xn is not None
    with nogil:
        for i in range(<long long>past_len * m.lh_stride):
            lnlh[i] = log(<double>lh[i] + EPS_D)
        rc = mmp_policies(m, &lh[0], &lnlh[0], past_len, infer_len, future_cutoff, n_pol,
                          &acts[0, 0, 0], acts.shape[1] * acts.shape[2], &prior[0, 0],
                          0 if shared else prior.shape[1], &q[0, 0, 0], q.shape[1] * q.shape[2],
                          num_iter, tau, fut_w, &F[0], &fs[0], &ds[0],
                          &xn[0, 0, 0, 0] if rec else NULL, &vn[0, 0, 0, 0] if rec else NULL,
                          xn.shape[1] * xn.shape[2] * xn.shape[3] if rec else 0)
    if rc < 0:
        raise MemoryError("marginal message passing scratch")


def infer_policies(MMPModel model, const float[:, :, ::1] q, int t0, bint use_utility,
                   bint use_states_info_gain, const float[::1] F, const float[::1] lnE,
                   double gamma, float[::1] G, float[::1] q_pi, float[::1] fs, double[::1] ds):
    """``G`` of every policy over window steps t0 .. t0 + policy_len and
    ``q_pi = softmax(gamma * G - F + lnE)``, written in place."""
    cdef const MC* m = &model.c
    cdef int p, n_pol = q.shape[0]
    cdef double g
    cdef double* lg
    with nogil:
        lg = &ds[0] + 2 * m.max_no   # logits after c_efe's scratch; caller gives n_ds + n_pol
        for p in range(n_pol):
            g = c_efe(m, &q[p, 0, 0], t0, use_utility, use_states_info_gain, &fs[0], &ds[0])
            G[p] = <float>g
            lg[p] = gamma * g - F[p] + lnE[p]
        softmax(lg, n_pol)
        for p in range(n_pol):
            q_pi[p] = <float>lg[p]


# ---------------------------------------------------------------------------
# Population drivers: the kernels above for every agent of a population, over
# agents on OpenMP threads. Per-agent state lives in the caller's (n_agents, ...)
# arrays (fa_core.population_mmp); each thread carves its scratch row below.
# ---------------------------------------------------------------------------

cdef struct PopMMP:
    const MC* m
    int H, T, P, L, R0, HT, TL, nm
    const int* pol       # (P, T, nf) policies
    int num_iter
    double tau, fut_w
    int n_fs, n_ds, n_d, n_i


def population_scratch_widths(MMPModel model, int horizon, int policy_len, int n_pol):
    """(floats, doubles, ints) of scratch one thread needs in the drivers below.

    Doubles: ``c_mmp``'s / ``c_efe``'s (``n_ds``), the policy logits (``n_pol``) and the
    window's log likelihoods (``horizon * lh_stride``); ints: every policy's window
    actions (``n_pol * max(horizon + policy_len - 1, 1) * nf``). Each driver carves its
    thread's rows in this order (``fs``, then ``ds``: c_mmp / c_efe scratch, logits, log
    likelihoods; ``ints``: actions).
    """
    cdef int R = horizon + policy_len - 1
    return (model.n_fs, model.n_ds + n_pol + horizon * model.c.lh_stride,
            n_pol * (R if R > 1 else 1) * model.c.nf)


cdef PopMMP _args(MMPModel model, int horizon, int policy_len, const int[:, :, ::1] pol,
                  int R0, tuple scratch) except *:
    cdef PopMMP a
    a.m = &model.c
    a.H, a.T, a.P, a.R0 = horizon, policy_len, pol.shape[0], R0
    a.L = horizon + policy_len
    a.HT = horizon + policy_len - 1 if horizon + policy_len > 2 else 1
    a.TL = horizon - 1 if horizon > 1 else 1
    a.nm = model.c.nm
    a.pol = &pol[0, 0, 0]
    widths = population_scratch_widths(model, horizon, policy_len, a.P)
    a.n_fs, a.n_d, a.n_i = widths
    a.n_ds = model.n_ds
    for arr, w in zip(scratch, widths):
        if arr.shape[1] < w:
            raise ValueError(f"scratch rows of {arr.shape[1]} < {w}")
    return a


cdef void current_marginal(const PopMMP* a, const float* q, int t, const float* q_pi,
                           float* qs) noexcept nogil:
    """``qs = sum_p q_pi[p] q[p, t]``: the current step's beliefs averaged over policies."""
    cdef int S = a.m.S, p, s
    cdef double acc
    for s in range(S):
        acc = 0.0
        for p in range(a.P):
            acc += <double>q_pi[p] * q[(<long long>p * a.L + t) * S + s]
        qs[s] = <float>acc


cdef void agent_infer_states(const PopMMP* a, const int* obs, float* lh, float* q, float* F,
                             const float* prior, const int* head, const int* tail,
                             long long* nobs, long long nact, unsigned char* fresh, float* qs,
                             const float* q_pi, float* fs, double* ds, double* lnlh,
                             int* acts) noexcept nogil:
    """One agent's window update for one observation (fa_core.mmp.MMPState: push_observation,
    window_actions and infer_states)."""
    cdef const MC* m = a.m
    cdef int LH = m.lh_stride, S = m.S, nf = m.nf, H = a.H, T = a.T
    cdef int k, mm, K, past, infer_len, R, Rw, p, r, f, wlen
    cdef const int* wa
    cdef long long i
    # the observation's likelihood terms (rows of A) at the window's end
    if nobs[0] >= H:
        memmove(lh, lh + LH, <size_t>(H - 1) * LH * sizeof(float))
        k = H - 1
    else:
        k = <int>nobs[0]
    for mm in range(a.nm):
        K = (m.l_off[mm + 1] if mm + 1 < a.nm else LH) - m.l_off[mm]
        memcpy(lh + <long long>k * LH + m.l_off[mm], m.A + m.a_off[mm] + <long long>obs[mm] * K,
               K * sizeof(float))
    nobs[0] += 1
    past = k + 1
    infer_len = past + T
    R = infer_len - 1
    Rw = R if R > 1 else 1
    # the window's past actions as pymdp slices them, then each policy's
    if nobs[0] > H and H > 1:
        wlen = <int>(nact if nact < H - 1 else H - 1)
        wa = tail + (a.TL - wlen) * nf
    else:
        wlen = <int>(nact if nact < a.HT else a.HT)
        wa = head
    k = wlen if wlen < R else R
    for p in range(a.P):
        for r in range(R):
            for f in range(nf):
                acts[(p * Rw + r) * nf + f] = wa[r * nf + f] if r < k else \
                    a.pol[(p * T + r - k) * nf + f]
    for i in range(<long long>past * LH):
        lnlh[i] = log(<double>lh[i] + EPS_D)
    if mmp_policies(m, lh, lnlh, past, infer_len, infer_len - 2, a.P, acts, Rw * nf, prior,
                    S if a.R0 > 1 else 0, q, <long long>a.L * S, a.num_iter, a.tau, a.fut_w, F,
                    fs, ds, NULL, NULL, 0) < 0:
        for p in range(a.P):  # no memory for the lockstep scratch: policy by policy
            F[p] = <float>c_mmp(m, lh, lnlh, past, infer_len, infer_len - 2, acts + p * Rw * nf,
                                prior + (p if a.R0 > 1 else 0) * S, q + <long long>p * a.L * S,
                                a.num_iter, a.tau, a.fut_w, fs, ds, NULL, NULL)
    fresh[0] = 1
    current_marginal(a, q, past - 1, q_pi, qs)


def population_infer_states(MMPModel model, const int[:, :, ::1] pol, int horizon,
                            const int[:, ::1] obs, float[:, :, ::1] lh, float[:, :, :, ::1] q,
                            float[:, ::1] F, const float[:, :, ::1] prior,
                            const int[:, :, ::1] head, const int[:, :, ::1] tail,
                            long long[::1] nobs, const long long[::1] nact,
                            unsigned char[::1] fresh, float[:, ::1] qs, const float[:, ::1] q_pi,
                            int num_iter, double tau, double fut_w, float[:, ::1] fs,
                            double[:, ::1] ds, int[:, ::1] ints, int n_threads):
    """Every agent's MMP window update for its observation ``obs[i]`` (fa_core.Agent's
    numbers), in parallel over agents; ``qs[i]`` becomes the current step's beliefs averaged
    over policies with ``q_pi[i]``. Shapes and the windows' actions were checked by
    fa_core.population_mmp; ``fs`` / ``ds`` / ``ints`` have one row per thread
    (:func:`population_scratch_widths`)."""
    cdef Py_ssize_t i, n = obs.shape[0]
    cdef PopMMP a = _args(model, horizon, pol.shape[1], pol, prior.shape[1], (fs, ds, ints))
    cdef float* f0
    cdef double* d0
    cdef double* lg
    cdef double* lnlh
    cdef int* i0
    cdef int tid, nt = n_threads if n_threads > 1 else 1
    a.num_iter, a.tau, a.fut_w = num_iter, tau, fut_w
    if n == 0:
        return
    for i in prange(n, nogil=True, num_threads=nt, schedule="static",
                    chunksize=4):
        tid = threadid()  # this thread's scratch, as population_scratch_widths lays it out
        f0 = &fs[tid, 0]
        d0 = &ds[tid, 0]
        lg = d0 + a.n_ds
        lnlh = lg + a.P
        i0 = &ints[tid, 0]
        agent_infer_states(&a, &obs[i, 0], &lh[i, 0, 0], &q[i, 0, 0, 0], &F[i, 0],
                           &prior[i, 0, 0], &head[i, 0, 0], &tail[i, 0, 0], &nobs[i], nact[i],
                           &fresh[i], &qs[i, 0], &q_pi[i, 0], f0, d0, lnlh, i0)


cdef void agent_infer_policies(const PopMMP* a, const float* q, const float* F, int past,
                               const float* lnE, double gamma, int use_util, int use_sig,
                               float* G, float* q_pi, float* qs, float* fs, double* ds,
                               double* lg) noexcept nogil:
    """One agent's G over its window and ``q_pi = softmax(gamma G - F + lnE)``."""
    cdef int p
    cdef double g
    for p in range(a.P):
        g = c_efe(a.m, q + <long long>p * a.L * a.m.S, past - 1, use_util, use_sig, fs, ds)
        G[p] = <float>g
        lg[p] = gamma * g - F[p] + lnE[p]
    softmax(lg, a.P)
    for p in range(a.P):
        q_pi[p] = <float>lg[p]
    current_marginal(a, q, past - 1, q_pi, qs)


def population_infer_policies(MMPModel model, const int[:, :, ::1] pol, int horizon,
                              const float[:, :, :, ::1] q, const float[:, ::1] F,
                              const long long[::1] nobs, const float[:, ::1] lnE, bint shared_E,
                              const float[::1] gamma, bint use_utility,
                              bint use_states_info_gain, float[:, ::1] G, float[:, ::1] q_pi,
                              float[:, ::1] qs, float[:, ::1] fs, double[:, ::1] ds,
                              int[:, ::1] ints, int n_threads):
    """Every agent's ``G`` and ``q_pi`` from its last window update (``lnE`` one shared row
    if ``shared_E``, else one per agent), in parallel over agents; ``qs`` as in
    :func:`population_infer_states`, with the new ``q_pi``."""
    cdef Py_ssize_t i, n = q.shape[0]
    cdef PopMMP a = _args(model, horizon, pol.shape[1], pol, 1, (fs, ds, ints))
    cdef float* f0
    cdef double* d0
    cdef double* lg
    cdef int tid, nt = n_threads if n_threads > 1 else 1
    cdef int past
    if n == 0:
        return
    for i in prange(n, nogil=True, num_threads=nt, schedule="static",
                    chunksize=4):
        tid = threadid()  # this thread's scratch, as population_scratch_widths lays it out
        f0 = &fs[tid, 0]
        d0 = &ds[tid, 0]
        lg = d0 + a.n_ds
        past = <int>(nobs[i] if nobs[i] < horizon else horizon)
        agent_infer_policies(&a, &q[i, 0, 0, 0], &F[i, 0], past,
                             &lnE[0 if shared_E else i, 0], gamma[i], use_utility,
                             use_states_info_gain, &G[i, 0], &q_pi[i, 0], &qs[i, 0], f0, d0, lg)


cdef inline int _factor_of(const MC* m, int s) noexcept nogil:
    cdef int f = 0
    while f + 1 < m.nf and m.s_off[f + 1] <= s:
        f += 1
    return f


cdef void agent_step_time(const PopMMP* a, const int* action, long long t, int* head, int* tail,
                          long long* nact, const float* q, const float* q_pi,
                          const unsigned char* fresh, float* prior) noexcept nogil:
    """One agent's step_time: the action into its history and, once the window moves (``t >=
    horizon``), the window's prior (fa_core.mmp.set_latest_beliefs with no argument)."""
    cdef int nf = a.m.nf, S = a.m.S, p, s, f
    cdef double acc
    if nact[0] < a.HT:
        for f in range(nf):
            head[nact[0] * nf + f] = action[f]
    if a.H > 1:
        memmove(tail, tail + nf, <size_t>(a.TL - 1) * nf * sizeof(int))
        for f in range(nf):
            tail[(a.TL - 1) * nf + f] = action[f]
    nact[0] += 1
    if t < a.H:
        return
    # each policy's belief about the window's first step: the kernel's, or uniform after reset
    if a.R0 == 1:  # use_BMA: their average under q_pi
        for s in range(S):
            acc = 0.0
            for p in range(a.P):
                acc += <double>q_pi[p] * (q[<long long>p * a.L * S + s] if fresh[0] else
                                          <double><float>(1.0 / a.m.ns[_factor_of(a.m, s)]))
            prior[s] = <float>acc
    else:  # policy_sep_prior: one per policy
        for p in range(a.P):
            for s in range(S):
                prior[p * S + s] = q[<long long>p * a.L * S + s] if fresh[0] else \
                    <float>(1.0 / a.m.ns[_factor_of(a.m, s)])


def population_step_time(MMPModel model, const int[:, :, ::1] pol, int horizon,
                         const int[:, ::1] actions, const long long[::1] curr_timestep,
                         int[:, :, ::1] head, int[:, :, ::1] tail, long long[::1] nact,
                         const float[:, :, :, ::1] q, const float[:, ::1] q_pi,
                         const unsigned char[::1] fresh, float[:, :, ::1] prior, int n_threads):
    """Every agent's step_time after its action was selected and its time advanced."""
    cdef Py_ssize_t i, n = actions.shape[0]
    cdef PopMMP a
    cdef int nt = n_threads if n_threads > 1 else 1
    a.m = &model.c
    a.H, a.T, a.P, a.R0 = horizon, pol.shape[1], pol.shape[0], prior.shape[1]
    a.L = horizon + a.T
    a.HT = horizon + a.T - 1 if horizon + a.T > 2 else 1
    a.TL = horizon - 1 if horizon > 1 else 1
    if n == 0:
        return
    for i in prange(n, nogil=True, num_threads=nt, schedule="static",
                    chunksize=64):
        agent_step_time(&a, &actions[i, 0], curr_timestep[i], &head[i, 0, 0], &tail[i, 0, 0],
                        &nact[i], &q[i, 0, 0, 0], &q_pi[i, 0], &fresh[i], &prior[i, 0, 0])
