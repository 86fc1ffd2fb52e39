#include "test_configs.h"

#include "common/model_config/model_config.h"

namespace epserve::testing {

nlohmann::json SmallConfig(const std::string& architecture) {
  nlohmann::json j = {
      {"architectures", {architecture}},
      {"vocab_size", 128},
      {"hidden_size", 64},
      {"num_hidden_layers", 4},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 2},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"max_position_embeddings", 256},
      {"torch_dtype", "bfloat16"},
  };
  if (architecture == "LlamaForCausalLM" || architecture == "Qwen2ForCausalLM") {
    j["intermediate_size"] = 96;
  } else if (architecture == "Qwen3ForCausalLM") {
    j["intermediate_size"] = 96;
    j["head_dim"] = 16;  // Qwen3's own default would be 128
  } else if (architecture == "MixtralForCausalLM") {
    j["intermediate_size"] = 48;
    j["num_local_experts"] = 8;
    j["num_experts_per_tok"] = 2;
  } else if (architecture == "Qwen2MoeForCausalLM") {
    j["intermediate_size"] = 96;
    j["moe_intermediate_size"] = 32;
    j["shared_expert_intermediate_size"] = 80;
    j["num_experts"] = 8;
    j["num_experts_per_tok"] = 2;
  } else if (architecture == "Qwen3MoeForCausalLM") {
    j["intermediate_size"] = 96;
    j["moe_intermediate_size"] = 32;
    j["num_experts"] = 8;
    j["num_experts_per_tok"] = 2;
    j["head_dim"] = 16;
  } else if (architecture == "OlmoeForCausalLM") {
    j["intermediate_size"] = 32;
    j["num_experts"] = 8;
    j["num_experts_per_tok"] = 2;
  }
  return j;
}

absl::StatusOr<ModelDescription> Parse(const nlohmann::json& config) {
  return ParseModelConfig(config, "/m/config.json");
}

std::string ErrorOf(const nlohmann::json& config) {
  absl::StatusOr<ModelDescription> d = Parse(config);
  return d.ok() ? "OK" : std::string(d.status().message());
}

}  // namespace epserve::testing
