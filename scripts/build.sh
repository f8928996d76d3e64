#!/usr/bin/env bash
# Configures and builds lli into build/ (Release). Extra arguments go to cmake's configure step,
# e.g. scripts/build.sh -DCMAKE_PREFIX_PATH=/opt/libtorch-cuda
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${LLI_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@" >&2
cmake --build "$BUILD_DIR" -j "$(nproc)" >&2
