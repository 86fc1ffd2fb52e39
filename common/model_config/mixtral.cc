// MixtralForCausalLM (transformers models/mixtral): every layer MoE,
// `num_local_experts` experts of width `intermediate_size`, softmax -> top-k ->
// renormalise (always), no shared expert, no attention biases. Experts are
// block_sparse_moe.experts.{e}.w1 (gate) / w3 (up) / w2 (down).
#include "common/model_config/architecture.h"
#include "common/model_config/common_keys.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

absl::StatusOr<ModelDescription> ParseMixtral(const ConfigReader& r) {
  ModelDescription d;
  CommonDefaults defaults;
  defaults.rms_norm_eps = 1e-5;
  defaults.rope_theta = 1e6;
  defaults.max_position_embeddings = 4096 * 32;
  defaults.tie_word_embeddings = false;
  RETURN_IF_ERROR(ReadCommonKeys(r, defaults, &d));
  RETURN_IF_ERROR(ReadRoutedExperts(r, "num_local_experts", &d.moe));
  ASSIGN_OR_RETURN(d.moe.moe_intermediate_size, RequiredPositive(r, "intermediate_size"));
  d.moe.routing.renormalize = true;
  d.intermediate_size = 0;  // no dense layer
  if (r.Has("sliding_window")) {
    ASSIGN_OR_RETURN(int64_t window, RequiredPositive(r, "sliding_window"));
    d.sliding_window = window;
  }
  FillLayers(std::vector<LayerKind>(d.num_layers, LayerKind::kMoe), &d);
  return d;
}

}  // namespace

const ArchitectureDef& MixtralArchitecture() {
  static const ArchitectureDef def{"MixtralForCausalLM", "mixtral", &ParseMixtral,
                                   ExpertNaming{"block_sparse_moe", "w1", "w3", "w2"}};
  return def;
}

}  // namespace epserve::model_config
