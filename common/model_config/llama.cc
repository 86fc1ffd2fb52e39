// LlamaForCausalLM (transformers models/llama): dense, GQA, optional biases on
// all four attention projections (`attention_bias`), rope incl. llama3 scaling.
#include "common/model_config/architecture.h"
#include "common/model_config/common_keys.h"
#include "common/status.h"

namespace epserve::model_config {
namespace {

absl::StatusOr<ModelDescription> ParseLlama(const ConfigReader& r) {
  ModelDescription d;
  CommonDefaults defaults;
  defaults.rms_norm_eps = 1e-6;
  defaults.rope_theta = 10000.0;
  defaults.max_position_embeddings = 2048;
  defaults.tie_word_embeddings = false;
  RETURN_IF_ERROR(ReadCommonKeys(r, defaults, &d));
  ASSIGN_OR_RETURN(d.intermediate_size, RequiredPositive(r, "intermediate_size"));
  ASSIGN_OR_RETURN(d.attention_bias, r.Bool("attention_bias", false));
  d.attention_out_bias = d.attention_bias;
  ASSIGN_OR_RETURN(bool mlp_bias, r.Bool("mlp_bias", false));
  if (mlp_bias) return r.Unsupported("mlp_bias", "= true is not supported");
  FillLayers(std::vector<LayerKind>(d.num_layers, LayerKind::kDense), &d);
  return d;
}

}  // namespace

const ArchitectureDef& LlamaArchitecture() {
  static const ArchitectureDef def{"LlamaForCausalLM", "llama", &ParseLlama, {}};
  return def;
}

}  // namespace epserve::model_config
