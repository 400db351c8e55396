"""Roofline of the Population kernels: counted work per agent-step against this machine's peaks.

For each model (builtin tmaze; tmaze_dense, a T-maze-sized model with dense random A and B;
grid10; grid30; grid30_confused, the 30x30 forager whose location cue confuses
neighbouring cells; four_factor) and each stage of a VANILLA step (``infer_states``,
``infer_policies``, ``sample_action``) it prints

- the work of one agent-step, counted from the model's dimensions and the kernel loops
  (see :func:`stage_counts`): floating-point operations (a multiply-add counts 2),
  transcendentals (``exp`` / ``log``), and bytes the loops read and write, split into
  the shared model's matrices (read by every agent, so cache-resident when they fit in
  L2), the per-thread scratch the loops write and read back (cache-resident) and the
  agent's own rows of the population's arrays (streamed from memory in a large
  population);
- the work the kernels actually do where they take the sparse-belief path: a policy
  evaluation whose factor beliefs sit on fewer than a quarter of their states (sparse
  ``B``, one parent) rolls the listed states forward and predicts outcomes from them
  only (``_policies.pyx``). :func:`sparse_policy_work` replays the kernel's choices on
  the beliefs of the timed agents and counts that path's loops (support scan,
  ``mat_scatter_cols``, ``sparse_modality``); the achieved / peak columns use this
  count, and a second table puts the dense-path count (every state, every policy)
  beside it, with the share of agents on the sparse path both as replayed and as the
  kernel counted it (``_policies.sparse_beliefs``);
- the measured time per agent-step of that stage alone on a ``Population``
  (``Population.infer_states`` / ``infer_policies`` / ``sample_action`` called
  separately, median of repeats, 1 and 2 threads), including the Python call; the
  agents live in the world their model describes (``fa_core.envs.ModelWorld``:
  outcomes drawn from ``A``, moves under ``B`` and their actions), so their beliefs
  are those of a run (a forager's concentrate after its first location cue);
- achieved rates as a percentage of the peaks, and which resource bounds the stage:
  the largest of flops / FMA peak, transcendentals / exp-log peak, and model bytes /
  cache bandwidth (memory bandwidth when the model does not fit in L2) + scratch bytes /
  cache bandwidth + own bytes / memory bandwidth. ``floor`` is that bound as a fraction
  of the measured time: 100 % would mean the stage runs at the machine's limit for its
  scarcest resource.

Peaks (one core; the 2-thread columns use twice these, the machine has 2 cores), from
tiny C loops compiled here at run time with gcc (``-O3 -ffast-math``, AVX2 + FMA when the
CPU has them; numpy's loops when gcc is missing):

- FMA: eight independent ymm multiply-add chains in registers (no memory traffic);
- exp / log: ``y[i] = expf(x[i])`` / ``logf`` over 4,096 in-cache floats, which gcc turns
  into glibc's libmvec SIMD calls; the peak used is the harmonic mean of the two. The
  same loops without vectorisation (one libm call per value) are printed beside them;
- bandwidth: a vectorised sum reading 128 KB (in L2: the cache bandwidth that shared
  model matrices are read at) and 128 MB (memory bandwidth, read only).

These are what such loops reach here, not datasheet numbers; the counts are a
model of the dominant loops (small terms such as index arithmetic, comparisons, branches
and the per-call Python overhead are not counted; block-kernel models such as the T-maze
are counted as the per-agent loops, though the block kernel skips exact zeros), so
``floor`` is an upper bound on how close a stage is to the machine and ``--validate``
compares the dense counts with callgrind's instruction counts of the same stage on a
fresh population (uniform beliefs: the dense path).

Output is Markdown (a note's tables), with the load average before and after: on a
shared machine compare figures within one run.

Run from the repository root after building the extension::

    python benchmarks/roofline.py                 # every model, about a minute
    python benchmarks/roofline.py --quick         # half the agents, 5 repeats
    python benchmarks/roofline.py --models tmaze grid30 --validate
"""

from __future__ import annotations

import os

# peaks are per core: one BLAS thread (before numpy is imported)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from fa_core import GenerativeModel, Population, _kernels, builtin_models  # noqa: E402
from fa_core import _policies as _pol  # noqa: E402
from fa_core import _states as _st  # noqa: E402
from fa_core.envs import ModelWorld  # noqa: E402

MODELS = ("tmaze", "tmaze_dense", "grid10", "grid30", "grid30_confused", "four_factor")
STAGES = ("infer_states", "infer_policies", "sample_action")
#: agents per population: enough that a stage call lasts milliseconds, long beside its
#: Python call (``--quick`` uses half, with fewer repeats)
AGENTS = {"tmaze": 8192, "tmaze_dense": 8192, "grid10": 4096, "grid30": 2048,
          "grid30_confused": 2048, "four_factor": 512}
#: agents per timed round whose beliefs are replayed through the sparse-path count
COUNT_SAMPLE = 64

# the kernels' float32 thresholds (fa_core/_math.pxd): SPARSE_EPS and SPARSE_BUDGET of the
# sparse-belief path, PRUNE (exp(-16)) of the state information gain
SPARSE_EPS = np.float32(1e-10)
SPARSE_BUDGET = 1e-9
PRUNE = np.float32(1.1253517471925912e-07)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def model_arrays(name: str) -> dict:
    """pymdp-layout arrays of one roofline model (``tmaze_dense`` is the builtin T-maze's
    shapes with dense random A and B: :func:`fa_core.builtin_models.tmaze_dense`)."""
    return dict(builtin_models.get(name))


def _cache_bytes(level: int) -> int:
    """Size of the CPU0 cache of ``level`` (data or unified), or a guess."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry)
            with open(os.path.join(path, "level")) as f:
                if int(f.read()) != level:
                    continue
            with open(os.path.join(path, "type")) as f:
                if f.read().strip() == "Instruction":
                    continue
            with open(os.path.join(path, "size")) as f:
                s = f.read().strip()
            return int(s[:-1]) * (1024 if s.endswith("K") else 1024 * 1024) \
                if s[-1] in "KM" else int(s)
    except (OSError, ValueError):
        pass
    return {1: 32 << 10, 2: 512 << 10, 3: 16 << 20}[level]


# ---------------------------------------------------------------------------
# Counting (per agent-step)
# ---------------------------------------------------------------------------

class Work:
    """Counted work of one stage: flops, transcendentals and bytes of the shared model's
    matrices (``model_bytes``), of the agent's own rows in the population's arrays
    (``own_bytes``: streamed from memory in a large population) and of the per-thread
    scratch the loops write and read back (``scratch_bytes``: L1/L2-resident)."""

    def __init__(self):
        self.flops = self.trans = self.model_bytes = self.own_bytes = self.scratch_bytes = 0.0

    def add(self, flops=0.0, trans=0.0, model_bytes=0.0, own_bytes=0.0, scratch_bytes=0.0,
            times=1.0):
        self.flops += flops * times
        self.trans += trans * times
        self.model_bytes += model_bytes * times
        self.own_bytes += own_bytes * times
        self.scratch_bytes += scratch_bytes * times


def _mat_vec(w: Work, spec, times=1.0) -> None:
    """``mat_vec``: a multiply-add per stored value (CSC: per non-zero); reads the values
    (and indices), the input vector, writes the output."""
    n = spec.val.size
    idx_bytes = (4 * n + 4 * (spec.cols + 1)) if spec.sparse else 0
    w.add(flops=2 * n, model_bytes=4 * n + idx_bytes,
          scratch_bytes=4 * (spec.cols + spec.rows),
          times=times)


def _joint(w: Work, gm, deps, times=1.0) -> int:
    """``joint_of``: the outer product of the parents' marginals, one multiply per joint
    state per extra parent; returns the joint size."""
    K = int(np.prod([gm.num_states[f] for f in deps]))
    if len(deps) > 1:
        w.add(flops=K * (len(deps) - 1), scratch_bytes=4 * K, times=times)
    return K


def _predict_factor(w: Work, gm, f: int, u, times=1.0) -> None:
    """Factor ``f``'s prediction from the previous step: its B slice for control ``u``
    (None: the average over its controls) times the joint of its parents."""
    _joint(w, gm, gm.B_factor_list[f], times)
    specs = gm._B_specs[f]
    if u is None:
        for spec in specs:
            _mat_vec(w, spec, times / len(specs))
    else:
        _mat_vec(w, specs[u], times)


def _predict(w: Work, gm, times=1.0) -> None:
    """``predict_states``: every factor's B slice (the average over its controls) times the
    joint of its parents."""
    for f in range(gm.num_factors):
        _predict_factor(w, gm, f, None, times)


def _policies_setup(w: Work, gm) -> None:
    """Policy evaluation before the first policy: the current beliefs scanned for their
    support and copied into the rollout buffer; the policy-invariant tails (policy 0
    rolled out and A contracted over the tail once per time step: reduce_tail, a
    multiply-add per stored value of A)."""
    S, T, lay = sum(gm.num_states), gm.policy_len, gm.kmodel.layout
    w.add(scratch_bytes=4 * S + 8 * S)
    if any(int(n) > 0 for n in lay.a_ntail):
        _predict(w, gm, times=T)
        for m, spec in enumerate(gm._A_specs):
            if int(lay.a_ntail[m]):
                _mat_vec(w, spec, times=T)


def _modality_dense(w: Work, gm, m: int, times=1.0) -> None:
    """One modality's dense terms for one policy and step: predicted outcomes, the state
    information gain and the utility (VANILLA defaults)."""
    lay = gm.kmodel.layout
    spec = gm._A_specs[m]
    no = gm.num_obs[m]
    deps = gm.A_factor_list[m]
    if int(lay.a_ntail[m]):
        Kh = int(lay.a_Khead[m])
        nh = len(deps) - int(lay.a_ntail[m])
        if nh > 1:
            w.add(flops=Kh * (nh - 1), scratch_bytes=4 * Kh, times=times)
        # head contraction against the reduced block, its entropy term, the entropy of
        # the predicted outcomes (a log per outcome)
        w.add(flops=2 * no * Kh + 2 * Kh + 3 * no, trans=no,
              scratch_bytes=4 * (no * Kh + 2 * Kh + no), times=times)
    else:
        first = bool(lay.a_group_first[m])
        K = int(np.prod([gm.num_states[f] for f in deps]))
        if first:
            _joint(w, gm, deps, times=times)
            w.add(flops=K, scratch_bytes=4 * K, times=times)  # scan_pruned (SIG's exp(-16))
        _mat_vec(w, spec, times=times)                    # predicted outcomes
        # SIG: column entropies . joint, and -sum qo log qo (a log per outcome)
        w.add(flops=2 * K + 3 * no, trans=no, model_bytes=4 * K, times=times)
    w.add(flops=2 * no, scratch_bytes=4 * no, model_bytes=4 * no, times=times)   # utility


# ---------------------------------------------------------------------------
# The sparse-belief path, replayed on one agent's beliefs
# ---------------------------------------------------------------------------

def _support(q: np.ndarray):
    """``sparse_support`` of _math.pxd: the states of ``q`` (float32) above SPARSE_EPS, or
    None where the sparse path does not pay (more than a quarter listed, or more than
    SPARSE_BUDGET of probability left out); ``sparse_pays`` (4 * listed < n) is tested
    by the callers."""
    listed = np.flatnonzero(q > SPARSE_EPS)
    if listed.size > q.size // 4 or float(q[q <= SPARSE_EPS].sum(dtype=np.float64)) > SPARSE_BUDGET:
        return None
    return listed


def _pays(listed, n: int) -> bool:
    return listed is not None and 4 * listed.size < n


def _sparse_factor(gm, f: int) -> bool:
    """_policies.sparse_factor: one parent, every B slice sparse."""
    return len(gm.B_factor_list[f]) == 1 and all(s.sparse for s in gm._B_specs[f])


def first_step_sparse(gm, qs: np.ndarray) -> bool:
    """_policies.c_policies_sparse: would some factor of ``qs`` be rolled forward sparsely."""
    off = np.concatenate([[0], np.cumsum(gm.num_states)])
    for f in range(gm.num_factors):
        if _sparse_factor(gm, f):
            fp = gm.B_factor_list[f][0]
            if _pays(_support(qs[off[fp]:off[fp + 1]]), gm.num_states[fp]):
                return True
    return False


def _scatter(spec, x: np.ndarray, cols: np.ndarray):
    """``mat_scatter_cols`` of a CSC matrix over the listed columns: the dense result, the
    rows it lists (in first-touched order is not needed: only their number) and the
    non-zeros read."""
    out = np.zeros(spec.rows, np.float32)
    nnz = 0
    for k in cols:
        lo, hi = int(spec.indptr[k]), int(spec.indptr[k + 1])
        nnz += hi - lo
        np.add.at(out, spec.idx[lo:hi], spec.val[lo:hi] * x[k])
    return out, np.flatnonzero(out), nnz


def sparse_policy_work(gm, qs: np.ndarray, dense: Work) -> tuple[Work, bool]:
    """Work of one agent's ``c_infer_policies`` from beliefs ``qs`` (float32, S), following
    the kernel's choices (_policies.pyx): per policy and step, each factor with one parent,
    sparse B and fewer than a quarter of its states listed is rolled forward over the
    listed states only (``mat_scatter_cols``), and each modality with one such parent and
    no invariant tail predicts its outcomes, utility and state information gain from them
    (``sparse_modality``); everything else as the dense count. Returns ``(dense, False)``
    when no factor takes the sparse path."""
    lay = gm.kmodel.layout
    S, P, T, nf = sum(gm.num_states), gm.num_policies, gm.policy_len, gm.num_factors
    ns = gm.num_states
    off = np.concatenate([[0], np.cumsum(ns)])
    listed0 = [_support(qs[off[f]:off[f + 1]]) for f in range(nf)]
    if not any(_sparse_factor(gm, f) and _pays(listed0[gm.B_factor_list[f][0]],
                                                ns[gm.B_factor_list[f][0]])
               for f in range(nf)):
        return dense, False
    w = Work()
    w.add(own_bytes=4 * S + 8 * P + 4 * P)
    _policies_setup(w, gm)
    listed = {(0, f): listed0[f] for f in range(nf)}      # (step, factor) -> listed or None
    belief = {(0, f): qs[off[f]:off[f + 1]].astype(np.float32) for f in range(nf)}
    was_listed = {}   # (step, factor): its buffer holds only listed rows (zero_listed's test)
    nqo, qo_clean = -1, 0
    for p in range(P):
        pol = np.asarray(gm.policies[p])
        for t in range(T):
            for f in range(nf):
                deps = gm.B_factor_list[f]
                fp, u = deps[0], int(pol[t, f])
                spec = gm._B_specs[f][u]
                src = listed.get((t, fp)) if len(deps) == 1 else None
                if len(deps) == 1 and _pays(src, ns[fp]) and _sparse_factor(gm, f):
                    prev = listed.get((t + 1, f))
                    # zero_listed: the rows the last policy wrote, or the whole factor
                    w.add(scratch_bytes=4 * (prev.size if was_listed.get((t + 1, f)) else ns[f]))
                    out, rows, nnz = _scatter(spec, belief[(t, fp)], src)
                    # per listed column its column range, per non-zero its value and row
                    # (a multiply, an add), the output read and written, new rows listed
                    w.add(flops=2 * nnz, model_bytes=8 * src.size + 8 * nnz,
                          scratch_bytes=8 * src.size + 8 * nnz + 4 * rows.size)
                    listed[(t + 1, f)], belief[(t + 1, f)] = rows, out
                    was_listed[(t + 1, f)] = True
                else:
                    _predict_factor(w, gm, f, u)
                    listed[(t + 1, f)] = None
                    belief[(t + 1, f)] = _dense_predict(gm, f, u, belief, t)
                    was_listed[(t + 1, f)] = False
            for m in range(gm.num_modalities):
                deps = gm.A_factor_list[m]
                if len(deps) == 1 and int(lay.a_ntail[m]) == 0:
                    fp = deps[0]
                    xl = listed.get((t + 1, fp))
                    if _pays(xl, ns[fp]):
                        nqo, qo_clean = _sparse_modality(w, gm, m, belief[(t + 1, fp)], xl,
                                                         nqo, qo_clean)
                        continue
                nqo = -1
                _modality_dense(w, gm, m)
    w.add(flops=3 * P, trans=P)
    return w, True


def _dense_predict(gm, f: int, u: int, belief: dict, t: int) -> np.ndarray:
    """A factor's prediction in numpy (the values the next steps' supports come from)."""
    deps = gm.B_factor_list[f]
    joint = belief[(t, deps[0])]
    for d in deps[1:]:
        joint = np.multiply.outer(joint, belief[(t, d)]).ravel()
    return _spec_dense(gm._B_specs[f][u]) @ joint


def _spec_dense(spec) -> np.ndarray:
    """A packed matrix as a dense float32 (rows, cols) array."""
    if not spec.sparse:
        return spec.val.reshape(spec.rows, spec.cols)
    out = np.zeros((spec.rows, spec.cols), np.float32)
    cols = np.repeat(np.arange(spec.cols), np.diff(spec.indptr))
    out[spec.idx, cols] = spec.val
    return out


def _sparse_modality(w: Work, gm, m: int, qx: np.ndarray, xl: np.ndarray, nqo: int,
                     qo_clean: int) -> tuple[int, int]:
    """``sparse_modality``'s work for modality ``m`` from its parent's belief ``qx`` listed
    at ``xl``; returns the new (nqo, qo_clean) of the shared outcome buffer."""
    spec = gm._A_specs[m]
    no, nx = gm.num_obs[m], xl.size
    kept = xl[qx[xl] > PRUNE]
    pruned = kept.size < nx          # pmass != 0: the listed states are all non-zero
    if spec.sparse:
        clean = nqo >= 0 and no <= qo_clean
        w.add(scratch_bytes=4 * (nqo if clean else no))              # zero_listed
        qo_clean = qo_clean if clean else no
        _, rows, nnz = _scatter(spec, qx, xl)
        nr = rows.size
        w.add(flops=2 * nnz, model_bytes=8 * nx + 8 * nnz,
              scratch_bytes=8 * nx + 8 * nnz + 4 * nr)
        nqo = nr
        w.add(flops=2 * nr, model_bytes=4 * nr, scratch_bytes=8 * nr)   # utility, listed rows
    else:
        # mat_cols: per outcome row a gathered dot product over the listed columns
        w.add(flops=2 * no * nx, model_bytes=4 * no * nx, scratch_bytes=8 * no * nx + 4 * no)
        w.add(flops=2 * no, model_bytes=4 * no, scratch_bytes=4 * no)   # utility
        nr = no
    # SIG: the listed states above exp(-16), their column entropies, the outcome entropy
    w.add(scratch_bytes=8 * nx)
    w.add(flops=2 * kept.size, model_bytes=4 * kept.size, scratch_bytes=8 * kept.size)
    if pruned:  # outcomes of the kept states only
        if spec.sparse:
            _, prows, pnnz = _scatter(spec, qx, kept)
            nr = prows.size
            w.add(flops=2 * pnnz, model_bytes=8 * kept.size + 8 * pnnz,
                  scratch_bytes=4 * no + 8 * kept.size + 8 * pnnz + 4 * nr)
        else:
            w.add(flops=2 * no * kept.size, model_bytes=4 * no * kept.size,
                  scratch_bytes=8 * no * kept.size + 4 * no)
    if spec.sparse:
        w.add(scratch_bytes=8 * nr)                     # the listed outcomes gathered
    w.add(flops=3 * nr, trans=nr, scratch_bytes=4 * nr)  # -sum qo log qo
    return nqo, qo_clean


def policy_counts(gm, dense: Work, qs_rows: np.ndarray) -> tuple[Work, float, float]:
    """Mean work of ``infer_policies`` over the agents whose beliefs are ``qs_rows``
    (n, S), as the population driver runs them: block models evaluate a block of 8 in
    the block kernel (counted as the dense loops) unless every agent of the block passes
    ``c_policies_sparse``; others go one agent at a time, sparse where their beliefs
    allow. Returns the mean work, the share of agents on the sparse path and their mean
    listed states (summed over factors)."""
    blocked = bool(gm.kmodel.blocked)
    n = qs_rows.shape[0]
    ok = np.array([first_step_sparse(gm, q) for q in qs_rows])
    if blocked:
        for b in range(0, n, 8):
            ok[b:b + 8] = ok[b:b + 8].all()
    total, n_sparse, listed = Work(), 0, 0.0
    off = np.concatenate([[0], np.cumsum(gm.num_states)])
    for q, may in zip(qs_rows, ok):
        w, took = sparse_policy_work(gm, q, dense) if may else (dense, False)
        total.add(w.flops, w.trans, w.model_bytes, w.own_bytes, w.scratch_bytes, times=1.0 / n)
        if took:
            n_sparse += 1
            listed += sum(int((q[off[f]:off[f + 1]] > SPARSE_EPS).sum())
                          for f in range(gm.num_factors))
    return total, n_sparse / n, listed / max(n_sparse, 1)


def stage_counts(gm: GenerativeModel, iters: float, compute_vfe: bool) -> dict[str, Work]:
    """Work per agent-step of each stage, VANILLA with pymdp's defaults (utility and state
    information gain on, no parameter information gain, deterministic action selection).

    ``iters`` is the mean number of fixed-point iterations (measured: the kernel stops
    when the free energy settles).
    """
    S, P = sum(gm.num_states), gm.num_policies
    T, nf = gm.policy_len, gm.num_factors
    lay = gm.kmodel.layout
    out = {k: Work() for k in STAGES}

    # infer_states ------------------------------------------------------------------
    w = out["infer_states"]
    w.add(own_bytes=4 * S * 2 + 4 * gm.num_modalities + 4 * nf)  # qs in / out, obs, action
    _predict(w, gm)                       # log_prior: B @ qs_prev ...
    w.add(flops=S, trans=S)               # ... then log(. + eps) per state
    for m, spec in enumerate(gm._A_specs):
        K = spec.cols
        # mat_row_log: the observed row of the log cache (one-hot: an index test per
        # column; CSC: a scan of the non-zeros), or its logs when uncached
        if spec.logval is None:
            w.add(trans=K, model_bytes=4 * K)
        elif spec.onehot:
            w.add(flops=K, model_bytes=8 * K)
        elif spec.sparse:
            w.add(flops=spec.val.size, model_bytes=4 * spec.val.size + 4 * (K + 1) + 4 * K)
        else:
            w.add(model_bytes=4 * K)
        w.add(scratch_bytes=4 * K)
        if not lay.a_group_first[m]:
            w.add(flops=K, scratch_bytes=8 * K)   # summed into the group's log likelihood
    if nf == 1:
        w.add(flops=2 * S, trans=S)       # closed form: prior + likelihood, one softmax
    else:
        # per iteration: every group's contraction against the other factors' marginals
        # (add_marginals: about (parents + 1) multiply-adds per joint state), one sweep
        # (prior + message, softmax per factor), and with compute_vfe the free energy of
        # the iterate (a log per state, the expected log likelihood from the contraction)
        sweeps = iters + 1                 # + the contraction of the uniform start
        for g in range(lay.g_K.size):
            K, nd = int(lay.g_K[g]), int(lay.g_dep_off[g + 1] - lay.g_dep_off[g])
            w.add(flops=2 * (nd + 1) * K, scratch_bytes=4 * K * (nd + 1), times=sweeps)
        w.add(flops=4 * S, trans=S, scratch_bytes=16 * S, times=iters)
        if compute_vfe:
            w.add(flops=4 * S, trans=S, scratch_bytes=8 * S, times=sweeps)

    # infer_policies ----------------------------------------------------------------
    w = out["infer_policies"]
    w.add(own_bytes=4 * S + 8 * P + 4 * P)   # qs, G and q_pi out, lnE
    _policies_setup(w, gm)
    for f in range(nf):        # every policy and step: each factor's prediction ...
        _predict_factor(w, gm, f, None, times=P * T)
    for m in range(gm.num_modalities):   # ... and each modality's terms
        _modality_dense(w, gm, m, times=P * T)
    w.add(flops=3 * P, trans=P)              # q_pi = softmax(gamma G + ln E)

    # sample_action (deterministic) ---------------------------------------------------
    w = out["sample_action"]
    nc = sum(gm.num_controls)
    # action marginals: q_pi summed by each policy's first action, normalised, argmax
    w.add(flops=P * nf + 3 * nc, own_bytes=4 * P + 4 * nf, scratch_bytes=8 * nc,
          model_bytes=4 * P * nf)
    return out


def mean_iterations(gm: GenerativeModel, obs: np.ndarray, fpi: tuple) -> float:
    """Mean fixed-point iterations of the per-agent kernel over ``obs`` (first steps)."""
    num_iter, dF, dF_tol, compute_vfe = fpi
    S = sum(gm.num_states)
    qs = np.empty(S, np.float32)
    prev = np.concatenate([np.full(n, 1.0 / n, np.float32) for n in gm.num_states])
    action = np.zeros(gm.num_factors, np.int32)
    distr = np.zeros(sum(gm.num_obs), np.float32)
    scratch = np.empty(gm.kmodel.scratch_size, np.float32)
    its = []
    for i, o in enumerate(obs):
        its.append(_kernels.infer_states(gm.kmodel, qs, prev, action, int(i > 0),
                                         np.ascontiguousarray(o, dtype=np.int32), distr,
                                         False, num_iter, dF, dF_tol, compute_vfe, scratch))
        prev = qs.copy()
    return float(np.mean(its))


# ---------------------------------------------------------------------------
# Peaks (one core)
# ---------------------------------------------------------------------------

def _best_rate(fn, work: float, repeats: int, min_time: float = 0.02) -> float:
    """Highest ``work`` per second over ``repeats`` timed batches of ``fn`` calls."""
    fn()
    calls = 1
    while True:  # calls per batch so a batch lasts min_time
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        dt = time.perf_counter() - t
        if dt >= min_time:
            break
        calls *= 2
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        best = max(best, work * calls / (time.perf_counter() - t))
    return best


#: The peak loops, compiled here at run time (never part of fa_core's build). ``vec``
#: is built with -O3 -ffast-math and AVX2 + FMA when this CPU has them, so gcc turns
#: ``expf`` / ``logf`` into glibc's libmvec SIMD calls and the multiply-add loop into
#: eight independent ymm FMA chains (enough to hide the FMA latency); ``scalar`` is the
#: same exp / log loop without vectorisation: one libm call per value, as the per-agent
#: kernels call logf / expf today.
_PEAK_C = r"""
#include <math.h>
float loop_exp(const float* x, float* y, int n, int reps) {
    for (int r = 0; r < reps; r++) for (int i = 0; i < n; i++) y[i] = expf(x[i]);
    return y[n / 2];
}
float loop_log(const float* x, float* y, int n, int reps) {
    for (int r = 0; r < reps; r++) for (int i = 0; i < n; i++) y[i] = logf(x[i]);
    return y[n / 2];
}
float loop_fma(long reps) {
    float acc[64], a = 0.999999f, b = 1e-7f, s = 0.0f;
    for (int j = 0; j < 64; j++) acc[j] = (float)j;
    for (long r = 0; r < reps; r++) for (int j = 0; j < 64; j++) acc[j] = acc[j] * a + b;
    for (int j = 0; j < 64; j++) s += acc[j];
    return s;
}
float loop_read(const float* x, long n, int reps) {
    float acc[16] = {0}, s = 0.0f;
    for (int r = 0; r < reps; r++) for (long i = 0; i < n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += x[i + j];
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}
"""


def _compiled_peaks():
    """The peak loops as ctypes functions {"vec": lib, "scalar": lib}, or None without gcc."""
    import ctypes
    import shutil
    import tempfile
    if shutil.which("gcc") is None:
        return None
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    simd = ["-mavx2", "-mfma"] if (" avx2" in flags and " fma" in flags) else []
    tmp = tempfile.mkdtemp(prefix="roofline")
    src = os.path.join(tmp, "peak.c")
    with open(src, "w") as f:
        f.write(_PEAK_C)
    libs = {}
    for kind, flags_ in (("vec", ["-O3", "-ffast-math"] + simd),
                         ("scalar", ["-O2", "-fno-tree-vectorize"])):
        so = os.path.join(tmp, f"peak_{kind}.so")
        try:
            subprocess.run(["gcc", "-shared", "-fPIC", *flags_, src, "-o", so, "-lm"],
                           check=True, capture_output=True)
        except (OSError, subprocess.SubprocessError):
            return None
        lib = ctypes.CDLL(so)
        fp, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
        for name, argt in (("loop_exp", [fp, fp, i32, i32]), ("loop_log", [fp, fp, i32, i32]),
                           ("loop_fma", [i64]), ("loop_read", [fp, i64, i32])):
            getattr(lib, name).argtypes = argt
            getattr(lib, name).restype = ctypes.c_float
        libs[kind] = lib
    libs["simd"] = "AVX2+FMA" if simd else "SSE2"
    return libs


def measure_peaks(repeats: int) -> dict:
    """This core's peaks (best of ``repeats``: the machine is shared)."""
    rng = np.random.default_rng(0)
    x = rng.random(4096, dtype=np.float32) + 0.5
    y = np.empty_like(x)
    small = rng.random(32768, dtype=np.float32)        # 128 KB: L2-resident
    big = np.ones(32 << 20, dtype=np.float32)           # 128 MB: memory
    libs = _compiled_peaks()
    peaks: dict = {}
    if libs is not None:
        vec, sca = libs["vec"], libs["scalar"]
        px, py = x.ctypes.data, y.ctypes.data
        peaks["how"] = f"compiled loops ({libs['simd']})"
        peaks["fma_flops"] = _best_rate(lambda: vec.loop_fma(20000), 2.0 * 64 * 20000, repeats)
        peaks["exp"] = _best_rate(lambda: vec.loop_exp(px, py, x.size, 20), 20.0 * x.size,
                                  repeats)
        peaks["log"] = _best_rate(lambda: vec.loop_log(px, py, x.size, 20), 20.0 * x.size,
                                  repeats)
        peaks["exp_scalar"] = _best_rate(lambda: sca.loop_exp(px, py, x.size, 5),
                                         5.0 * x.size, repeats)
        peaks["log_scalar"] = _best_rate(lambda: sca.loop_log(px, py, x.size, 5),
                                         5.0 * x.size, repeats)
        peaks["cache_bw"] = _best_rate(lambda: vec.loop_read(small.ctypes.data, small.size, 20),
                                       20.0 * small.nbytes, repeats)
        peaks["mem_bw"] = _best_rate(lambda: vec.loop_read(big.ctypes.data, big.size, 1),
                                     float(big.nbytes), max(2, repeats // 2), min_time=0.05)
    else:  # numpy's own SIMD loops and OpenBLAS
        a = rng.random((256, 256), dtype=np.float32)
        c = np.empty_like(a)
        peaks["how"] = "numpy (no gcc)"
        peaks["fma_flops"] = _best_rate(lambda: np.matmul(a, a, out=c), 2.0 * 256 ** 3, repeats)
        peaks["exp"] = _best_rate(lambda: np.exp(x, out=y), x.size, repeats)
        peaks["log"] = _best_rate(lambda: np.log(x, out=y), x.size, repeats)
        peaks["exp_scalar"] = peaks["log_scalar"] = float("nan")
        peaks["cache_bw"] = _best_rate(lambda: small.sum(), float(small.nbytes), repeats)
        peaks["mem_bw"] = _best_rate(lambda: big.sum(), float(big.nbytes), max(2, repeats // 2),
                                     min_time=0.05)
    peaks["trans"] = 2.0 / (1.0 / peaks["exp"] + 1.0 / peaks["log"])
    peaks["trans_scalar"] = 2.0 / (1.0 / peaks["exp_scalar"] + 1.0 / peaks["log_scalar"])
    return peaks


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def time_stages(gm, n: int, threads: int, repeats: int, seed: int):
    """Median seconds per agent-step of each stage on a Population of ``n`` agents living
    in the world their model describes (``fa_core.envs.ModelWorld``: outcomes drawn from
    ``A``, moves under ``B`` and the agents' actions), so their beliefs are those of a
    run; plus, per timed round, the beliefs of the first :data:`COUNT_SAMPLE` agents as
    ``infer_policies`` sees them and the share of policy evaluations the kernel counted
    on the sparse path."""
    pop = Population(gm, n, seed=seed, n_threads=threads)
    world = ModelWorld(gm, n, seed=seed)
    obs = world.reset()
    times = {k: [] for k in STAGES}
    samples = []
    sparse = []
    sparse_states = []
    for r in range(repeats + 2):  # two rounds warm up (scratch, pages, a first action)
        s0 = _st.sparse_states()[1]
        t0 = time.perf_counter()
        pop.infer_states(obs)
        t1 = time.perf_counter()
        s1 = _st.sparse_states()[1]
        before = _pol.sparse_beliefs()[1]
        t2 = time.perf_counter()
        pop.infer_policies()
        t3 = time.perf_counter()
        after = _pol.sparse_beliefs()[1]
        pop.sample_action()
        t4 = time.perf_counter()
        if r >= 2:
            times["infer_states"].append(t1 - t0)
            times["infer_policies"].append(t3 - t2)
            times["sample_action"].append(t4 - t3)
            sparse.append((after - before) / n)
            sparse_states.append((s1 - s0) / n)
        samples.append(np.array(pop.qs[:COUNT_SAMPLE], dtype=np.float32))
        obs = world.step(pop.actions)
    per_step = {k: float(np.median(v)) / n for k, v in times.items()}
    return (per_step, np.concatenate(samples[2:]), float(np.mean(sparse)),
            float(np.mean(sparse_states)))


# ---------------------------------------------------------------------------
# Validation against callgrind (optional)
# ---------------------------------------------------------------------------

def _callgrind_child(name: str, stage: str, n: int) -> None:
    """Run one stage on ``n`` agents, 1 thread: the body callgrind counts (only inside the
    driver's OpenMP region, the kernel loops; a fresh population's uniform beliefs and
    policy posterior are the inputs of infer_policies and sample_action)."""
    gm = GenerativeModel(**model_arrays(name))
    pop = Population(gm, n, seed=0, n_threads=1)
    rng = np.random.default_rng(0)
    obs = np.stack([rng.integers(no, size=n) for no in gm.num_obs], axis=1).astype(np.int32)
    getattr(pop, stage)(*((obs,) if stage == "infer_states" else ()))


def validate(name: str, n: int, counts: dict[str, Work]) -> None:
    """Instructions per agent-step callgrind counts inside each stage's kernels, beside the
    counted operations (flops + transcendentals): a sanity check of the counts' scale, not
    an equality (an instruction is not a flop; SIMD lanes make fewer, loads make more)."""
    for stage in STAGES:
        out = f"/tmp/roofline_callgrind.{os.getpid()}.{stage}"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               "--toggle-collect=*population_stages*omp_fn*", sys.executable,
               os.path.abspath(__file__), "--callgrind-child", name, stage, str(n)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=900)
            txt = subprocess.run(["callgrind_annotate", out], check=True, capture_output=True,
                                 text=True).stdout
        except (OSError, subprocess.SubprocessError) as e:
            print(f"  callgrind unavailable for {stage}: {e}")
            return
        finally:
            if os.path.exists(out):
                os.remove(out)
        ir = None
        for line in txt.splitlines():
            if "PROGRAM TOTALS" in line:
                ir = float(line.split()[0].replace(",", ""))
        w = counts[stage]
        if ir:
            # the child runs each stage once on n agents
            ops = max(1.0, w.flops + w.trans)
            print(f"  {name:12s} {stage:15s} callgrind {ir / n:10.0f} instr/agent-step; "
                  f"counted {ops:10.0f} ops, ratio {ir / n / ops:5.2f}")


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def _fmt(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=9, help="timed rounds per stage (median)")
    p.add_argument("--quick", action="store_true", help="half the agents, 5 repeats")
    p.add_argument("--validate", action="store_true",
                   help="compare the counts with callgrind's instruction counts (slow)")
    p.add_argument("--callgrind-child", nargs=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unavailable"


def _shares(w: Work, t: float, threads: int, peaks: dict, model_fits: bool) -> dict:
    """Each resource's minimum time for work ``w`` as a fraction of the measured ``t``."""
    k = float(threads)  # one core per thread: the machine's peaks scale with the threads
    model_bw = peaks["cache_bw"] if model_fits else peaks["mem_bw"]
    out = {"FMA": w.flops / (k * peaks["fma_flops"]) / t,
           "exp/log": w.trans / (k * peaks["trans"]) / t,
           # the same transcendentals at one libm call each
           "scalar": w.trans / (k * peaks["trans_scalar"]) / t,
           "bandwidth": (w.model_bytes / model_bw + w.scratch_bytes / peaks["cache_bw"]
                         + w.own_bytes / peaks["mem_bw"]) / k / t}
    out["bound"] = max(("FMA", "exp/log", "bandwidth"), key=lambda r: out[r])
    return out


def _bytes(w: Work) -> str:
    return f"{_fmt(w.model_bytes)}+{_fmt(w.scratch_bytes)}+{_fmt(w.own_bytes)}"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.callgrind_child:
        name, stage, n = args.callgrind_child
        _callgrind_child(name, stage, int(n))
        return
    repeats = 5 if args.quick else args.repeats
    print(f"roofline.py{' --quick' if args.quick else ''}: {os.cpu_count()} CPUs, {_load()}")
    peaks = measure_peaks(repeats)
    l2 = _cache_bytes(2)
    print(f"Peaks, one core, {peaks['how']}, best of {repeats}: FMA "
          f"{_fmt(peaks['fma_flops'])}flop/s; exp {_fmt(peaks['exp'])}/s, log "
          f"{_fmt(peaks['log'])}/s vectorised (scalar libm: exp {_fmt(peaks['exp_scalar'])}/s, "
          f"log {_fmt(peaks['log_scalar'])}/s); read bandwidth {_fmt(peaks['cache_bw'])}B/s "
          f"in L2 (128 KB), {_fmt(peaks['mem_bw'])}B/s from memory (128 MB); L2 {l2 >> 10} KB")
    print()
    print("Per agent-step: counted flops (FMA = 2), transcendentals (exp/log), bytes (model "
          "matrices + scratch + own rows) of the work the kernels do; measured ns (median); "
          "achieved as % of peak; bound = scarcest resource; floor = its minimum time / "
          "measured time; % scalar exp/log = the time the counted exp/log take at one libm "
          "call each, over the measured time. `path`: `dense`, or `sparse P% (k)` when P% of "
          "the agents' policy evaluations take the sparse-belief path (k states listed on "
          "average): the counts and percentages then use the work of that path, replayed on "
          "the agents' own beliefs (the dense-path count is in the second table). For "
          "infer_states, `sparse P%, dense counts (upper bound)` says P% of the agents took "
          "the sparse state-inference path, whose work is not counted: the row's counts and "
          "percentages are the dense path's, an upper bound on the work done.")
    print()
    print("| model | stage | thr | ns | path | flops | exp/log | bytes (model+scratch+own) | "
          "% FMA | % exp/log | % scalar exp/log | % bw | bound | floor |")
    print("|" + "---|" * 14)
    dense_rows, notes = [], []
    for name in args.models:
        gm = GenerativeModel(**model_arrays(name))
        n = AGENTS[name] // (2 if args.quick else 1)
        probe = Population(gm, 1)
        fpi = probe.__dict__["_fpi"]
        rng = np.random.default_rng(1)
        obs = np.stack([rng.integers(no, size=16) for no in gm.num_obs], axis=1)
        iters = mean_iterations(gm, obs, fpi)
        counts = stage_counts(gm, iters, bool(fpi[3]))
        model_fits = gm.kmodel.nbytes <= l2
        for threads in args.threads:
            per_step, beliefs, kernel_share, state_share = time_stages(
                gm, n, threads, repeats, seed=threads)
            used = dict(counts)
            pol, share, listed = policy_counts(gm, counts["infer_policies"], beliefs)
            used["infer_policies"] = pol
            for stage in STAGES:
                w, t = used[stage], per_step[stage]
                r = _shares(w, t, threads, peaks, model_fits)
                path = "dense"
                if stage == "infer_policies" and share > 0:
                    path = f"sparse {100 * share:.0f}% ({listed:.1f})"
                if stage == "infer_states" and state_share > 0:
                    # _states.c_infer_states_sparse's work is not counted: the counts are
                    # the dense path's, an upper bound, and so are the percentages
                    path = f"sparse {100 * state_share:.0f}%, dense counts (upper bound)"
                print(f"| {name} | {stage} | {threads} | {t * 1e9:,.0f} | {path} | "
                      f"{_fmt(w.flops)} | {_fmt(w.trans)} | {_bytes(w)} | "
                      f"{100 * r['FMA']:.2f} | {100 * r['exp/log']:.2f} | "
                      f"{100 * r['scalar']:.1f} | {100 * r['bandwidth']:.2f} | {r['bound']} | "
                      f"{100 * r[r['bound']]:.2f} % |")
            if share > 0 or kernel_share > 0:
                d = counts["infer_policies"]
                rd = _shares(d, per_step["infer_policies"], threads, peaks, model_fits)
                ru = _shares(pol, per_step["infer_policies"], threads, peaks, model_fits)
                dense_rows.append(
                    f"| {name} | {threads} | {100 * share:.0f}% / {100 * kernel_share:.0f}% | "
                    f"{listed:.1f} | {_fmt(d.flops)} | {_fmt(d.trans)} | {_bytes(d)} | "
                    f"{100 * rd['bandwidth']:.0f}% | {_fmt(pol.flops)} | {_fmt(pol.trans)} | "
                    f"{_bytes(pol)} | {100 * ru['bandwidth']:.1f}% |")
        if args.validate:
            validate(name, min(n, 64), counts)
        notes.append(f"<!-- {name}: {n} agents, {gm.num_policies} policies, "
                     f"{sum(gm.num_states)} states, mean FPI iterations {iters:.2f}, model "
                     f"{gm.kmodel.nbytes} B ({'in' if model_fits else 'beyond'} L2) -->")
    print("\n".join(notes))
    if dense_rows:
        print()
        print("infer_policies where agents took the sparse-belief path: the dense-path count "
              "(what every policy evaluation would do over all states) beside the count used "
              "above (the sparse path replayed on the agents' beliefs, dense for the others). "
              "Agents on the sparse path: replayed / counted by the kernel "
              "(`_policies.sparse_beliefs`).")
        print()
        print("| model | thr | agents on sparse path | states listed | dense flops | "
              "dense exp/log | dense bytes | % bw if dense | used flops | used exp/log | "
              "used bytes | % bw used |")
        print("|" + "---|" * 12)
        print("\n".join(dense_rows))
    print(f"\n{_load()}")


if __name__ == "__main__":
    main()
