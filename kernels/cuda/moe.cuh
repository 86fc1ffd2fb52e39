// MoE routing on the GPU: gate softmax + top-k, permutation of token rows
// into expert-major order, weighted un-permutation (the grouped expert GEMMs
// between the two: grouped_gemm.cuh). Semantics are kernels/ops.h's (MoeGate,
// MoePermute, MoeUnpermute) and match the CPU reference (kernels/cpu/moe*.cc).
//
// Graph capture: launch configurations depend only on host-known sizes
// (T, k, E, H), never on routing results in device memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// router_logits [T, E] float32 -> topk_ids [T, k] int32, topk_weights [T, k]
// float32: softmax in fp32, the k most probable (ties: lower id), weights
// renormalised over the k when `renormalize`. Non-finite rule of ops.h.
absl::Status MoeGate(const float* router_logits, int64_t num_tokens, int64_t num_experts,
                     int64_t top_k, bool renormalize, int32_t* topk_ids, float* topk_weights,
                     cudaStream_t stream);

// Scratch for MoePermute with R = T*k assignments and E experts.
size_t MoePermuteWorkspaceBytes(int64_t num_assignments, int64_t num_experts);

// hidden [T, H] -> rows [T*k, H] grouped by expert (ascending assignment order
// within an expert), expert_offsets [E+1], permuted_to_assignment [T*k],
// assignment_to_permuted [T*k]. An id outside [0, E) sets kErrExpertId (the
// assignment is then placed as expert E-1 so every output stays defined).
absl::Status MoePermute(const float* hidden, const int32_t* topk_ids, int64_t num_tokens,
                        int64_t top_k, int64_t hidden_size, int64_t num_experts, float* rows,
                        int32_t* expert_offsets, int32_t* permuted_to_assignment,
                        int32_t* assignment_to_permuted, void* workspace, size_t workspace_bytes,
                        uint32_t* errors, cudaStream_t stream);

// out[t] = sum_j topk_weights[t, j] * expert_out[assignment_to_permuted[t*k+j]],
// j ascending, fp32. expert_out [T*k, H], out [T, H].
absl::Status MoeUnpermute(const float* expert_out, const float* topk_weights,
                          const int32_t* assignment_to_permuted, int64_t num_tokens,
                          int64_t top_k, int64_t hidden_size, float* out, cudaStream_t stream);

}  // namespace epserve::kernels::cuda
