// A mixture-of-experts feed-forward block:
//
//   x [T,H] ─router MatMul (fp32 weights)─► logits [T,E]
//           ─MoeGate (softmax, top-k, renormalise iff norm_topk_prob)─► ids, weights [T,k]
//           ─dispatcher.Dispatch─► rows [R,H] ─gate/up grouped GEMMs─► [R,M]
//           ─SiluAndMul─► ─down grouped GEMM─► [R,H] ─dispatcher.Combine─► out [T,H]
//   (Qwen2-MoE) out += sigmoid(x · shared_expert_gate) · SharedMlp(x)
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/model_config/model_description.h"
#include "kernels/ops.h"
#include "worker/models/model_tensors.h"
#include "worker/models/token_dispatcher.h"

namespace epserve::models {

struct MoeShape {
  int64_t num_experts = 0;
  int64_t top_k = 0;
  bool renormalize = false;  // norm_topk_prob (always true for Mixtral: set by the parser)
};

MoeShape MoeShapeOf(const ModelDescription& desc);

class MoeBlock {
 public:
  MoeBlock(const MoeShape& shape, const MoeWeights* weights) : shape_(shape), w_(weights) {}

  absl::Status Forward(kernels::Backend& backend, TokenDispatcher& dispatcher,
                       const kernels::Tensor& x,  // [T, H]
                       kernels::Tensor* out) const;  // [T, H]

 private:
  MoeShape shape_;
  const MoeWeights* w_;  // owned by the model
};

}  // namespace epserve::models
