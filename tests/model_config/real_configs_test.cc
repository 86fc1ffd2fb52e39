// The real-shape configs shipped in tools/configs parse, and their
// normalised descriptions match the public facts of each model (model cards,
// papers). Parameter counts are checked within 2 % of the published figures.
#include <cmath>
#include <string>

#include "common/model_config/model_config.h"
#include "common/model_config/tensor_spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace epserve {
namespace {

ModelDescription Load(const std::string& name) {
  absl::StatusOr<ModelDescription> d =
      LoadModelConfig(std::string(EPSERVE_REAL_CONFIGS_DIR) + "/" + name);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : ModelDescription();
}

// |actual / published - 1| <= 2 %.
void ExpectNear(int64_t actual, double published, const char* what) {
  EXPECT_NEAR(static_cast<double>(actual) / published, 1.0, 0.02)
      << what << ": " << actual << " vs published " << published;
}

TEST(RealConfigsTest, Qwen3_30B_A3B) {
  ModelDescription d = Load("qwen3-30b-a3b");
  EXPECT_EQ(d.architecture, "Qwen3MoeForCausalLM");
  EXPECT_EQ(d.num_layers, 48);
  EXPECT_EQ(d.num_moe_layers(), 48);
  EXPECT_EQ(d.hidden_size, 2048);
  EXPECT_EQ(d.num_heads, 32);
  EXPECT_EQ(d.num_kv_heads, 4);
  EXPECT_EQ(d.head_dim, 128);  // explicit: hidden / heads would be 64
  EXPECT_EQ(d.moe.num_experts, 128);
  EXPECT_EQ(d.moe.routing.top_k, 8);
  EXPECT_EQ(d.moe.moe_intermediate_size, 768);
  EXPECT_TRUE(d.moe.routing.renormalize);
  EXPECT_EQ(d.moe.shared_expert_intermediate_size, 0);
  EXPECT_EQ(d.qk_norm, QkNormKind::kPerHead);
  EXPECT_EQ(d.vocab_size, 151936);
  EXPECT_DOUBLE_EQ(d.rope.theta, 1e6);
  EXPECT_EQ(d.dtype, DataType::kBFloat16);
  EXPECT_FALSE(d.tie_word_embeddings);
  ExpectNear(d.total_params(), 30.5e9, "total");
  ExpectNear(d.active_params_per_token(), 3.3e9, "active");
  EXPECT_EQ(PackedExpertTensors(d).size(), 48u);
}

TEST(RealConfigsTest, Mixtral_8x7B) {
  ModelDescription d = Load("mixtral-8x7b-v0.1");
  EXPECT_EQ(d.architecture, "MixtralForCausalLM");
  EXPECT_EQ(d.num_layers, 32);
  EXPECT_EQ(d.num_moe_layers(), 32);
  EXPECT_EQ(d.hidden_size, 4096);
  EXPECT_EQ(d.num_heads, 32);
  EXPECT_EQ(d.num_kv_heads, 8);
  EXPECT_EQ(d.head_dim, 128);
  EXPECT_EQ(d.moe.num_experts, 8);
  EXPECT_EQ(d.moe.routing.top_k, 2);
  EXPECT_EQ(d.moe.moe_intermediate_size, 14336);
  EXPECT_TRUE(d.moe.routing.renormalize);
  EXPECT_EQ(d.vocab_size, 32000);
  EXPECT_EQ(d.max_position_embeddings, 32768);
  EXPECT_FALSE(d.sliding_window.has_value());
  EXPECT_THAT(d.bos_token_ids, ::testing::ElementsAre(1));
  EXPECT_THAT(d.eos_token_ids, ::testing::ElementsAre(2));
  ExpectNear(d.total_params(), 46.7e9, "total");
  ExpectNear(d.active_params_per_token(), 12.9e9, "active");
}

TEST(RealConfigsTest, Qwen2_57B_A14B) {
  ModelDescription d = Load("qwen2-57b-a14b");
  EXPECT_EQ(d.architecture, "Qwen2MoeForCausalLM");
  EXPECT_EQ(d.num_layers, 28);
  EXPECT_EQ(d.num_moe_layers(), 28);
  EXPECT_EQ(d.hidden_size, 3584);
  EXPECT_EQ(d.num_heads, 28);
  EXPECT_EQ(d.num_kv_heads, 4);
  EXPECT_EQ(d.head_dim, 128);
  EXPECT_TRUE(d.attention_bias);
  EXPECT_FALSE(d.attention_out_bias);
  EXPECT_EQ(d.moe.num_experts, 64);
  EXPECT_EQ(d.moe.routing.top_k, 8);
  EXPECT_EQ(d.moe.moe_intermediate_size, 2560);
  EXPECT_EQ(d.moe.shared_expert_intermediate_size, 20480);
  EXPECT_TRUE(d.moe.shared_expert_gate);
  EXPECT_FALSE(d.moe.routing.renormalize);
  EXPECT_EQ(d.max_position_embeddings, 131072);
  ExpectNear(d.total_params(), 57.4e9, "total");
  ExpectNear(d.active_params_per_token(), 14.0e9, "active");
}

TEST(RealConfigsTest, Olmoe_1B_7B_0924) {
  ModelDescription d = Load("olmoe-1b-7b-0924");
  EXPECT_EQ(d.architecture, "OlmoeForCausalLM");
  EXPECT_EQ(d.num_layers, 16);
  EXPECT_EQ(d.num_moe_layers(), 16);
  EXPECT_EQ(d.hidden_size, 2048);
  EXPECT_EQ(d.num_heads, 16);
  EXPECT_EQ(d.num_kv_heads, 16);
  EXPECT_EQ(d.head_dim, 128);
  EXPECT_EQ(d.qk_norm, QkNormKind::kFull);
  EXPECT_FALSE(d.clip_qkv.has_value());
  EXPECT_EQ(d.moe.num_experts, 64);
  EXPECT_EQ(d.moe.routing.top_k, 8);
  EXPECT_EQ(d.moe.moe_intermediate_size, 1024);
  EXPECT_FALSE(d.moe.routing.renormalize);
  EXPECT_EQ(d.vocab_size, 50304);
  EXPECT_DOUBLE_EQ(d.rms_norm_eps, 1e-5);
  EXPECT_THAT(d.eos_token_ids, ::testing::ElementsAre(50279));
  ExpectNear(d.total_params(), 6.9e9, "total");
  ExpectNear(d.active_params_per_token(), 1.3e9, "active");
}

TEST(RealConfigsTest, Qwen3_8B) {
  ModelDescription d = Load("qwen3-8b");
  EXPECT_EQ(d.architecture, "Qwen3ForCausalLM");
  EXPECT_FALSE(d.is_moe());
  EXPECT_EQ(d.num_layers, 36);
  EXPECT_EQ(d.hidden_size, 4096);
  EXPECT_EQ(d.num_heads, 32);
  EXPECT_EQ(d.num_kv_heads, 8);
  EXPECT_EQ(d.head_dim, 128);
  EXPECT_EQ(d.intermediate_size, 12288);
  EXPECT_EQ(d.max_position_embeddings, 40960);
  EXPECT_TRUE(PackedExpertTensors(d).empty());
  // Model card: 8.2B parameters, 6.95B of them non-embedding.
  ExpectNear(d.total_params(), 8.2e9, "total");
  ExpectNear(d.total_params() - 2 * d.vocab_size * d.hidden_size, 6.95e9, "non-embedding");
  EXPECT_EQ(d.active_params_per_token(), d.total_params());
}

}  // namespace
}  // namespace epserve
