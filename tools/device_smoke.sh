#!/usr/bin/env bash
# GPU smoke run (on the GPU machine, after tools/device_bundle.sh):
# the device tests on a real GPU, then a router with one CUDA worker that
# must report the GPU in GetServerInfo and shut down cleanly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run="$root/tools/device_run.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$run" device_test
"$run" epserve-router --model "$root/checkpoints/tiny-random-qwen3-moe" --local-workers 1 --device cuda \
  --listen 127.0.0.1:50551 --metrics-listen 127.0.0.1:0 &
router=$!
"$run" epserve health --router 127.0.0.1:50551 --wait-serving-s 60
"$run" epserve info --router 127.0.0.1:50551 | tee "${OUT:-/tmp}/info.json" | grep -E '"device"|"name"|compute_capability|total_memory'
kill -TERM $router
wait $router
echo "router exit code $?"
