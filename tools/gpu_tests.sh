#!/usr/bin/env bash
# The GPU test suite (ctest label gpu) on the GPU machine, from the bundle
# tools/device_bundle.sh makes (binaries in .device/bin, libraries in
# .device/lib). The test binaries find fixtures and each other through the
# paths of the build they came from (/work/main, /work/main/build/bin), so
# those are linked to this checkout first. Logs go to $OUT (default /tmp).
#
#   tools/device_bundle.sh cuda_ops_test cuda_sampling_test cuda_moe_small_test \
#       cuda_attention_prologue_test models_parity_test step_executor_test \
#       serving_test ep_serving_test cuda_ep_exchange_test nccl_communicator_test \
#       epserve-router epserve-worker epserve-run epserve
#   device: tools/gpu_tests.sh
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${OUT:-/tmp}"
cd "$root"
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$root" /work/main; fi
mkdir -p build && [ -e build/bin ] || ln -s ../.device/bin build/bin
export LD_LIBRARY_PATH="$root/.device/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
run() {  # name, env..., command
  local name="$1"; shift
  local start=$SECONDS
  env "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local summary
  summary="$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$out/$name.log" | tr '\n' ' ')"
  echo "$name: rc $rc in $((SECONDS - start)) s: $summary"
  [ $rc -eq 0 ] || status=1
}
B=.device/bin
run cuda_ops timeout 300 $B/cuda_ops_test
run cuda_sampling timeout 300 $B/cuda_sampling_test
run cuda_moe_small timeout 300 $B/cuda_moe_small_test
run cuda_attention_prologue timeout 300 $B/cuda_attention_prologue_test
run models_parity_gpu EPSERVE_TEST_DEVICE=cuda:0 timeout 600 $B/models_parity_test
run step_executor_gpu_eager EPSERVE_TEST_DEVICE=cuda:0 timeout 300 $B/step_executor_test
run step_executor_gpu_graphs EPSERVE_TEST_DEVICE=cuda:0 EPSERVE_TEST_GRAPHS=1 timeout 300 \
  $B/step_executor_test
run serving_gpu EPSERVE_TEST_DEVICE=cuda timeout 600 $B/serving_test
# Expert parallelism: the exchange kernels against the CPU, then GPU workers
# sharing GPU 0 (Gloo through page-locked memory) against the single-process
# GPU runner, with decode graphs and (a subset) eagerly.
if [ -x $B/cuda_ep_exchange_test ]; then
  run cuda_ep_exchange timeout 300 $B/cuda_ep_exchange_test
fi
if [ -x $B/ep_serving_test ]; then
  run ep_serving_gpu_graphs EPSERVE_TEST_DEVICE=cuda timeout 600 $B/ep_serving_test
  run ep_serving_gpu_eager EPSERVE_TEST_DEVICE=cuda EPSERVE_TEST_EAGER=1 timeout 600 \
    $B/ep_serving_test --gtest_filter='Fixtures/ExpertParallelParity.*/*_2workers_*:Fixtures/ExpertParallelParity.*/qwen3_moe_4workers_*'
fi
# NCCL communicator: the one-GPU tests run here; on a machine with N GPUs the
# NcclCommunicatorMultiGpu tests for 2..N GPUs run too (the others skip).
if [ -x $B/nccl_communicator_test ]; then
  run nccl_communicator timeout 300 $B/nccl_communicator_test
fi
exit $status
