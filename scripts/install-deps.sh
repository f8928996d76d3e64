#!/usr/bin/env bash
# Installs lli's build and runtime dependencies from Debian 12 packages. Idempotent: installs only
# what is missing (no network access is needed when everything is there). --fuzz: see below.
set -euo pipefail
PKGS=(
  build-essential cmake
  libtorch-dev            # libtorch 1.13 (CPU)
  libopenblas0-pthread    # fast fp32 BLAS for libtorch (else the reference BLAS: ~10x slower)
  libopencv-dev libcli11-dev libfmt-dev libyaml-cpp-dev doctest-dev nlohmann-json3-dev
)
# --fuzz: also clang and its runtimes (libFuzzer, ASan, UBSan) for scripts/fuzz.sh; the normal
# build and scripts/test.sh (--sanitize included) use GCC and need neither.
if [[ "${1:-}" == "--fuzz" ]]; then
  PKGS+=(clang libclang-rt-dev)
fi
missing=()
for p in "${PKGS[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "install-deps: all dependencies present" >&2
fi
