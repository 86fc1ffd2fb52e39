// Qwen2ForCausalLM (transformers models/qwen2): dense, GQA, biases on q/k/v
// (always; o_proj has none).
#include "common/model_config/architecture.h"
#include "common/model_config/common_keys.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

absl::StatusOr<ModelDescription> ParseQwen2(const ConfigReader& r) {
  ModelDescription d;
  RETURN_IF_ERROR(ReadQwenCommonKeys(r, /*default_head_dim=*/0, &d));
  ASSIGN_OR_RETURN(d.intermediate_size, RequiredPositive(r, "intermediate_size"));
  d.attention_bias = true;
  d.attention_out_bias = false;
  FillLayers(std::vector<LayerKind>(d.num_layers, LayerKind::kDense), &d);
  return d;
}

}  // namespace

const ArchitectureDef& Qwen2Architecture() {
  static const ArchitectureDef def{"Qwen2ForCausalLM", "qwen2", &ParseQwen2, {}};
  return def;
}

}  // namespace epserve::model_config
