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
