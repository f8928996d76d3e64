#!/usr/bin/env bash
# LLaVA-1.5-7B CPU benchmark (bf16): builds bench_llava, creates the random-weight checkpoint when
# it is missing (about 14 GB; `make_random_llava DIR --preset mid` makes the CLIP-L + 1.1B "mid"
# one), and runs the benchmark twice, each in a fresh process: weights mmap'd in place
# (lli-chat --weights mmap) and copied into huge-page memory (--weights copy). Each run measures
# with and without lli's bf16 kernels. Threads = number of cores.
#
#   scripts/bench_llava.sh [CHECKPOINT_DIR] [-- extra bench_llava flags]
#
# Then the weight formats side by side (LLI_BENCH_FORMATS, default "bf16 q8_0 q4_k"; empty: none):
# for q8_0 / q4_k, lli-quantize first writes CHECKPOINT_DIR-<type> when it is missing (timed, peak
# RSS recorded; kept for later runs); each format then gets the same bench_llava run (--weights
# copy, lli's kernels, no vision / GEMV parts): prefill and decode, for the same-run ratios.
#
# Environment: LLI_BUILD_DIR (default build), LLI_BENCH_DATA (default /work/bench-data),
# LLI_BENCH_OUT (directory for the logs; default $LLI_BENCH_DATA/results/llava-<date>), LLI_BENCH_REPEAT (3),
# LLI_BENCH_DECODE (64 tokens), LLI_BENCH_FORMATS ("bf16 q8_0 q4_k"), LLI_BENCH_BF16 (1; 0 skips
# the full mmap/copy bf16 runs).
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
cmake --build "$BUILD_DIR" -j "$(nproc)" --target bench_llava make_random_llava lli-quantize
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
FORMATS=${LLI_BENCH_FORMATS-bf16 q8_0 q4_k}
if [[ ${LLI_BENCH_BF16:-1} != 0 ]]; then
EXTRA=(--weights mmap "$@")
run mmap LLI_BENCH_DUMMY=
EXTRA=(--weights copy "$@")
run copy LLI_BENCH_DUMMY=
fi

for type in $FORMATS; do
  [[ $type == bf16 ]] && continue
  QCKPT="$CKPT-$type"
  if [[ ! -f "$QCKPT/config.json" ]]; then
    echo "== lli-quantize $CKPT -> $QCKPT ($type)" | tee "$OUT/quantize-$type.txt"
    /usr/bin/time -v "$BUILD_DIR/tools/lli-quantize" "$CKPT" "$QCKPT" --type "$type" --json 2>&1 |
      grep -E '^\{|lli-quantize:|Elapsed|Maximum resident' | tee -a "$OUT/quantize-$type.txt"
  fi
done
for type in $FORMATS; do
  QCKPT="$CKPT-$type"
  [[ $type == bf16 ]] && QCKPT="$CKPT"
  echo "== format $type: bench_llava $QCKPT --weights copy --fast-bf16 on --skip-gemv --skip-vision" | tee "$OUT/format-$type.txt"
  "$BUILD_DIR/bench/bench_llava" "$QCKPT" --threads "$threads" --repeat "$REPEAT" --decode-tokens "$DECODE" \
    --weights copy --fast-bf16 on --skip-gemv --skip-vision "$@" 2>&1 | tee -a "$OUT/format-$type.txt"
done
[[ ${LLI_BENCH_BF16:-1} != 0 ]] || exit 0

# Side by side: each metric of the two runs (matched by name and occurrence).
echo "== summary ($OUT/summary.txt): --weights mmap | --weights copy"
awk '
  function key(line) { match(line, /: +-?[0-9.]+/); return substr(line, 1, RSTART - 1) }
  function val(line,   v) { match(line, /: +-?[0-9.]+/); v = substr(line, RSTART + 1); sub(/^ +/, "", v); return v }
  /^[ A-Za-z].*: +-?[0-9.]+/ && !/^==/ {
    k = key($0); n = ++seen[FILENAME, k]; id = k SUBSEP n
    if (FILENAME == ARGV[1]) { order[++m] = id; name[id] = k; a[id] = val($0) } else { b[id] = val($0); if (!(id in a)) { order[++m] = id; name[id] = k } }
  }
  END { for (i = 1; i <= m; ++i) { id = order[i]; printf "%-62s %-22s | %s\n", name[id] ":", a[id], b[id] } }
' "$OUT/mmap.txt" "$OUT/copy.txt" | tee "$OUT/summary.txt"
