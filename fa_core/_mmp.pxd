# cython: language_level=3
"""Declarations of :mod:`fa_core._mmp`: the compiled MMP model and its per-agent kernels.

``c_mmp`` (one policy's marginal message passing over the window) and
``c_efe`` (one policy's negative expected free energy) are the per-agent
kernels ``fa_core.Agent`` runs; the population drivers in ``_mmp.pyx`` run
them for many agents, and other compiled modules may cimport them.
"""

cdef struct MC:
    int nf
    int S
    int* ns
    int* s_off
    int max_ns
    # likelihood terms of lnA (one per modality, or one joint term for pymdp's run_mmp)
    int* l_dep
    int* l_dep_off
    int* l_off         # offset of term l within one step's likelihood block
    int lh_stride      # floats per step of likelihood
    int* f_l           # terms touching factor f: f_l[f_l_off[f]:f_l_off[f+1]]
    int* f_l_off
    # transitions: B[f] stored (nc[f], ns[f], K) at B + b_off[f]
    float* B
    long long* b_off
    int* b_dep
    int* b_dep_off
    int* b_K
    int* ch            # children of f (factors whose B has f as a parent)
    int* ch_off
    # B[f][..., u] as CSC over its K columns, exact zeros left out: column k of action u
    # holds entries c_ptr[c_col[f] + u * (K + 1) + k] .. (+1) of c_row / c_val
    long long* c_col
    long long* c_ptr
    int* c_row
    float* c_val
    # 1 / (row sums of B[i][..., u] + ns[parent] * 1e-16) for single-parent factors
    # (spm_norm of the transpose, applied as a row scaling): (nc, ns[i]) at rz + rz_off[i]
    float* rz
    long long* rz_off
    # observation model for the expected free energy: A[m] (no[m], K) at A + a_off[m]
    int nm
    int* no
    float* A
    long long* a_off
    float* aH          # per column sum_o A log(A + exp(-16)), at aH + ah_off[m]
    long long* ah_off
    int* a_dep
    int* a_dep_off
    int max_no
    # log softmax C per modality, (no[m], n_steps) row-major at lnC + lnc_off[m]
    float* lnC
    long long* lnc_off
    int n_steps


cdef double c_mmp(const MC* m, const float* lh, const double* lnlh, int past_len, int infer_len,
                  int future_cutoff, const int* acts, const float* prior, float* q, int num_iter,
                  double tau, double fut_w, float* fs, double* ds, float* xn,
                  float* vn) noexcept nogil

cdef double c_efe(const MC* m, const float* q, int t0, int use_util, int use_sig,
                  float* fs, double* ds) noexcept nogil


cdef class MMPModel:
    cdef MC c
    cdef list _keep
    cdef readonly int n_fs
    cdef readonly int n_ds
    cdef int* _ints(self, x) except NULL
    cdef long long* _longs(self, x) except NULL
    cdef float* _floats(self, x) except NULL
