#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (unit, model, cli).
#   scripts/test.sh [ctest arguments]             e.g. scripts/test.sh -L unit
#   scripts/test.sh --sanitize [ctest arguments]  lli built with AddressSanitizer + UndefinedBehavior-
#     Sanitizer (GCC; libtorch and the system libraries as they are) in build-sanitize/
#     ($LLI_SANITIZE_BUILD_DIR), then the unit and cli labels: every parser, the tokenizers and
#     every tool (lli-chat included) under the sanitizers. A report fails the test that caused it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scripts/install-deps.sh
if [[ "${1:-}" == "--sanitize" ]]; then
  shift
  BUILD_DIR=${LLI_SANITIZE_BUILD_DIR:-build-sanitize}
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DLLI_SANITIZE=ON >&2
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target lli-unit-tests lli-cli-tests >&2
  cd "$BUILD_DIR"
  # Leaks are checked too; what libtorch / OpenMP / OpenCV keep until exit is listed in lsan.supp.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/tests/sanitize/lsan.supp:print_suppressions=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  exec ctest --output-on-failure -j "$(nproc)" -L 'unit|cli' "$@"
fi
scripts/build.sh
BUILD_DIR=${LLI_BUILD_DIR:-build}
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" "$@"
