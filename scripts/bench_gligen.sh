#!/usr/bin/env bash
# GLIGEN / Stable Diffusion CPU benchmark (lli-generate's UNet and VAE): builds bench_gligen and
# make_random_gligen, creates a random-weight SD-1.4 + GLIGEN checkpoint (unet/ + vae/, diffusers
# layout, fp32, ~3.6 GB, not committed) when missing, and runs, for bf16 and f32 (one process each,
# so each peak RSS is that dtype's), with lli's CPU allocator (lib/core/cpu_allocator.h) and with
# libtorch's own (LLI_CPU_ALLOCATOR=system; "hugetlb" = that plus GLIBC_TUNABLES=glibc.malloc.hugetlb=1):
#   UNet step at SIZE^2 (default 512: 64x64 latents), batch 2 (classifier-free guidance), 2 boxes,
#   with and without the GLIGEN fuser; VAE decode of one SIZE^2 image; peak RSS.
# Random weights: the costs are those of the real model (same shapes, same operations).
#
#   scripts/bench_gligen.sh [CHECKPOINT_DIR] [-- extra bench_gligen flags]
#
# Environment: LLI_BUILD_DIR (default build), LLI_BENCH_DATA (default /work/bench-data),
# LLI_BENCH_OUT (logs; default $LLI_BENCH_DATA/results/gligen-<date>), LLI_BENCH_REPEAT (2),
# LLI_BENCH_THREADS (2), LLI_BENCH_DTYPES ("bf16 f32"), LLI_BENCH_MALLOC ("lli system"; also "hugetlb").
# OMP_WAIT_POLICY and OPENBLAS_CORETYPE are passed through (see scripts/bench_sam.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
BUILD_DIR=${LLI_BUILD_DIR:-build}
DATA=${LLI_BENCH_DATA:-/work/bench-data}
CKPT=${1:-$DATA/gligen-sd14-random}
[[ $# -gt 0 ]] && shift
[[ ${1:-} == "--" ]] && shift
OUT=${LLI_BENCH_OUT:-$DATA/results/gligen-$(date +%Y%m%d-%H%M%S)}
REPEAT=${LLI_BENCH_REPEAT:-2}
THREADS=${LLI_BENCH_THREADS:-2}
DTYPES=${LLI_BENCH_DTYPES:-bf16 f32}
MALLOCS=${LLI_BENCH_MALLOC:-lli system}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target bench_gligen make_random_gligen
BENCH="$BUILD_DIR/bench/bench_gligen"
if [[ ! -f "$CKPT/unet/config.json" || ! -f "$CKPT/vae/config.json" ]]; then
  echo "== creating the random-weight checkpoint $CKPT"
  "$BUILD_DIR/bench/make_random_gligen" "$CKPT"
fi
mkdir -p "$OUT"


{
  bench_machine
} | tee "$OUT/machine.txt"

for dtype in $DTYPES; do
  for mal in $MALLOCS; do
    tun="" alloc=""
    [[ $mal == system || $mal == hugetlb ]] && alloc=system
    [[ $mal == hugetlb ]] && tun=glibc.malloc.hugetlb=1
    name="$dtype-$mal"
    echo "== $name ($(bench_busy) before): LLI_CPU_ALLOCATOR=$alloc GLIBC_TUNABLES=$tun $BENCH $CKPT --dtype $dtype $*" |
      tee "$OUT/$name.txt"
    env LLI_CPU_ALLOCATOR="$alloc" GLIBC_TUNABLES="$tun" "$BENCH" "$CKPT" --dtype "$dtype" --threads "$THREADS" --repeat "$REPEAT" "$@" 2>&1 |
      tee -a "$OUT/$name.txt"
  done
done

echo "== summary ($OUT/summary.txt)"
grep -H -E "_(median|min)_ms|peak_rss|load_ms" "$OUT"/*.txt | sed "s#^$OUT/##" | tee "$OUT/summary.txt"
