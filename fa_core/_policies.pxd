"""Policy evaluation: the expected free energy of every policy, per agent and BL agents at once.

Each kernel's scratch size is the inline function declared right before it.
"""

from fa_core._model cimport BL, ModelC


cdef inline long long infer_policies_scratch(const ModelC* m) noexcept nogil:
    """Floats of :func:`c_infer_policies`: the rollout (T + 1) * S, the joints and the kept
    states (3 max_K), outcomes (3 max_rows), inductive rows (nf), the tail blocks; for
    sparse beliefs the support of each rollout step ((T + 1) * (S + nf) ints) and of the
    outcomes (3 max_rows)."""
    return ((m.T + 1) * m.S + 3 * m.max_K + 3 * m.max_rows + m.nf
            + m.T * m.red_stride + (m.T + 1) * (m.S + m.nf) + 3 * m.max_rows)


cdef void c_infer_policies(const ModelC* m, const float* qs, double gamma,
                           int use_utility, int use_sig, int use_pA, int use_pB, int use_I,
                           const float* lnC, const float* lnE, float* G, float* q_pi,
                           float* scratch) noexcept nogil


cdef inline long long infer_policies_block_scratch(const ModelC* m) noexcept nogil:
    """Floats of :func:`c_infer_policies_block` (0 when the model is not blocked)."""
    return ((m.T + 1) * m.S + 3 * m.max_K + 2 * m.max_rows) * BL


cdef void c_infer_policies_block(const ModelC* m, const float* qs, int nb, const float* gamma,
                                 int use_utility, int use_sig, const float* lnC, int lnC_stride,
                                 const float* lnE, int lnE_stride, float* G, float* q_pi,
                                 float* scratch) noexcept nogil


cdef int c_policies_sparse(const ModelC* m, const float* qs) noexcept nogil


cdef void c_action_marginals(const ModelC* m, const float* q_pi, float* marg) noexcept nogil
