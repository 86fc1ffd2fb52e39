// A mixture-of-experts feed-forward block:
//
//   x [T,H] ─router MatMul (fp32 weights)─► logits [T,E]
//           ─MoeGate (RoutingParams: softmax, top-k, renormalise?)─► ids, weights [T,k]
//           ─dispatcher.Dispatch─► rows [R,H] ─gate/up grouped GEMMs─► [R,M]
//           ─SiluAndMul─► ─down grouped GEMM─► [R,H] ─dispatcher.Combine─► out [T,H]
//   (Qwen2-MoE) out += sigmoid(x · shared_expert_gate) · SharedMlp(x)
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/model_config/model_description.h"
#include "kernels/ops.h"
#include "worker/models/model_tensors.h"
#include "worker/moe/token_dispatcher.h"

namespace epserve::moe {

struct MoeShape {
  int64_t num_experts = 0;
  RoutingParams routing;  // k = routing.top_k
};

// The shape of a MoE layer (kMoe or kMoeShared feed-forward spec).
MoeShape MoeShapeOf(const FeedForwardSpec& spec);

class MoeBlock {
 public:
  MoeBlock(const MoeShape& shape, const models::MoeWeights* weights) : shape_(shape), w_(weights) {}

  absl::Status Forward(kernels::Backend& backend, TokenDispatcher& dispatcher,
                       const kernels::Tensor& x,  // [T, H]
                       kernels::Tensor* out) const;  // [T, H]

  // Expert parallelism, a step in which this rank has no tokens: it still
  // takes part in the dispatcher's collectives, and its experts compute the
  // rows other ranks route to them.
  absl::Status ForwardNoTokens(kernels::Backend& backend, TokenDispatcher& dispatcher,
                               int64_t hidden) const;

 private:
  // Dispatch → grouped expert GEMMs → Combine into out [T, H].
  absl::Status RunExperts(kernels::Backend& backend, TokenDispatcher& dispatcher,
                          const kernels::Tensor& x, const kernels::Tensor& topk_ids,
                          const kernels::Tensor& topk_weights, kernels::Tensor* out) const;
  // out += the shared expert (Qwen2-MoE: gated by sigmoid(x · shared_expert_gate)).
  absl::Status AddSharedExpert(kernels::Backend& backend, const kernels::Tensor& x,
                               kernels::Tensor* out) const;

  MoeShape shape_;
  const models::MoeWeights* w_;  // owned by the model
};

}  // namespace epserve::moe
