#!/usr/bin/env bash
# Runs a command on the GPU machine against the bundle made by
# tools/device_bundle.sh (libraries from .device/lib, CUDA from the machine).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LD_LIBRARY_PATH="$root/.device/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export PATH="$root/.device/bin:$PATH"
export NCCL_NVLS_ENABLE=0
exec "$@"
