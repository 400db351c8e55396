# cython: language_level=3
"""Policy evaluation kernels: expected free energy of every policy and the policy posterior.

Per agent (:func:`c_infer_policies`, every term: utility, state and parameter
information gain, inductive cost) and for BL agents at once
(:func:`c_infer_policies_block`, utility and state information gain), on the
terms of ``_math.pxd``; plus the action marginals and the Python entry points
``infer_policies`` and ``action_marginals`` (re-exported by ``fa_core._kernels``).
"""

from libc.string cimport memset, memcpy

from fa_core._math cimport (EPS, PRUNE, Pruned, dot4, fa_xlogx_sum, gather_dot, inductive_cost,
                            inductive_row, info_gain, info_gain_bl, joint_of, joint_of_bl,
                            mat_cols, mat_scatter_cols, mat_vec, mat_vec_bl, min_of,
                            param_info_gain, predict_states, scan_pruned, scan_pruned_bl,
                            softmax, sparse_support, utility, utility_bl, zero_listed)
from fa_core._model cimport BL, KModel, Mat, ModelC, scratch_check


cdef inline void reduce_tail(const ModelC* m, int mm, const float* cur, float* red,
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
                red[o * Kh + h] = <float>dot4(A.val + <long long>o * A.cols + h * Kt, tail_joint,
                                              Kt)
    for h in range(Kh):
        H[h] = <float>dot4(m.a_H[mm] + h * Kt, tail_joint, Kt)
    for i in range(nd - nt, nd):
        mn *= min_of(cur + m.s_off[dep[i]], m.ns[dep[i]])
    H[Kh] = mn


# Sparse beliefs (see _math.sparse_support): on by default; tests turn them off to compare
# with the dense path, and count the calls that took them.
cdef int sparse_on = 1
cdef long long sparse_calls = 0

cdef extern from *:
    """
    static inline void fa_count_call(long long* c) {
        __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
    }
    """
    void fa_count_call(long long* c) noexcept nogil


cdef inline int sparse_factor(const ModelC* m, int f) noexcept nogil:
    """Whether factor ``f`` can be rolled forward sparsely: one parent, every B slice
    sparse (CSC or one-hot)."""
    cdef int u
    if not sparse_on or m.b_dep_off[f + 1] - m.b_dep_off[f] != 1:
        return 0
    for u in range(m.nc[f]):
        if not m.mats[m.b_mat[f] + u].sparse:
            return 0
    return 1


cdef inline int sparse_pays(int nq, int n) noexcept nogil:
    """Whether ``nq`` listed states of a factor of ``n`` (-1: not listed) are few enough for
    the sparse path: fewer than a quarter."""
    return nq >= 0 and 4 * nq < n


cdef int c_policies_sparse(const ModelC* m, const float* qs) noexcept nogil:
    """Whether :func:`c_infer_policies` would roll some factor of ``qs`` forward sparsely
    (the block kernel has no sparse path, so its drivers evaluate such agents one by one):
    the test of its first step, so that agents it would evaluate densely stay in the block
    kernel."""
    cdef int f, fp
    if not sparse_on:
        return 0
    for f in range(m.nf):
        if sparse_factor(m, f):
            fp = m.b_dep[m.b_dep_off[f]]
            if sparse_pays(sparse_support(qs + m.s_off[fp], m.ns[fp], NULL), m.ns[fp]):
                return 1
    return 0


cdef inline void sparse_modality(const ModelC* m, int mm, int t, const float* qx,
                                 const int* xl, int nx, int use_utility, int use_sig,
                                 int use_pA, const float* lnC, float* qo, int* qrows,
                                 int* nqo, int* qo_clean, int* kept, float* qo_p, int* prows,
                                 float* qtmp, double* g) noexcept nogil:
    """Utility, state and parameter information gain of modality ``mm`` (one parent, no
    invariant tail) from its parent's belief ``qx`` listed at ``xl`` (``nx`` states, all
    others 0), as :func:`c_infer_policies`' dense terms: the outcomes of a sparse ``A``
    are scattered and listed (``qo`` kept zero at every unlisted row below ``qo_clean``),
    a dense ``A`` is summed over the listed columns into ``qtmp`` (leaving ``qo`` clean)."""
    cdef const Mat* A = &m.mats[m.a_mat[mm]]
    cdef int no = m.no[mm], i, k, nk = 0, r, nr
    cdef float v, pmass = 0.0
    cdef double ut, sig
    cdef const float* src
    cdef const int* rows
    cdef const float* lc
    cdef float* qd = qo if A.sparse else qtmp  # the outcomes, dense over no rows
    if A.sparse:
        zero_listed(qo, no, qrows, nqo[0], nqo[0] >= 0 and no <= qo_clean[0])
        if not (nqo[0] >= 0 and no <= qo_clean[0]):
            qo_clean[0] = no
        nqo[0] = mat_scatter_cols(A, qx, xl, nx, qo, qrows)
    else:
        mat_cols(A, qx, xl, nx, qtmp)
    if use_utility:
        if A.sparse:
            lc = lnC + m.lnC_off[mm] + t
            ut = 0.0
            for i in range(nqo[0]):
                r = qrows[i]
                ut += <double>qo[r] * lc[r * m.T]
            g[0] += ut
        else:
            g[0] += utility(m, mm, t, qtmp, lnC)
    if use_sig:  # spm_MDP_G: the listed states above exp(-16)
        for i in range(nx):
            k = xl[i]
            v = qx[k]
            if v > PRUNE:
                kept[nk] = k
                nk += 1
            else:
                pmass += v
        sig = gather_dot(m.a_H[mm], qx, kept, nk)
        if A.sparse:
            src = qo
            rows = qrows
            nr = nqo[0]
            if pmass != 0.0:  # outcomes of the kept states only
                memset(qo_p, 0, no * sizeof(float))
                nr = mat_scatter_cols(A, qx, kept, nk, qo_p, prows)
                src = qo_p
                rows = prows
            for i in range(nr):
                qtmp[i] = src[rows[i]]
            sig -= fa_xlogx_sum(qtmp, nr, EPS)
        else:
            src = qtmp
            if pmass != 0.0:
                mat_cols(A, qx, kept, nk, qo_p)
                src = qo_p
            sig -= fa_xlogx_sum(src, no, EPS)
        g[0] += sig
    if use_pA and m.wa_mat[mm] >= 0:
        g[0] -= param_info_gain(&m.mats[m.wa_mat[mm]], qd, qx)


cdef void c_infer_policies(const ModelC* m, const float* qs, double gamma,
                           int use_utility, int use_sig, int use_pA, int use_pB, int use_I,
                           const float* lnC, const float* lnE, float* G, float* q_pi,
                           float* scratch) noexcept nogil:
    """Expected free energy of every policy and the policy posterior.

    ``lnC`` and ``lnE`` are the model's (``m.lnC``, ``m.lnE``) or one agent's own.

    Scratch: :func:`infer_policies_scratch` floats.
    """
    cdef float* qs_pi = scratch                      # (T + 1) * S: [qs, qs_1, ..., qs_T]
    cdef float* joint = qs_pi + (m.T + 1) * m.S
    cdef float* head = joint + m.max_K               # joint of a modality's policy-dependent head
    cdef int* kept = <int*>(head + m.max_K)        # max_K ints: joint states kept by SIG
    cdef float* qo = <float*>(kept + m.max_K)
    cdef float* qo_p = qo + m.max_rows
    cdef float* ind_row = qo_p + m.max_rows          # nf ints stored as floats
    cdef float* reduced = ind_row + m.nf             # T * red_stride: per-step tail contractions
    # sparse beliefs: step t's listed states of factor f at sup[t * S + s_off[f]], their
    # count nsup[t * nf + f] (-1: the step's factor was written densely); the listed
    # outcome rows of qo (nqo, -1: written densely) and of qo_p; gathered outcomes
    cdef int* sup = <int*>(reduced + m.T * m.red_stride)
    cdef int* nsup = sup + (m.T + 1) * m.S
    cdef int* qrows = nsup + (m.T + 1) * m.nf
    cdef int* prows = qrows + m.max_rows
    cdef float* qtmp = <float*>(prows + m.max_rows)
    cdef int nqo = -1, qo_clean = 0, any_sparse = 0, fp, nq
    cdef const Mat* Bm
    cdef int p, t, f, mm, K, o, a, nd, row, i, nh, Kh
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

    scratch_check(qtmp + m.max_rows - scratch, infer_policies_scratch(m), b"c_infer_policies")
    if use_I:
        for f in range(m.nf):
            ind_row[f] = inductive_row(m.ind + m.I_off[f], m.ii_depth, m.ns[f],
                                       qs + m.s_off[f])

    memcpy(qs_pi, qs, m.S * sizeof(float))
    for f in range(m.nf):  # the support of the current beliefs, listed once
        nsup[f] = (sparse_support(qs + m.s_off[f], m.ns[f], sup + m.s_off[f])
                   if sparse_on else -1)
        for t in range(1, m.T + 1):
            nsup[t * m.nf + f] = -1
    if m.red_stride > 0:
        # invariant factors are predicted alike by every policy: roll out policy 0
        for t in range(m.T):
            predict_states(m, qs_pi + t * m.S, m.policies + t * m.nf,
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
            for f in range(m.nf):
                dep = m.b_dep + m.b_dep_off[f]
                nd = m.b_dep_off[f + 1] - m.b_dep_off[f]
                Bm = &m.mats[m.b_mat[f] + pol[t * m.nf + f]]
                fp = dep[0]
                nq = nsup[t * m.nf + fp]
                if nd == 1 and sparse_pays(nq, m.ns[fp]) and sparse_factor(m, f):
                    # the listed states only, into a step buffer zeroed where it was written
                    i = (t + 1) * m.nf + f
                    zero_listed(qs_pi + (t + 1) * m.S + m.s_off[f], m.ns[f],
                                sup + (t + 1) * m.S + m.s_off[f], nsup[i], nsup[i] >= 0)
                    nsup[i] = mat_scatter_cols(Bm, prev + m.s_off[fp], sup + t * m.S + m.s_off[fp],
                                               nq, qs_pi + (t + 1) * m.S + m.s_off[f],
                                               sup + (t + 1) * m.S + m.s_off[f])
                    any_sparse = 1
                else:
                    if nd == 1:
                        mat_vec(Bm, prev + m.s_off[fp], qs_pi + (t + 1) * m.S + m.s_off[f])
                    else:
                        joint_of(m, prev, dep, nd, joint)
                        mat_vec(Bm, joint, qs_pi + (t + 1) * m.S + m.s_off[f])
                    nsup[(t + 1) * m.nf + f] = -1
            joint_group = -1
            pr.group = -1  # no scan yet (scan_pruned sets the rest)
            pr.nk = 0
            pr.npr = -1
            pr.mass = 0.0
            for mm in range(m.nm):
                dep = m.a_dep + m.a_dep_off[mm]
                nd = m.a_dep_off[mm + 1] - m.a_dep_off[mm]
                A = &m.mats[m.a_mat[mm]]
                if nd == 1 and m.a_ntail[mm] == 0:
                    fp = dep[0]
                    nq = nsup[(t + 1) * m.nf + fp]
                    if sparse_pays(nq, m.ns[fp]):
                        sparse_modality(m, mm, t, cur + m.s_off[fp],
                                        sup + (t + 1) * m.S + m.s_off[fp], nq, use_utility,
                                        use_sig, use_pA, lnC, qo, qrows, &nqo, &qo_clean,
                                        kept, qo_p, prows, qtmp, &g)
                        continue
                nqo = -1  # the dense paths below write qo in full
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
                            sig = (dot4(red + m.no[mm] * Kh, qh, Kh)
                                   - fa_xlogx_sum(qo, m.no[mm], EPS))
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
                    g -= param_info_gain(&m.mats[m.wa_mat[mm]], qo, qx)
            if use_pB:
                for f in range(m.nf):
                    if m.wb_mat[f] >= 0:
                        a = pol[t * m.nf + f]
                        joint_of(m, prev, m.b_dep + m.b_dep_off[f],
                                 m.b_dep_off[f + 1] - m.b_dep_off[f], joint)
                        g -= param_info_gain(&m.mats[m.wb_mat[f] + a], cur + m.s_off[f], joint)
            if use_I:
                for f in range(m.nf):
                    row = <int>ind_row[f]
                    if row >= 0:
                        g = inductive_cost(g, m.ind + m.I_off[f] + row * m.ns[f],
                                           cur + m.s_off[f], m.ns[f])
        G[p] = <float>g
        q_pi[p] = <float>(gamma * g) + lnE[p]
    softmax(q_pi, m.n_pol)
    if any_sparse:
        fa_count_call(&sparse_calls)


cdef void c_infer_policies_block(const ModelC* m, const float* qs, int nb, const float* gamma,
                                 int use_utility, int use_sig, const float* lnC, int lnC_stride,
                                 const float* lnE, int lnE_stride, float* G, float* q_pi,
                                 float* scratch) noexcept nogil:
    """:func:`c_infer_policies` for ``nb`` <= BL consecutive agents (no parameter
    information gain, no inductive cost).

    ``qs``, ``G``, ``q_pi`` and ``gamma`` point at the first agent's rows; ``lnC``
    and ``lnE`` too, with a stride of 0 when the agents share the model's.
    Scratch: :func:`infer_policies_block_scratch` floats.
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
    cdef const int* pol
    cdef const int* dep
    cdef const Mat* A
    cdef int p, t, f, mm, b, i, nd, K, group, pruned, same
    scratch_check(qok + m.max_rows * BL - scratch, infer_policies_block_scratch(m),
                  b"c_infer_policies_block")
    # agents' rows into columns; lanes past nb repeat agent 0 (computed, not stored)
    for b in range(BL):
        for i in range(m.S):
            qs_pi[i * BL + b] = qs[(b if b < nb else 0) * m.S + i]
        lnc[b] = lnC + (b if b < nb else 0) * lnC_stride
    for p in range(m.n_pol):
        pol = m.policies + p * m.T * m.nf
        for b in range(BL):
            g[b] = 0.0
        same = p > 0  # policy p - 1 took the same actions before step t: the same `prev`
        for t in range(m.T):
            prev = qs_pi + t * m.S * BL
            cur = qs_pi + (t + 1) * m.S * BL
            for f in range(m.nf):
                if same and pol[t * m.nf + f] == pol[t * m.nf + f - m.T * m.nf]:
                    continue  # same action from the same beliefs: `cur` holds it already
                dep = m.b_dep + m.b_dep_off[f]
                nd = m.b_dep_off[f + 1] - m.b_dep_off[f]
                if nd == 1:
                    x = prev + m.s_off[dep[0]] * BL
                else:
                    joint_of_bl(m, prev, dep, nd, bj)
                    x = bj
                mat_vec_bl(&m.mats[m.b_mat[f] + pol[t * m.nf + f]], x, cur + m.s_off[f] * BL)
            if same:
                for f in range(m.nf):
                    if pol[t * m.nf + f] != pol[t * m.nf + f - m.T * m.nf]:
                        same = 0
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
                        pruned = scan_pruned_bl(x, K, xm)
                mat_vec_bl(A, x, qo)
                if use_utility:
                    utility_bl(m, mm, t, qo, lnc, g)
                if use_sig:
                    info_gain_bl(m, mm, xm, pruned, qo, qok, sig)
                    for b in range(BL):
                        g[b] += sig[b]
        for b in range(nb):
            G[b * m.n_pol + p] = <float>g[b]
            q_pi[b * m.n_pol + p] = <float>(gamma[b] * g[b]) + lnE[b * lnE_stride + p]
    for b in range(nb):
        softmax(q_pi + b * m.n_pol, m.n_pol)


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


def infer_policies(KModel model, const float[::1] qs, double gamma, bint use_utility,
                   bint use_states_info_gain, bint use_pA, bint use_pB, bint use_I,
                   float[::1] G, float[::1] q_pi, float[::1] scratch):
    """Expected free energy ``G`` (negative, as pymdp) and ``q_pi = softmax(gamma G + ln E)``."""
    cdef const ModelC* m = &model.c
    with nogil:
        c_infer_policies(m, &qs[0], gamma, use_utility, use_states_info_gain,
                         use_pA, use_pB, use_I and m.has_I, m.lnC, m.lnE, &G[0], &q_pi[0],
                         &scratch[0])


def sparse_beliefs(enabled=None):
    """Whether policy evaluation takes the sparse-belief path (default True); with
    ``enabled``, set it (for tests and benchmarks comparing it with the dense path).

    Parameters
    ----------
    enabled : bool, optional
        New setting; omitted, the setting is only read.

    Returns
    -------
    tuple of (bool, int)
        The setting before the call and how many policy evaluations took the sparse
        path so far.
    """
    global sparse_on
    old = bool(sparse_on)
    if enabled is not None:
        sparse_on = 1 if enabled else 0
    return old, int(sparse_calls)


def action_marginals(KModel model, const float[::1] q_pi, float[::1] marg):
    """Normalised marginal over each factor's first action, flat over factors."""
    with nogil:
        c_action_marginals(&model.c, &q_pi[0], &marg[0])
