# cython: language_level=3
"""Sophisticated inference: pymdp.legacy's ``sophisticated_inference_search``, compiled.

The reference is a recursive Python tree search: at every node it scores each
(one-step) policy by its expected free energy, and below the horizon it
expands each policy whose probability reaches the policy threshold into
every joint outcome (one per modality) whose probability reaches the state
threshold, infers the posterior that outcome would give, searches from
there and adds the child's expected ``G`` weighted by the outcome's
probability. Policies below the threshold get ``-prune_penalty`` instead.

Here the same search runs without the GIL and without recursion: the path
from the root to the current node is an explicit stack of ``horizon``
frames in a scratch buffer the caller sizes with :meth:`SIModel.scratch_sizes`,
so the depth costs memory linear in ``horizon`` and never the C stack.
:func:`population_stages` runs the same search for every agent of a
``fa_core.Population`` in one parallel loop (``fa_core.population_si``).
Every frame holds its node's beliefs, each policy's predicted states and
outcomes, ``G``, ``q_pi``, and where the walk over policies and outcomes
stands. Beliefs and sums are double precision; the model's matrices are
float32 copies, dense (models searched this way are small: the tree is
exponential in the horizon).
"""

from cython.parallel cimport prange, threadid

from libc.math cimport fabsf, log
from libc.string cimport memcpy

from fa_core._math cimport (EPS_D, divergence_from_prior, expected_utility, fpi_sweep_of,
                            inductive_cost, inductive_row, joint_of_marginals,
                            predicted_outcomes, softmax, state_info_gain_dense)
from fa_core._model cimport KModel, ModelC, scratch_check
from fa_core._selection cimport c_sample_action, sample_action_scratch

import numpy as np
cimport numpy as cnp

cnp.import_array()

# integer slots of a frame after its nm outcome digits
cdef int FI_POLICY = 0   # policy being expanded (-1 before the first)
cdef int FI_STAGE = 1    # 0: not expanding, 1: first outcome next, 2: next outcome next


cdef struct SIM:
    int nf
    int nm
    int S            # sum of num_states
    int SO           # sum of num_obs
    int P            # policies (one step each)
    int max_K
    int max_ns
    int max_no
    const int* ns
    const int* no
    const int* s_off
    const int* o_off
    const int* a_dep       # modality m: parents a_dep[a_dep_off[m]:a_dep_off[m + 1]]
    const int* a_dep_off
    const int* a_sdep      # the same parents sorted (the axis order pymdp's free energy reads)
    const int* a_K
    const long long* a_off  # A[m] (no[m], K) row-major at A + a_off[m]; likewise logA
    const int* k_off        # column entropies of A[m] at aH + k_off[m]
    const float* A
    const float* logA       # log(A + 1e-16)
    const float* aH         # sum_o A log(A + exp(-16)) per column
    const int* f_mods       # modalities that read factor f: f_mods[f_mods_off[f]:...]
    const int* f_mods_off
    const int* b_dep
    const int* b_dep_off
    const int* b_K
    const long long* b_off  # B[f][..., u] (ns[f], b_K[f]) at B + b_off[f] + u * ns[f] * b_K[f]
    const float* B
    const double* lnC       # log softmax C per modality, length SO
    int has_I
    int ii_depth
    const double* ind       # I[f] (ii_depth, ns[f]) at I + I_off[f]
    const int* I_off
    const int* pol          # (P, nf)
    # frame layout
    int FD                  # doubles per frame
    int FI                  # ints per frame


cdef inline int joint_of(const SIM* m, const double* qs, const int* dep, int nd, int skip,
                         double* out) noexcept nogil:
    """:func:`fa_core._math.joint_of_marginals` on this model's factors."""
    return joint_of_marginals(m.ns, m.s_off, qs, dep, nd, skip, out)


cdef inline void softmax_scaled(const double* x, double scale, double* out, int n) noexcept nogil:
    """out = softmax(scale * x)."""
    cdef int i
    for i in range(n):
        out[i] = scale * x[i]
    softmax(out, n)


cdef void predict(const SIM* m, const double* qs, const int* act, double* out,
                  double* joint) noexcept nogil:
    """out[f] = B[f][..., act[f]] @ joint(qs[B_factor_list[f]]) for every factor."""
    cdef int f, i, k, K, n
    cdef const float* Bm
    cdef double acc
    for f in range(m.nf):
        K = joint_of(m, qs, m.b_dep + m.b_dep_off[f], m.b_dep_off[f + 1] - m.b_dep_off[f], -1,
                     joint)
        n = m.ns[f]
        Bm = m.B + m.b_off[f] + <long long>act[f] * n * K
        for i in range(n):
            acc = 0.0
            for k in range(K):
                acc += Bm[i * K + k] * joint[k]
            out[m.s_off[f] + i] = acc


cdef void node_eval(const SIM* m, double* fd, int* fi, double gamma, double* work) noexcept nogil:
    """Score every policy from the node's beliefs ``qs`` (frame ``fd``).

    Fills each policy's predicted states and outcomes, ``G`` (utility + state
    information gain [+ inductive cost], as pymdp's search computes them) and
    ``q_pi = softmax(gamma G)``, and resets the frame's walk. ``work`` needs
    max_K + max_no doubles.
    """
    cdef const double* qs = fd
    cdef double* qs1 = fd + m.S
    cdef double* qo = qs1 + m.P * m.S
    cdef double* G = qo + m.P * m.SO
    cdef double* qpi = G + m.P
    cdef int* ind_row = fi + m.nm + 2
    cdef double* joint = work
    cdef double* qk = work + m.max_K
    cdef int p, f, mm, K, nd, row
    cdef double g
    cdef double* q1
    cdef double* qom

    if m.has_I:
        for f in range(m.nf):
            ind_row[f] = inductive_row(m.ind + m.I_off[f], m.ii_depth, m.ns[f], qs + m.s_off[f])

    for p in range(m.P):
        q1 = qs1 + p * m.S
        predict(m, qs, m.pol + p * m.nf, q1, joint)
        g = 0.0
        for mm in range(m.nm):
            nd = m.a_dep_off[mm + 1] - m.a_dep_off[mm]
            K = joint_of(m, q1, m.a_dep + m.a_dep_off[mm], nd, -1, joint)
            qom = qo + p * m.SO + m.o_off[mm]
            # spm_MDP_G: joint states at or below exp(-16) are left out, and the
            # outcome entropy is taken over the outcomes the kept states predict
            predicted_outcomes(m.A + m.a_off[mm], joint, K, m.no[mm], qom, qk)
            g += expected_utility(qom, m.lnC + m.o_off[mm], 1, m.no[mm])
            g += state_info_gain_dense(m.aH + m.k_off[mm], joint, K, qk, m.no[mm])
        if m.has_I:
            for f in range(m.nf):
                row = ind_row[f]
                if row >= 0:
                    g = inductive_cost(g, m.ind + m.I_off[f] + row * m.ns[f], q1 + m.s_off[f],
                                       m.ns[f])
        G[p] = g
    softmax_scaled(G, gamma, qpi, m.P)
    fi[FI_POLICY] = -1
    fi[FI_STAGE] = 0


cdef int next_outcome(const SIM* m, const double* qo, int* dig, double* pp, int first,
                      double thr) noexcept nogil:
    """Advance ``dig`` to the next joint outcome (C order over modalities) whose
    probability prod_m qo[m][dig[m]] is at least ``thr``; 0 when none is left.

    ``pp[j]`` is the product over the first ``j`` modalities: a prefix already
    below ``thr`` skips every outcome that extends it (factors are <= 1).
    """
    cdef int j
    cdef double pr
    if first:
        j = 0
        dig[0] = 0
        pp[0] = 1.0
    else:
        j = m.nm - 1
        dig[j] += 1
    while True:
        if dig[j] >= m.no[j]:
            if j == 0:
                return 0
            j -= 1
            dig[j] += 1
            continue
        pr = pp[j] * qo[m.o_off[j] + dig[j]]
        if pr < thr:
            dig[j] += 1
            continue
        pp[j + 1] = pr
        if j == m.nm - 1:
            return 1
        j += 1
        dig[j] = 0


cdef void infer_states(const SIM* m, const int* dig, const double* prior, double* qs,
                       int num_iter, double dF, double dF_tol, int compute_vfe,
                       double* work) noexcept nogil:
    """pymdp's run_vanilla_fpi_factorized for the one-hot outcome ``dig``.

    ``work`` needs 4 S + 2 max_K doubles.
    """
    cdef double* logprior = work
    cdef double* qa = work + m.S
    cdef double* qb = qa + m.S
    cdef double* w = qb + m.S
    cdef double* w2 = w + m.max_K
    cdef double* qL = w2 + m.max_K      # messages, flat over factors
    cdef double* cur = qa
    cdef double* nxt = qb
    cdef double* swap
    cdef double prev_vfe, vfe, v
    cdef int i, f, mm, j, K, nd, pos, d, stride, it = 0
    cdef const float* ll
    cdef const int* dep

    for i in range(m.S):
        logprior[i] = log(prior[i] + EPS_D)
    if m.nf == 1:  # one factor: closed form
        for i in range(m.S):
            v = logprior[i]
            for mm in range(m.nm):
                v += m.logA[m.a_off[mm] + <long long>dig[mm] * m.a_K[mm] + i]
            qs[i] = v
        softmax(qs, m.S)
        return
    for f in range(m.nf):
        for i in range(m.ns[f]):
            cur[m.s_off[f] + i] = 1.0 / m.ns[f]
    prev_vfe = free_energy(m, cur, logprior, dig, 0, w)
    while it < num_iter and (not compute_vfe or dF >= dF_tol):
        # every factor updated from the previous iterate, as pymdp
        for f in range(m.nf):
            for i in range(m.ns[f]):
                qL[m.s_off[f] + i] = 0.0
            for j in range(m.f_mods_off[f], m.f_mods_off[f + 1]):
                mm = m.f_mods[j]
                dep = m.a_dep + m.a_dep_off[mm]
                nd = m.a_dep_off[mm + 1] - m.a_dep_off[mm]
                pos = 0
                stride = 1
                for d in range(nd):
                    if dep[d] == f:
                        pos = d
                for d in range(pos + 1, nd):
                    stride *= m.ns[dep[d]]
                K = joint_of(m, cur, dep, nd, pos, w2)
                ll = m.logA + m.a_off[mm] + <long long>dig[mm] * K
                for i in range(K):
                    qL[m.s_off[f] + (i // stride) % m.ns[f]] += ll[i] * w2[i]
        fpi_sweep_of(m.nf, m.ns, m.s_off, m.S, logprior, qL, nxt)
        swap = cur
        cur = nxt
        nxt = swap
        if compute_vfe:
            vfe = free_energy(m, cur, logprior, dig, 1, w)
            dF = vfe - prev_vfe
            if dF < 0:
                dF = -dF
            prev_vfe = vfe
        it += 1
    memcpy(qs, cur, m.S * sizeof(double))


cdef double free_energy(const SIM* m, const double* qs, const double* logprior, const int* dig,
                        int with_ll, double* w) noexcept nogil:
    """pymdp's calc_free_energy: sum_f q.(log q - log prior) - E_q[log likelihood].

    pymdp reshapes (not transposes) each modality's log likelihood into sorted
    factor order; reading it the same way stops the iteration where it stops.
    """
    cdef int i, mm, K
    cdef double F = divergence_from_prior(0.0, qs, logprior, m.S)
    cdef const float* ll
    if with_ll:
        for mm in range(m.nm):
            K = joint_of(m, qs, m.a_sdep + m.a_dep_off[mm], m.a_dep_off[mm + 1] - m.a_dep_off[mm],
                         -1, w)
            ll = m.logA + m.a_off[mm] + <long long>dig[mm] * K
            for i in range(K):
                F -= ll[i] * w[i]
    return F


cdef inline long long search_doubles(const SIM* m, int horizon) noexcept nogil:
    """Doubles of :func:`c_search`'s scratch: ``horizon`` frames, then the work of
    :func:`infer_states` (4 S + 2 max_K) or :func:`node_eval` (max_K + max_no)."""
    cdef long long work = 4 * m.S + 2 * m.max_K
    if m.max_K + m.max_no > work:
        work = m.max_K + m.max_no
    return <long long>horizon * m.FD + work


cdef inline long long search_ints(const SIM* m, int horizon) noexcept nogil:
    """Ints of :func:`c_search`'s scratch: ``horizon`` frames."""
    return <long long>horizon * m.FI


cdef void c_search(const SIM* m, const double* qs0, int horizon, double policy_thr,
                   double state_thr, double penalty, double gamma, int num_iter, double dF,
                   double dF_tol, int compute_vfe, double* dbl, int* ints) noexcept nogil:
    """The tree search; the root's G and q_pi end in frame 0."""
    cdef double* work = dbl + <long long>horizon * m.FD
    cdef double* fd
    cdef double* child
    cdef double* G
    cdef double* qpi
    cdef double* pp
    cdef int* fi
    cdef int* dig
    cdef int level = 0, p = -1, found
    cdef double val
    memcpy(dbl, qs0, m.S * sizeof(double))
    node_eval(m, dbl, ints, gamma, work)
    while True:
        fd = dbl + <long long>level * m.FD
        fi = ints + level * m.FI
        G = fd + m.S + m.P * m.S + m.P * m.SO
        qpi = G + m.P
        pp = qpi + m.P
        dig = fi + 2
        if level < horizon - 1:
            found = 0
            while True:
                p = fi[FI_POLICY]
                if p >= 0 and fi[FI_STAGE] > 0:
                    if next_outcome(m, fd + m.S + m.P * m.S + p * m.SO, dig, pp,
                                    fi[FI_STAGE] == 1, state_thr):
                        fi[FI_STAGE] = 2
                        found = 1
                        break
                    fi[FI_STAGE] = 0
                p += 1
                fi[FI_POLICY] = p
                if p >= m.P:
                    break
                # the pruning test reads q_pi from before any child was added, as pymdp
                if qpi[p] < policy_thr:
                    G[p] -= penalty
                else:
                    fi[FI_STAGE] = 1
            if found:
                child = fd + m.FD
                infer_states(m, dig, fd + m.S + p * m.S, child, num_iter, dF, dF_tol,
                             compute_vfe, work)
                node_eval(m, child, fi + m.FI, gamma, work)
                level += 1
                continue
            softmax_scaled(G, gamma, qpi, m.P)
        if level == 0:
            return
        val = 0.0
        for p in range(m.P):
            val += qpi[p] * G[p]
        level -= 1
        fd = dbl + <long long>level * m.FD
        fi = ints + level * m.FI
        G = fd + m.S + m.P * m.S + m.P * m.SO
        G[fi[FI_POLICY]] += val * G[2 * m.P + m.nm]  # pp[nm]: the outcome's probability


cdef inline void root_out(const SIM* m, const double* dbl, float* G, float* q_pi) noexcept nogil:
    """The root's ``G`` and ``q_pi`` (frame 0 of a finished :func:`c_search`), in float32."""
    cdef const double* G0 = dbl + m.S + m.P * m.S + m.P * m.SO
    cdef int p
    for p in range(m.P):
        G[p] = <float>G0[p]
        q_pi[p] = <float>G0[m.P + p]


cdef class SIModel:
    """Dense float32 copy of a generative model with one-step policies, for the search.

    Built by :func:`fa_core.sophisticated.si_model` only (inputs validated there).
    """
    cdef SIM c
    cdef readonly object _keep
    cdef readonly int num_states_total

    def __init__(self, list num_states, list num_obs, list A_factor_list, list B_factor_list,
                 list A, list a_H, list B, list lnC, object I, object policies):
        keep = []
        self._keep = keep
        nf, nm = len(num_states), len(num_obs)
        P = len(policies)
        a_K = [int(np.prod([num_states[f] for f in d])) for d in A_factor_list]
        b_K = [int(np.prod([num_states[g] for g in d])) for d in B_factor_list]
        A2 = [np.asarray(a, dtype=np.float32).reshape(num_obs[mm], -1) for mm, a in enumerate(A)]
        A64 = [a.astype(np.float64) for a in A2]

        def offsets(lengths):
            return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        self.c.nf, self.c.nm, self.c.P = nf, nm, P
        self.c.S, self.c.SO = sum(num_states), sum(num_obs)
        self.c.max_K = max(a_K + b_K)
        self.c.max_ns = max(num_states)
        self.c.max_no = max(num_obs)
        self.c.ns = self._ints(num_states)
        self.c.no = self._ints(num_obs)
        self.c.s_off = self._ints(offsets(num_states))
        self.c.o_off = self._ints(offsets(num_obs))
        self.c.a_dep = self._ints([f for d in A_factor_list for f in d])
        self.c.a_dep_off = self._ints(offsets([len(d) for d in A_factor_list]))
        self.c.a_sdep = self._ints([f for d in A_factor_list for f in sorted(d)])
        self.c.a_K = self._ints(a_K)
        self.c.a_off = self._longs(offsets([a.size for a in A2]))
        self.c.k_off = self._ints(offsets(a_K))
        self.c.A = self._floats(np.concatenate([a.ravel() for a in A2]))
        self.c.logA = self._floats(np.concatenate([np.log(a + 1e-16).ravel() for a in A64]))
        # the model's column entropies (GenerativeModel._a_H), not computed again here
        self.c.aH = self._floats(np.concatenate([np.asarray(h, np.float32) for h in a_H]))
        f_mods = [[mm for mm in range(nm) if f in A_factor_list[mm]] for f in range(nf)]
        self.c.f_mods = self._ints([mm for lst in f_mods for mm in lst])
        self.c.f_mods_off = self._ints(offsets([len(lst) for lst in f_mods]))
        self.c.b_dep = self._ints([g for d in B_factor_list for g in d])
        self.c.b_dep_off = self._ints(offsets([len(d) for d in B_factor_list]))
        self.c.b_K = self._ints(b_K)
        # B[f] (ns, *parents, nc) -> (nc, ns, K): one row-major matrix per control
        B2 = [np.moveaxis(np.asarray(b, dtype=np.float32).reshape(num_states[f], b_K[f], -1),
                          -1, 0) for f, b in enumerate(B)]
        self.c.b_off = self._longs(offsets([b.size for b in B2]))
        self.c.B = self._floats(np.concatenate([b.ravel() for b in B2]))
        self.c.lnC = self._doubles(np.concatenate([np.ravel(c) for c in lnC]))
        if I is None:
            self.c.has_I, self.c.ii_depth = 0, 0
            self.c.ind = self._doubles(np.zeros(1))
            self.c.I_off = self._ints([0])
        else:
            self.c.has_I, self.c.ii_depth = 1, int(I[0].shape[0])
            self.c.ind = self._doubles(np.concatenate([np.ravel(i) for i in I]))
            self.c.I_off = self._ints(offsets([np.size(i) for i in I]))
        self.c.pol = self._ints(np.asarray(policies).reshape(P, nf))
        self.c.FD = self.c.S + P * self.c.S + P * self.c.SO + 2 * P + nm + 1
        self.c.FI = nm + 2 + nf
        self.num_states_total = self.c.S

    cdef const int* _ints(self, object x) except NULL:
        cdef cnp.ndarray arr = np.ascontiguousarray(np.asarray(x, dtype=np.int32).ravel())
        if arr.size == 0:
            arr = np.zeros(1, dtype=np.int32)
        self._keep.append(arr)
        return <const int*>cnp.PyArray_DATA(arr)

    cdef const long long* _longs(self, object x) except NULL:
        cdef cnp.ndarray arr = np.ascontiguousarray(np.asarray(x, dtype=np.int64).ravel())
        self._keep.append(arr)
        return <const long long*>cnp.PyArray_DATA(arr)

    cdef const float* _floats(self, object x) except NULL:
        cdef cnp.ndarray arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32).ravel())
        self._keep.append(arr)
        return <const float*>cnp.PyArray_DATA(arr)

    cdef const double* _doubles(self, object x) except NULL:
        cdef cnp.ndarray arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64).ravel())
        self._keep.append(arr)
        return <const double*>cnp.PyArray_DATA(arr)

    def scratch_sizes(self, int horizon):
        """(doubles, ints) of scratch one search of depth ``horizon`` needs."""
        return search_doubles(&self.c, horizon), search_ints(&self.c, horizon)

    @property
    def c_address(self):
        """Address of this model's C struct, for :func:`population_stages`'s ``models``."""
        return <size_t>&self.c

    @property
    def nbytes(self):
        """Bytes of the dense copies this object holds."""
        return int(sum(a.nbytes for a in self._keep))


def search(SIModel model, const double[::1] qs, int horizon, double policy_prune_threshold,
           double state_prune_threshold, double prune_penalty, double gamma, int num_iter,
           double dF, double dF_tol, bint compute_vfe, double[::1] dbl_scratch,
           int[::1] int_scratch, float[::1] G, float[::1] q_pi):
    """Sophisticated-inference search from beliefs ``qs`` (flat over factors).

    Writes the root's negative expected free energies into ``G`` and
    ``softmax(gamma * G)`` into ``q_pi``. The scratch buffers must hold at
    least ``model.scratch_sizes(horizon)`` entries; ``horizon >= 1``.
    """
    cdef const SIM* m = &model.c
    nd, ni = model.scratch_sizes(horizon)
    if horizon < 1 or dbl_scratch.shape[0] < nd or int_scratch.shape[0] < ni \
            or qs.shape[0] != m.S or G.shape[0] != m.P or q_pi.shape[0] != m.P:
        raise ValueError("search: horizon < 1 or a buffer of the wrong size")
    with nogil:
        c_search(m, &qs[0], horizon, policy_prune_threshold, state_prune_threshold,
                 prune_penalty, gamma, num_iter, dF, dF_tol, compute_vfe, &dbl_scratch[0],
                 &int_scratch[0])
        root_out(m, &dbl_scratch[0], &G[0], &q_pi[0])


# ---------------------------------------------------------------------------
# Populations: the search for every agent, in parallel over agents
# ---------------------------------------------------------------------------

cdef double c_si_tie_rtol(const float* G, const float* q_pi, int P) noexcept nogil:
    """:func:`fa_core.sophisticated.tie_rtol`: 16 float32 epsilons times ``1 + max |G|``
    over the policies with probability at least 1e-6 of the largest (pruned policies,
    at ``-prune_penalty``, do not widen the band)."""
    cdef int p
    cdef float mx = q_pi[0], gmax = 0.0, thr
    for p in range(1, P):
        if q_pi[p] > mx:
            mx = q_pi[p]
    thr = <float>1e-6 * mx
    for p in range(P):
        if q_pi[p] >= thr and fabsf(G[p]) > gmax:
            gmax = fabsf(G[p])
    return 16.0 * 1.1920928955078125e-07 * (1.0 + <double>gmax)


def tie_rtol(const float[::1] G, const float[::1] q_pi):
    """The tie band (relative) of a search that gave ``G`` and ``q_pi`` (see c_si_tie_rtol)."""
    if G.shape[0] != q_pi.shape[0] or G.shape[0] < 1:
        raise ValueError("tie_rtol: G and q_pi must have the same positive length")
    return c_si_tie_rtol(&G[0], &q_pi[0], G.shape[0])


cdef struct SIPop:
    const SIM* m
    const ModelC* km        # the population's compiled model (action selection)
    const float* qs         # (n, S)
    float* q_pi             # (n, P)
    float* G                # (n, P)
    int* action             # (n, nf)
    unsigned char* has_action
    const float* alpha
    unsigned long long* rng
    const unsigned char* replan   # per agent: search (1) or keep q_pi and G (0), or NULL
    const size_t* models    # per agent: its own SIM (learned parameters) or 0, or NULL
    int horizon
    double policy_thr
    double state_thr
    double penalty
    int num_iter
    double dF
    double dF_tol
    int compute_vfe
    int full
    int deterministic
    double* dbl             # (threads, dbl_size): the search's scratch, then the root beliefs
    long long dbl_size
    int* ints               # (threads, int_size)
    long long int_size
    float* flt              # (threads, flt_size): action selection
    long long flt_size


cdef inline long long population_doubles(const SIM* m, int horizon) noexcept nogil:
    """Doubles per thread of :func:`c_si_agent`: the search's, then the root beliefs (S)."""
    return search_doubles(m, horizon) + m.S


cdef void c_si_agent(const SIPop* a, Py_ssize_t i, int stages, int t) noexcept nogil:
    """Stages 2 (search) and 4 (select an action) for agent ``i`` on thread ``t``."""
    cdef const SIM* m = a.m
    if a.models != NULL and a.models[i] != 0:  # its learned parameters, same dimensions
        m = <const SIM*>a.models[i]
    cdef double* dbl = a.dbl + t * a.dbl_size
    cdef double* qs0 = dbl + search_doubles(m, a.horizon)
    cdef float* G = a.G + i * m.P
    cdef float* q_pi = a.q_pi + i * m.P
    cdef int k
    if (stages & 2) and not (a.replan != NULL and not a.replan[i] and a.has_action[i]):
        scratch_check(population_doubles(m, a.horizon), a.dbl_size, b"c_si_agent (doubles)")
        scratch_check(search_ints(m, a.horizon), a.int_size, b"c_si_agent (ints)")
        for k in range(m.S):
            qs0[k] = a.qs[i * m.S + k]
        c_search(m, qs0, a.horizon, a.policy_thr, a.state_thr, a.penalty, 1.0, a.num_iter,
                 a.dF, a.dF_tol, a.compute_vfe, dbl, a.ints + t * a.int_size)
        root_out(m, dbl, G, q_pi)
    if stages & 4:
        scratch_check(sample_action_scratch(a.km), a.flt_size, b"c_si_agent (selection)")
        c_sample_action(a.km, q_pi, a.full, a.deterministic, a.alpha[i],
                        c_si_tie_rtol(G, q_pi, m.P), a.rng + i, a.action + i * m.nf,
                        a.flt + t * a.flt_size)
        a.has_action[i] = 1


def population_scratch_sizes(SIModel model, KModel kmodel, int horizon):
    """(doubles, ints, floats) of scratch per thread that :func:`population_stages` needs."""
    return (population_doubles(&model.c, horizon), search_ints(&model.c, horizon),
            sample_action_scratch(&kmodel.c))


def population_stages(SIModel model, KModel kmodel, int stages, const float[:, ::1] qs,
                      float[:, ::1] q_pi, float[:, ::1] G, int[:, ::1] action,
                      unsigned char[::1] has_action, const float[::1] alpha,
                      unsigned long long[::1] rng, object replan, int horizon,
                      double policy_prune_threshold, double state_prune_threshold,
                      double prune_penalty, int num_iter, double dF, double dF_tol,
                      bint compute_vfe, bint full, bint deterministic, double[:, ::1] dbl,
                      int[:, ::1] ints, float[:, ::1] flt, int n_threads,
                      object models=None):
    """Run ``stages`` (bit mask: 2 the search, 4 action selection) for every agent of a
    population, in parallel over agents, without the GIL.

    The search is :func:`search`'s (gamma 1, as pymdp's agent calls it) from each
    agent's beliefs ``qs``, writing its rows of ``G`` and ``q_pi``; selection is the
    population's (``_selection.c_sample_action``, each agent's own ``rng`` word) with
    the search's tie band. ``replan`` (optional, uint8 (n,)): agents with 0 and a
    previous action keep ``q_pi`` and ``G`` (one-step policies: nothing to shift).
    ``dbl``, ``ints`` and ``flt`` have one row per thread (``n_threads`` rows at least)
    of :func:`population_scratch_sizes` entries at least. Results do not depend on the
    number of threads. ``models`` (optional, uintp (n,)): per agent the
    :attr:`SIModel.c_address` of its own model (learned parameters; the same
    dimensions as ``model``) or 0 for ``model``; the caller keeps them alive.
    """
    cdef SIPop a
    cdef const SIM* m = &model.c
    cdef Py_ssize_t i, n = qs.shape[0]
    cdef const unsigned char[::1] replan_v
    cdef const size_t[::1] models_v
    nd, ni, nfl = population_scratch_sizes(model, kmodel, horizon)
    if horizon < 1:
        raise ValueError("population_stages: horizon must be at least 1")
    if kmodel.c.S != m.S or kmodel.c.n_pol != m.P or kmodel.c.nf != m.nf:
        raise ValueError("population_stages: kmodel and model are not the same model")
    if (qs.shape[1] != m.S or q_pi.shape[0] != n or q_pi.shape[1] != m.P or G.shape[0] != n
            or G.shape[1] != m.P or action.shape[0] != n or action.shape[1] != m.nf
            or has_action.shape[0] != n or alpha.shape[0] != n or rng.shape[0] != n):
        raise ValueError("population_stages: an agent array of the wrong shape")
    if n_threads < 1:
        n_threads = 1
    if (dbl.shape[0] < n_threads or ints.shape[0] < n_threads or flt.shape[0] < n_threads
            or dbl.shape[1] < nd or ints.shape[1] < ni or flt.shape[1] < nfl):
        raise ValueError(f"population_stages: scratch must be ({n_threads}, >= {nd}), "
                         f"({n_threads}, >= {ni}) and ({n_threads}, >= {nfl})")
    if n == 0:
        return
    a.m = m
    a.km = &kmodel.c
    a.qs = &qs[0, 0]; a.q_pi = &q_pi[0, 0]; a.G = &G[0, 0]
    a.action = &action[0, 0]; a.has_action = &has_action[0]
    a.alpha = &alpha[0]; a.rng = &rng[0]
    a.replan = NULL
    if replan is not None:
        replan_v = replan
        if replan_v.shape[0] != n:
            raise ValueError(f"population_stages: replan must have shape ({n},)")
        a.replan = &replan_v[0]
    a.models = NULL
    if models is not None:
        models_v = models
        if models_v.shape[0] != n:
            raise ValueError(f"population_stages: models must have shape ({n},)")
        a.models = &models_v[0]
    a.horizon = horizon
    a.policy_thr = policy_prune_threshold; a.state_thr = state_prune_threshold
    a.penalty = prune_penalty
    a.num_iter = num_iter; a.dF = dF; a.dF_tol = dF_tol; a.compute_vfe = compute_vfe
    a.full = full; a.deterministic = deterministic
    a.dbl = &dbl[0, 0]; a.dbl_size = dbl.shape[1]
    a.ints = &ints[0, 0]; a.int_size = ints.shape[1]
    a.flt = &flt[0, 0]; a.flt_size = flt.shape[1]
    # a search costs far more than scheduling: hand out agents a few at a time
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="dynamic", chunksize=2):
        c_si_agent(&a, i, stages, threadid())
