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
from libc.string cimport memset

from fa_core._math cimport (EPS_D, expected_utility, joint_of_marginals, predicted_outcomes,
                            softmax, state_info_gain_dense)

import numpy as np
cimport numpy as cnp

cnp.import_array()


cdef struct MC:
    int nf
    int S
    int* ns
    int* s_off
    int max_ns
    # likelihood terms of lnA (one per modality, or one joint term for pymdp's run_mmp)
    int* l_dep
    int* l_dep_off
    int* l_off         # offset of term l within one step's likelihood block
    int lh_stride      # floats per step of likelihood
    int* f_l           # terms touching factor f: f_l[f_l_off[f]:f_l_off[f+1]]
    int* f_l_off
    # transitions: B[f] stored (nc[f], ns[f], K) at B + b_off[f]
    float* B
    long long* b_off
    int* b_dep
    int* b_dep_off
    int* b_K
    int* ch            # children of f (factors whose B has f as a parent)
    int* ch_off
    # B[f][..., u] as CSC over its K columns, exact zeros left out: column k of action u
    # holds entries c_ptr[c_col[f] + u * (K + 1) + k] .. (+1) of c_row / c_val
    long long* c_col
    long long* c_ptr
    int* c_row
    float* c_val
    # 1 / (row sums of B[i][..., u] + ns[parent] * 1e-16) for single-parent factors
    # (spm_norm of the transpose, applied as a row scaling): (nc, ns[i]) at rz + rz_off[i]
    float* rz
    long long* rz_off
    # observation model for the expected free energy: A[m] (no[m], K) at A + a_off[m]
    int nm
    int* no
    float* A
    long long* a_off
    float* aH          # per column sum_o A log(A + exp(-16)), at aH + ah_off[m]
    long long* ah_off
    int* a_dep
    int* a_dep_off
    int max_no
    # log softmax C per modality, (no[m], n_steps) row-major at lnC + lnc_off[m]
    float* lnC
    long long* lnc_off
    int n_steps


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
    cdef MC c
    cdef list _keep
    cdef readonly int n_fs
    cdef readonly int n_ds

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
    cdef int p, n_pol = q.shape[0], shared = prior.shape[0] == 1
    cdef long long i
    cdef bint rec = xn is not None
    with nogil:
        for i in range(<long long>past_len * m.lh_stride):
            lnlh[i] = log(<double>lh[i] + EPS_D)
        for p in range(n_pol):
            F[p] = <float>c_mmp(m, &lh[0], &lnlh[0], past_len, infer_len, future_cutoff,
                                &acts[p, 0, 0], &prior[0 if shared else p, 0], &q[p, 0, 0],
                                num_iter, tau, fut_w,
                                &fs[0], &ds[0], &xn[p, 0, 0, 0] if rec else NULL,
                                &vn[p, 0, 0, 0] if rec else NULL)


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
