#!/usr/bin/env bash
# OWLv2 / OWL-ViT CPU benchmark (lli-segment --text's detector path): builds bench_owl, creates
# random-weight checkpoints with google/owlv2-base-patch16-ensemble's (960 px, 3,600 boxes) and
# google/owlvit-base-patch32's (768 px, 576 boxes) shapes when missing (~600 MB each, not
# committed; the CLIP tokenizer files come from tests/fixtures/owlv2-tiny-a), and runs each in
# bf16 and f32: image features (preprocessing + vision tower + heads) of PHOTO, one and three
# phrases against the cached features, the session-cache round trip. Threads = 2.
#
#   scripts/bench_owl.sh [-- extra `bench_owl run` flags]
#
# Environment: LLI_BUILD_DIR (default build), LLI_BENCH_DATA (default /work/bench-data),
# LLI_BENCH_OUT (logs; default $LLI_BENCH_DATA/results/owl-<date>), LLI_BENCH_REPEAT (3),
# LLI_BENCH_THREADS (2), LLI_BENCH_PHOTO (default ../shared/images/messi5.jpg).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
BUILD_DIR=${LLI_BUILD_DIR:-build}
DATA=${LLI_BENCH_DATA:-/work/bench-data}
[[ ${1:-} == "--" ]] && shift
OUT=${LLI_BENCH_OUT:-$DATA/results/owl-$(date +%Y%m%d-%H%M%S)}
REPEAT=${LLI_BENCH_REPEAT:-3}
THREADS=${LLI_BENCH_THREADS:-2}
PHOTO=${LLI_BENCH_PHOTO:-../shared/images/messi5.jpg}

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target bench_owl
BENCH="$BUILD_DIR/bench/bench_owl"
mkdir -p "$OUT"
bench_machine | tee "$OUT/machine.txt"
for variant in owlv2 owlvit; do
  CKPT=$DATA/$variant-base-random
  if [[ ! -f "$CKPT/model.safetensors" ]]; then
    echo "== creating the random-weight checkpoint $CKPT"
    "$BENCH" make-random "$CKPT" --variant "$variant" --tokenizer tests/fixtures/owlv2-tiny-a
  fi
  for dtype in bf16 f32; do
    name=$variant-$dtype
    echo "== $name ($(bench_busy) before)" | tee "$OUT/$name.txt"
    "$BENCH" run "$CKPT" --dtype "$dtype" --threads "$THREADS" --repeat "$REPEAT" --image "$PHOTO" "$@" 2>&1 |
      tee -a "$OUT/$name.txt"
  done
done
echo "== summary ($OUT/summary.txt)"
grep -H -E "image_features_median|vision_median|query_1_phrases_median|query_3_phrases_median|second_phrase|load_ms" \
  "$OUT"/*.txt | sed "s#^$OUT/##" | tee "$OUT/summary.txt"
