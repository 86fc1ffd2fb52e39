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
# The official OpenAI Node client for the HTTP API's test (npm registry).
bash "$root/tools/fetch_node_clients.sh"
bash "$root/tools/fetch_k8s_schemas.sh"  # Kubernetes schemas for tests/deploy (npm registry)
# The parsers of untrusted input (safetensors headers and checkpoints, weight
# binding, tokenizer.json and text) run once more under AddressSanitizer and
# UndefinedBehaviorSanitizer, including the malformed-file corpus and the
# fuzz replays. EPSERVE_SKIP_SANITIZERS=1 skips this (it says so).
sanitizer_pass() {
  san="${EPSERVE_SAN_BUILD_DIR:-$root/build-asan}"
  if [ ! -f "$san/build.ninja" ]; then
    cmake -S "$root" -B "$san" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DEPSERVE_SANITIZE=address,undefined -DEPSERVE_CUDA=OFF -DEPSERVE_BUILD_BENCHMARKS=OFF
  fi
  san_tests=(safetensors_test weights_test tokenizer_test)
  ninja -C "$san" -j "${EPSERVE_BUILD_JOBS:-$(nproc)}" "${san_tests[@]}"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  for t in "${san_tests[@]}"; do
    echo "== $t under address,undefined sanitizers"
    (cd "$san" && "$san/bin/$t" --gtest_brief=1)
  done
}

# A filtered run (arguments for ctest) skips the sanitizer and fuzz passes.
if [ $# -eq 0 ] && [ "${EPSERVE_SKIP_SANITIZERS:-0}" != 1 ]; then
  # clang-format and clang-tidy on the lines the last commit changed
  # (tools/lint.sh --base REV checks a longer range).
  bash "$root/tools/lint.sh" --build "$build"
  sanitizer_pass
  # Short, deterministic libFuzzer runs (clang, ASan/UBSan) from the committed
  # corpora; `tools/fuzz.sh --seconds N` runs them open-ended on purpose.
  bash "$root/tools/fuzz.sh" --runs 10000
else
  echo "test: sanitizer and fuzz passes skipped (ctest arguments given or EPSERVE_SKIP_SANITIZERS=1)"
fi

# The whole suite last, so that its summary closes the output.
(cd "$build" && ctest --output-on-failure --timeout 300 -j "${EPSERVE_TEST_JOBS:-2}" "$@")
