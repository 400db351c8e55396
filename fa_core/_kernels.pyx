# cython: language_level=3
"""Compiled float32 kernels of fa_core: the Python entry points and the population driver.

The compiled core is split by stage (see the README, Architecture):

* ``_model.pxd`` / ``_model.pyx``: the typed compiled model :class:`KModel`
  (``ModelC``, ``Mat``) and ``load_observation``;
* ``_math.pxd``: every piece of the math, once, as ``cdef inline`` point
  functions, with the 8-agent block twins next to them, and the epsilons;
* ``_states``: state inference (``infer_states``, ``predict_states``);
* ``_policies``: policy evaluation (``infer_policies``, ``action_marginals``);
* ``_selection``: action selection and its random streams (``tie_rtol``,
  ``select_highest``);
* this module: the population driver (``population_stages``), which runs the
  stages above for every agent in one parallel loop (each agent reading the
  shared model or its own learned one; ``_learning`` holds the count updates).
  It re-exports the entry points above, so ``fa_core._kernels`` keeps
  its names.

Everything works on preallocated buffers handed in by the caller and never
allocates in the per-step path. Inputs are validated in Python
(``fa_core.model`` and ``fa_core.agent``) before any kernel runs, so the
loops run without bounds checks and cannot fail.
"""

from cython.parallel cimport prange, threadid

from fa_core._math cimport EPS, agent_evidence, fa_log_eps, fa_simd_level, log_likelihood
from fa_core._model cimport BL, FA_CORE_CHECKED, ModelC
from fa_core._model cimport KModel as KModelC
from fa_core._policies cimport c_infer_policies, c_infer_policies_block, c_policies_sparse
from fa_core._replan cimport shift_policy_posterior
from fa_core._selection cimport c_sample_action, c_tie_rtol
from fa_core._states cimport (c_infer_states, c_infer_states_block, c_infer_states_sparse,
                              sparse_states_model)

from fa_core._model import KModel, load_observation
from fa_core._policies import action_marginals, infer_policies
from fa_core._selection import select_highest, tie_rtol
from fa_core._states import infer_states, predict_states

# the entry points re-exported from the stage modules, and the driver
__all__ = ["CHECKED_BUILD", "KModel", "action_marginals", "infer_policies", "infer_states",
           "load_observation", "population_stages", "predict_states", "select_highest",
           "simd_isa", "tie_rtol"]

# True in the debugging build of setup.py's FA_CORE_CHECKED_BUILD=1 (bounds checks, sanitizers)
CHECKED_BUILD = bool(FA_CORE_CHECKED)


def simd_isa():
    """The instruction set of the vectorised exp / log / sums, chosen when the module loaded.

    Returns
    -------
    str
        ``"avx2+fma"`` on CPUs that have both (unless ``FA_CORE_SIMD=sse2`` was set in the
        environment), ``"sse2"`` on other x86-64 CPUs, ``"scalar"`` (libm) elsewhere.
    """
    return {2: "avx2+fma", 1: "sse2"}.get(fa_simd_level(), "scalar")


# ---------------------------------------------------------------------------
# Populations: the per-agent and block kernels in one parallel loop
# ---------------------------------------------------------------------------

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
    const size_t* models            # per agent: its own ModelC (learned values) or 0, or NULL
    const unsigned char* replan     # per agent: re-evaluate policies (1) or shift q_pi (0), or NULL
    const int* shift_head           # shift_policy_posterior's tables (policy_len > 1)
    const int* shift_tail
    const float* shift_share
    int shift_keys
    const float* prior              # per agent (n, S) prior probabilities, or NULL (D / prediction)


# blocks per group of the population driver: 64 agents, one cache line of has_action, so
# neighbouring groups of different threads rarely write the same line
cdef enum:
    GROUP_BL = 8


cdef inline const ModelC* model_of(const PopArgs* a, Py_ssize_t i) noexcept nogil:
    """Agent ``i``'s model: its own (learned parameters) or the population's."""
    if a.models != NULL and a.models[i] != 0:
        return <const ModelC*>a.models[i]
    return a.m


cdef void c_agent_stages(const PopArgs* a, Py_ssize_t i, int stages, float* sc) noexcept nogil:
    """Run stages (1 infer_states, 2 infer_policies, 4 sample_action) for agent ``i``."""
    cdef const ModelC* m = model_of(a, i)
    cdef float* qs = a.qs + i * m.S
    cdef float* ll_all = sc
    cdef float* logprior = sc + m.nll
    if stages & 1:
        if a.prior != NULL:  # given by the caller (fa_core.jax's empirical prior)
            fa_log_eps(a.prior + i * m.S, logprior, m.S, EPS)
            log_likelihood(m, a.obs + i * m.nm, NULL, 0, ll_all, logprior + m.S)
            c_infer_states(m, ll_all, logprior, qs, a.num_iter, a.dF, a.dF_tol, a.compute_vfe,
                           logprior + m.S)
        elif not (a.has_action[i] and sparse_states_model(m)  # concentrated beliefs
                  and c_infer_states_sparse(m, qs, a.action + i * m.nf, a.obs + i * m.nm, sc)):
            agent_evidence(m, a.has_action[i], qs, a.action + i * m.nf, a.obs + i * m.nm,
                           ll_all, logprior, logprior + m.S)
            c_infer_states(m, ll_all, logprior, qs, a.num_iter, a.dF, a.dF_tol, a.compute_vfe,
                           logprior + m.S)
    if (stages & 2) and a.replan != NULL and not a.replan[i] and a.has_action[i]:
        shift_policy_posterior(a.q_pi + i * m.n_pol, m.n_pol, m.policies, m.T, m.nf,
                               a.action + i * m.nf, a.shift_head, a.shift_tail, a.shift_share,
                               a.shift_keys, sc)
    elif stages & 2:
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


cdef void c_block_stages(const PopArgs* a, Py_ssize_t i0, int nb, int stages,
                         float* sc) noexcept nogil:
    """:func:`c_agent_stages` for agents ``i0 .. i0 + nb`` (nb <= BL), policies evaluated
    together."""
    cdef const ModelC* m = a.m
    cdef int b, j, follow = 0, sparse
    for b in range(nb):
        if a.models != NULL and a.models[i0 + b] != 0:  # its own model: one at a time
            for j in range(nb):
                c_agent_stages(a, i0 + j, stages, sc)
            return
        if a.replan != NULL and not a.replan[i0 + b] and a.has_action[i0 + b]:
            follow = 1  # an agent following its plan: policies one agent at a time
    if stages & 1:
        if m.fpi_blocked and a.prior == NULL:  # the block kernel predicts its own priors
            c_infer_states_block(m, a.qs + i0 * m.S, a.action + i0 * m.nf, a.has_action + i0,
                                 a.obs + i0 * m.nm, nb, a.num_iter, a.dF, a.dF_tol,
                                 a.compute_vfe, sc)
        else:
            for b in range(nb):
                c_agent_stages(a, i0 + b, 1, sc)
    if (stages & 2) and (a.use_pA or a.use_pB or a.use_I or follow):  # not in the block kernel
        for b in range(nb):
            c_agent_stages(a, i0 + b, 2, sc)
    elif stages & 2:
        sparse = 1  # concentrated beliefs: the per-agent sparse path is cheaper
        for b in range(nb):
            if not c_policies_sparse(m, a.qs + (i0 + b) * m.S):
                sparse = 0
                break
        if sparse:
            for b in range(nb):
                c_agent_stages(a, i0 + b, 2, sc)
        else:
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


cdef void c_group_stages(const PopArgs* a, Py_ssize_t i0, int n, int stages,
                         float* sc) noexcept nogil:
    """:func:`c_block_stages` for agents ``i0 .. i0 + n`` (any n), BL at a time; their states
    inferred in one stream through the BL lanes (agents that stop early make room for the
    next instead of idling until the block's slowest one stops)."""
    cdef const ModelC* m = a.m
    cdef int b, stream = (stages & 1) and m.fpi_blocked and a.prior == NULL
    if stream and a.models != NULL:
        for b in range(n):
            if a.models[i0 + b] != 0:  # its own model: blocks as c_block_stages runs them
                stream = 0
                break
    if stream:
        c_infer_states_block(m, a.qs + i0 * m.S, a.action + i0 * m.nf, a.has_action + i0,
                             a.obs + i0 * m.nm, n, a.num_iter, a.dF, a.dF_tol,
                             a.compute_vfe, sc)
        stages &= ~1
    b = 0
    while stages and b < n:
        c_block_stages(a, i0 + b, BL if n - b > BL else n - b, stages, sc)
        b += BL


def population_stages(KModelC model, int stages, float[:, ::1] qs, float[:, ::1] q_pi,
                      float[:, ::1] G, int[:, ::1] action, unsigned char[::1] has_action,
                      const int[:, ::1] obs, const float[::1] gamma, const float[::1] alpha,
                      object lnC, object lnE, unsigned long long[::1] rng,
                      float[:, ::1] scratch, int num_iter, double dF, double dF_tol,
                      bint compute_vfe, bint use_utility, bint use_states_info_gain,
                      bint use_pA, bint use_pB, bint use_I, bint full, bint deterministic,
                      int n_threads, object models=None, object replan=None, object shift=None,
                      object prior=None):
    """Run ``stages`` (bit mask: 1 infer_states, 2 infer_policies, 4 sample_action)
    for every agent of a population, in parallel over agents.

    All arrays are (n_agents, ...) and C-contiguous; shapes were checked by
    :class:`fa_core.population.Population`. ``scratch`` has one row per thread.
    Each agent draws only from its own ``rng`` word, so results do not depend
    on the number of threads.

    ``models`` (optional, uintp (n_agents,)): per agent the ``KModel._c_address``
    of its own model (learned parameters; same structure as ``model``), or 0 for
    ``model``; the caller keeps those models alive. ``replan`` (optional, uint8
    (n_agents,)): agents with 0 and a previous action shift their ``q_pi`` one
    step instead of evaluating policies (``shift`` = (head, tail, share, n_keys),
    see ``_replan.shift_policy_posterior``; scratch rows must hold n_keys floats).
    ``prior`` (optional, float32 (n_agents, S)): every agent's prior over states for
    stage 1 instead of ``D`` / the prediction from ``qs`` and ``action``.
    """
    cdef PopArgs a
    cdef Py_ssize_t i, nblk, chunk, grp, ngrp, n = qs.shape[0]
    cdef float[:, ::1] lnC_v
    cdef float[:, ::1] lnE_v
    cdef const size_t[::1] models_v
    cdef const unsigned char[::1] replan_v
    cdef const int[::1] head_v
    cdef const int[::1] tail_v
    cdef const float[::1] share_v
    cdef const float[:, ::1] prior_v
    if n == 0:
        return
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
    a.models = NULL; a.replan = NULL; a.prior = NULL
    if prior is not None:
        prior_v = prior
        if prior_v.shape[0] != n or prior_v.shape[1] != model.c.S:
            raise ValueError(f"prior must have shape ({n}, {model.c.S})")
        a.prior = &prior_v[0, 0]
    a.shift_head = a.shift_tail = NULL; a.shift_share = NULL; a.shift_keys = 0
    if models is not None:
        models_v = models
        a.models = &models_v[0]
    if replan is not None:
        replan_v = replan
        a.replan = &replan_v[0]
        if model.c.T > 1:
            head_v, tail_v, share_v = shift[0], shift[1], shift[2]
            a.shift_head = &head_v[0]; a.shift_tail = &tail_v[0]; a.shift_share = &share_v[0]
            a.shift_keys = shift[3]
    if n_threads < 1:
        n_threads = 1
    # Guided schedule: large chunks first, then smaller ones down to `chunk`, so the threads
    # finish together when agents cost different amounts (iterations to converge, fewer
    # agents than a static split divides evenly). `chunk` keeps at least 8 chunks per
    # thread, and at most 8 blocks (64 agents: one cache line of has_action per chunk,
    # so neighbouring chunks of different threads rarely write the same line).
    if model.blocked:
        # groups of up to GROUP_BL blocks (one stream of the block state inference each),
        # at least 8 groups per thread
        nblk = (n + BL - 1) // BL
        grp = BL * max(1, min(GROUP_BL, nblk // (8 * n_threads)))
        ngrp = (n + grp - 1) // grp
        for i in prange(ngrp, nogil=True, num_threads=n_threads, schedule="guided"):
            c_group_stages(&a, i * grp, grp if n - i * grp > grp else n - i * grp, stages,
                           a.scratch + threadid() * a.scratch_size)
        return
    chunk = max(8, min(64, n // (8 * n_threads)))
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="guided", chunksize=chunk):
        c_agent_stages(&a, i, stages, a.scratch + threadid() * a.scratch_size)
