// Internal: readers for the keys several architectures share. Each
// architecture file calls these with its own defaults, then reads its own keys.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model_config/config_reader.h"
#include "common/model_config/model_description.h"

namespace epserve::model_config {

// An architecture's defaults for keys its config.json may omit (the values
// transformers' configuration_<arch>.py uses).
struct CommonDefaults {
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  int64_t head_dim = 0;  // 0: hidden_size / num_attention_heads
};

// Reads what every supported architecture has:
//   required: vocab_size, hidden_size, num_hidden_layers, num_attention_heads
//   optional: num_key_value_heads (= num_attention_heads), head_dim, rms_norm_eps,
//             max_position_embeddings, tie_word_embeddings, hidden_act ("silu" only),
//             rope (ReadRope), dtype / torch_dtype, quantization_config,
//             bos_token_id, eos_token_id
// and checks the attention shape (heads divisible by kv heads, positive sizes).
absl::Status ReadCommonKeys(const ConfigReader& reader, const CommonDefaults& defaults,
                            ModelDescription* desc);

// v5 `rope_parameters` {rope_type, rope_theta, factor, ...} when present, else
// v4 `rope_theta` + `rope_scaling` {rope_type | type, factor, ...}.
absl::Status ReadRope(const ConfigReader& reader, double default_theta,
                      int64_t max_position_embeddings, RopeConfig* rope);

// `quantization_config`, absent -> kNone.
absl::Status ReadQuantization(const ConfigReader& reader, QuantizationParams* quant);

// Qwen2-MoE / Qwen3-MoE layer rule: layer i is MoE iff i is not in
// mlp_only_layers, num_experts > 0 and (i + 1) % decoder_sparse_step == 0.
// Reads decoder_sparse_step (default 1) and mlp_only_layers (default []).
absl::StatusOr<std::vector<LayerKind>> ReadQwenMoeLayerKinds(const ConfigReader& reader,
                                                             int num_layers, int num_experts);

// The feed-forward part shared by Qwen2-MoE and Qwen3-MoE: routed experts
// (count under `num_experts_key`, num_experts_per_tok), moe_intermediate_size,
// norm_topk_prob (default false) as moe.routing.renormalize, and
// intermediate_size when some layer is dense. Returns the layer kinds by the
// Qwen MoE rule (for FillLayers).
absl::StatusOr<std::vector<LayerKind>> ReadQwenMoeFeedForward(const ConfigReader& reader,
                                                              const char* num_experts_key,
                                                              ModelDescription* desc);

// Reads the routed-expert count under `num_experts_key` (required, > 0) and
// num_experts_per_tok (required, 1..num_experts) into moe: routing is softmax
// top-k, renormalize false (the caller sets it), no bias, groups or scaling.
absl::Status ReadRoutedExperts(const ConfigReader& reader, const char* num_experts_key,
                               MoeParams* moe);

// Qwen family (Qwen2, Qwen2-MoE, Qwen3, Qwen3-MoE): ReadCommonKeys with the
// defaults their transformers configs share (rms_norm_eps 1e-6, rope_theta
// 10000, max_position_embeddings 32768, untied embeddings; head_dim as given,
// 0 = hidden_size / num_attention_heads), and `use_sliding_window` (default
// false) must be false: sliding window attention is not supported.
absl::Status ReadQwenCommonKeys(const ConfigReader& reader, int64_t default_head_dim,
                                ModelDescription* out);

// Layer specs from the model-wide fields an architecture has read.
// GqaAttention: grouped-query attention with rope (every layer of today's
// architectures). DenseFeedForward: the SwiGLU MLP of intermediate_size.
// MoeFeedForward: routed experts with moe.routing, kMoeShared when
// moe.shared_expert_intermediate_size > 0.
AttentionSpec GqaAttention(const ModelDescription& desc);
FeedForwardSpec DenseFeedForward(const ModelDescription& desc);
FeedForwardSpec MoeFeedForward(const ModelDescription& desc);

// desc->layers: one layer per kind, GqaAttention and DenseFeedForward or
// MoeFeedForward. Called last, once every model-wide field is read.
void FillLayers(const std::vector<LayerKind>& kinds, ModelDescription* desc);

// Reads a size that must be > 0 (required).
absl::StatusOr<int64_t> RequiredPositive(const ConfigReader& reader, absl::string_view key);

}  // namespace epserve::model_config
