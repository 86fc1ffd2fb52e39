#!/usr/bin/env bash
# Lints the C++ lines a change touches: clang-format (.clang-format) and
# clang-tidy (.clang-tidy, every kept check an error) on the lines that differ
# from BASE (default: the parent of HEAD, i.e. the last commit; before a
# commit, `tools/lint.sh --base main` checks the work in progress too).
# Needs a configured build directory for clang-tidy's compile commands.
#   tools/lint.sh [--base REV] [--build DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="HEAD~1"
build="${EPSERVE_BUILD_DIR:-$root/build}"
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "lint: unknown argument '$1' (expected --base REV or --build DIR)" >&2; exit 2 ;;
  esac
done
cd "$root"
if ! git rev-parse --verify -q "$base^{commit}" >/dev/null; then
  echo "lint: no commit '$base' to compare with; nothing to lint" >&2
  exit 0
fi
mapfile -t files < <(git diff --name-only --diff-filter=AMR "$base" -- \
  '*.cc' '*.h' '*.cu' '*.cuh' | grep -v '^build' || true)
if [ ${#files[@]} -eq 0 ]; then
  echo "lint: no C++ changes since $base" >&2
  exit 0
fi
echo "lint: ${#files[@]} changed C++ files since $(git rev-parse --short "$base")" >&2

status=0
# Formatting of the changed lines only (untouched lines keep their layout).
fmt="$(git clang-format --binary clang-format --diff "$base" -- "${files[@]}" || true)"
if [ -n "$fmt" ] && ! grep -q -e '^no modified files to format' -e '^clang-format did not modify any files' <<<"$fmt"; then
  echo "$fmt"
  echo "lint: the lines above are not formatted as .clang-format says (fix: git clang-format $base)" >&2
  status=1
fi

# clang-tidy on the changed lines of the changed C++ sources (not CUDA: clang
# does not take nvcc's flags). -Wshadow=local is GCC's; clang skips it.
tidy_files=()
for f in "${files[@]}"; do
  case "$f" in *.cc|*.h) tidy_files+=("$f") ;; esac
done
if [ ${#tidy_files[@]} -gt 0 ]; then
  if [ ! -f "$build/compile_commands.json" ]; then
    echo "lint: $build/compile_commands.json is missing; configure the build first (tools/build.sh)" >&2
    exit 1
  fi
  out="$(mktemp)"
  tidy_rc=0
  git diff -U0 "$base" -- "${tidy_files[@]}" |
    clang-tidy-diff -p1 -path "$build" -quiet -j "$(nproc)" \
      -extra-arg=-Wno-unknown-warning-option >"$out" 2>&1 || tidy_rc=$?
  if [ $tidy_rc -ne 0 ] || grep -q -E '(warning|error):' "$out"; then
    grep -E -A3 '(warning|error):' "$out" >&2 || cat "$out" >&2
    echo "lint: clang-tidy found the problems above (.clang-tidy lists the checks)" >&2
    status=1
  fi
  rm -f "$out"
fi
[ $status -eq 0 ] && echo "lint: clean" >&2
exit $status
