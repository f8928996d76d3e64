#!/usr/bin/env bash
# LaMa CPU benchmark (lli-edit remove --backend lama's model path): builds bench_lama and
# make_random_lama, creates a random-weight checkpoint with big-lama's shapes when missing
# (ngf 64, 3 downsamplings, 18 FFC blocks with ratio 0.75, sigmoid; 51 M parameters, ~200 MB, not
# committed), and runs the full-size path at 512x512 and 1024x1024 with bf16 and f32
# convolutions (the Fourier transforms are fp32 in both), each in its own process (peak RSS per
# configuration). Threads = 2 (at::set_num_threads).
#
#   scripts/bench_lama.sh [CHECKPOINT_DIR] [-- extra `bench_lama` flags]
#
# Environment: LLI_BUILD_DIR (default build), LLI_BENCH_DATA (default /work/bench-data),
# LLI_BENCH_OUT (logs; default $LLI_BENCH_DATA/results/lama-<date>), LLI_BENCH_REPEAT (3),
# LLI_BENCH_THREADS (2), LLI_BENCH_SIZES ("512 1024"), LLI_BENCH_DTYPES ("bf16 f32"),
# LLI_BENCH_MALLOC ("lli system": lli's CPU allocator, and libtorch's own via LLI_CPU_ALLOCATOR=system).
# The reference (advimman/lama FFCResNetGenerator, big-lama shapes, fp32, 2 threads) took 2.1 s at
# 512x512 and 9.3 s at 1024x1024 on these machines.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${LLI_BUILD_DIR:-build}
DATA=${LLI_BENCH_DATA:-/work/bench-data}
CKPT=${1:-$DATA/big-lama-random}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == "--" ]] && shift
OUT=${LLI_BENCH_OUT:-$DATA/results/lama-$(date +%Y%m%d-%H%M%S)}
REPEAT=${LLI_BENCH_REPEAT:-3}
THREADS=${LLI_BENCH_THREADS:-2}
SIZES=${LLI_BENCH_SIZES:-512 1024}
DTYPES=${LLI_BENCH_DTYPES:-bf16 f32}
MALLOCS=${LLI_BENCH_MALLOC:-lli system}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target bench_lama make_random_lama
if [[ ! -f "$CKPT/config.yaml" ]]; then
  echo "== creating the random-weight checkpoint $CKPT"
  "$BUILD_DIR/bench/make_random_lama" "$CKPT"
fi
mkdir -p "$OUT"
{
  echo "== $(date -Is) $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  grep -m1 "model name" /proc/cpuinfo
  echo "GLIBC_TUNABLES=${GLIBC_TUNABLES:-} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-}"
} | tee "$OUT/machine.txt"

for size in $SIZES; do
  for dtype in $DTYPES; do
    for mal in $MALLOCS; do
      alloc=""
      [[ $mal == system ]] && alloc=system
      name="$dtype-$size-$mal"
      echo "== $name (load $(cut -d' ' -f1 /proc/loadavg) before)" | tee "$OUT/$name.txt"
      LLI_CPU_ALLOCATOR="$alloc" "$BUILD_DIR/bench/bench_lama" "$CKPT" --dtype "$dtype" --size "$size" \
        --threads "$THREADS" --repeat "$REPEAT" "$@" 2>&1 | tee -a "$OUT/$name.txt"
    done
  done
done

echo "== summary ($OUT/summary.txt)"
grep -H -E "_(model_median|model_min|total_median)_ms|_peak_rss_mib" "$OUT"/*.txt | sed "s#^$OUT/##" | tee "$OUT/summary.txt"
