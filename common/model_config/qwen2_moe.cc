// Qwen2MoeForCausalLM (transformers models/qwen2_moe): q/k/v biases
// (`qkv_bias`, default true), routed experts of width `moe_intermediate_size`
// on the layers the Qwen MoE rule picks, dense MLP of `intermediate_size` on
// the others, and on every MoE layer a shared expert of width
// `shared_expert_intermediate_size` scaled by sigmoid(shared_expert_gate(x)).
#include "common/model_config/architecture.h"
#include "common/model_config/common_keys.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

absl::StatusOr<ModelDescription> ParseQwen2Moe(const ConfigReader& r) {
  ModelDescription d;
  RETURN_IF_ERROR(ReadQwenCommonKeys(r, /*default_head_dim=*/0, &d));
  ASSIGN_OR_RETURN(d.attention_bias, r.Bool("qkv_bias", true));
  d.attention_out_bias = false;
  ASSIGN_OR_RETURN(std::vector<LayerKind> kinds, ReadQwenMoeFeedForward(r, "num_experts", &d));
  ASSIGN_OR_RETURN(d.moe.shared_expert_intermediate_size,
                   r.RequiredInt("shared_expert_intermediate_size"));
  if (d.moe.shared_expert_intermediate_size < 0) {
    return r.Invalid("shared_expert_intermediate_size", "must be >= 0");
  }
  d.moe.shared_expert_gate = d.moe.shared_expert_intermediate_size > 0;
  FillLayers(kinds, &d);  // MoE layers: kMoeShared when the shared expert has a width
  return d;
}

}  // namespace

const ArchitectureDef& Qwen2MoeArchitecture() {
  static const ArchitectureDef def{"Qwen2MoeForCausalLM", "qwen2_moe", &ParseQwen2Moe, {}};
  return def;
}

}  // namespace epserve::model_config
