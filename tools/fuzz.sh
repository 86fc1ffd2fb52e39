#!/usr/bin/env bash
# libFuzzer targets (clang builds): the safetensors header parser and the
# tokenizer's encode/decode round trip, seeded with their committed corpora.
#
#   tools/fuzz.sh --runs N      deterministic (-seed=1), N inputs per target (CI)
#   tools/fuzz.sh --seconds N   open-ended, N seconds per target (run on purpose);
#                               new inputs land in build-fuzz/corpus/<target>
# Exits non-zero on a crash or a violated property (the input is saved by libFuzzer).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz="${EPSERVE_FUZZ_BUILD_DIR:-$root/build-fuzz}"
mode="${1:---runs}"
amount="${2:-20000}"
if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang++ not installed; fuzz targets not built (tools/setup.sh installs clang)"
  exit 1
fi
if [ ! -f "$fuzz/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DEPSERVE_CUDA=OFF -DEPSERVE_BUILD_BENCHMARKS=OFF
fi
ninja -C "$fuzz" -j "${EPSERVE_BUILD_JOBS:-$(nproc)}" safetensors_header_fuzz tokenizer_fuzzer
case "$mode" in
  --runs) limit=(-seed=1 "-runs=$amount") ;;
  --seconds) limit=("-max_total_time=$amount") ;;
  *) echo "fuzz: unknown mode $mode (--runs N | --seconds N)" >&2; exit 2 ;;
esac
run() {
  local target=$1 seeds=$2
  local work="$fuzz/corpus/$target" log="$fuzz/$target.log"
  mkdir -p "$work"
  echo "== $target ${limit[*]}"
  local status=0
  (cd "$fuzz" && "$fuzz/bin/$target" "${limit[@]}" -print_final_stats=1 "$work" "$seeds") \
    > "$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -40 "$log"
    echo "fuzz: $target failed (exit $status); full log $log" >&2
    return "$status"
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || true
}
run safetensors_header_fuzz "$root/tests/safetensors/corpus"
run tokenizer_fuzzer "$root/tests/tokenizer/fuzz/seeds"
