// The architecture registry on small configs written here: per-architecture
// facts, the Qwen MoE layer rule, attention shape, rope spellings, dtype and
// quantization recognition, and every error path naming file, key and
// architecture.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/model_config/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_configs.h"

namespace epserve {
namespace {

using ::epserve::testing::ErrorOf;
using ::epserve::testing::Parse;
using ::epserve::testing::SmallConfig;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr LayerKind D = LayerKind::kDense;
constexpr LayerKind M = LayerKind::kMoe;

// ---------------------------------------------------------------------------
// Per-architecture table.

struct ArchCase {
  const char* architecture;
  const char* model_type;
  bool moe;
  QkNormKind qk_norm;
  bool attention_bias;
  bool attention_out_bias;
  int64_t shared_expert;  // shared_expert_intermediate_size
  bool norm_topk_prob;    // with the key absent
  int64_t moe_width;      // moe_intermediate_size after normalisation
};

class ArchTableTest : public ::testing::TestWithParam<ArchCase> {};

TEST_P(ArchTableTest, SmallConfigNormalises) {
  const ArchCase& c = GetParam();
  absl::StatusOr<ModelDescription> d = Parse(SmallConfig(c.architecture));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->architecture, c.architecture);
  EXPECT_EQ(d->model_type, c.model_type);  // from the registry: the config has none
  EXPECT_EQ(d->config_file, "/m/config.json");
  EXPECT_EQ(d->vocab_size, 128);
  EXPECT_EQ(d->hidden_size, 64);
  EXPECT_EQ(d->num_layers, 4);
  EXPECT_EQ(d->num_heads, 4);
  EXPECT_EQ(d->num_kv_heads, 2);
  EXPECT_EQ(d->head_dim, 16);
  EXPECT_EQ(d->max_position_embeddings, 256);
  EXPECT_DOUBLE_EQ(d->rms_norm_eps, 1e-6);
  EXPECT_EQ(d->rope.type, RopeType::kDefault);
  EXPECT_EQ(d->rope.layout, RopeLayout::kNeox);
  EXPECT_EQ(d->dtype, DataType::kBFloat16);
  EXPECT_EQ(d->quantization.method, QuantMethod::kNone);
  EXPECT_FALSE(d->tie_word_embeddings);
  EXPECT_EQ(d->is_moe(), c.moe);
  EXPECT_EQ(d->num_moe_layers(), c.moe ? 4 : 0);
  ASSERT_EQ(d->layer_kinds().size(), 4u);
  for (LayerKind k : d->layer_kinds()) EXPECT_EQ(k, c.moe ? M : D);
  EXPECT_EQ(d->qk_norm, c.qk_norm);
  EXPECT_EQ(d->attention_bias, c.attention_bias);
  EXPECT_EQ(d->attention_out_bias, c.attention_out_bias);
  if (c.moe) {
    EXPECT_EQ(d->moe.num_experts, 8);
    EXPECT_EQ(d->moe.routing.top_k, 2);
    EXPECT_EQ(d->moe.moe_intermediate_size, c.moe_width);
    EXPECT_EQ(d->moe.routing.scoring, RoutingScoring::kSoftmax);
    EXPECT_EQ(d->moe.routing.renormalize, c.norm_topk_prob);
    EXPECT_EQ(d->moe.shared_expert_intermediate_size, c.shared_expert);
    EXPECT_EQ(d->moe.shared_expert_gate, c.shared_expert > 0);
  } else {
    EXPECT_EQ(d->moe.num_experts, 0);
    EXPECT_EQ(d->intermediate_size, 96);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, ArchTableTest,
    ::testing::Values(
        ArchCase{"LlamaForCausalLM", "llama", false, QkNormKind::kNone, false, false, 0, false, 0},
        ArchCase{"Qwen2ForCausalLM", "qwen2", false, QkNormKind::kNone, true, false, 0, false, 0},
        ArchCase{"Qwen3ForCausalLM", "qwen3", false, QkNormKind::kPerHead, false, false, 0, false,
                 0},
        ArchCase{"MixtralForCausalLM", "mixtral", true, QkNormKind::kNone, false, false, 0, true,
                 48},
        ArchCase{"Qwen2MoeForCausalLM", "qwen2_moe", true, QkNormKind::kNone, true, false, 80,
                 false, 32},
        ArchCase{"Qwen3MoeForCausalLM", "qwen3_moe", true, QkNormKind::kPerHead, false, false, 0,
                 false, 32},
        ArchCase{"OlmoeForCausalLM", "olmoe", true, QkNormKind::kFull, false, false, 0, false, 32}),
    [](const ::testing::TestParamInfo<ArchCase>& param_info) {
      return std::string(param_info.param.architecture);
    });

// ---------------------------------------------------------------------------
// Per-layer specs: every architecture fills one LayerSpec per layer; routing
// as RoutingParams.

struct LayerSpecCase {
  const char* architecture;
  FeedForwardKind feed_forward;  // of every layer of SmallConfig (4 layers)
  QkNormKind qk_norm;
  bool qkv_bias;
  bool out_bias;
  bool renormalize;      // norm_topk_prob, with the key absent (Mixtral: always)
  int64_t expert_width;  // MoE: width of one routed expert
  int64_t shared_width;  // kMoeShared: the shared expert's width
  bool shared_expert_gate;
};

class LayerSpecTableTest : public ::testing::TestWithParam<LayerSpecCase> {};

TEST_P(LayerSpecTableTest, ArchitectureFillsEveryLayer) {
  const LayerSpecCase& c = GetParam();
  absl::StatusOr<ModelDescription> d = Parse(SmallConfig(c.architecture));
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->layers.size(), 4u);
  for (const LayerSpec& l : d->layers) {
    const AttentionSpec& a = l.attention;
    EXPECT_EQ(a.kind, AttentionKind::kGqa);
    EXPECT_EQ(a.num_heads, 4);
    EXPECT_EQ(a.num_kv_heads, 2);
    EXPECT_EQ(a.head_dim, 16);
    EXPECT_EQ(a.qk_norm, c.qk_norm);
    EXPECT_EQ(a.qkv_bias, c.qkv_bias);
    EXPECT_EQ(a.out_bias, c.out_bias);
    EXPECT_TRUE(a.use_rope);
    EXPECT_EQ(a.rope.type, RopeType::kDefault);
    EXPECT_EQ(a.chunk_size, 0);

    const FeedForwardSpec& f = l.feed_forward;
    EXPECT_EQ(f.kind, c.feed_forward);
    if (f.kind == FeedForwardKind::kDense) {
      EXPECT_EQ(f.intermediate_size, 96);
      continue;
    }
    EXPECT_EQ(f.num_experts, 8);
    EXPECT_EQ(f.expert_intermediate_size, c.expert_width);
    EXPECT_EQ(f.shared_intermediate_size, c.shared_width);
    EXPECT_EQ(f.shared_expert_gate, c.shared_expert_gate);
    const RoutingParams& r = f.routing;
    EXPECT_EQ(r.top_k, 2);
    EXPECT_EQ(r.scoring, RoutingScoring::kSoftmax);
    EXPECT_EQ(r.renormalize, c.renormalize);
    EXPECT_FALSE(r.correction_bias);
    EXPECT_EQ(r.n_group, 1);
    EXPECT_EQ(r.topk_group, 1);
    EXPECT_EQ(r.routed_scaling_factor, 1.0);
    EXPECT_FALSE(FindUnsupportedRouting(r).has_value());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Architectures, LayerSpecTableTest,
    ::testing::Values(LayerSpecCase{"LlamaForCausalLM", FeedForwardKind::kDense, QkNormKind::kNone,
                                    false, false, false, 0, 0, false},
                      LayerSpecCase{"Qwen2ForCausalLM", FeedForwardKind::kDense, QkNormKind::kNone,
                                    true, false, false, 0, 0, false},
                      LayerSpecCase{"Qwen3ForCausalLM", FeedForwardKind::kDense,
                                    QkNormKind::kPerHead, false, false, false, 0, 0, false},
                      LayerSpecCase{"MixtralForCausalLM", FeedForwardKind::kMoe, QkNormKind::kNone,
                                    false, false, true, 48, 0, false},
                      LayerSpecCase{"Qwen2MoeForCausalLM", FeedForwardKind::kMoeShared,
                                    QkNormKind::kNone, true, false, false, 32, 80, true},
                      LayerSpecCase{"Qwen3MoeForCausalLM", FeedForwardKind::kMoe,
                                    QkNormKind::kPerHead, false, false, false, 32, 0, false},
                      LayerSpecCase{"OlmoeForCausalLM", FeedForwardKind::kMoe, QkNormKind::kFull,
                                    false, false, false, 32, 0, false}),
    [](const ::testing::TestParamInfo<LayerSpecCase>& param_info) {
      return std::string(param_info.param.architecture);
    });

TEST(LayerSpecTest, QwenMoeRuleAndRoutingKeysReachEachLayer) {
  Json j = SmallConfig("Qwen2MoeForCausalLM");
  j["num_hidden_layers"] = 6;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  j["norm_topk_prob"] = true;
  j["num_experts_per_tok"] = 3;
  j["shared_expert_intermediate_size"] = 0;  // no shared expert: plain kMoe
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->layers.size(), 6u);
  const FeedForwardKind kD = FeedForwardKind::kDense, kM = FeedForwardKind::kMoe;
  const std::vector<FeedForwardKind> expected = {kD, kM, kD, kD, kD, kM};
  for (int i = 0; i < 6; ++i) {
    const FeedForwardSpec& f = d->layers[i].feed_forward;
    EXPECT_EQ(f.kind, expected[i]) << "layer " << i;
    if (f.is_moe()) {
      EXPECT_EQ(f.routing.top_k, 3);
      EXPECT_TRUE(f.routing.renormalize);
      EXPECT_FALSE(f.shared_expert_gate);
    } else {
      EXPECT_EQ(f.intermediate_size, 96);
    }
  }
}

TEST(RegistryTest, SupportedArchitecturesListsAllSeven) {
  EXPECT_THAT(
      SupportedArchitectures(),
      ElementsAre("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MixtralForCausalLM",
                  "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM"));
}

// ---------------------------------------------------------------------------
// Qwen MoE layer rule: MoE iff i not in mlp_only_layers and (i+1) % step == 0.

struct LayerRuleCase {
  int decoder_sparse_step;
  std::vector<int> mlp_only_layers;
  std::vector<LayerKind> expected;
};

class QwenLayerRuleTest : public ::testing::TestWithParam<std::tuple<const char*, LayerRuleCase>> {
};

TEST_P(QwenLayerRuleTest, LayerKinds) {
  const auto& [arch, c] = GetParam();
  Json j = SmallConfig(arch);
  j["num_hidden_layers"] = 6;
  j["decoder_sparse_step"] = c.decoder_sparse_step;
  j["mlp_only_layers"] = c.mlp_only_layers;
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->layer_kinds(), c.expected);
  int moe = 0;
  for (LayerKind k : c.expected) moe += k == M;
  EXPECT_EQ(d->num_moe_layers(), moe);
  EXPECT_EQ(d->intermediate_size, moe < 6 ? 96 : 0);
}

INSTANTIATE_TEST_SUITE_P(
    QwenMoe, QwenLayerRuleTest,
    ::testing::Combine(::testing::Values("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"),
                       ::testing::Values(LayerRuleCase{1, {}, {M, M, M, M, M, M}},
                                         LayerRuleCase{2, {}, {D, M, D, M, D, M}},
                                         LayerRuleCase{2, {3}, {D, M, D, D, D, M}},
                                         LayerRuleCase{1, {0, 5}, {D, M, M, M, M, D}},
                                         LayerRuleCase{3, {}, {D, D, M, D, D, M}})));

TEST(QwenLayerRuleTest, AllMoeLayersNeedNoIntermediateSize) {
  Json j = SmallConfig("Qwen3MoeForCausalLM");
  j.erase("intermediate_size");
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->intermediate_size, 0);
}

TEST(QwenLayerRuleTest, DenseLayerNeedsIntermediateSize) {
  Json j = SmallConfig("Qwen3MoeForCausalLM");
  j.erase("intermediate_size");
  j["mlp_only_layers"] = {1};
  EXPECT_EQ(ErrorOf(j),
            "/m/config.json: Qwen3MoeForCausalLM requires 'intermediate_size' (missing)");
}

TEST(QwenLayerRuleTest, BadStepAndLayerIndexAreErrors) {
  Json j = SmallConfig("Qwen2MoeForCausalLM");
  j["decoder_sparse_step"] = 0;
  EXPECT_THAT(ErrorOf(j), HasSubstr("'decoder_sparse_step' must be >= 1"));
  j = SmallConfig("Qwen2MoeForCausalLM");
  j["mlp_only_layers"] = {7};
  EXPECT_THAT(ErrorOf(j), HasSubstr("'mlp_only_layers' names layer 7, outside [0, 4)"));
}

// ---------------------------------------------------------------------------
// Routing.

TEST(RoutingTest, NormTopkProbIsRead) {
  for (const char* arch : {"Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM"}) {
    for (bool value : {true, false}) {
      Json j = SmallConfig(arch);
      j["norm_topk_prob"] = value;
      absl::StatusOr<ModelDescription> d = Parse(j);
      ASSERT_TRUE(d.ok()) << d.status();
      EXPECT_EQ(d->moe.routing.renormalize, value) << arch;
    }
  }
}

TEST(RoutingTest, MixtralAlwaysRenormalisesAndReadsNoQwenKeys) {
  Json j = SmallConfig("MixtralForCausalLM");
  j["norm_topk_prob"] = "not read";
  j["num_experts"] = "not read either";
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->moe.routing.renormalize);
  EXPECT_EQ(d->moe.num_experts, 8);
  EXPECT_EQ(d->moe.moe_intermediate_size, 48);  // Mixtral experts use intermediate_size
}

// ---------------------------------------------------------------------------
// Attention shape.

TEST(AttentionShapeTest, HeadDimOverrideAndDefault) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["head_dim"] = 32;
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->head_dim, 32);

  j.erase("head_dim");
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->head_dim, 16);  // hidden / heads

  j = SmallConfig("Qwen3ForCausalLM");
  j.erase("head_dim");  // Qwen3Config defaults head_dim to 128, not hidden / heads
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->head_dim, 128);
}

TEST(AttentionShapeTest, HiddenNotDivisibleWithoutHeadDim) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["num_attention_heads"] = 6;
  j["num_key_value_heads"] = 3;
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("'hidden_size' (64) is not divisible by num_attention_heads (6)"));
  j["head_dim"] = 16;
  EXPECT_TRUE(Parse(j).ok());
}

TEST(AttentionShapeTest, GqaDefaultsAndDivisibility) {
  Json j = SmallConfig("MixtralForCausalLM");
  j.erase("num_key_value_heads");
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_kv_heads, 4);  // = num_attention_heads

  j["num_key_value_heads"] = 3;
  EXPECT_THAT(ErrorOf(j), HasSubstr("MixtralForCausalLM: 'num_key_value_heads' (3) must divide "
                                    "num_attention_heads (4)"));
}

TEST(AttentionShapeTest, BiasKeys) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["attention_bias"] = true;
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->attention_bias);
  EXPECT_TRUE(d->attention_out_bias);

  j = SmallConfig("Qwen2MoeForCausalLM");
  j["qkv_bias"] = false;  // transformers v5 key; default true
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->attention_bias);

  j = SmallConfig("OlmoeForCausalLM");
  j["clip_qkv"] = 8.0;
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->clip_qkv, 8.0);
}

TEST(AttentionShapeTest, TiedEmbeddings) {
  for (const std::string& arch : SupportedArchitectures()) {
    Json j = SmallConfig(arch);
    j["tie_word_embeddings"] = true;
    absl::StatusOr<ModelDescription> d = Parse(j);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE(d->tie_word_embeddings) << arch;
  }
}

// ---------------------------------------------------------------------------
// Rope spellings.

TEST(RopeTest, V4Llama3) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["rope_theta"] = 500000.0;
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->rope.type, RopeType::kLlama3);
  EXPECT_DOUBLE_EQ(d->rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(d->rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(d->rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(d->rope.high_freq_factor, 4.0);
  EXPECT_EQ(d->rope.original_max_position_embeddings, 8192);
}

TEST(RopeTest, V4Llama3MissingKeyIsNamed) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_EQ(ErrorOf(j),
            "/m/config.json: LlamaForCausalLM requires 'rope_scaling.low_freq_factor' (missing)");
}

TEST(RopeTest, V4YarnWithDefaults) {
  Json j = SmallConfig("Qwen3MoeForCausalLM");
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->rope.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(d->rope.factor, 4.0);
  EXPECT_EQ(d->rope.original_max_position_embeddings, 256);  // max_position_embeddings
  EXPECT_DOUBLE_EQ(d->rope.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(d->rope.beta_slow, 1.0);
  EXPECT_EQ(d->rope.mscale, 0.0);  // unset
  EXPECT_EQ(d->rope.attention_factor, 0.0);
}

TEST(RopeTest, V4YarnAllKeys) {
  Json j = SmallConfig("Qwen2ForCausalLM");
  j["rope_scaling"] = {{"type", "yarn"},  // legacy spelling of rope_type
                       {"factor", 4.0},          {"original_max_position_embeddings", 32768},
                       {"beta_fast", 16},        {"beta_slow", 2},
                       {"mscale", 0.707},        {"mscale_all_dim", 0.707},
                       {"attention_factor", 1.1}};
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->rope.type, RopeType::kYarn);
  EXPECT_EQ(d->rope.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(d->rope.beta_fast, 16.0);
  EXPECT_DOUBLE_EQ(d->rope.beta_slow, 2.0);
  EXPECT_EQ(d->rope.mscale, 0.707);
  EXPECT_EQ(d->rope.mscale_all_dim, 0.707);
  EXPECT_EQ(d->rope.attention_factor, 1.1);
}

TEST(RopeTest, V4LinearWithLegacyTypeKey) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->rope.type, RopeType::kLinear);
  EXPECT_DOUBLE_EQ(d->rope.factor, 2.0);
}

TEST(RopeTest, V5RopeParameters) {
  Json j = SmallConfig("Qwen3ForCausalLM");
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "yarn"},
                          {"rope_theta", 1000000.0},
                          {"factor", 4.0},
                          {"original_max_position_embeddings", 32768}};
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->rope.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(d->rope.theta, 1000000.0);
  EXPECT_EQ(d->rope.original_max_position_embeddings, 32768);

  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->rope.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(d->rope.theta, 5e5);
}

TEST(RopeTest, ThetaDefaultIsPerArchitecture) {
  Json j = SmallConfig("MixtralForCausalLM");
  j.erase("rope_theta");
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_DOUBLE_EQ(d->rope.theta, 1e6);
  j = SmallConfig("LlamaForCausalLM");
  j.erase("rope_theta");
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_DOUBLE_EQ(d->rope.theta, 10000.0);
}

TEST(RopeTest, UnsupportedTypeListsSupported) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  absl::Status s = Parse(j).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("'rope_scaling.rope_type' 'dynamic' is not supported "
                        "(supported: default, linear, llama3, yarn)"));
}

// ---------------------------------------------------------------------------
// Dense architectures never read MoE keys: every one is poisoned with a value
// of the wrong type that would fail if read.

class DenseNeverReadsMoeKeysTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DenseNeverReadsMoeKeysTest, PoisonedKeysAreIgnored) {
  Json j = SmallConfig(GetParam());
  for (const char* key :
       {"num_experts", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size",
        "decoder_sparse_step", "mlp_only_layers", "norm_topk_prob",
        "shared_expert_intermediate_size", "qkv_bias", "clip_qkv"}) {
    j[key] = "garbage";
  }
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->is_moe());
  EXPECT_EQ(d->moe.num_experts, 0);
  EXPECT_EQ(d->moe.routing.top_k, 0);
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseNeverReadsMoeKeysTest,
                         ::testing::Values("LlamaForCausalLM", "Qwen2ForCausalLM",
                                           "Qwen3ForCausalLM"));

// ---------------------------------------------------------------------------
// dtype and quantization recognition.

TEST(DtypeTest, V4AndV5Spellings) {
  Json j = SmallConfig("Qwen3ForCausalLM");
  j.erase("torch_dtype");
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->dtype.has_value());

  j["dtype"] = "float16";  // v5
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->dtype, DataType::kFloat16);

  j["torch_dtype"] = "float32";  // both: v5 wins
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->dtype, DataType::kFloat16);

  j.erase("dtype");
  j["torch_dtype"] = "bfloat17";
  absl::Status s = Parse(j).status();
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("Qwen3ForCausalLM: 'torch_dtype' unknown data type "
                        "'bfloat17'"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("bfloat16"));  // lists the accepted names
}

TEST(QuantizationTest, DenseQwen3Fp8IsRecognised) {
  // As Qwen3-4B-FP8 ships: dense, no MoE keys, block-wise FP8.
  Json j = SmallConfig("Qwen3ForCausalLM");
  j["quantization_config"] = {{"quant_method", "fp8"},
                              {"activation_scheme", "dynamic"},
                              {"fmt", "e4m3"},
                              {"weight_block_size", {128, 128}}};
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->is_moe());
  EXPECT_EQ(d->quantization.method, QuantMethod::kFp8);
  EXPECT_EQ(d->quantization.method_name, "fp8");
  EXPECT_THAT(d->quantization.weight_block_size, ElementsAre(128, 128));
  EXPECT_EQ(d->quantization.activation_scheme, "dynamic");
}

TEST(QuantizationTest, AwqMoeIsRecognised) {
  for (const char* arch : {"Qwen3MoeForCausalLM", "MixtralForCausalLM"}) {
    Json j = SmallConfig(arch);
    j["quantization_config"] = {{"quant_method", "awq"}, {"bits", 4},
                                {"group_size", 128},     {"zero_point", true},
                                {"version", "gemm"},     {"modules_to_not_convert", {"gate"}}};
    absl::StatusOr<ModelDescription> d = Parse(j);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE(d->is_moe());
    EXPECT_EQ(d->quantization.method, QuantMethod::kAwq);
    EXPECT_EQ(d->quantization.bits, 4);
    EXPECT_EQ(d->quantization.group_size, 128);
    EXPECT_TRUE(d->quantization.zero_point);
    EXPECT_EQ(d->quantization.version, "gemm");
    EXPECT_THAT(d->quantization.modules_to_not_convert, ElementsAre("gate"));

    j["quantization_config"]["modules_to_not_convert"] = nullptr;
    d = Parse(j);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_TRUE(d->quantization.modules_to_not_convert.empty());
  }
}

TEST(QuantizationTest, GptqOtherAndMalformed) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["quantization_config"] = {
      {"quant_method", "gptq"}, {"bits", 8}, {"group_size", 64}, {"desc_act", true}};
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->quantization.method, QuantMethod::kGptq);
  EXPECT_EQ(d->quantization.bits, 8);
  EXPECT_TRUE(d->quantization.desc_act);

  j["quantization_config"] = {{"quant_method", "compressed-tensors"}};
  d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->quantization.method, QuantMethod::kOther);
  EXPECT_EQ(d->quantization.method_name, "compressed-tensors");

  j["quantization_config"] = {{"bits", 4}};
  EXPECT_EQ(ErrorOf(j),
            "/m/config.json: LlamaForCausalLM requires 'quantization_config.quant_method' "
            "(missing)");
}

// ---------------------------------------------------------------------------
// Errors.

TEST(ErrorTest, Qwen3MoeWithoutNumExpertsNamesIt) {
  Json j = SmallConfig("Qwen3MoeForCausalLM");
  j.erase("num_experts");
  absl::Status s = Parse(j).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(s.message()),
            "/m/config.json: Qwen3MoeForCausalLM requires 'num_experts' (missing)");
  j["num_experts"] = nullptr;  // null counts as missing
  EXPECT_EQ(ErrorOf(j), std::string(s.message()));
}

TEST(ErrorTest, MixtralWithoutNumLocalExpertsNamesIt) {
  Json j = SmallConfig("MixtralForCausalLM");
  j.erase("num_local_experts");
  j["num_experts"] = 8;  // the Qwen spelling does not count
  EXPECT_EQ(ErrorOf(j),
            "/m/config.json: MixtralForCausalLM requires 'num_local_experts' (missing)");
}

TEST(ErrorTest, ZeroExpertsOnMoeArchitectureIsAnError) {
  for (const char* arch : {"Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM"}) {
    Json j = SmallConfig(arch);
    j["num_experts"] = 0;
    absl::Status s = Parse(j).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << arch;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr(std::string(arch) + ": 'num_experts' must be > 0 for a "
                                              "mixture-of-experts architecture (found 0)"));
  }
  Json j = SmallConfig("MixtralForCausalLM");
  j["num_local_experts"] = 0;
  EXPECT_THAT(ErrorOf(j), HasSubstr("'num_local_experts' must be > 0"));
}

TEST(ErrorTest, TopKOutOfRange) {
  Json j = SmallConfig("Qwen3MoeForCausalLM");
  j["num_experts_per_tok"] = 9;
  EXPECT_THAT(ErrorOf(j), HasSubstr("'num_experts_per_tok' must be in [1, 8] (found 9)"));
}

TEST(ErrorTest, UnknownArchitectureListsSupported) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  absl::Status s = Parse(j).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(s.message()), HasSubstr("/m/config.json: unsupported architecture "
                                                  "'DeepseekV3ForCausalLM' (supported: "));
  for (const std::string& name : SupportedArchitectures()) {
    EXPECT_THAT(std::string(s.message()), HasSubstr(name));
  }
}

TEST(ErrorTest, ModelTypeFallback) {
  Json j = SmallConfig("Qwen3MoeForCausalLM");
  j.erase("architectures");
  j["model_type"] = "qwen3_moe";
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->architecture, "Qwen3MoeForCausalLM");
  EXPECT_EQ(d->model_type, "qwen3_moe");

  j["architectures"] = Json::array();  // empty list: model_type decides too
  EXPECT_TRUE(Parse(j).ok());

  j["model_type"] = "gpt_oss";
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("unsupported model_type 'gpt_oss' (supported: LlamaForCausalLM"));
  j.erase("model_type");
  EXPECT_THAT(ErrorOf(j), HasSubstr("names neither 'architectures' nor 'model_type'"));
}

TEST(ErrorTest, WrongTypesNameKeyAndExpectedType) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["hidden_size"] = "64";
  EXPECT_EQ(ErrorOf(j),
            "/m/config.json: LlamaForCausalLM: 'hidden_size' must be an integer (found string "
            "\"64\")");
  j = SmallConfig("Qwen3MoeForCausalLM");
  j["num_experts"] = "garbage";
  EXPECT_EQ(ErrorOf(j),
            "/m/config.json: Qwen3MoeForCausalLM: 'num_experts' must be an integer (found "
            "string \"garbage\")");
  j = SmallConfig("Qwen3ForCausalLM");
  j["tie_word_embeddings"] = "yes";
  EXPECT_THAT(ErrorOf(j), HasSubstr("'tie_word_embeddings' must be a boolean"));
  j = SmallConfig("OlmoeForCausalLM");
  j["rms_norm_eps"] = "small";
  EXPECT_THAT(ErrorOf(j), HasSubstr("'rms_norm_eps' must be a number"));
  j = SmallConfig("Qwen2MoeForCausalLM");
  j["mlp_only_layers"] = 3;
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("'mlp_only_layers' must be a list of integers (found number 3)"));
  j = SmallConfig("LlamaForCausalLM");
  j["rope_scaling"] = "llama3";
  EXPECT_THAT(ErrorOf(j), HasSubstr("'rope_scaling' must be an object"));
  j = SmallConfig("LlamaForCausalLM");
  j["architectures"] = "LlamaForCausalLM";
  EXPECT_THAT(ErrorOf(j), HasSubstr("config: 'architectures' must be a list of strings"));
  EXPECT_THAT(std::string(ParseModelConfig(Json::array(), "/m/config.json").status().message()),
              HasSubstr("expected a JSON object"));
}

TEST(ErrorTest, IntegralFloatsAreIntegers) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["hidden_size"] = 64.0;
  EXPECT_TRUE(Parse(j).ok());
  j["hidden_size"] = 64.5;
  EXPECT_THAT(ErrorOf(j), HasSubstr("'hidden_size' must be an integer"));
}

TEST(ErrorTest, UnsupportedFeaturesAreRefusedByName) {
  Json j = SmallConfig("LlamaForCausalLM");
  j["mlp_bias"] = true;
  EXPECT_THAT(ErrorOf(j), HasSubstr("'mlp_bias' = true is not supported"));
  j = SmallConfig("Qwen3ForCausalLM");
  j["hidden_act"] = "gelu";
  EXPECT_THAT(ErrorOf(j), HasSubstr("'hidden_act' 'gelu' is not supported (supported: silu)"));
  j = SmallConfig("Qwen2ForCausalLM");
  j["use_sliding_window"] = true;
  EXPECT_EQ(Parse(j).status().code(), absl::StatusCode::kUnimplemented);
}

// Sizes that would exhaust memory (or overflow) are refused while parsing,
// naming the key and the bytes they imply.
TEST(ErrorTest, AbsurdSizesAreRefusedNamingTheKey) {
  Json j = SmallConfig("MixtralForCausalLM");
  j["num_local_experts"] = 2147483647;
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("'num_local_experts' (2147483647) is out of range: at most 65536"));
  j = SmallConfig("Qwen3MoeForCausalLM");
  j["num_hidden_layers"] = 2147483647;
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("'num_hidden_layers' (2147483647) is out of range: at most 16384"));
  j = SmallConfig("LlamaForCausalLM");
  j["vocab_size"] = int64_t{1} << 40;
  j["hidden_size"] = 1 << 20;
  j["num_attention_heads"] = 1 << 14;
  j["num_key_value_heads"] = 1 << 14;
  const std::string big = ErrorOf(j);
  EXPECT_THAT(big, HasSubstr("'vocab_size' (1099511627776) with hidden_size 1048576"));
  EXPECT_THAT(big, HasSubstr("bytes of weights"));
  EXPECT_THAT(big, HasSubstr("more than any machine holds (limit 1 PiB)"));
  j = SmallConfig("Qwen2MoeForCausalLM");
  j["moe_intermediate_size"] = int64_t{1} << 40;
  EXPECT_THAT(ErrorOf(j), HasSubstr("'num_experts' ("));
  for (int64_t bad : {int64_t{0}, int64_t{-5}}) {
    j = SmallConfig("Qwen3ForCausalLM");
    j["max_position_embeddings"] = bad;
    EXPECT_THAT(ErrorOf(j),
                HasSubstr(absl::StrCat("'max_position_embeddings' must be > 0 (found ", bad, ")")));
  }
  // The largest published shapes still parse.
  j = SmallConfig("Qwen3MoeForCausalLM");
  j["num_hidden_layers"] = 94;
  j["num_experts"] = 512;
  j["hidden_size"] = 8192;
  EXPECT_EQ(ErrorOf(j), "OK");
}

TEST(ErrorTest, Qwen2MoeRequiresSharedExpertWidth) {
  Json j = SmallConfig("Qwen2MoeForCausalLM");
  j.erase("shared_expert_intermediate_size");
  EXPECT_EQ(ErrorOf(j),
            "/m/config.json: Qwen2MoeForCausalLM requires 'shared_expert_intermediate_size' "
            "(missing)");
}

TEST(TokenIdsTest, IntOrList) {
  Json j = SmallConfig("Qwen3ForCausalLM");
  j["bos_token_id"] = 1;
  j["eos_token_id"] = {2, 7};
  absl::StatusOr<ModelDescription> d = Parse(j);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(d->bos_token_ids, ElementsAre(1));
  EXPECT_THAT(d->eos_token_ids, ElementsAre(2, 7));
  j["eos_token_id"] = {2, "x"};
  EXPECT_THAT(ErrorOf(j), HasSubstr("'eos_token_id' must be a list of integers"));
}

// ---------------------------------------------------------------------------
// LoadModelConfig reads DIR/config.json.

TEST(LoadModelConfigTest, ReadsFileAndNamesItInErrors) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / "model_config_load_test";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "config.json").string();
  { std::ofstream(path) << SmallConfig("OlmoeForCausalLM").dump(2); }
  absl::StatusOr<ModelDescription> d = LoadModelConfig(dir.string());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->config_file, path);
  {
    Json j = SmallConfig("OlmoeForCausalLM");
    j.erase("num_experts");
    std::ofstream(path) << j.dump();
  }
  EXPECT_EQ(std::string(LoadModelConfig(dir.string()).status().message()),
            path + ": OlmoeForCausalLM requires 'num_experts' (missing)");
  { std::ofstream(path) << "{ not json"; }
  EXPECT_EQ(std::string(LoadModelConfig(dir.string()).status().message()),
            path + ": not valid JSON");
  // A FIFO would block the read forever.
  std::filesystem::remove(path);
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  absl::Status fifo = LoadModelConfig(dir.string()).status();
  EXPECT_EQ(fifo.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(fifo.message()), path + ": not a regular file");
  std::filesystem::remove_all(dir);
  absl::Status s = LoadModelConfig(dir.string()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("config.json: cannot open"));
}

}  // namespace
}  // namespace epserve
