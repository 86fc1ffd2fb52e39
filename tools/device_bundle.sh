#!/usr/bin/env bash
# Packs what a GPU run needs into .device/ (git-ignored): the binaries and
# test binaries of a CUDA-enabled build, stripped, and the non-system shared
# libraries they link (gRPC, protobuf, Abseil, prometheus-cpp, Gloo, ...).
# CUDA and NCCL come from the GPU machine itself.
#
#   tools/device_bundle.sh [BINARY...]   # from build/; default: every binary
#   then, through the device tool, with carry [".device.tar.xz"]:
#   tools/device_run.sh device_test
#
# The bundle also lands in .device.tar.xz (git-ignored), which is what travels:
# the device tool carries at most 64 MiB and the binaries alone are larger.
# tools/device_run.sh unpacks it on the GPU machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EPSERVE_BUILD_DIR:-$root/build}"
out="$root/.device"
if ! grep -q "EPSERVE_WITH_CUDA=1" "$build/build.ninja" 2>/dev/null; then
  echo "device_bundle: $build is not a CUDA build (nvcc not found at configure time?)" >&2
  exit 1
fi
# Builds what is bundled (everything when no binary is named) unless
# EPSERVE_BUNDLE_NO_BUILD=1 (another build of the same directory is running).
if [ "${EPSERVE_BUNDLE_NO_BUILD:-0}" != 1 ]; then
  ninja -C "$build" "$@"
fi
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
if [ $# -gt 0 ]; then
  bins=()
  for b in "$@"; do bins+=("$build/bin/$b"); done
else
  bins=("$build"/bin/*)
fi
for f in "${bins[@]}"; do
  [ -x "$f" ] && [ -f "$f" ] || { echo "device_bundle: no binary $f" >&2; exit 1; }
  strip --strip-debug -o "$out/bin/$(basename "$f")" "$f"
done
for f in "$out"/bin/*; do
  ldd "$f" | awk '$3 ~ /^\// {print $3}'
done | sort -u |
  grep -v -E 'libcuda|libcudart|libcublas|libnccl|/libc\.so|/libm\.so|libpthread|/libdl\.so|/librt\.so|ld-linux|libgcc_s|libstdc\+\+' |
  while read -r lib; do cp -L "$lib" "$out/lib/"; done
du -sh "$out" | awk '{print "device_bundle: " $1 " in .device/"}'
tar -C "$root" -cf - .device | xz -T0 -3 >"$root/.device.tar.xz"
du -sh "$root/.device.tar.xz" | awk '{print "device_bundle: " $1 " in .device.tar.xz"}'
