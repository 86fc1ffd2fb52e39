// Rotary position embedding parameters: what the config parser reads into the
// model description and what the rope kernels take. Plain data, shared by
// common/model_config (which produces it) and kernels/ (which computes the
// frequencies from it, kernels/ops.h ComputeRopeFrequencies).
#pragma once

#include <cstdint>

namespace epserve {

enum class RopeType { kDefault, kLinear, kLlama3, kYarn };

const char* RopeTypeName(RopeType type);  // "default", "linear", "llama3", "yarn"

enum class RopeLayout {
  kNeox,         // rotate-half: pairs (i, i + D/2) (HF Llama/Qwen/Mixtral/OLMoE)
  kInterleaved,  // pairs (2i, 2i + 1) (GPT-J / Meta checkpoints)
};

// Rope parameters as transformers' modeling_rope_utils reads them, resolved
// by the config parser (the kernels invent no defaults except where noted).
// The rotary dimension is the full head_dim. Every supported architecture
// rotates halves (kNeox).
struct RopeConfig {
  RopeType type = RopeType::kDefault;
  RopeLayout layout = RopeLayout::kNeox;
  double theta = 10000.0;
  double factor = 1.0;            // linear, llama3, yarn: the context extension factor
  double low_freq_factor = 1.0;   // llama3: frequency band edges
  double high_freq_factor = 4.0;  // llama3
  // llama3, yarn (required > 0 there): the pre-training context length (yarn:
  // max_position_embeddings when the config omits it); 0 elsewhere.
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;      // yarn
  double beta_slow = 1.0;       // yarn
  double mscale = 0.0;          // yarn; 0 = unset
  double mscale_all_dim = 0.0;  // yarn; 0 = unset
  // yarn: multiplies cos and sin. <= 0 = unset: mscale ratio when both
  // mscales are set, else 0.1*ln(factor)+1 (1 when factor <= 1). Other
  // types: always 1.
  double attention_factor = 0.0;
  bool yarn_truncate = true;  // yarn: floor/ceil the correction range
};

}  // namespace epserve
