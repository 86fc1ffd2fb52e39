// Paged attention on the GPU: prefill, chunked prefill and decode in one op
// (the layout and causal rule of kernels/ops.h AttentionMetadata).
//
// Contract for graph capture: the launch configuration depends only on
// host-known bounds (num_tokens, num_seqs, max_blocks_per_seq * block_size
// as the context bound), never on the device contents of the metadata; CTAs
// whose work is beyond the actual q_len / context exit early. The same
// launch therefore serves any metadata within those bounds.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

struct PagedAttentionParams {
  const float* q = nullptr;   // [num_tokens, num_q_heads * head_dim]
  const void* k_cache = nullptr;  // [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache = nullptr;  // same
  Elem cache_type = Elem::kF32;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // tensor cores: 64, 128, 256; fp32 kernel: 8, 12, 16, 24, 32, 48, 80, 96
  int64_t num_q_heads = 0;  // multiple of num_kv_heads
  const int32_t* query_start = nullptr;   // [num_seqs + 1]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  int64_t num_seqs = 0;
  int64_t num_tokens = 0;
  float scale = 0.0f;  // > 0, resolved by the caller
  float* out = nullptr;  // [num_tokens, num_q_heads * head_dim]
  uint32_t* errors = nullptr;  // device error word (kErrBlockTable)
};

// Scratch the launch needs (split-K partials); 0 allowed.
size_t PagedAttentionWorkspaceBytes(const PagedAttentionParams& p);

// Metadata problems a kernel sees (block id outside [0, num_blocks),
// context_len < q_len, context beyond the table) set kErrBlockTable and
// write zeros for the affected rows.
absl::Status PagedAttention(const PagedAttentionParams& p, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream);

}  // namespace epserve::kernels::cuda
