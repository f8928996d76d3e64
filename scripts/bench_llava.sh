#!/usr/bin/env bash
# LLaVA-1.5-7B CPU benchmark (bf16): builds bench_llava, creates the random-weight checkpoint when
# it is missing (about 14 GB), and runs the benchmark twice: with glibc's default malloc and with
# GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (transparent huge pages for malloc'd memory). Each run
# measures with and without lli's bf16 kernels. Threads = number of cores.
#
#   scripts/bench_llava.sh [CHECKPOINT_DIR] [-- extra bench_llava flags]
#
# Environment: LLI_BUILD_DIR (default build), LLI_BENCH_DATA (default /work/bench-data),
# LLI_BENCH_OUT (directory for the logs; default $LLI_BENCH_DATA/results/llava-<date>), LLI_BENCH_REPEAT (3),
# LLI_BENCH_DECODE (64 tokens).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${LLI_BUILD_DIR:-build}
DATA=${LLI_BENCH_DATA:-/work/bench-data}
CKPT=${1:-$DATA/llava-1.5-7b-random}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == "--" ]] && shift
OUT=${LLI_BENCH_OUT:-$DATA/results/llava-$(date +%Y%m%d-%H%M%S)}
REPEAT=${LLI_BENCH_REPEAT:-3}
DECODE=${LLI_BENCH_DECODE:-64}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target bench_llava make_random_llava
if [[ ! -f "$CKPT/config.json" ]]; then
  echo "== creating the random-weight checkpoint $CKPT (about 14 GB; df: $(df -h --output=avail "$(dirname "$CKPT")" 2>/dev/null | tail -1))"
  "$BUILD_DIR/bench/make_random_llava" "$CKPT"
fi
mkdir -p "$OUT"
threads=$(nproc)
echo "== $(date -Is) $(uname -r), $threads cores, load: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/machine.txt"
grep -m1 "model name" /proc/cpuinfo | tee -a "$OUT/machine.txt"

run() {  # name, env..., -- flags
  local name=$1
  shift
  echo "== $name: $*" | tee "$OUT/$name.txt"
  env "$@" "$BUILD_DIR/bench/bench_llava" "$CKPT" --threads "$threads" --repeat "$REPEAT" \
    --decode-tokens "$DECODE" "${EXTRA[@]}" 2>&1 | tee -a "$OUT/$name.txt"
  echo "== load after $name: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/$name.txt"
}
EXTRA=(--cold "$@")  # the first run also loads from a cold page cache (this checkpoint's files only)
run default-malloc GLIBC_TUNABLES=
EXTRA=("$@")
run hugetlb GLIBC_TUNABLES=glibc.malloc.hugetlb=1

# Side by side: each metric of the two runs (matched by name and occurrence).
echo "== summary ($OUT/summary.txt): default malloc | GLIBC_TUNABLES=glibc.malloc.hugetlb=1"
awk '
  function key(line) { match(line, /: +-?[0-9.]+/); return substr(line, 1, RSTART - 1) }
  function val(line,   v) { match(line, /: +-?[0-9.]+/); v = substr(line, RSTART + 1); sub(/^ +/, "", v); return v }
  /^[ A-Za-z].*: +-?[0-9.]+/ && !/^==/ {
    k = key($0); n = ++seen[FILENAME, k]; id = k SUBSEP n
    if (FILENAME == ARGV[1]) { order[++m] = id; name[id] = k; a[id] = val($0) } else { b[id] = val($0); if (!(id in a)) { order[++m] = id; name[id] = k } }
  }
  END { for (i = 1; i <= m; ++i) { id = order[i]; printf "%-62s %-22s | %s\n", name[id] ":", a[id], b[id] } }
' "$OUT/default-malloc.txt" "$OUT/hugetlb.txt" | tee "$OUT/summary.txt"
