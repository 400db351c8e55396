"""The typed compiled model: what every kernel module reads.

:class:`KModel` (implemented in ``_model.pyx``) owns a :c:type:`ModelC`, a table
of :c:type:`Mat` matrices (each a likelihood ``A[m]``, a transition slice
``B[f][..., u]`` or a parameter information-gain weight, dense row-major or
sparse CSC) plus per-model constants. Every matrix maps a flattened joint
state of its parent factors (column ``k``, C order over the factor list) to a
distribution over rows. Kernel modules cimport these declarations and read
``model.c`` without any Python-level lookup.
"""

cdef extern from *:
    """
    #include <stdio.h>
    #include <stdlib.h>
    #ifndef FA_CORE_CHECKED
    #define FA_CORE_CHECKED 0
    #endif
    /* Checked build only: stop with a message when a kernel carves more scratch than the
       size computed next to it (the sizes KModel.scratch_size is the maximum of). */
    #if FA_CORE_CHECKED
    #define FA_SCRATCH_CHECK(used, size, what) do { if ((long long)(used) > (long long)(size)) { \
        fprintf(stderr, "fa_core: %s carves %lld floats of scratch, sized for %lld\\n", \
                (what), (long long)(used), (long long)(size)); abort(); } } while (0)
    #else
    #define FA_SCRATCH_CHECK(used, size, what) ((void)(what))
    #endif
    """
    int FA_CORE_CHECKED
    void scratch_check "FA_SCRATCH_CHECK"(long long used, long long size,
                                          const char* what) noexcept nogil

# Populations of small models evaluate policies for BL agents at a time, agents
# innermost (see c_infer_policies_block); models whose joint parent states exceed
# BLOCK_MAX_K gain nothing from it and keep the per-agent kernel.
cdef enum:
    BL = 8
    BLOCK_MAX_K = 64
    MAX_ND = 32         # parents of a modality group, for the block fixed-point iteration


cdef struct Mat:
    int rows
    int cols
    int sparse
    int onehot      # sparse with exactly one stored value per column (deterministic maps)
    float* val      # dense: rows*cols, row r at val + r*cols; sparse: nnz
    float* logval   # log(val + 1e-16), same layout; NULL when not needed
    int* indptr     # sparse only: cols + 1
    int* idx        # sparse only: row of each stored value
    int* rptr       # onehot in a blocked model: the columns of row r are rcol[rptr[r]:rptr[r+1]]
    int* rcol       # (mat_vec_bl gathers rows: no zeroing pass, fewer stores than a scatter)


cdef struct ModelC:
    int nf              # hidden-state factors
    int nm              # observation modalities
    int S               # sum of num_states
    int n_pol           # number of policies
    int T               # policy length
    int* ns             # num_states[f]
    int* no             # num_obs[m]
    int* nc             # num_controls[f]
    int* s_off          # offset of factor f in a flat belief vector (nf + 1)
    int* nc_off         # offset of factor f in a flat action-marginal vector (nf + 1)
    # modality m: parent factors a_dep[a_dep_off[m]:a_dep_off[m+1]], K = a_K[m]
    int* a_dep
    int* a_dep_off
    int* a_K
    # groups of modalities with the same parent list: their log likelihoods are summed
    # once per step, so the fixed-point iteration contracts one tensor per group
    int ng
    int* a_group        # group of modality m
    int* a_group_first  # 1 if m is the first modality of its group
    int* g_dep          # parents of group g at g_dep[g_dep_off[g]:...]
    int* g_dep_off
    int* g_dep_vfe      # sorted parents: the axis order pymdp's free energy reads
    int* g_K
    int* g_off          # offset of group g in the summed log likelihood
    int* a_mat          # index of A[m] in mats
    # policy-invariant tails: the last a_ntail[m] parents of modality m are predicted
    # alike under every policy, so A[m] is contracted over them once per time step into
    # a (no[m], a_Khead[m]) block (+ its column entropies and the tail's smallest
    # joint probability) at a_red_off[m] within a per-step block of red_stride floats
    int* a_ntail
    int* a_Khead
    int* a_red_off
    int red_stride
    int* wa_mat         # index of the pA information-gain weight, or -1
    float** a_H         # per column sum_o A log(A + exp(-16)) (length K)
    float* lnC          # log softmax C, per modality (no[m], T) row-major at lnC_off[m]
    int* lnC_off
    # factor f: parents b_dep[b_dep_off[f]:...], K = b_K[f], slice u at mats[b_mat[f] + u]
    int* b_dep
    int* b_dep_off
    int* b_K
    int* b_mat
    int* wb_mat         # first of nc[f] pB weight matrices, or -1
    int* policies       # (n_pol, T, nf)
    float* lnE          # log(E + 1e-16), n_pol
    float* logD         # log(D + 1e-16), flat length S
    # inductive inference: I[f] of shape (ii_depth, ns[f]) at I + I_off[f]
    int has_I
    int ii_depth
    float* ind
    int* I_off
    Mat* mats
    int n_mats
    int max_K           # largest joint-parent size over A and B
    int max_rows        # largest num_obs / num_states
    int nll             # floats of the summed log likelihoods (sum of a_K: room for every group)
    int max_nd          # most parents of a modality group
    int max_nc          # most controls of a factor
    int fpi_blocked     # populations run the fixed-point iteration BL agents at a time


cdef class MatSpec:
    cdef readonly int rows
    cdef readonly int cols
    cdef readonly bint sparse
    cdef readonly bint onehot
    cdef readonly object val      # float32 (nnz or rows*cols,)
    cdef readonly object logval   # float32 like val, or None
    cdef readonly object indptr   # int32 (cols + 1,) when sparse, else None
    cdef readonly object idx      # int32 (nnz,) when sparse, else None


cdef class KernelLayout:
    cdef readonly object ns, no, nc, s_off, nc_off
    cdef readonly object a_dep, a_dep_off, a_K, a_mat, wa_mat
    cdef readonly object a_group, a_group_first, g_dep, g_dep_off, g_dep_vfe, g_K, g_off
    cdef readonly object a_ntail, a_Khead, a_red_off
    cdef readonly int red_stride
    cdef readonly object b_dep, b_dep_off, b_K, b_mat, wb_mat
    cdef readonly object policies


cdef class KModel:
    cdef ModelC c
    cdef readonly KernelLayout layout  # the integer tables c points into
    cdef readonly object _keep   # the float vectors c points into
    cdef list _mat_keep          # per matrix: the MatSpec mats[i] points into
    cdef list _aH_keep           # per modality: the array a_H[m] points into
    cdef list _rows_keep         # per one-hot matrix of a blocked model: (idx, rcol, rptr)
    cdef object _I_keep          # the inductive arrays, or None
    cdef readonly int scratch_size
    cdef readonly int sum_obs
    cdef readonly int sum_controls
    cdef readonly int lnC_size
    cdef readonly bint blocked   # populations evaluate policies BL agents at a time
    cdef readonly object s_off
    cdef float** _aH

    cdef float* _floats(self, object x, list keep=*) except NULL
    cdef int _set_mat(self, int i, MatSpec spec) except -1
    cdef int _set_aH(self, int m, object a_H) except -1
    cdef int _set_I(self, object I_values, object I_off, int ii_depth) except -1
