#!/usr/bin/env bash
# Fuzzes one of lli's parsers with libFuzzer.
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]   e.g. scripts/fuzz.sh prompt 600
#   scripts/fuzz.sh --list                                the targets (tests/fuzz/fuzz_targets.cpp)
#
# Builds lli_base and the target with clang and -fsanitize=fuzzer,address,undefined in its own
# build directory (build-fuzz; $LLI_FUZZ_BUILD_DIR overrides; no libtorch is compiled), seeds the
# working corpus (build-fuzz/corpus/TARGET, kept between runs, so a second run goes on where the
# first stopped) from the fixtures, the samples and tests/data/fuzz/TARGET, runs for SECONDS, and
# copies every input that crashed, hung, ran out of memory, leaked or broke an invariant to
# tests/data/fuzz/TARGET/ (crash-<sha1> and so on), where the normal test suite replays it
# (tests/unit/test_fuzz_regressions.cpp). Exit status: 0 when nothing was found, 1 otherwise.
# The last line is a summary: executions, coverage (edges, features), corpus size, findings.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGETS=(safetensors safetensors_index prompt session registry image sentencepiece_model llama_tokenizer
  clip_tokenizer chat_template)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
if (($# < 2)); then
  echo "usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]   (scripts/fuzz.sh --list)" >&2
  exit 2
fi
TARGET=$1
SECS=$2
shift 2
if [[ ! " ${TARGETS[*]} " == *" $TARGET "* ]]; then
  echo "fuzz.sh: no target '$TARGET' (one of: ${TARGETS[*]})" >&2
  exit 2
fi

scripts/install-deps.sh --fuzz
BUILD=${LLI_FUZZ_BUILD_DIR:-build-fuzz}
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLI_FUZZ=ON -DLLI_BUILD_TESTS=OFF \
  -DLLI_USE_PCH=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target "fuzz-$TARGET" >&2
BIN=$BUILD/tests/fuzz/fuzz-$TARGET

# Per target: the largest input and the seed files beside tests/data/fuzz/TARGET.
F=tests/fixtures
MAX_LEN=4096
SEEDS=()
case $TARGET in
  safetensors) MAX_LEN=8192 ;;
  safetensors_index) SEEDS=("$F"/*/*.index.json "$F"/*/*/*.index.json) ;;
  prompt) SEEDS=(samples/prompts/*.json) ;;
  session) ;;
  registry) MAX_LEN=16384; SEEDS=(configs/models.yaml "$F"/lama-tiny-a/config.yaml) ;;
  image) MAX_LEN=16384; SEEDS=("$F"/*/image.png "$F"/*/mask.png) ;;
  sentencepiece_model) MAX_LEN=16384 ;;
  chat_template) MAX_LEN=1024; SEEDS=("$F"/*/case.json README.md samples/README.md) ;;
  llama_tokenizer | clip_tokenizer) MAX_LEN=256; SEEDS=("$F"/*/case.json README.md samples/README.md) ;;
esac
CORPUS=$BUILD/corpus/$TARGET
ART=$BUILD/artifacts/$TARGET
mkdir -p "$CORPUS" "$ART"
for s in "${SEEDS[@]}" tests/data/fuzz/"$TARGET"/*; do
  [[ -f "$s" ]] || continue
  # text seeds longer than MAX_LEN are cut into MAX_LEN pieces (libFuzzer would only keep the start)
  if (($(stat -c %s "$s") > MAX_LEN)) && [[ "$s" != *.png ]]; then
    split -b "$MAX_LEN" -d "$s" "$CORPUS/seed-$(basename "$s")-"
  else
    cp -f "$s" "$CORPUS/seed-$(basename "$s")"
  fi
done
DICT=()
[[ -f tests/fuzz/$TARGET.dict ]] && DICT=(-dict="tests/fuzz/$TARGET.dict")

SCRATCH=$(mktemp -d /dev/shm/lli-fuzz.XXXXXX 2>/dev/null || mktemp -d)
LOG=$BUILD/fuzz-$TARGET.log
trap 'rm -rf "$SCRATCH"' EXIT
rm -f "$ART"/*
# ASan's default 256 MB quarantine, released to the OS and faulted back in again and again, made
# single inputs take minutes on VMs with slow page faults (a false timeout); 16 MB still catches a
# use after free within an input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=16:release_to_os_interval_ms=-1}
# libFuzzer's -timeout is wall-clock time: on a shared, loaded machine a 4 ms input was once
# paused for 68 s (a false "timeout"). 60 s still catches a real hang; LLI_FUZZ_TIMEOUT changes it.
set +e
START=$(date +%s)
LLI_FUZZ_SCRATCH=$SCRATCH "$BIN" "$CORPUS" -max_total_time="$SECS" \
  -max_len="$MAX_LEN" -timeout="${LLI_FUZZ_TIMEOUT:-60}" -report_slow_units="${LLI_FUZZ_TIMEOUT:-60}" -rss_limit_mb=4096 -artifact_prefix="$ART/" -print_final_stats=1 \
  "${DICT[@]}" "$@" >"$LOG" 2>&1
RC=$?
ELAPSED=$(($(date +%s) - START))
set -e

FOUND=0
mkdir -p "tests/data/fuzz/$TARGET"
for a in "$ART"/*; do
  [[ -f "$a" ]] || continue
  cp -f "$a" "tests/data/fuzz/$TARGET/"
  echo "fuzz.sh: finding saved as tests/data/fuzz/$TARGET/$(basename "$a")" >&2
  FOUND=$((FOUND + 1))
done
if ((RC != 0 && FOUND == 0)); then
  tail -30 "$LOG" >&2
  echo "fuzz.sh: the fuzzer exited with $RC without saving an input (see $LOG)" >&2
  exit 1
fi
if ((FOUND)); then grep -m1 -A12 "ERROR:\|==ERROR\|runtime error\|deadly signal\|timeout\|out-of-memory" "$LOG" >&2 || true; fi
EXECS=$(grep -m1 "stat::number_of_executed_units" "$LOG" | awk '{print $2}')
LAST=$(grep -E "^#[0-9]+" "$LOG" | tail -1)
COV=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$LAST")
FT=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$LAST")
CORP=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$LAST")
echo "fuzz.sh: $TARGET: ${EXECS:-?} executions in ${ELAPSED} s, cov ${COV:-?} edges, ft ${FT:-?}, corpus ${CORP:-?} inputs, findings $FOUND (log: $LOG)"
((FOUND == 0))
