#!/usr/bin/env bash
# Segment Anything CPU benchmark (lli-segment's SAM path): builds bench_sam, creates a random-weight
# checkpoint with facebook/sam-vit-base's shapes when missing (~375 MB, not committed), and runs:
#   bf16 and f32 image encoder at 1024x1024, each with glibc's default malloc and with
#   GLIBC_TUNABLES=glibc.malloc.hugetlb=1; decoder latency per prompt against a cached embedding
#   (click with multimask best, box, 16 points); --everything (32x32 grid) on a 512x512 photo (bf16
#   encoder, default malloc). Threads = 2 (at::set_num_threads).
# Random weights: the encoder/decoder costs are those of the real model; the number of masks
# --everything keeps (and so its post-processing time) is not.
#
#   scripts/bench_sam.sh [CHECKPOINT_DIR] [-- extra `bench_sam run` flags]
#
# Environment: LLI_BUILD_DIR (default build), LLI_BENCH_DATA (default /work/bench-data),
# LLI_BENCH_OUT (logs; default $LLI_BENCH_DATA/results/sam-<date>), LLI_BENCH_REPEAT (2),
# LLI_BENCH_THREADS (2), LLI_BENCH_PHOTO (default ../shared/images/fruits.jpg, else synthetic),
# LLI_BENCH_SKIP_EVERYTHING=1 to skip the (minutes-long) automatic mask generation run.
# OMP_WAIT_POLICY is passed through: on cores shared with other work, libgomp's spinning threads
# make 2-thread runs 2-4x slower; OMP_WAIT_POLICY=PASSIVE avoids that (set it for such machines).
# OPENBLAS_CORETYPE is passed through: Debian's OpenBLAS 0.3.21 detects these VMs' CPU as
# "Prescott" (SSE3 kernels, ~20 GFLOP/s fp32); OPENBLAS_CORETYPE=SkylakeX gives ~90-180. The SAM
# decoder's big projections go through oneDNN and do not depend on it; its small ones and the f32
# encoder's attention products do.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
BUILD_DIR=${LLI_BUILD_DIR:-build}
DATA=${LLI_BENCH_DATA:-/work/bench-data}
CKPT=${1:-$DATA/sam-vit-base-random}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == "--" ]] && shift
OUT=${LLI_BENCH_OUT:-$DATA/results/sam-$(date +%Y%m%d-%H%M%S)}
REPEAT=${LLI_BENCH_REPEAT:-2}
THREADS=${LLI_BENCH_THREADS:-2}
PHOTO=${LLI_BENCH_PHOTO:-../shared/images/fruits.jpg}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target bench_sam
BENCH="$BUILD_DIR/bench/bench_sam"
if [[ ! -f "$CKPT/config.json" ]]; then
  echo "== creating the random-weight checkpoint $CKPT"
  "$BENCH" make-random "$CKPT"
fi
mkdir -p "$OUT"


{
  bench_machine
  "$BENCH" matmul --threads "$THREADS" 2>&1 | grep -E "^matmul_"
} | tee "$OUT/machine.txt"

run() {  # name, env assignments..., -- bench flags...
  local name=$1
  shift
  local envs=()
  while [[ $# -gt 0 && $1 != "--" ]]; do envs+=("$1"); shift; done
  [[ ${1:-} == "--" ]] && shift
  echo "== $name ($(bench_busy) before): ${envs[*]} $*" | tee "$OUT/$name.txt"
  env "${envs[@]}" "$BENCH" run "$CKPT" --threads "$THREADS" --repeat "$REPEAT" "$@" 2>&1 | tee -a "$OUT/$name.txt"
}

for dtype in bf16 f32; do
  run "$dtype-default-malloc" GLIBC_TUNABLES= -- --dtype "$dtype" --skip-everything "$@"
  run "$dtype-hugetlb" GLIBC_TUNABLES=glibc.malloc.hugetlb=1 -- --dtype "$dtype" --skip-everything "$@"
done
if [[ ${LLI_BENCH_SKIP_EVERYTHING:-0} != 1 ]]; then
  photo=()
  [[ -f $PHOTO ]] && photo=(--image "$PHOTO")
  run everything-bf16 GLIBC_TUNABLES= -- --dtype bf16 --skip-encoder --decoder-repeat 1 "${photo[@]}" "$@"
fi

echo "== summary ($OUT/summary.txt)"
grep -H -E "encoder_(median|min)_ms|_total_ms|everything_" "$OUT"/*.txt | sed "s#^$OUT/##" | tee "$OUT/summary.txt"
