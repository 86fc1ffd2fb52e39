// Qwen3MoeForCausalLM (transformers models/qwen3_moe): per-head q/k RMSNorm,
// optional `attention_bias`, routed experts of width `moe_intermediate_size` on
// the layers the Qwen MoE rule picks, dense MLP of `intermediate_size` on the
// others, no shared expert.
#include "common/model_config/architecture.h"
#include "common/model_config/common_keys.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

absl::StatusOr<ModelDescription> ParseQwen3Moe(const ConfigReader& r) {
  ModelDescription d;
  RETURN_IF_ERROR(ReadQwenCommonKeys(r, /*default_head_dim=*/0, &d));
  ASSIGN_OR_RETURN(d.attention_bias, r.Bool("attention_bias", false));
  d.attention_out_bias = d.attention_bias;
  d.qk_norm = QkNormKind::kPerHead;
  // transformers v4 writes `num_experts`, v5 `num_local_experts`.
  const char* experts_key =
      !r.Has("num_experts") && r.Has("num_local_experts") ? "num_local_experts" : "num_experts";
  ASSIGN_OR_RETURN(std::vector<LayerKind> kinds, ReadQwenMoeFeedForward(r, experts_key, &d));
  FillLayers(kinds, &d);
  return d;
}

}  // namespace

const ArchitectureDef& Qwen3MoeArchitecture() {
  static const ArchitectureDef def{"Qwen3MoeForCausalLM", "qwen3_moe", &ParseQwen3Moe, {}};
  return def;
}

}  // namespace epserve::model_config
