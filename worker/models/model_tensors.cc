#include "worker/models/model_tensors.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model_config/tensor_spec.h"
#include "common/progress.h"
#include "common/status.h"

namespace epserve::models {
namespace {

// Where a linear layer whose kWeight entry is `spec` goes; nullptr for
// layers the decoder does not use.
kernels::LinearWeight* LinearSlot(ModelTensors& m, const TensorSpec& spec) {
  if (spec.layer < 0) return spec.role == TensorRole::kLmHead ? &m.lm_head : nullptr;
  DecoderLayerWeights& l = m.layers[spec.layer];
  switch (spec.role) {
    case TensorRole::kAttnQWeight: return &l.attention.q_proj;
    case TensorRole::kAttnKWeight: return &l.attention.k_proj;
    case TensorRole::kAttnVWeight: return &l.attention.v_proj;
    case TensorRole::kAttnOWeight: return &l.attention.o_proj;
    case TensorRole::kMlpGate: return &l.mlp.gate_proj;
    case TensorRole::kMlpUp: return &l.mlp.up_proj;
    case TensorRole::kMlpDown: return &l.mlp.down_proj;
    case TensorRole::kRouter: return &l.moe.router;
    case TensorRole::kExpertGate: return &l.moe.expert_gate[spec.expert];
    case TensorRole::kExpertUp: return &l.moe.expert_up[spec.expert];
    case TensorRole::kExpertDown: return &l.moe.expert_down[spec.expert];
    case TensorRole::kSharedExpertGateProj: return &l.moe.shared_expert.gate_proj;
    case TensorRole::kSharedExpertUpProj: return &l.moe.shared_expert.up_proj;
    case TensorRole::kSharedExpertDownProj: return &l.moe.shared_expert.down_proj;
    case TensorRole::kSharedExpertGate: return &l.moe.shared_expert_gate;
    default: return nullptr;
  }
}

// Where a tensor of `role` that is no linear layer's goes; nullptr for roles
// the decoder does not use.
kernels::Tensor* TensorSlot(ModelTensors& m, const TensorSpec& spec) {
  if (spec.layer < 0) {
    switch (spec.role) {
      case TensorRole::kEmbedding:
        return &m.embedding;
      case TensorRole::kFinalNorm:
        return &m.final_norm;
      default:
        return nullptr;
    }
  }
  DecoderLayerWeights& l = m.layers[spec.layer];
  switch (spec.role) {
    case TensorRole::kInputNorm:
      return &l.input_norm;
    case TensorRole::kPostAttnNorm:
      return &l.post_attn_norm;
    case TensorRole::kAttnQBias:
      return &l.attention.q_bias;
    case TensorRole::kAttnKBias:
      return &l.attention.k_bias;
    case TensorRole::kAttnVBias:
      return &l.attention.v_bias;
    case TensorRole::kAttnOBias:
      return &l.attention.o_bias;
    case TensorRole::kQNorm:
      return &l.attention.q_norm;
    case TensorRole::kKNorm:
      return &l.attention.k_norm;
    default:
      return nullptr;
  }
}

absl::Status Missing(const TensorSpec& spec) {
  return absl::NotFoundError(absl::StrCat("model weights: missing tensor '", spec.name, "' (",
                                          TensorRoleName(spec.role), ")"));
}

}  // namespace

absl::StatusOr<ModelTensors> BindModelTensors(const ModelDescription& desc,
                                              const weights::ModelWeights& weights,
                                              kernels::Backend& backend) {
  ModelTensors m;
  m.layers.resize(static_cast<size_t>(desc.num_layers));
  for (int i = 0; i < desc.num_layers; ++i) {
    if (desc.layers[i].feed_forward.is_moe()) {
      const size_t e = static_cast<size_t>(desc.moe.num_experts);
      m.layers[i].moe.expert_gate.resize(e);
      m.layers[i].moe.expert_up.resize(e);
      m.layers[i].moe.expert_down.resize(e);
    }
  }
  const std::vector<TensorSpec> specs = ExpectedTensors(desc);
  // Device copies read the mapped checkpoint: for a large model the time of
  // the load is here.
  ProgressLog progress(absl::StrCat("copying weights to ", backend.device().ToString()), "tensors",
                       weights.report().bytes_held, weights.report().num_tensors);
  const bool on_host = backend.device().type == kernels::DeviceType::kCpu;
  for (const TensorSpec& spec : specs) {
    switch (spec.part) {
      case LinearPart::kWeight: {
        kernels::LinearWeight* slot = LinearSlot(m, spec);
        if (slot == nullptr) continue;
        const kernels::LinearWeight* host = weights.FindLinear(spec.name);
        if (host == nullptr) {
          if (IsRoutedExpertRole(spec.role)) continue;  // another rank's expert
          return Missing(spec);
        }
        ASSIGN_OR_RETURN(*slot, kernels::LinearWeightToDevice(backend, *host));
        if (!on_host) progress.Add(host->weight.nbytes());
        break;
      }
      case LinearPart::kScales:
      case LinearPart::kZeroPoints:
        break;  // part of their layer's LinearWeight
      case LinearPart::kNone: {
        kernels::Tensor* slot = TensorSlot(m, spec);
        if (slot == nullptr) continue;
        const kernels::Tensor* host = weights.Find(spec.name);
        if (host == nullptr) {
          if (IsRoutedExpertRole(spec.role)) continue;  // another rank's expert
          return Missing(spec);
        }
        ASSIGN_OR_RETURN(*slot, backend.ToDevice(*host));
        if (!on_host) progress.Add(host->nbytes());
        break;
      }
    }
  }
  if (!on_host) progress.Finish();
  // The tied head is the embedding table: a plain [V, H] tensor.
  if (desc.tie_word_embeddings) m.lm_head = kernels::LinearWeight::Unquantized(m.embedding);
  if (!m.lm_head.defined()) {
    return absl::NotFoundError("model weights: no lm_head.weight and tie_word_embeddings is false");
  }
  return m;
}

}  // namespace epserve::models
