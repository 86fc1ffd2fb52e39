#!/usr/bin/env bash
# Configures (once) and builds epserve into build/. Extra arguments are passed
# to the first CMake configure, e.g. tools/build.sh -DEPSERVE_CUDA=OFF.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EPSERVE_BUILD_DIR:-$root/build}"
bash "$root/tools/setup.sh"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
fi
jobs="${EPSERVE_BUILD_JOBS:-$(nproc)}"
ninja -C "$build" -j "$jobs"
