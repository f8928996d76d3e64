#!/usr/bin/env bash
# Whole `lli-edit replace` on a 1024-px photo (issue 9's benchmark): builds the tools, make_photo and
# make_random_gligen; creates, when missing, a random-weight GLIGEN *inpainting* pipeline with SD-1.4
# shapes (UNet with a 9-channel conv_in, VAE, CLIP-L-sized text encoder; fp16 files as the public
# checkpoint's .fp16 variant; tokenizer, scheduler and model_index.json from the golden fixture
# gligen-inpaint-tiny-a; ~2.5 GB, not committed) and building.jpg resized to 1024 px with an
# elliptical object mask; then runs the default replace (50 PNDM steps, guidance 7.5, beta 1.0, bf16)
# under /usr/bin/time -v: wall time, the tool's --json timings (text, VAE, denoise, per UNet call),
# peak RSS.
#
#   scripts/bench_replace.sh [-- extra lli-edit replace flags, e.g. --steps 10]
#
# Environment: LLI_BUILD_DIR (build), LLI_BENCH_DATA (/work/bench-data), LLI_BENCH_OUT (logs;
# default $LLI_BENCH_DATA/results/replace-<date>), LLI_SHARED (../shared: the fixture and photo).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${LLI_BUILD_DIR:-build}
DATA=${LLI_BENCH_DATA:-/work/bench-data}
SHARED=${LLI_SHARED:-../shared}
CKPT=$DATA/gligen-inpaint-sd14-random
PHOTO=$DATA/building1024
[[ ${1:-} == "--" ]] && shift
OUT=${LLI_BENCH_OUT:-$DATA/results/replace-$(date +%Y%m%d-%H%M%S)}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target lli-edit make_photo make_random_gligen
if [[ ! -f "$CKPT/model_index.json" ]]; then
  echo "== creating the random-weight inpainting pipeline $CKPT"
  "$BUILD_DIR/bench/make_random_gligen" "$CKPT" --dtype f16 --inpainting \
    --pipeline-from "$SHARED/fixtures/gligen-inpaint-tiny-a"
fi
[[ -f $PHOTO.png ]] || "$BUILD_DIR/bench/make_photo" "$SHARED/images/building.jpg" 1024 "$PHOTO" --ellipse 0.5,0.6,0.1,0.14
mkdir -p "$OUT"
echo "== $(date -Is), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo)" |
  tee "$OUT/machine.txt"
/usr/bin/time -v "$BUILD_DIR/tools/lli-edit" replace -m "$CKPT" -i "$PHOTO.png" --mask "$PHOTO.mask.png" \
  --text "a red car" --seed 1 --json -o "$OUT/replaced.png" "$@" >"$OUT/result.json" 2>"$OUT/stderr.txt"
cat "$OUT/result.json"
grep -E "Elapsed \(wall|Maximum resident" "$OUT/stderr.txt" | tee "$OUT/summary.txt"
