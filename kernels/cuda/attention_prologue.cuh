// The attention prologue of one layer in one kernel (Backend::AttentionPrologue):
//
//   q, k [T, heads*D] ──per-head RMSNorm (optional)──► rope ──► q, k in place
//                                                           └─► k_cache[slot], v_cache[slot] ◄── v
//
// Each step rounds as the separate kernels do (HeadRmsNorm's warp-per-head
// norm, RopeKernel's rotation, WriteKvCache's narrowing; the device code is
// shared through elementwise_device.cuh), so the result equals HeadRmsNorm +
// Rope + WriteKvCache on this backend bit for bit. Shapes were checked at
// the op boundary (kernels/ops.cc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

struct AttentionPrologueParams {
  float* q = nullptr;              // [T, q_heads * D], updated in place
  float* k = nullptr;              // [T, kv_heads * D], updated in place
  const float* v = nullptr;        // [T, kv_heads * D]
  const float* q_norm = nullptr;   // [D]; nullptr: q is not normalised
  const float* k_norm = nullptr;   // [D]; nullptr: k is not normalised
  float eps = 0.0f;
  const float* inv_freq = nullptr;  // [D / 2], device
  float attention_factor = 1.0f;
  bool neox = true;                   // pairs (i, i + D/2); else (2i, 2i + 1)
  const int32_t* positions = nullptr;  // [T]
  const int32_t* slots = nullptr;      // [T]: -1 skips the token's cache write
  int64_t num_tokens = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t num_slots = 0;  // rows of the caches
  Elem cache_type = Elem::kF32;
  void* k_cache = nullptr;  // [num_slots, kv_heads * D] of cache_type
  void* v_cache = nullptr;
  uint32_t* errors = nullptr;  // the device error word
};

// Whether the single kernel takes these sizes and pointers: head_dim a
// multiple of 8 (neox) or 4 (interleaved) and at most 512 (one warp per
// head, as HeadRmsNorm does it), activations and norm weights 16-byte
// aligned, caches aligned to 4 elements. Host-only, so the decision is the
// same at every replay of a captured graph. Otherwise the caller runs the
// separate kernels.
bool AttentionPrologueFusable(const AttentionPrologueParams& p);

// One launch, no host synchronisation; launch shape depends only on T and
// the head counts. A negative position sets kErrProloguePosition and leaves
// the token untouched (no norm, rope or cache write); a slot outside
// [-1, num_slots) sets kErrPrologueSlot and skips the token's cache write
// (q and k are still normalised and rotated). InvalidArgument when
// !AttentionPrologueFusable(p).
absl::Status AttentionPrologue(const AttentionPrologueParams& p, cudaStream_t stream);

}  // namespace epserve::kernels::cuda
