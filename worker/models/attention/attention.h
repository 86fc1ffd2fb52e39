// The attention of one decoder layer, as the decoder calls it: one
// implementation per AttentionKind (common/model_config/model_description.h),
// created by CreateAttention from the layer's spec.
//
//   x [T,H] (normed hidden states of the step's tokens)
//     ─Attention::Forward(batch, this layer's KV pool)─► out [T,H]
//   (the new tokens' cache entries are written to the pool on the way)
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config/model_description.h"
#include "kernels/ops.h"
#include "worker/kv_cache/kv_cache.h"
#include "worker/models/model_tensors.h"
#include "worker/models/step_batch.h"

namespace epserve::models {

class Attention {
 public:
  virtual ~Attention() = default;

  // `pool` is this layer's pool, of the kind KvPoolFor(spec) gives; the
  // positions, slots and block tables are the batch's.
  virtual absl::Status Forward(kernels::Backend& backend, const StepBatch& batch,
                               const kernels::Tensor& x,  // [T, H]
                               kv_cache::KvPool& pool,
                               kernels::Tensor* out) const = 0;  // [T, H]
};

// The attention of decoder layer `layer` (for error messages) with `spec`,
// reading `weights` (owned by the model, outliving the result); `norm_eps`
// is the q/k norm eps. UNIMPLEMENTED naming the layer and the kind or field
// for a spec the worker does not run (today: anything but GQA with rope and
// no chunking).
absl::StatusOr<std::unique_ptr<Attention>> CreateAttention(const AttentionSpec& spec, int layer,
                                                           float norm_eps,
                                                           const AttentionWeights* weights);

// What a layer with `spec` caches per token: K and V per kv head (kGqa), or
// one latent of latent_dim (kMla).
kv_cache::KvPoolSpec KvPoolFor(const AttentionSpec& spec);

// The pools of every layer of `desc` (KvPoolFor of each layer's attention).
kv_cache::KvCacheShape KvCacheShapeOf(const ModelDescription& desc);

}  // namespace epserve::models
