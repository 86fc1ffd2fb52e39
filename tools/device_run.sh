#!/usr/bin/env bash
# Runs a command on the GPU machine against the bundle made by
# tools/device_bundle.sh (libraries from .device/lib, CUDA from the machine).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The carried tarball (tools/device_bundle.sh) replaces an older unpacked bundle.
if [ -f "$root/.device.tar.xz" ] && [ "$root/.device.tar.xz" -nt "$root/.device/.unpacked" ]; then
  rm -rf "$root/.device"
  xz -dc "$root/.device.tar.xz" | tar -C "$root" -xf -
  touch "$root/.device/.unpacked"
fi
export LD_LIBRARY_PATH="$root/.device/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PATH="$root/.device/bin:$PATH"
export NCCL_NVLS_ENABLE=0
exec "$@"
