// The weights of one decoder model, bound by role from ModelWeights
// (worker/weights) and moved to the backend's device. Undefined tensors mark
// what the model does not have (biases, q/k norms, shared expert) or what
// this worker does not hold (other ranks' routed experts).
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config/model_description.h"
#include "kernels/ops.h"
#include "worker/weights/weight_loader.h"

namespace epserve::models {

struct AttentionWeights {
  kernels::Tensor q_proj, k_proj, v_proj, o_proj;  // [q,H], [kv,H], [kv,H], [H,q]
  kernels::Tensor q_bias, k_bias, v_bias, o_bias;  // [q], [kv], [kv], [H] or undefined
  kernels::Tensor q_norm, k_norm;  // per head [D], full [q] / [kv], or undefined
};

struct MlpWeights {
  kernels::Tensor gate_proj, up_proj;  // [I, H]
  kernels::Tensor down_proj;           // [H, I]
};

struct MoeWeights {
  kernels::Tensor router;  // [E, H] float32
  // Routed experts by global id (size E); undefined = held by another rank.
  std::vector<kernels::Tensor> expert_gate;  // E x [M, H]
  std::vector<kernels::Tensor> expert_up;    // E x [M, H]
  std::vector<kernels::Tensor> expert_down;  // E x [H, M]
  MlpWeights shared_expert;                  // [S, H] / [H, S], undefined when S == 0
  kernels::Tensor shared_expert_gate;        // [1, H] or undefined
};

struct DecoderLayerWeights {
  kernels::Tensor input_norm;      // [H] float32
  kernels::Tensor post_attn_norm;  // [H] float32
  AttentionWeights attention;
  MlpWeights mlp;  // dense layers
  MoeWeights moe;  // MoE layers
};

struct ModelTensors {
  kernels::Tensor embedding;   // [V, H]
  kernels::Tensor final_norm;  // [H] float32
  kernels::Tensor lm_head;     // [V, H]; the embedding when tie_word_embeddings
  std::vector<DecoderLayerWeights> layers;
};

// Binds every tensor of ExpectedTensors(desc) present in `weights`; a missing
// non-expert tensor is NOT_FOUND naming it.
absl::StatusOr<ModelTensors> BindModelTensors(const ModelDescription& desc,
                                              const weights::ModelWeights& weights,
                                              kernels::Backend& backend);

}  // namespace epserve::models
