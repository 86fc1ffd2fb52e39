// Qwen3ForCausalLM (transformers models/qwen3): dense, GQA, per-head q/k
// RMSNorm, head_dim defaulting to 128 (not hidden/heads), optional
// `attention_bias` on all four projections. Never reads a MoE key: Qwen3
// checkpoints carry none, and reading one is how other servers crashed.
#include "common/model_config/architecture.h"
#include "common/model_config/common_keys.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

absl::StatusOr<ModelDescription> ParseQwen3(const ConfigReader& r) {
  ModelDescription d;
  // Qwen3Config.head_dim defaults to 128.
  RETURN_IF_ERROR(ReadQwenCommonKeys(r, /*default_head_dim=*/128, &d));
  ASSIGN_OR_RETURN(d.intermediate_size, RequiredPositive(r, "intermediate_size"));
  ASSIGN_OR_RETURN(d.attention_bias, r.Bool("attention_bias", false));
  d.attention_out_bias = d.attention_bias;
  d.qk_norm = QkNormKind::kPerHead;
  FillLayers(std::vector<LayerKind>(d.num_layers, LayerKind::kDense), &d);
  return d;
}

}  // namespace

const ArchitectureDef& Qwen3Architecture() {
  static const ArchitectureDef def{"Qwen3ForCausalLM", "qwen3", &ParseQwen3, {}};
  return def;
}

}  // namespace epserve::model_config
