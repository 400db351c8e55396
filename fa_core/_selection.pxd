"""Action selection (pymdp's select_highest / sampling) with one random stream per agent."""

from fa_core._model cimport ModelC


cdef double c_tie_rtol(const ModelC* m, const float* G, double gamma,
                       const float* lnE) noexcept nogil


cdef inline long long sample_action_scratch(const ModelC* m) noexcept nogil:
    """Floats of :func:`c_sample_action`: action marginals, then a softmax over the policies
    (full sampling) or over one factor's actions (marginal) when selection is stochastic."""
    return m.nc_off[m.nf] + (m.n_pol if m.n_pol > m.max_nc else m.max_nc)


cdef void c_sample_action(const ModelC* m, const float* q_pi, int full, int deterministic,
                          double alpha, double rtol, unsigned long long* rng, int* action,
                          float* scratch) noexcept nogil
