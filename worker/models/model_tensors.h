// The weights of one decoder model, bound by role from ModelWeights
// (worker/weights) and moved to the backend's device. Undefined tensors mark
// what the model does not have (biases, q/k norms, shared expert) or what
// this worker does not hold (other ranks' routed experts).
//
// Every linear layer is a kernels::LinearWeight in the format its TensorSpec
// gives (shapes below are N x K, out x in features); the model passes them to
// the linear ops as they are and never looks at the format.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config/model_description.h"
#include "kernels/ops.h"
#include "worker/weights/weight_loader.h"

namespace epserve::models {

struct AttentionWeights {
  kernels::LinearWeight q_proj, k_proj, v_proj, o_proj;  // q x H, kv x H, kv x H, H x q
  kernels::Tensor q_bias, k_bias, v_bias, o_bias;  // [q], [kv], [kv], [H] or undefined
  kernels::Tensor q_norm, k_norm;  // per head [D], full [q] / [kv], or undefined
};

struct MlpWeights {
  kernels::LinearWeight gate_proj, up_proj;  // I x H
  kernels::LinearWeight down_proj;           // H x I
};

struct MoeWeights {
  kernels::LinearWeight router;  // E x H (unquantized: float32)
  // Routed experts by global id (size E); undefined = held by another rank.
  std::vector<kernels::LinearWeight> expert_gate;  // E x (M x H)
  std::vector<kernels::LinearWeight> expert_up;    // E x (M x H)
  std::vector<kernels::LinearWeight> expert_down;  // E x (H x M)
  MlpWeights shared_expert;                        // S x H / H x S, undefined when S == 0
  kernels::LinearWeight shared_expert_gate;        // 1 x H or undefined
};

struct DecoderLayerWeights {
  kernels::Tensor input_norm;      // [H] float32
  kernels::Tensor post_attn_norm;  // [H] float32
  AttentionWeights attention;
  MlpWeights mlp;  // dense layers
  MoeWeights moe;  // MoE layers
};

struct ModelTensors {
  kernels::Tensor embedding;      // [V, H]
  kernels::Tensor final_norm;     // [H] float32
  kernels::LinearWeight lm_head;  // V x H; the embedding table when tie_word_embeddings
  std::vector<DecoderLayerWeights> layers;
};

// Binds every tensor of ExpectedTensors(desc) present in `weights` (linear
// layers as the LinearWeights `weights` assembled); a missing non-expert
// tensor is NOT_FOUND naming it.
absl::StatusOr<ModelTensors> BindModelTensors(const ModelDescription& desc,
                                              const weights::ModelWeights& weights,
                                              kernels::Backend& backend);

}  // namespace epserve::models
