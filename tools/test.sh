#!/usr/bin/env bash
# Runs the whole test suite: set-up, build, reference data, ctest.
# Extra arguments go to ctest (e.g. -L unit, -R Gloo).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EPSERVE_BUILD_DIR:-$root/build}"
bash "$root/tools/build.sh"
if [ -f "$root/tools/fetch_tokenizers.sh" ]; then
  bash "$root/tools/fetch_tokenizers.sh"
fi
cd "$build"
ctest --output-on-failure --timeout 300 -j "${EPSERVE_TEST_JOBS:-2}" "$@"
