"""Roofline of the Population kernels: counted work per agent-step against this machine's peaks.

For each model (builtin tmaze, grid10, grid30, four_factor, and a T-maze-sized model with
dense random A and B) and each stage of a VANILLA step (``infer_states``,
``infer_policies``, ``sample_action``) it prints

- the work of one agent-step, counted from the model's dimensions and the kernel loops
  (see :func:`stage_counts`): floating-point operations (a multiply-add counts 2),
  transcendentals (``exp`` / ``log``), and bytes the loops read and write, split into
  the shared model's matrices (read by every agent, so cache-resident when they fit in
  L2), the per-thread scratch the loops write and read back (cache-resident) and the
  agent's own rows of the population's arrays (streamed from memory in a large
  population);
- the measured time per agent-step of that stage alone on a ``Population``
  (``Population.infer_states`` / ``infer_policies`` / ``sample_action`` called
  separately, median of repeats, 1 and 2 threads), including the Python call;
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
  same loops without vectorisation (one libm call per value, as the per-agent kernels
  call ``logf`` / ``expf`` today) are printed beside them;
- bandwidth: a vectorised sum reading 128 KB (in L2: the cache bandwidth that shared
  model matrices are read at) and 128 MB (memory bandwidth, read only).

These are what such loops reach here, not datasheet numbers; the counts are a
model of the dominant loops (small terms such as index arithmetic, branches and the
per-call Python overhead are not counted), so ``floor`` is an upper bound on how close a
stage is to the machine and ``--validate`` compares the counts with callgrind's
instruction counts of the same stage.

Run from the repository root after building the extension::

    python benchmarks/roofline.py                 # every model, about a minute
    python benchmarks/roofline.py --quick         # fewer agents and repeats
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

MODELS = ("tmaze", "tmaze_dense", "grid10", "grid30", "four_factor")
STAGES = ("infer_states", "infer_policies", "sample_action")
#: agents per population: enough that the per-call Python overhead is small
AGENTS = {"tmaze": 4096, "tmaze_dense": 4096, "grid10": 1024, "grid30": 128,
          "four_factor": 256}


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def model_arrays(name: str) -> dict:
    """pymdp-layout arrays of one roofline model."""
    if name != "tmaze_dense":
        return dict(builtin_models.get(name))
    # the builtin T-maze's shapes with every entry of A and B non-zero (random
    # Dirichlet columns): the dense kernel paths at T-maze size
    d = dict(builtin_models.get("tmaze"))
    rng = np.random.default_rng(0)

    def dense(x):
        x = np.asarray(x, dtype=np.float64)
        r = rng.gamma(1.0, size=x.shape) + 1e-3
        return r / r.sum(axis=0, keepdims=True)

    for key in ("A", "B"):
        arrs = [dense(a) for a in d[key]]
        out = np.empty(len(arrs), dtype=object)
        for i, a in enumerate(arrs):
            out[i] = a
        d[key] = out
    return d


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


def _predict(w: Work, gm, times=1.0) -> None:
    """``predict_states``: every factor's B slice (the average over its controls) times the
    joint of its parents."""
    for f, deps in enumerate(gm.B_factor_list):
        _joint(w, gm, deps, times)
        specs = gm._B_specs[f]
        for spec in specs:
            _mat_vec(w, spec, times / len(specs))


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
    tails = any(int(n) > 0 for n in lay.a_ntail)
    if tails:
        # policy-invariant tails: policy 0 rolled out and A contracted over the tail once
        # per time step (reduce_tail: a multiply-add per stored value of A)
        _predict(w, gm, times=T)
        for m, spec in enumerate(gm._A_specs):
            if int(lay.a_ntail[m]):
                _mat_vec(w, spec, times=T)
    _predict(w, gm, times=P * T)
    for m, spec in enumerate(gm._A_specs):
        no = gm.num_obs[m]
        deps = gm.A_factor_list[m]
        if int(lay.a_ntail[m]):
            Kh = int(lay.a_Khead[m])
            nh = len(deps) - int(lay.a_ntail[m])
            if nh > 1:
                w.add(flops=Kh * (nh - 1), scratch_bytes=4 * Kh, times=P * T)
            # head contraction against the reduced block, its entropy term, the entropy of
            # the predicted outcomes (a log per outcome)
            w.add(flops=2 * no * Kh + 2 * Kh + 3 * no, trans=no,
                  scratch_bytes=4 * (no * Kh + 2 * Kh + no), times=P * T)
        else:
            first = bool(lay.a_group_first[m])
            K = int(np.prod([gm.num_states[f] for f in deps]))
            if first:
                _joint(w, gm, deps, times=P * T)
                w.add(flops=K, scratch_bytes=4 * K, times=P * T)  # scan_pruned (SIG's exp(-16))
            _mat_vec(w, spec, times=P * T)                    # predicted outcomes
            # SIG: column entropies . joint, and -sum qo log qo (a log per outcome)
            w.add(flops=2 * K + 3 * no, trans=no, model_bytes=4 * K, times=P * T)
        w.add(flops=2 * no, scratch_bytes=4 * no, model_bytes=4 * no, times=P * T)   # utility
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

def time_stages(gm, n: int, threads: int, repeats: int, seed: int) -> dict[str, float]:
    """Median seconds per agent-step of each stage on a Population of ``n`` agents."""
    pop = Population(gm, n, seed=seed, n_threads=threads)
    rng = np.random.default_rng(seed)
    obs = [np.stack([rng.integers(no, size=n) for no in gm.num_obs], axis=1).astype(np.int32)
           for _ in range(repeats + 1)]
    times = {k: [] for k in STAGES}
    for r in range(repeats + 1):  # the first round warms up (scratch, pages)
        t0 = time.perf_counter()
        pop.infer_states(obs[r])
        t1 = time.perf_counter()
        pop.infer_policies()
        t2 = time.perf_counter()
        pop.sample_action()
        t3 = time.perf_counter()
        if r:
            times["infer_states"].append(t1 - t0)
            times["infer_policies"].append(t2 - t1)
            times["sample_action"].append(t3 - t2)
    return {k: float(np.median(v)) / n for k, v in times.items()}


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
    p.add_argument("--quick", action="store_true", help="a quarter of the agents, 5 repeats")
    p.add_argument("--validate", action="store_true",
                   help="compare the counts with callgrind's instruction counts (slow)")
    p.add_argument("--callgrind-child", nargs=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.callgrind_child:
        name, stage, n = args.callgrind_child
        _callgrind_child(name, stage, int(n))
        return
    repeats = 5 if args.quick else args.repeats
    peaks = measure_peaks(repeats)
    l2 = _cache_bytes(2)
    print(f"Peaks, one core, {peaks['how']}, best of {repeats}: FMA "
          f"{_fmt(peaks['fma_flops'])}flop/s; exp {_fmt(peaks['exp'])}/s, log "
          f"{_fmt(peaks['log'])}/s vectorised (scalar libm: exp {_fmt(peaks['exp_scalar'])}/s, "
          f"log {_fmt(peaks['log_scalar'])}/s); read bandwidth {_fmt(peaks['cache_bw'])}B/s "
          f"in L2 (128 KB), {_fmt(peaks['mem_bw'])}B/s from memory (128 MB); L2 {l2 >> 10} KB")
    print("Per agent-step: counted flops (FMA = 2), transcendentals (exp/log), bytes (model "
          "matrices + scratch + own rows); measured ns; achieved as % of peak; bound = scarcest "
          "resource; floor = its minimum time / measured time; % scalar exp/log = the "
          "time the counted exp/log take at one libm call each, over the measured time.")
    header = ("| model | stage | thr | ns | flops | exp/log | bytes (model+scratch+own) | "
              "% FMA | % exp/log | % scalar exp/log | % bw | bound | floor |")
    print(header)
    print("|" + "---|" * 13)
    for name in args.models:
        gm = GenerativeModel(**model_arrays(name))
        n = AGENTS[name] // (4 if args.quick else 1)
        probe = Population(gm, 1)
        fpi = probe.__dict__["_fpi"]
        rng = np.random.default_rng(1)
        obs = np.stack([rng.integers(no, size=16) for no in gm.num_obs], axis=1)
        iters = mean_iterations(gm, obs, fpi)
        counts = stage_counts(gm, iters, bool(fpi[3]))
        model_fits = gm.kmodel.nbytes <= l2
        for threads in args.threads:
            per_step = time_stages(gm, n, threads, repeats, seed=threads)
            for stage in STAGES:
                w, t = counts[stage], per_step[stage]
                # one core per thread: the machine's peaks scale with the threads used
                k = float(threads)
                t_flop = w.flops / (k * peaks["fma_flops"])
                t_trans = w.trans / (k * peaks["trans"])
                # the same transcendentals at one libm call each (today's per-agent loops)
                t_scalar = w.trans / (k * peaks["trans_scalar"])
                model_bw = peaks["cache_bw"] if model_fits else peaks["mem_bw"]
                t_mem = ((w.model_bytes / model_bw + w.scratch_bytes / peaks["cache_bw"]
                          + w.own_bytes / peaks["mem_bw"]) / k)
                bound = max((t_flop, "FMA"), (t_trans, "exp/log"), (t_mem, "bandwidth"))
                nbytes = f"{_fmt(w.model_bytes)}+{_fmt(w.scratch_bytes)}+{_fmt(w.own_bytes)}"
                print(f"| {name} | {stage} | {threads} | {t * 1e9:.0f} | {_fmt(w.flops)} | "
                      f"{_fmt(w.trans)} | {nbytes} | "
                      f"{100 * t_flop / t:.2f} | {100 * t_trans / t:.2f} | "
                      f"{100 * t_scalar / t:.1f} | "
                      f"{100 * t_mem / t:.2f} | {bound[1]} | {100 * bound[0] / t:.2f} % |")
        if args.validate:
            validate(name, min(n, 64), counts)
        print(f"<!-- {name}: {n} agents, {gm.num_policies} policies, {sum(gm.num_states)} "
              f"states, mean FPI iterations {iters:.2f}, model {gm.kmodel.nbytes} B "
              f"({'in' if model_fits else 'beyond'} L2) -->")


if __name__ == "__main__":
    main()
