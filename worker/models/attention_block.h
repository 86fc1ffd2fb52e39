// Self-attention of one decoder layer over the paged KV cache:
//
//   x [T,H] ─q/k/v proj (+bias)─► q [T,Hq·D], k,v [T,Hkv·D]
//          ─full-width q/k norm [Hq·D]/[Hkv·D] (OLMoE only)─►
//          ─AttentionPrologue: per-head q/k norm [D] (Qwen3 only), rope(q, k), WriteKvCache(k, v)─►
//          ─PagedAttention(q, cache) [T,Hq·D] ─o proj (+bias)─► out [T,H]
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/model_config/model_description.h"
#include "kernels/ops.h"
#include "worker/models/model_tensors.h"
#include "worker/models/step_batch.h"

namespace epserve::models {

// The kernels' rope parameters for a description's (already resolved) ones.
kernels::RopeConfig ToKernelRope(const RopeParams& rope);

struct AttentionShape {
  int64_t num_heads = 0;     // Hq
  int64_t num_kv_heads = 0;  // Hkv
  int64_t head_dim = 0;      // D
  QkNormKind qk_norm = QkNormKind::kNone;
  float norm_eps = 1e-6f;  // q/k norm eps (the model's rms_norm_eps)
  kernels::RopeConfig rope;
};

AttentionShape AttentionShapeOf(const ModelDescription& desc);

class AttentionBlock {
 public:
  AttentionBlock(const AttentionShape& shape, const AttentionWeights* weights)
      : shape_(shape), w_(weights) {}

  // `x` is the normed hidden state; k_cache/v_cache this layer's pools.
  absl::Status Forward(kernels::Backend& backend, const StepBatch& batch,
                       const kernels::Tensor& x,  // [T, H]
                       kernels::Tensor* k_cache, kernels::Tensor* v_cache,
                       kernels::Tensor* out) const;  // [T, H]

 private:
  AttentionShape shape_;
  const AttentionWeights* w_;  // owned by the model
};

}  // namespace epserve::models
