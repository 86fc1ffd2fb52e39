#!/usr/bin/env bash
# Runs `epserve-bench-gpu all` on the GPU machine, from the repository root,
# against the bundle tools/device_bundle.sh makes (.device/bin, .device/lib;
# CUDA from the machine, as tools/device_run.sh sets it up):
#
#   tools/device_bundle.sh epserve-bench-gpu     # here, from a CUDA build
#   then, through the device tool with carry [".device"]:
#   tools/bench_gpu.sh [more epserve-bench-gpu flags, e.g. --models DIR,DIR]
#
# `all` includes the expert-parallel exchange (`alltoall`: its kernels on one
# GPU; over NCCL when the machine has 2 or more GPUs). Alone:
#   tools/device_run.sh epserve-bench-gpu alltoall --json "$OUT/alltoall.json"
#
# Results: $OUT/bench_gpu.json (the JSON object) and $OUT/bench_gpu.txt (the
# human-readable lines); OUT defaults to /tmp.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-/tmp}"
mkdir -p "$out"
if [ ! -x .device/bin/epserve-bench-gpu ]; then
  echo "bench_gpu: no .device/bin/epserve-bench-gpu; run tools/device_bundle.sh" \
       "epserve-bench-gpu in a CUDA build first" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>/dev/null || true
tools/device_run.sh epserve-bench-gpu all --json "$out/bench_gpu.json" "$@" |
  tee "$out/bench_gpu.txt"
