// Elementwise and row-wise kernels: casts, bias, embedding, RMSNorm (plain,
// fused residual add, per head), rope, SiLU-and-mul, add, sigmoid-gated add,
// paged KV cache writes and dummy weight fill. Activations are float32 and
// contiguous row-major; `Elem` is the storage type of weights / KV cache.
// Semantics are those of the op interface (kernels/ops.h) and the CPU
// reference (kernels/cpu); shapes are checked at the op boundary already.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// dst[i] = x[i] rounded to `dst_type` (round to nearest even).
absl::Status CastFromF32(const float* x, int64_t n, Elem dst_type, void* dst, cudaStream_t stream);

// y[r, j] += bias[j]; y [rows, n] float32, bias [n] of `bias_type`.
absl::Status AddBias(float* y, const void* bias, Elem bias_type, int64_t rows, int64_t n,
                     cudaStream_t stream);

// out[t] = table[ids[t]] widened to float32. An id outside [0, vocab) sets
// kErrEmbeddingId and writes a zero row.
absl::Status Embedding(const int32_t* ids, int64_t num_tokens, const void* table, Elem table_type,
                       int64_t vocab, int64_t hidden, float* out, uint32_t* errors,
                       cudaStream_t stream);

// residual == nullptr: y = x * rsqrt(mean(x^2) + eps) * w per row.
// Otherwise: residual += x; y = RmsNorm(residual). y may alias x (not
// residual). fp32 throughout. x, y, residual [rows, hidden]; w [hidden].
absl::Status RmsNorm(const float* x, float* residual, const float* w, float eps, int64_t rows,
                     int64_t hidden, float* y, cudaStream_t stream);

// In place, every `head_dim`-wide segment of x [num_segments * head_dim]
// normalised with w [head_dim].
absl::Status HeadRmsNorm(float* x, const float* w, float eps, int64_t num_segments,
                         int64_t head_dim, cudaStream_t stream);

// Rotates q [T, q_heads*D] and k [T, k_heads*D] in place by positions[t].
// inv_freq [D/2] (device), cos/sin multiplied by attention_factor. neox:
// pairs (i, i + D/2); otherwise pairs (2i, 2i+1). Angles as the CPU
// reference: float(position) * inv_freq[i] in float32, cos/sin of that
// angle evaluated in double and rounded to float32 (so the table is the
// CPU's, bit for bit), times attention_factor in float32; the rotation
// products and sums are rounded one by one (no fma), as on the CPU. A
// negative position sets kErrPosition and leaves the row unrotated.
absl::Status Rope(const float* inv_freq, float attention_factor, bool neox, int64_t head_dim,
                  const int32_t* positions, int64_t num_tokens, float* q, int64_t q_heads,
                  float* k, int64_t k_heads, uint32_t* errors, cudaStream_t stream);

// out = silu(gate) * up, [rows, width]. up == nullptr: gate is packed
// [rows, 2*width] as [gate | up]. out may alias gate or up (not packed).
absl::Status SiluAndMul(const float* gate, const float* up, int64_t rows, int64_t width,
                        float* out, cudaStream_t stream);

// out = a + b over n elements; out may alias a or b.
absl::Status Add(const float* a, const float* b, int64_t n, float* out, cudaStream_t stream);

// out[t, :] += sigmoid(gate_logit[t]) * x[t, :]; x, out [rows, hidden].
absl::Status SigmoidGateMulAdd(const float* gate_logit, const float* x, int64_t rows,
                               int64_t hidden, float* out, cudaStream_t stream);

// Token t's k/v rows [width] (= Hkv*D) go to cache slot slots[t] of
// k_cache/v_cache [num_slots, width] (cache_type). -1 skips the token; any
// other slot outside [0, num_slots) sets kErrKvSlot and is skipped.
absl::Status WriteKvCache(const float* k, const float* v, const int32_t* slots, int64_t num_tokens,
                          int64_t width, int64_t num_slots, Elem cache_type, void* k_cache,
                          void* v_cache, uint32_t* errors, cudaStream_t stream);

// Dummy weights, bit-identical to the host loader's FillDummy: element i is
// 1.0 when `ones`, else (2u - 1) * half_width with u = (z >> 40) / 2^24 and
// z = SplitMix64 output for state state0 + (i + 1) * 0x9E3779B97F4A7C15,
// rounded to `type` (round to nearest even).
absl::Status FillDummy(void* dst, Elem type, int64_t n, uint64_t state0, float half_width,
                       bool ones, cudaStream_t stream);

}  // namespace epserve::kernels::cuda
