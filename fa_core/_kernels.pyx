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
  stages above for every agent in one parallel loop, and learning's count
  updates. It re-exports the entry points above, so ``fa_core._kernels`` keeps
  its names.

Everything works on preallocated buffers handed in by the caller and never
allocates in the per-step path. Inputs are validated in Python
(``fa_core.model`` and ``fa_core.agent``) before any kernel runs, so the
loops run without bounds checks and cannot fail.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport logf, exp, INFINITY
from libc.string cimport memset

from fa_core._math cimport EPS, EPS_D, agent_evidence
from fa_core._model cimport BL, FA_CORE_CHECKED, ModelC
from fa_core._model cimport KModel as KModelC
from fa_core._policies cimport c_infer_policies, c_infer_policies_block
from fa_core._selection cimport c_sample_action, c_tie_rtol
from fa_core._states cimport c_infer_states, c_infer_states_block

from fa_core._model import KModel, load_observation
from fa_core._policies import action_marginals, infer_policies
from fa_core._selection import select_highest, tie_rtol
from fa_core._states import infer_states, predict_states

# True in the debugging build of setup.py's FA_CORE_CHECKED_BUILD=1 (bounds checks, sanitizers)
CHECKED_BUILD = bool(FA_CORE_CHECKED)


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



cdef void c_agent_stages(const PopArgs* a, Py_ssize_t i, int stages, float* sc) noexcept nogil:
    """Run stages (1 infer_states, 2 infer_policies, 4 sample_action) for agent ``i``."""
    cdef const ModelC* m = a.m
    cdef float* qs = a.qs + i * m.S
    cdef float* ll_all = sc
    cdef float* logprior = sc + m.nll
    if stages & 1:
        agent_evidence(m, a.has_action[i], qs, a.action + i * m.nf, a.obs + i * m.nm, ll_all,
                       logprior, logprior + m.S)
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



cdef void c_block_stages(const PopArgs* a, Py_ssize_t i0, int nb, int stages,
                         float* sc) noexcept nogil:
    """:func:`c_agent_stages` for agents ``i0 .. i0 + nb``, policies evaluated together."""
    cdef const ModelC* m = a.m
    cdef int b
    if stages & 1:
        if m.fpi_blocked:
            c_infer_states_block(m, a.qs + i0 * m.S, a.action + i0 * m.nf, a.has_action + i0,
                                 a.obs + i0 * m.nm, nb, a.num_iter, a.dF, a.dF_tol,
                                 a.compute_vfe, sc)
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



def population_stages(KModelC model, int stages, float[:, ::1] qs, float[:, ::1] q_pi,
                      float[:, ::1] G, int[:, ::1] action, unsigned char[::1] has_action,
                      const int[:, ::1] obs, const float[::1] gamma, const float[::1] alpha,
                      object lnC, object lnE, unsigned long long[::1] rng,
                      float[:, ::1] scratch, int num_iter, double dF, double dF_tol,
                      bint compute_vfe, bint use_utility, bint use_states_info_gain,
                      bint use_pA, bint use_pB, bint use_I, bint full, bint deterministic,
                      int n_threads):
    """Run ``stages`` (bit mask: 1 infer_states, 2 infer_policies, 4 sample_action)
    for every agent of a population, in parallel over agents.

    All arrays are (n_agents, ...) and C-contiguous; shapes were checked by
    :class:`fa_core.population.Population`. ``scratch`` has one row per thread.
    Each agent draws only from its own ``rng`` word, so results do not depend
    on the number of threads.
    """
    cdef PopArgs a
    cdef Py_ssize_t i, n = qs.shape[0]
    cdef float[:, ::1] lnC_v
    cdef float[:, ::1] lnE_v
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
