#!/usr/bin/env bash
# Continuous benchmarking: fa_core's asv suite on two commits, failing on a regression.
#
#   benchmarks/asv_compare.sh [BASE [HEAD]] [-- ASV_OPTIONS...]
#
# Runs `asv continuous` (asv_bench/asv.conf.json: one virtualenv per configuration, each
# commit built once into a wheel and installed there) on BASE and HEAD and exits non-zero
# when a benchmark of HEAD is worse than BASE's by more than FACTOR (and asv finds the
# difference statistically significant):
#
#   * slowdowns: every time_* benchmark (seconds per call);
#   * memory growth: every peakmem_* benchmark and every track_* benchmark measuring bytes
#     (bytes kept per agent, hibernated bytes).
#
# Throughput benchmarks (track_*agent_steps_per_s) are left out: asv treats a larger value
# as worse, and they repeat what time_* measures. pymdp's and JAX's benchmarks are left out
# too: they time the reference, which does not change between fa_core commits.
#
# Defaults: BASE = the previous landed commit (HEAD's first parent, i.e. the main branch
# before the last merge), HEAD = HEAD. Environment: ASV_FACTOR (default 1.25: 25 % slower or
# bigger fails), ASV_BENCH (a regular expression replacing the selection above, e.g.
# 'FaCorePopulation\.time_step'), ASV_PUBLISH=1 also runs `asv publish` (HTML pages from the results now in
# asv_bench/results/, view them with `asv preview`). Anything after `--` goes to asv
# (e.g. `-- --quick` for a smoke test whose results are not saved).
#
# Exit status: 0 no regression, 1 a regression above FACTOR (asv's "PERFORMANCE DECREASED"),
# 2 a usage error, anything else an asv failure (a benchmark that fails to run, a build).
#
# Cost: two builds of the extension (about 100 s each on 2 cores), the environment on first
# use (numpy, scipy, Cython, setuptools and pymdp from the package index), then the selected
# benchmarks on both commits: 10-20 minutes on a 2-core machine. CI does not run it (CI runs
# each benchmark once against the installed wheel with `asv run --python=same --quick`,
# which checks that the suite works, not how fast it is); run it before merging
# performance-sensitive work, on a quiet machine.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
factor="${ASV_FACTOR:-1.25}"
extra=()
positional=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) positional+=("$1"); shift ;;
    esac
done
if [[ ${#positional[@]} -gt 2 ]]; then
    echo "asv_compare.sh: at most two commits (BASE HEAD), got ${#positional[@]}" >&2
    exit 2
fi
head="${positional[1]:-HEAD}"
base="${positional[0]:-$head^1}"
if ! [[ "$factor" =~ ^[0-9]+(\.[0-9]+)?$ ]] || awk "BEGIN{exit !($factor <= 1)}"; then
    echo "asv_compare.sh: ASV_FACTOR must be a number above 1, got '$factor'" >&2
    exit 2
fi
for c in "$base" "$head"; do
    git -C "$repo" rev-parse --verify -q "$c^{commit}" > /dev/null \
        || { echo "asv_compare.sh: not a commit: $c" >&2; exit 2; }
done
base_sha="$(git -C "$repo" rev-parse "$base^{commit}")"
head_sha="$(git -C "$repo" rev-parse "$head^{commit}")"
command -v asv > /dev/null \
    || { echo "asv_compare.sh: asv not found: pip install 'asv>=0.6,<0.7' (or .[bench])" >&2; exit 2; }

# fa_core's own benchmarks whose larger values are worse: times, peak memory, byte counts
bench="${ASV_BENCH:-^(?!.*(Pymdp|Jax|JAX)).*\.(time_.*|peakmem_.*|track_.*bytes.*)$}"

cd "$repo/asv_bench"
[[ -f "${ASV_MACHINE_FILE:-$HOME/.asv-machine.json}" ]] || asv machine --yes > /dev/null
echo "asv_compare.sh: ${base} (${base_sha:0:10}) -> ${head} (${head_sha:0:10}), factor ${factor}"
rc=0
asv continuous --factor "$factor" --show-stderr -b "$bench" ${extra[@]+"${extra[@]}"} \
    "$base_sha" "$head_sha" || rc=$?
if [[ "${ASV_PUBLISH:-0}" == 1 ]]; then
    asv publish > /dev/null && echo "asv_compare.sh: pages in $repo/asv_bench/html (asv preview)"
fi
case $rc in
    0) echo "asv_compare.sh: OK: no benchmark worse by more than ${factor}x" ;;
    1) echo "asv_compare.sh: FAILED: a benchmark is worse by more than ${factor}x (table above)" ;;
    *) echo "asv_compare.sh: FAILED: asv exited with $rc" ;;
esac
exit $rc
