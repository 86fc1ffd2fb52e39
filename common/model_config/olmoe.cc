// OlmoeForCausalLM (transformers models/olmoe): every layer MoE, experts of
// width `intermediate_size`, q/k RMSNorm over the whole projection (all heads
// at once), optional `attention_bias` on all four projections, optional
// `clip_qkv`.
#include "common/model_config/architecture.h"
#include "common/model_config/common_keys.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

absl::StatusOr<ModelDescription> ParseOlmoe(const ConfigReader& r) {
  ModelDescription d;
  CommonDefaults defaults;
  defaults.rms_norm_eps = 1e-5;
  defaults.rope_theta = 10000.0;
  defaults.max_position_embeddings = 4096;
  defaults.tie_word_embeddings = false;
  RETURN_IF_ERROR(ReadCommonKeys(r, defaults, &d));
  ASSIGN_OR_RETURN(d.attention_bias, r.Bool("attention_bias", false));
  d.attention_out_bias = d.attention_bias;
  d.qk_norm = QkNormKind::kFull;
  ASSIGN_OR_RETURN(d.clip_qkv, r.OptionalDouble("clip_qkv"));
  if (d.clip_qkv && *d.clip_qkv <= 0) return r.Invalid("clip_qkv", "must be > 0 or null");
  RETURN_IF_ERROR(ReadRoutedExperts(r, "num_experts", &d.moe));
  ASSIGN_OR_RETURN(d.moe.moe_intermediate_size, RequiredPositive(r, "intermediate_size"));
  ASSIGN_OR_RETURN(d.moe.routing.renormalize, r.Bool("norm_topk_prob", false));
  d.intermediate_size = 0;  // no dense layer
  FillLayers(std::vector<LayerKind>(d.num_layers, LayerKind::kMoe), &d);
  return d;
}

}  // namespace

const ArchitectureDef& OlmoeArchitecture() {
  static const ArchitectureDef def{"OlmoeForCausalLM", "olmoe", &ParseOlmoe, {}};
  return def;
}

}  // namespace epserve::model_config
