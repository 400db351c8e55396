# cython: language_level=3
"""State inference kernels: the fixed-point iteration per agent and for BL agents at once.

The math (messages, one sweep, free energy) is in ``_math.pxd``; here are the
loops that iterate it, and the Python entry points ``infer_states`` and
``predict_states`` (re-exported by ``fa_core._kernels``).
"""

from libc.string cimport memcpy

from fa_core._math cimport (EPS, agent_evidence, all_marginals, fpi_sweep, fpi_sweep_bl,
                            free_energy, free_energy_bl, log_likelihood, log_prior, marginals_bl,
                            predict_states as c_predict_states, softmax)
from fa_core._model cimport BL, MAX_ND, KModel, ModelC, scratch_check
from libc.math cimport logf


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


cdef void c_infer_states_block(const ModelC* m, float* qs, const int* action,
                               const unsigned char* has_action, const int* obs, int nb,
                               int num_iter, double dF, double dF_tol, int compute_vfe,
                               float* scratch) noexcept nogil:
    """:func:`c_infer_states` for ``nb`` <= BL consecutive agents, agents innermost.

    ``qs`` (previous beliefs in, posteriors out), ``action``, ``has_action`` and
    ``obs`` point at the first agent's rows. Every agent iterates as it would
    alone and keeps the iterate at which it stops (the free energy settles, or
    ``num_iter``); the block runs until the last one stops. Sums run in another
    order than the per-agent kernel.

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
    cdef float* lp1 = ll1 + m.nll
    cdef float* swap
    cdef double ell[BL]
    cdef double prev[BL]
    cdef double tot[BL]
    cdef double d
    cdef int active[BL]
    cdef int b, i, f, n, it = 0, left
    scratch_check(lp1 + m.S + m.max_K - scratch, infer_states_block_scratch(m),
                  b"c_infer_states_block")
    for b in range(BL):  # lanes past nb repeat agent 0 (computed, never written back)
        if b < nb or b == 0:
            agent_evidence(m, has_action[b], qs + b * m.S, action + b * m.nf, obs + b * m.nm,
                           ll1, lp1, lp1 + m.S)
        for i in range(m.nll):
            llT[i * BL + b] = ll1[i] if b < nb or b == 0 else llT[i * BL]
        for i in range(m.S):
            lpT[i * BL + b] = lp1[i] if b < nb or b == 0 else lpT[i * BL]
    for b in range(BL):
        active[b] = b < nb
    for f in range(m.nf):  # uniform start, as pymdp
        n = m.ns[f]
        for i in range(m.s_off[f], m.s_off[f] + n):
            for b in range(BL):
                cur[i * BL + b] = 1.0 / n
                logq[i * BL + b] = logf(1.0 / n + EPS)
    if num_iter <= 0 or (compute_vfe and not dF >= dF_tol):
        for b in range(nb):  # no sweep at all: beliefs stay uniform
            for i in range(m.S):
                qs[b * m.S + i] = cur[i * BL + b]
        return
    if compute_vfe:
        free_energy_bl(m, cur, logq, lpT, NULL, prev)
    marginals_bl(m, llT, cur, qL, ell, pre)
    left = nb
    while left > 0:
        fpi_sweep_bl(m, lpT, qL, nxt, logq)
        swap = cur
        cur = nxt
        nxt = swap
        it += 1
        if it == num_iter:  # every agent still iterating stops here
            break
        marginals_bl(m, llT, cur, qL, ell, pre)
        if compute_vfe:
            free_energy_bl(m, cur, logq, lpT, ell, tot)
            for b in range(nb):
                d = tot[b] - prev[b]
                prev[b] = tot[b]
                if active[b] and not (d if d >= 0 else -d) >= dF_tol:
                    active[b] = 0
                    left -= 1
                    for i in range(m.S):
                        qs[b * m.S + i] = cur[i * BL + b]
    for b in range(nb):
        if active[b]:
            for i in range(m.S):
                qs[b * m.S + i] = cur[i * BL + b]


def infer_states(KModel model, float[::1] qs, float[::1] qs_prev, int[::1] action,
                 int has_action, int[::1] obs, float[::1] obs_distr, bint distr,
                 int num_iter, double dF, double dF_tol, bint compute_vfe,
                 float[::1] scratch):
    """Posterior over hidden states, written into ``qs``.

    The prior is ``log D`` when ``has_action`` is false, else the prediction of
    ``qs_prev`` through ``B[..., action]``. ``qs`` and ``qs_prev`` may alias.
    Returns the number of fixed-point iterations run.
    """
    cdef const ModelC* m = &model.c
    cdef float* ll_all = &scratch[0]
    cdef float* logprior = ll_all + m.nll
    cdef float* rest = logprior + m.S
    cdef int it
    with nogil:
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
