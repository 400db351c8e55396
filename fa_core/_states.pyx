# cython: language_level=3
"""State inference kernels: the fixed-point iteration per agent and for BL agents at once.

The math (messages, one sweep, free energy) is in ``_math.pxd``; here are the
loops that iterate it, and the Python entry points ``infer_states`` and
``predict_states`` (re-exported by ``fa_core._kernels``).
"""

from libc.string cimport memcpy

from fa_core._math cimport (EPS, EPS_D, SPARSE_BUDGET, SPARSE_EPS, agent_evidence, all_marginals,
                            fa_exp_sum, fa_log_eps, fa_max, fpi_sweep, fpi_sweep_bl, free_energy,
                            free_energy_bl, list_nonzero, log_likelihood, log_prior, marginals_bl,
                            mat_log_at, mat_scatter_vals, predict_states as c_predict_states,
                            softmax)
from fa_core._model cimport BL, MAX_ND, KModel, Mat, ModelC, scratch_check
from libc.math cimport exp, logf


cdef int c_infer_states(const ModelC* m, const float* ll_all, const float* logprior,
                        float* qs, int num_iter, double dF, double dF_tol,
                        int compute_vfe, float* scratch) noexcept nogil:
    """Fixed-point iteration (pymdp's run_vanilla_fpi_factorized); returns iterations run.

    Jacobi sweeps: every factor is updated from the previous iterate, so one
    call of :func:`all_marginals` per iterate gives every factor's message and,
    from the same contractions, the expected log likelihood that the free
    energy of that iterate needs (the stopping rule).

    Scratch: :func:`infer_states_scratch` floats.
    """
    cdef float* qs_new = scratch
    cdef float* qL = scratch + m.S
    cdef float* work = qL + m.S      # add_marginals: (max_nd + 1) * max_K
    cdef float* qs_cur = qs
    cdef float* swap
    cdef int f, i, it = 0
    cdef double prev_vfe = 0.0, vfe, ell
    scratch_check(work + (m.max_nd + 1) * m.max_K - scratch, infer_states_scratch(m),
                  b"c_infer_states")
    if m.nf == 1:  # one group: closed form
        for i in range(m.S):
            qs[i] = logprior[i] + ll_all[i]
        softmax(qs, m.S)
        return 1
    for f in range(m.nf):
        for i in range(m.ns[f]):
            qs[m.s_off[f] + i] = 1.0 / m.ns[f]
    if compute_vfe:
        prev_vfe = free_energy(m, qs, logprior, ll_all, 0, 0.0, NULL, NULL)
    all_marginals(m, ll_all, qs_cur, qL, work)
    while it < num_iter and (not compute_vfe or dF >= dF_tol):
        fpi_sweep(m, logprior, qL, qs_new)
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


cdef inline void load_lane(const ModelC* m, int b, int j, const float* qs, const int* action,
                           const unsigned char* has_action, const int* obs, float* llT,
                           float* lpT, float* ll1) noexcept nogil:
    """Agent ``j``'s evidence (log likelihoods, log prior) into lane ``b`` of ``llT``, ``lpT``."""
    cdef float* lp1 = ll1 + m.nll
    cdef int i
    agent_evidence(m, has_action[j], qs + j * m.S, action + j * m.nf, obs + j * m.nm,
                   ll1, lp1, lp1 + m.S)
    for i in range(m.nll):
        llT[i * BL + b] = ll1[i]
    for i in range(m.S):
        lpT[i * BL + b] = lp1[i]


cdef inline void uniform_lane(const ModelC* m, int b, float* cur, float* logq) noexcept nogil:
    """Lane ``b`` of the iterate at pymdp's uniform start, and its log."""
    cdef int f, i
    cdef float lq
    for f in range(m.nf):
        lq = logf(1.0 / m.ns[f] + EPS)  # once per factor, not per state
        for i in range(m.s_off[f], m.s_off[f] + m.ns[f]):
            cur[i * BL + b] = 1.0 / m.ns[f]
            logq[i * BL + b] = lq


cdef void c_infer_states_block(const ModelC* m, float* qs, const int* action,
                               const unsigned char* has_action, const int* obs, int nb,
                               int num_iter, double dF, double dF_tol, int compute_vfe,
                               float* scratch) noexcept nogil:
    """:func:`c_infer_states` for ``nb`` consecutive agents, BL at a time, agents innermost.

    ``qs`` (previous beliefs in, posteriors out), ``action``, ``has_action`` and
    ``obs`` point at the first agent's rows. Every agent iterates as it would
    alone and keeps the iterate at which it stops (the free energy settles, or
    ``num_iter``). Agents stream through the BL lanes: a lane whose agent stopped
    takes the next one (agents stop after 2 to ``num_iter`` sweeps, so a block
    waiting for its slowest agent did about twice the sweeps needed). Each lane's
    arithmetic is its own, so an agent's result does not depend on its lane or
    neighbours; sums run in another order than the per-agent kernel.

    Scratch: :func:`infer_states_block_scratch` floats.
    """
    cdef float* llT = scratch                    # (nll, BL)
    cdef float* lpT = llT + m.nll * BL           # (S, BL) log prior
    cdef float* cur = lpT + m.S * BL             # (S, BL) iterate
    cdef float* nxt = cur + m.S * BL
    cdef float* logq = nxt + m.S * BL            # log of the newest iterate
    cdef float* qL = logq + m.S * BL             # messages
    cdef float* pre = qL + m.S * BL              # 2 * (MAX_ND + 1) * BL
    cdef float* ll1 = pre + 2 * (MAX_ND + 1) * BL    # one agent's evidence, then its joint
    cdef float* swap
    cdef double ell[BL]
    cdef double ellz[BL]    # ell, 0 in lanes whose free energy has no likelihood (start)
    cdef double prev[BL]
    cdef double tot[BL]
    cdef double d
    cdef int agent[BL]      # each lane's agent (-1: none left)
    cdef int its[BL]        # sweeps run by the lane's agent
    cdef int state[BL]      # 0 iterating, 1 at the uniform start, 2 loaded after the messages
    cdef int b, i, f, nxt_agent = 0, busy = 0
    scratch_check(ll1 + m.nll + m.S + m.max_K - scratch, infer_states_block_scratch(m),
                  b"c_infer_states_block")
    if num_iter <= 0 or (compute_vfe and not dF >= dF_tol):
        for b in range(nb):  # no sweep at all: beliefs stay uniform
            for f in range(m.nf):
                for i in range(m.s_off[f], m.s_off[f] + m.ns[f]):
                    qs[b * m.S + i] = 1.0 / m.ns[f]
        return
    for b in range(BL):  # lanes with no agent repeat agent 0 (computed, never written back)
        load_lane(m, b, b if b < nb else 0, qs, action, has_action, obs, llT, lpT, ll1)
        uniform_lane(m, b, cur, logq)
        agent[b] = b if b < nb else -1
        its[b] = 0
        state[b] = 1
        busy += b < nb
    nxt_agent = BL if nb > BL else nb
    # qs rows are read (evidence) when their agent is loaded and written when it stops,
    # each agent's once
    marginals_bl(m, llT, cur, qL, ell, pre)
    while True:
        if compute_vfe:
            for b in range(BL):
                ellz[b] = 0.0 if state[b] == 1 else ell[b]
            free_energy_bl(m, cur, logq, lpT, ellz, tot)
        for b in range(BL):
            if agent[b] < 0:
                continue
            if state[b] == 1:  # the start's free energy, without the likelihood
                if compute_vfe:
                    prev[b] = tot[b]
                state[b] = 0
            elif state[b] == 0 and compute_vfe:
                d = tot[b] - prev[b]
                prev[b] = tot[b]
                if not (d if d >= 0 else -d) >= dF_tol:  # settled: the next agent
                    for i in range(m.S):
                        qs[agent[b] * m.S + i] = cur[i * BL + b]
                    agent[b] = -1
                    busy -= 1
                    if nxt_agent < nb:  # its messages come with the next round's
                        load_lane(m, b, nxt_agent, qs, action, has_action, obs, llT, lpT, ll1)
                        agent[b] = nxt_agent
                        its[b] = 0
                        state[b] = 2
                        nxt_agent += 1
                        busy += 1
        if busy == 0:
            break
        fpi_sweep_bl(m, lpT, qL, nxt, logq)
        swap = cur
        cur = nxt
        nxt = swap
        for b in range(BL):
            if agent[b] < 0:
                continue
            if state[b] == 2:  # loaded after the messages: this sweep was not its own
                uniform_lane(m, b, cur, logq)
                state[b] = 1
                continue
            its[b] += 1
            if its[b] == num_iter:  # no further sweep: the next agent starts now
                for i in range(m.S):
                    qs[agent[b] * m.S + i] = cur[i * BL + b]
                agent[b] = -1
                busy -= 1
                if nxt_agent < nb:
                    load_lane(m, b, nxt_agent, qs, action, has_action, obs, llT, lpT, ll1)
                    uniform_lane(m, b, cur, logq)
                    agent[b] = nxt_agent
                    its[b] = 0
                    state[b] = 1
                    nxt_agent += 1
                    busy += 1
        if busy == 0:
            break
        marginals_bl(m, llT, cur, qL, ell, pre)


# Sparse state inference: on by default; tests turn it off to compare with the dense path,
# and count the calls that took it and the ones that fell back to the dense path.
cdef int sparse_states_on = 1
cdef long long sparse_states_calls = 0
cdef long long sparse_states_fallbacks = 0

cdef extern from *:
    """
    #define FA_SPARSE_STATES_TOL 1e-7
    static inline void fa_count_states_call(long long* c) {
        __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
    }
    """
    double SPARSE_STATES_TOL "FA_SPARSE_STATES_TOL"
    void fa_count_states_call(long long* c) noexcept nogil


cdef int sparse_states_model(const ModelC* m) noexcept nogil:
    """Whether the model has the shape :func:`c_infer_states_sparse` handles: one factor (the
    posterior in closed form), its every B slice sparse (CSC or one-hot), and a modality
    whose A is one-hot with its rows listed (see ``outcome_rows_reached``)."""
    cdef int u, mm
    cdef const Mat* A
    if not sparse_states_on or m.nf != 1 or m.b_dep_off[1] != 1:
        return 0
    for u in range(m.nc[0]):
        if not m.mats[m.b_mat[0] + u].sparse:
            return 0
    for mm in range(m.nm):
        A = &m.mats[m.a_mat[mm]]
        if A.onehot and A.rptr != NULL:
            return 1
    return 0


cdef inline int outcome_rows_reached(const ModelC* m, const int* obs,
                                     const float* pred) noexcept nogil:
    """Whether some modality with a one-hot ``A`` has every state that could emit its
    outcome (its row) inside the prediction's support (``pred`` nonzero)."""
    cdef int mm, j, o
    cdef const Mat* A
    for mm in range(m.nm):
        A = &m.mats[m.a_mat[mm]]
        if A.onehot and A.rptr != NULL:
            o = obs[mm]
            j = A.rptr[o]
            while j < A.rptr[o + 1] and pred[A.rcol[j]] != 0.0:
                j += 1
            if j == A.rptr[o + 1]:
                return 1
    return 0


cdef int c_infer_states_sparse(const ModelC* m, float* qs, const int* action, const int* obs,
                               float* scratch) noexcept nogil:
    """The posterior of a one-factor model over the states its prediction reaches, in place.

    ``qs`` holds the previous beliefs on entry; on success (returns 1) it holds the
    posterior after ``action`` and the outcomes ``obs``, exactly zero outside the states
    ``R`` that ``B[..., action]`` reaches from the previous support ``Q`` (the states above
    SPARSE_EPS; fewer than a quarter of all, their dropped mass ``delta`` at most
    SPARSE_BUDGET). Returns 0, with ``qs`` as it was, when the dense path must run.

    The bound. With ``eps = 1e-16`` (pymdp's ``log(x + eps)``), ``p = B q`` and ``p~`` its
    sparse version (from ``Q`` only: ``0 <= p - p~``, ``|p - p~|_1 <= delta``), every state
    weighs ``w(s) = (p(s) + eps) prod_m (A_m[o_m, s] + eps)``, at most ``(p(s) + eps)
    (1 + eps)^M``. The states outside ``R`` together weigh ``U <= (delta + S eps) (1 + eps)^M``
    and ``R``'s weights drop by ``D <= delta (1 + eps)^M``, so with ``W~`` the computed
    weight of ``R`` (the evidence of ``obs`` under the sparse prediction) the sparse posterior
    is within ``2 (D + U) / W~ <= 2 (2 delta + S eps) (1 + eps)^M / W~`` in L1 of the exact
    one. The path is taken only when ``4 (2 delta + S eps) <= SPARSE_STATES_TOL W~``
    (1e-7; the factor 2 covers ``(1 + eps)^M`` and float32 rounding of ``W~``), far below the
    float32 parity tolerance (1e-4 on beliefs). An outcome that the reached states hardly
    explain (``W~`` tiny: a surprising observation), or a wide or uncertain previous
    belief, takes the dense path instead.

    Fidelity of what is skipped. pymdp keeps every state's tiny posterior; a state outside
    ``R`` that could emit the outcomes would hold ``~eps`` (``eps lik / W``), which a
    later outcome that no likely state explains turns into odds of order one. So the path
    is also taken only when some modality with a one-hot ``A`` (the location cue) has
    every state of its outcome's row inside ``R``: every state outside ``R`` then has
    likelihood at most ``eps (1 + eps)^(M - 1)`` and pymdp would hold at most ``(delta +
    eps) eps / W~`` there (``eps^2``-sized, no effect on a later ``log(p + eps)``), which
    this path writes as 0. Models without such a modality (a confusable cue) run dense.

    Cost: one pass over ``qs`` listing its nonzero states (a test per 32 zeros), then work
    on ``R`` only: the log prior, each modality's likelihood entry per state, a softmax.

    Scratch: :func:`infer_states_sparse_scratch` floats.
    """
    cdef int S = m.S, lim = m.S // 4
    cdef int* zl = <int*>scratch               # nonzero states of the previous beliefs
    cdef float* zv = scratch + S               # their values (restored on fallback)
    cdef int* ql = <int*>(zv + S)              # the support Q (lim ints) ...
    cdef float* qv = <float*>(ql + lim + 1)    # ... and its values
    cdef int* rl = <int*>(qv + lim + 1)        # the reached states R
    cdef float* lw = <float*>(rl + S)          # their log weights, then exp(lw - max)
    cdef int nz, nq = 0, nr, i, k, mm
    cdef double dropped = 0.0, tot, W
    cdef float v, l, mx
    scratch_check(lw + S - scratch, infer_states_sparse_scratch(m), b"c_infer_states_sparse")
    nz = list_nonzero(qs, S, zl)
    for i in range(nz):
        k = zl[i]
        v = qs[k]
        zv[i] = v
        if v > SPARSE_EPS:
            if nq >= lim:
                return 0
            ql[nq] = k
            qv[nq] = v
            nq += 1
        else:
            dropped += v
    if nq == 0 or dropped > SPARSE_BUDGET:
        return 0
    for i in range(nz):
        qs[zl[i]] = 0.0
    nr = mat_scatter_vals(&m.mats[m.b_mat[0] + action[0]], ql, qv, nq, qs, rl)
    for i in range(nr):
        lw[i] = qs[rl[i]]
    fa_log_eps(lw, lw, nr, EPS)  # the log prior, as log_prior
    for i in range(nr):  # plus the summed log likelihood, in log_likelihood's order
        k = rl[i]
        l = mat_log_at(&m.mats[m.a_mat[0]], obs[0], k)
        for mm in range(1, m.nm):
            l += mat_log_at(&m.mats[m.a_mat[mm]], obs[mm], k)
        lw[i] = lw[i] + l
    mx = fa_max(lw, nr) if nr > 0 else 0.0
    tot = fa_exp_sum(lw, nr, mx) if nr > 0 else 0.0
    W = exp(<double>mx) * tot
    if not (4.0 * (2.0 * dropped + S * EPS_D) <= SPARSE_STATES_TOL * W
            and outcome_rows_reached(m, obs, qs)):
        for i in range(nr):  # qs as it was: the dense path runs
            qs[rl[i]] = 0.0
        for i in range(nz):
            qs[zl[i]] = zv[i]
        fa_count_states_call(&sparse_states_fallbacks)
        return 0
    for i in range(nr):  # as softmax
        qs[rl[i]] = <float>(lw[i] / tot)
    fa_count_states_call(&sparse_states_calls)
    return 1


def sparse_states(enabled=None):
    """Whether state inference takes the sparse-belief path (default True); with
    ``enabled``, set it (for tests and benchmarks comparing it with the dense path).

    See :func:`c_infer_states_sparse` (``fa_core/_states.pyx``) for the models it covers
    (one factor, sparse B) and the bound that decides, per step, whether it is taken:
    the sparse posterior is within 1e-7 in L1 of the exact one, else the dense path runs.

    Parameters
    ----------
    enabled : bool, optional
        New setting; omitted, the setting is only read.

    Returns
    -------
    tuple of (bool, int, int)
        The setting before the call, how many state inferences took the sparse path so
        far, and how many tried it and fell back to the dense path (the bound not met).
    """
    global sparse_states_on
    old = bool(sparse_states_on)
    if enabled is not None:
        sparse_states_on = 1 if enabled else 0
    return old, int(sparse_states_calls), int(sparse_states_fallbacks)


def infer_states(KModel model, float[::1] qs, float[::1] qs_prev, int[::1] action,
                 int has_action, int[::1] obs, float[::1] obs_distr, bint distr,
                 int num_iter, double dF, double dF_tol, bint compute_vfe,
                 float[::1] scratch):
    """Posterior over hidden states, written into ``qs``.

    The prior is ``log D`` when ``has_action`` is false, else the prediction of
    ``qs_prev`` through ``B[..., action]``. ``qs`` and ``qs_prev`` may alias; when they do,
    concentrated beliefs of one-factor models take :func:`c_infer_states_sparse`.
    Returns the number of fixed-point iterations run.
    """
    cdef const ModelC* m = &model.c
    cdef float* ll_all = &scratch[0]
    cdef float* logprior = ll_all + m.nll
    cdef float* rest = logprior + m.S
    cdef int it
    cdef bint same = &qs[0] == &qs_prev[0]
    with nogil:
        if (has_action and not distr and same and sparse_states_model(m)
                and c_infer_states_sparse(m, &qs[0], &action[0], &obs[0], &scratch[0])):
            it = 1  # as the dense closed form
        else:
            if has_action:
                log_prior(m, &qs_prev[0], &action[0], logprior, rest)
            else:
                memcpy(logprior, m.logD, m.S * sizeof(float))
            log_likelihood(m, &obs[0], &obs_distr[0], distr, ll_all, rest)
            it = c_infer_states(m, ll_all, logprior, &qs[0], num_iter, dF, dF_tol,
                                compute_vfe, rest)
    return it


def predict_states(KModel model, const float[::1] qs, int[::1] action, float[::1] out,
                   float[::1] scratch):
    """One step of ``B`` under ``action`` for every factor, written into ``out``."""
    with nogil:
        c_predict_states(&model.c, &qs[0], &action[0], &out[0], &scratch[0])
