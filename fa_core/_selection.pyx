# cython: language_level=3
"""Action selection: pymdp's choice rules, the tie band, and each agent's random stream.

``tie_rtol`` and ``select_highest`` are the Python entry points (re-exported by
``fa_core._kernels``); Population's driver calls :func:`c_sample_action` and
:func:`c_tie_rtol` per agent.
"""

from fa_core._math cimport EPS, fa_log_eps, softmax
from fa_core._model cimport KModel, ModelC, scratch_check
from fa_core._policies cimport c_action_marginals


cdef double c_tie_rtol(const ModelC* m, const float* G, double gamma,
                       const float* lnE) noexcept nogil:
    """Relative band within which two probabilities are a tie.

    pymdp breaks exact float64 ties at random. In float32 the policy logits
    ``gamma * G + ln E`` carry a rounding error proportional to their size,
    so symmetric choices differ by up to that much: the band is 16 float32
    epsilons times ``1 + max |logit|``. Leads larger than that decide the
    choice, as in pymdp.
    """
    cdef int p
    cdef double mx = 0.0, v
    for p in range(m.n_pol):
        v = gamma * G[p] + lnE[p]
        if v < 0:
            v = -v
        if v > mx:
            mx = v
    return 16.0 * 1.1920928955078125e-07 * (1.0 + mx)


def tie_rtol(KModel model, const float[::1] G, double gamma):
    """The tie band (relative) for an agent whose last ``infer_policies`` gave ``G``."""
    return c_tie_rtol(&model.c, &G[0], gamma, model.c.lnE)


def select_highest(const float[::1] x, const int[::1] sizes, int[::1] out, double rtol,
                   object randint):
    """pymdp's select_highest on each consecutive block of ``x`` (block ``b`` has
    ``sizes[b]`` entries), written into ``out[b]``.

    Entries within ``rtol`` (relative) of a block's maximum are tied; a block
    with ``c > 1`` tied entries takes the ``randint(c)``-th of them (``randint``
    is the agent's generator, drawn once per tied block in block order, as pymdp
    draws), else its first maximum.
    """
    cdef Py_ssize_t nb = sizes.shape[0], b, i, off = 0, best, n, c, r
    cdef float mx, tol
    for b in range(nb):
        if sizes[b] < 1:
            raise ValueError("every block needs at least one entry")
        off += sizes[b]
    if off > x.shape[0] or out.shape[0] < nb:
        raise ValueError(f"x must hold {off} values and out {nb}")
    off = 0
    for b in range(nb):
        n = sizes[b]
        best = 0
        mx = x[off]
        for i in range(1, n):
            if x[off + i] > mx:
                mx = x[off + i]
                best = i
        tol = <float>(rtol * mx)
        c = 0
        for i in range(n):
            if mx - x[off + i] <= tol:
                c += 1
        if c > 1:
            r = randint(c)
            for i in range(n):
                if mx - x[off + i] <= tol:
                    if r == 0:
                        best = i
                        break
                    r -= 1
        out[b] = <int>best
        off += n


cdef inline unsigned long long splitmix64(unsigned long long* state) noexcept nogil:
    """SplitMix64: one 64-bit word of state per agent, so streams are independent of threads."""
    cdef unsigned long long z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline double uniform01(unsigned long long* state) noexcept nogil:
    return (splitmix64(state) >> 11) * (1.0 / 9007199254740992.0)


cdef int c_select(const float* p, int n, int deterministic, double alpha, double rtol,
                  unsigned long long* rng, float* tmp) noexcept nogil:
    """pymdp's choice rule on one distribution, with this agent's random stream.

    Deterministic: the maximum, ties (within ``rtol``, relative) broken uniformly at random.
    Stochastic: a draw from ``softmax(alpha * log(p + 1e-16))``.
    """
    cdef int i, best = 0, count = 0, r
    cdef float mx = p[0], tol
    cdef double u, acc
    if deterministic:
        for i in range(1, n):
            if p[i] > mx:
                mx = p[i]
                best = i
        tol = <float>(rtol * mx)
        for i in range(n):
            if mx - p[i] <= tol:
                count += 1
        if count == 1:
            return best
        r = <int>(uniform01(rng) * count)
        for i in range(n):
            if mx - p[i] <= tol:
                if r == 0:
                    return i
                r -= 1
        return best
    fa_log_eps(p, tmp, n, EPS)
    for i in range(n):
        tmp[i] = <float>(alpha * tmp[i])
    softmax(tmp, n)
    u = uniform01(rng)
    acc = 0.0
    for i in range(n):
        acc += tmp[i]
        if u < acc:
            return i
    return n - 1


cdef void c_sample_action(const ModelC* m, const float* q_pi, int full, int deterministic,
                          double alpha, double rtol, unsigned long long* rng, int* action,
                          float* scratch) noexcept nogil:
    """Action per factor from the policy posterior (marginal or full sampling mode).

    Scratch: :func:`sample_action_scratch` floats.
    """
    cdef int f, p
    cdef float* marg = scratch
    cdef float* tmp = scratch + m.nc_off[m.nf]   # a softmax over policies or one factor's actions
    scratch_check(m.nc_off[m.nf] + (m.n_pol if full else m.max_nc), sample_action_scratch(m),
                  b"c_sample_action")
    if full:
        p = c_select(q_pi, m.n_pol, deterministic, alpha, rtol, rng, tmp)
        for f in range(m.nf):
            action[f] = m.policies[p * m.T * m.nf + f]
    else:
        c_action_marginals(m, q_pi, marg)
        for f in range(m.nf):
            action[f] = c_select(marg + m.nc_off[f], m.nc[f], deterministic, alpha, rtol, rng,
                                 tmp)
