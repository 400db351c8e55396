"""State inference (pymdp's run_vanilla_fpi_factorized): per agent and for BL agents at once.

Each kernel's scratch size is the inline function declared right before it;
``KModel.scratch_size`` is the largest of them, and the checked build stops if
a kernel carves more than its size.
"""

from fa_core._model cimport BL, MAX_ND, ModelC


cdef inline long long infer_states_scratch(const ModelC* m) noexcept nogil:
    """Floats of :func:`c_infer_states`: two iterates' worth plus the messages' work."""
    return 2 * m.S + (m.max_nd + 1) * m.max_K


cdef int c_infer_states(const ModelC* m, const float* ll_all, const float* logprior,
                        float* qs, int num_iter, double dF, double dF_tol,
                        int compute_vfe, float* scratch) noexcept nogil


cdef inline long long evidence_scratch(const ModelC* m) noexcept nogil:
    """Floats of one agent's evidence before :func:`c_infer_states`: summed log
    likelihoods, log prior, then the state inference (whose work also serves as the
    prediction's and likelihood's temporary, max_K floats)."""
    return m.nll + m.S + infer_states_scratch(m)


cdef inline long long infer_states_block_scratch(const ModelC* m) noexcept nogil:
    """Floats of :func:`c_infer_states_block`: the agents' evidence, transposed ((nll + S,
    BL)), four (S, BL) iterates / logs / messages, prefix and suffix products, and one
    agent's evidence (nll + S + max_K)."""
    return (m.nll + 5 * m.S + 2 * (MAX_ND + 1)) * BL + m.nll + m.S + m.max_K


cdef void c_infer_states_block(const ModelC* m, float* qs, const int* action,
                               const unsigned char* has_action, const int* obs, int nb,
                               int num_iter, double dF, double dF_tol, int compute_vfe,
                               float* scratch) noexcept nogil


cdef inline long long infer_states_sparse_scratch(const ModelC* m) noexcept nogil:
    """Floats of :func:`c_infer_states_sparse`: the previous beliefs' nonzero states and
    values (2 S), their support and its values (2 (S // 4 + 1)), the reached states and
    their log weights (2 S)."""
    return 4 * m.S + 2 * (m.S // 4 + 1)


cdef int sparse_states_model(const ModelC* m) noexcept nogil


cdef int c_infer_states_sparse(const ModelC* m, float* qs, const int* action, const int* obs,
                               float* scratch) noexcept nogil
