// Grouped expert GEMMs on the GPU, every expert in one launch (kernels:
// grouped_gemm.cu, grouped_gemm_gemv.cu). Semantics are kernels/ops.h's
// (GroupedExpertMatMul, GroupedExpertGateUp) and match the CPU reference
// (kernels/cpu/moe.cc).
//
// Graph capture: launch configurations depend only on host-known sizes
// (R, E, N, K), never on expert_offsets in device memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// Scratch for GroupedExpertMatMul; 0 allowed.
size_t GroupedExpertMatMulWorkspaceBytes(int64_t num_rows, int64_t k, int64_t n,
                                         int64_t num_experts, Elem weight_type);

// out [R, N] float32: rows of expert e (expert_offsets[e]..[e+1], device) times
// weights[e]^T, weights[e] [N, K] of `weight_type` at the device pointer
// expert_weights[e] (a device array of E pointers; null = expert not held:
// rows routed to it set kErrMissingExpert and get zeros). rows [R, K]
// float32. fp32 accumulation; bf16/fp16 weights use tensor cores (rows
// rounded to the weight type), float32 weights compute in fp32. No launch per
// expert: one launch covers every expert. Only rows [0, expert_offsets[E])
// of rows and out are touched; expert_offsets[E] may be below R (a receiver
// sizes rows by capacity), the rows past it are neither read nor written.
absl::Status GroupedExpertMatMul(const float* rows, int64_t num_rows, int64_t k,
                                 const int32_t* expert_offsets, int64_t num_experts,
                                 const void* const* expert_weights, Elem weight_type, int64_t n,
                                 float* out, void* workspace, size_t workspace_bytes,
                                 uint32_t* errors, cudaStream_t stream);

// Fused first half of the experts' SwiGLU MLPs, one launch for every expert:
// out [R, N] = silu(rows · gate[e]^T) * (rows · up[e]^T) for the rows of
// expert e. gate_weights / up_weights are device arrays of E pointers (null
// together: expert not held; rows routed to it set kErrMissingExpert and get
// zeros); the rest as GroupedExpertMatMul. Each weight tile of gate and up is
// read once.
size_t GroupedExpertGateUpWorkspaceBytes(int64_t num_rows, int64_t k, int64_t n,
                                         int64_t num_experts, Elem weight_type);
absl::Status GroupedExpertGateUp(const float* rows, int64_t num_rows, int64_t k,
                                 const int32_t* expert_offsets, int64_t num_experts,
                                 const void* const* gate_weights, const void* const* up_weights,
                                 Elem weight_type, int64_t n, float* out, void* workspace,
                                 size_t workspace_bytes, uint32_t* errors, cudaStream_t stream);

}  // namespace epserve::kernels::cuda
