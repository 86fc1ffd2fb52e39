// Grouped-query self-attention of one decoder layer over its K/V pool:
//
//   x [T,H] ─q/k/v proj (+bias)─► q [T,Hq·D], k,v [T,Hkv·D]
//          ─full-width q/k norm [Hq·D]/[Hkv·D] (QkNormKind::kFull)─►
//          ─AttentionPrologue: per-head q/k norm [D] (kPerHead), rope(q, k), WriteKvCache(k, v)─►
//          ─PagedAttention(q, pool) [T,Hq·D] ─o proj (+bias)─► out [T,H]
#pragma once

#include "absl/status/status.h"
#include "common/model_config/model_description.h"
#include "kernels/ops.h"
#include "worker/models/attention/attention.h"
#include "worker/models/model_tensors.h"

namespace epserve::models {

class GqaAttention : public Attention {
 public:
  // `spec` is a kGqa spec with rope and no chunking (CreateAttention checks);
  // `norm_eps` the q/k norm eps (the model's rms_norm_eps).
  GqaAttention(const AttentionSpec& spec, float norm_eps, const AttentionWeights* weights)
      : spec_(spec), norm_eps_(norm_eps), w_(weights) {}

  // `pool` is a kKeyValue pool [num_blocks, block_size, Hkv, D].
  absl::Status Forward(kernels::Backend& backend, const StepBatch& batch,
                       const kernels::Tensor& x,  // [T, H]
                       kv_cache::KvPool& pool,
                       kernels::Tensor* out) const override;  // [T, H]

 private:
  AttentionSpec spec_;
  float norm_eps_;
  const AttentionWeights* w_;  // owned by the model
};

}  // namespace epserve::models
