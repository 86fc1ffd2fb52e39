// Qwen2ForCausalLM (transformers models/qwen2): dense, GQA, biases on q/k/v
// (always; o_proj has none).
#include "common/model_config/architecture.h"
#include "common/model_config/common_keys.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

absl::StatusOr<ModelDescription> ParseQwen2(const ConfigReader& r) {
  ModelDescription d;
  CommonDefaults defaults;
  defaults.rms_norm_eps = 1e-6;
  defaults.rope_theta = 10000.0;
  defaults.max_position_embeddings = 32768;
  defaults.tie_word_embeddings = false;
  RETURN_IF_ERROR(ReadCommonKeys(r, defaults, &d));
  RETURN_IF_ERROR(RejectQwenSlidingWindow(r));
  ASSIGN_OR_RETURN(d.intermediate_size, RequiredPositive(r, "intermediate_size"));
  d.attention_bias = true;
  d.attention_out_bias = false;
  d.layer_kinds.assign(d.num_layers, LayerKind::kDense);
  return d;
}

}  // namespace

const ArchitectureDef& Qwen2Architecture() {
  static const ArchitectureDef def{"Qwen2ForCausalLM", "qwen2", &ParseQwen2, {}};
  return def;
}

}  // namespace epserve::model_config
