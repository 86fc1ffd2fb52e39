// ExpectedTensors / PackedExpertTensors: exact Hugging Face names and shapes
// per architecture, tied lm_head, parameter counts, packed expert slicing.
#include "common/model_config/tensor_spec.h"

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/model_config/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_configs.h"

namespace epserve {
namespace {

using ::epserve::testing::Parse;
using ::epserve::testing::SmallConfig;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;
using Shape = std::vector<int64_t>;

std::map<std::string, TensorSpec> ByName(const ModelDescription& d) {
  std::map<std::string, TensorSpec> out;
  for (const TensorSpec& t : ExpectedTensors(d)) {
    EXPECT_TRUE(out.emplace(t.name, t).second) << "duplicate " << t.name;
  }
  return out;
}

ModelDescription MustParse(const Json& j) {
  absl::StatusOr<ModelDescription> d = Parse(j);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : ModelDescription();
}

// Asserts `name` is expected with `shape` and `role`.
#define EXPECT_TENSOR(map, name, want_shape, want_role)        \
  do {                                                         \
    auto it_ = (map).find(name);                               \
    ASSERT_NE(it_, (map).end()) << "missing " << (name);       \
    EXPECT_EQ(it_->second.shape, Shape(want_shape)) << (name); \
    EXPECT_EQ(it_->second.role, want_role) << (name);          \
  } while (0)

TEST(ExpectedTensorsTest, LlamaDenseAndTiedLmHead) {
  ModelDescription d = MustParse(SmallConfig("LlamaForCausalLM"));
  auto t = ByName(d);
  EXPECT_EQ(t.size(), 1u + 4 * 9 + 2);  // embed, 4 x (2 norms, 4 attn, 3 mlp), norm, lm_head
  EXPECT_TENSOR(t, "model.embed_tokens.weight", Shape({128, 64}), TensorRole::kEmbedding);
  EXPECT_TENSOR(t, "model.layers.0.input_layernorm.weight", Shape({64}), TensorRole::kInputNorm);
  EXPECT_TENSOR(t, "model.layers.0.post_attention_layernorm.weight", Shape({64}),
                TensorRole::kPostAttnNorm);
  EXPECT_TENSOR(t, "model.layers.3.self_attn.q_proj.weight", Shape({64, 64}),
                TensorRole::kAttnQWeight);
  EXPECT_TENSOR(t, "model.layers.3.self_attn.k_proj.weight", Shape({32, 64}),
                TensorRole::kAttnKWeight);  // GQA: 2 kv heads x 16
  EXPECT_TENSOR(t, "model.layers.3.self_attn.v_proj.weight", Shape({32, 64}),
                TensorRole::kAttnVWeight);
  EXPECT_TENSOR(t, "model.layers.3.self_attn.o_proj.weight", Shape({64, 64}),
                TensorRole::kAttnOWeight);
  EXPECT_TENSOR(t, "model.layers.1.mlp.gate_proj.weight", Shape({96, 64}), TensorRole::kMlpGate);
  EXPECT_TENSOR(t, "model.layers.1.mlp.up_proj.weight", Shape({96, 64}), TensorRole::kMlpUp);
  EXPECT_TENSOR(t, "model.layers.1.mlp.down_proj.weight", Shape({64, 96}), TensorRole::kMlpDown);
  EXPECT_TENSOR(t, "model.norm.weight", Shape({64}), TensorRole::kFinalNorm);
  EXPECT_TENSOR(t, "lm_head.weight", Shape({128, 64}), TensorRole::kLmHead);
  EXPECT_EQ(t.count("model.layers.0.self_attn.q_proj.bias"), 0u);
  EXPECT_EQ(t.count("model.layers.0.self_attn.q_norm.weight"), 0u);
  EXPECT_EQ(t["model.layers.2.self_attn.q_proj.weight"].layer, 2);
  EXPECT_EQ(t["lm_head.weight"].layer, -1);

  Json j = SmallConfig("LlamaForCausalLM");
  j["tie_word_embeddings"] = true;
  auto tied = ByName(MustParse(j));
  EXPECT_EQ(tied.size(), t.size() - 1);
  EXPECT_EQ(tied.count("lm_head.weight"), 0u);

  j["head_dim"] = 32;  // override: projections widen, hidden stays
  auto wide = ByName(MustParse(j));
  EXPECT_TENSOR(wide, "model.layers.0.self_attn.q_proj.weight", Shape({128, 64}),
                TensorRole::kAttnQWeight);
  EXPECT_TENSOR(wide, "model.layers.0.self_attn.o_proj.weight", Shape({64, 128}),
                TensorRole::kAttnOWeight);

  j = SmallConfig("LlamaForCausalLM");
  j["attention_bias"] = true;
  auto biased = ByName(MustParse(j));
  EXPECT_TENSOR(biased, "model.layers.0.self_attn.o_proj.bias", Shape({64}),
                TensorRole::kAttnOBias);
}

TEST(ExpectedTensorsTest, Qwen2QkvBiases) {
  auto t = ByName(MustParse(SmallConfig("Qwen2ForCausalLM")));
  EXPECT_TENSOR(t, "model.layers.0.self_attn.q_proj.bias", Shape({64}), TensorRole::kAttnQBias);
  EXPECT_TENSOR(t, "model.layers.0.self_attn.k_proj.bias", Shape({32}), TensorRole::kAttnKBias);
  EXPECT_TENSOR(t, "model.layers.0.self_attn.v_proj.bias", Shape({32}), TensorRole::kAttnVBias);
  EXPECT_EQ(t.count("model.layers.0.self_attn.o_proj.bias"), 0u);
}

TEST(ExpectedTensorsTest, Qwen3PerHeadQkNorm) {
  Json j = SmallConfig("Qwen3ForCausalLM");
  j.erase("head_dim");  // defaults to 128
  auto t = ByName(MustParse(j));
  EXPECT_TENSOR(t, "model.layers.0.self_attn.q_proj.weight", Shape({512, 64}),
                TensorRole::kAttnQWeight);
  EXPECT_TENSOR(t, "model.layers.0.self_attn.q_norm.weight", Shape({128}), TensorRole::kQNorm);
  EXPECT_TENSOR(t, "model.layers.0.self_attn.k_norm.weight", Shape({128}), TensorRole::kKNorm);
  EXPECT_EQ(t.count("model.layers.0.mlp.gate.weight"), 0u);
}

TEST(ExpectedTensorsTest, OlmoeFullWidthQkNormAndExperts) {
  auto t = ByName(MustParse(SmallConfig("OlmoeForCausalLM")));
  EXPECT_TENSOR(t, "model.layers.0.self_attn.q_norm.weight", Shape({64}),
                TensorRole::kQNorm);  // num_heads * head_dim
  EXPECT_TENSOR(t, "model.layers.0.self_attn.k_norm.weight", Shape({32}),
                TensorRole::kKNorm);  // num_kv_heads * head_dim
  EXPECT_TENSOR(t, "model.layers.0.mlp.gate.weight", Shape({8, 64}), TensorRole::kRouter);
  EXPECT_TENSOR(t, "model.layers.2.mlp.experts.7.gate_proj.weight", Shape({32, 64}),
                TensorRole::kExpertGate);
  EXPECT_TENSOR(t, "model.layers.2.mlp.experts.7.up_proj.weight", Shape({32, 64}),
                TensorRole::kExpertUp);
  EXPECT_TENSOR(t, "model.layers.2.mlp.experts.7.down_proj.weight", Shape({64, 32}),
                TensorRole::kExpertDown);
  EXPECT_EQ(t["model.layers.2.mlp.experts.7.down_proj.weight"].expert, 7);
  EXPECT_EQ(t["model.layers.2.mlp.experts.7.down_proj.weight"].layer, 2);
  EXPECT_EQ(t.count("model.layers.0.mlp.gate_proj.weight"), 0u);
  EXPECT_EQ(t.count("model.layers.0.mlp.shared_expert.gate_proj.weight"), 0u);
}

TEST(ExpectedTensorsTest, MixtralBlockSparseMoeNames) {
  auto t = ByName(MustParse(SmallConfig("MixtralForCausalLM")));
  EXPECT_TENSOR(t, "model.layers.0.block_sparse_moe.gate.weight", Shape({8, 64}),
                TensorRole::kRouter);
  EXPECT_TENSOR(t, "model.layers.3.block_sparse_moe.experts.7.w1.weight", Shape({48, 64}),
                TensorRole::kExpertGate);
  EXPECT_TENSOR(t, "model.layers.3.block_sparse_moe.experts.7.w3.weight", Shape({48, 64}),
                TensorRole::kExpertUp);
  EXPECT_TENSOR(t, "model.layers.3.block_sparse_moe.experts.7.w2.weight", Shape({64, 48}),
                TensorRole::kExpertDown);
  EXPECT_EQ(t.count("model.layers.0.mlp.gate.weight"), 0u);
  EXPECT_EQ(t.count("model.layers.0.self_attn.q_norm.weight"), 0u);
}

TEST(ExpectedTensorsTest, Qwen2MoeSharedExpertAndDenseLayers) {
  Json j = SmallConfig("Qwen2MoeForCausalLM");
  j["mlp_only_layers"] = {1};
  auto t = ByName(MustParse(j));
  EXPECT_TENSOR(t, "model.layers.0.mlp.gate.weight", Shape({8, 64}), TensorRole::kRouter);
  EXPECT_TENSOR(t, "model.layers.0.mlp.experts.5.up_proj.weight", Shape({32, 64}),
                TensorRole::kExpertUp);
  EXPECT_TENSOR(t, "model.layers.0.mlp.shared_expert.gate_proj.weight", Shape({80, 64}),
                TensorRole::kSharedExpertGateProj);
  EXPECT_TENSOR(t, "model.layers.0.mlp.shared_expert.up_proj.weight", Shape({80, 64}),
                TensorRole::kSharedExpertUpProj);
  EXPECT_TENSOR(t, "model.layers.0.mlp.shared_expert.down_proj.weight", Shape({64, 80}),
                TensorRole::kSharedExpertDownProj);
  EXPECT_TENSOR(t, "model.layers.0.mlp.shared_expert_gate.weight", Shape({1, 64}),
                TensorRole::kSharedExpertGate);
  EXPECT_TENSOR(t, "model.layers.0.self_attn.q_proj.bias", Shape({64}), TensorRole::kAttnQBias);
  // Layer 1 is in mlp_only_layers: a dense MLP of intermediate_size, no router.
  EXPECT_TENSOR(t, "model.layers.1.mlp.gate_proj.weight", Shape({96, 64}), TensorRole::kMlpGate);
  EXPECT_EQ(t.count("model.layers.1.mlp.gate.weight"), 0u);
  EXPECT_EQ(t.count("model.layers.1.mlp.shared_expert_gate.weight"), 0u);
}

TEST(ExpectedTensorsTest, Qwen3MoeExperts) {
  auto t = ByName(MustParse(SmallConfig("Qwen3MoeForCausalLM")));
  EXPECT_TENSOR(t, "model.layers.1.mlp.experts.0.gate_proj.weight", Shape({32, 64}),
                TensorRole::kExpertGate);
  EXPECT_TENSOR(t, "model.layers.1.self_attn.q_norm.weight", Shape({16}), TensorRole::kQNorm);
  EXPECT_EQ(t.count("model.layers.0.mlp.shared_expert.gate_proj.weight"), 0u);
}

TEST(ExpectedTensorsTest, OrderIsEmbeddingLayersNormHead) {
  std::vector<TensorSpec> t = ExpectedTensors(MustParse(SmallConfig("Qwen3MoeForCausalLM")));
  ASSERT_GE(t.size(), 3u);
  EXPECT_EQ(t.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(t[t.size() - 2].name, "model.norm.weight");
  EXPECT_EQ(t.back().name, "lm_head.weight");
  int last_layer = -1;
  for (const TensorSpec& s : t) {
    if (s.layer < 0) continue;
    EXPECT_GE(s.layer, last_layer);
    last_layer = s.layer;
  }
}

// The op the model runs a layer of `role` through; nullopt: not a linear
// layer (its tensor is no LinearWeight).
std::optional<LinearOp> WantOp(TensorRole role) {
  switch (role) {
    case TensorRole::kAttnQWeight:
    case TensorRole::kAttnKWeight:
    case TensorRole::kAttnVWeight:
      return LinearOp::kMatMulShared;
    case TensorRole::kExpertGate:
    case TensorRole::kExpertUp:
      return LinearOp::kGroupedExpertGateUp;
    case TensorRole::kExpertDown:
      return LinearOp::kGroupedExpertMatMul;
    case TensorRole::kAttnOWeight:
    case TensorRole::kMlpGate:
    case TensorRole::kMlpUp:
    case TensorRole::kMlpDown:
    case TensorRole::kRouter:
    case TensorRole::kSharedExpertGateProj:
    case TensorRole::kSharedExpertUpProj:
    case TensorRole::kSharedExpertDownProj:
    case TensorRole::kSharedExpertGate:
    case TensorRole::kLmHead:
      return LinearOp::kMatMul;
    default:
      return std::nullopt;
  }
}

TEST(LinearSpecTest, EveryLinearLayerIsOneUnquantizedWeightEntryNamingItsOp) {
  for (const char* arch :
       {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MixtralForCausalLM",
        "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM"}) {
    SCOPED_TRACE(arch);
    std::map<TensorRole, int> linear_layers;
    for (const TensorSpec& t : ExpectedTensors(MustParse(SmallConfig(arch)))) {
      SCOPED_TRACE(t.name);
      EXPECT_FALSE(t.fixed_dtype.has_value());  // unquantized: the dtype policy decides
      const std::optional<LinearOp> op = WantOp(t.role);
      if (!op.has_value()) {
        EXPECT_EQ(t.part, LinearPart::kNone);
        continue;
      }
      ++linear_layers[t.role];
      // Unquantized: `<module>.weight` [N, K], no companion entries.
      ASSERT_EQ(t.part, LinearPart::kWeight);
      EXPECT_TRUE(absl::EndsWith(t.name, ".weight"));
      EXPECT_EQ(t.linear.format, WeightFormat::kUnquantized);
      EXPECT_EQ(t.linear.op, *op);
      ASSERT_EQ(t.shape.size(), 2u);
      EXPECT_EQ(t.linear.out_features, t.shape[0]);
      EXPECT_EQ(t.linear.in_features, t.shape[1]);
      EXPECT_EQ(t.linear.group_size, 0);
      EXPECT_THAT(t.linear.block_shape, ElementsAre(0, 0));
      EXPECT_EQ(t.linear.scales_name, "");
      EXPECT_EQ(t.linear.zero_points_name, "");
    }
    EXPECT_EQ(linear_layers[TensorRole::kAttnQWeight], 4);  // one per layer
  }
}

TEST(LinearSpecTest, ExpertAndProjectionOpsByHand) {
  auto t = ByName(MustParse(SmallConfig("Qwen2MoeForCausalLM")));
  EXPECT_EQ(t.at("model.layers.0.self_attn.k_proj.weight").linear.op, LinearOp::kMatMulShared);
  EXPECT_EQ(t.at("model.layers.0.self_attn.o_proj.weight").linear.op, LinearOp::kMatMul);
  EXPECT_EQ(t.at("model.layers.0.mlp.gate.weight").linear.op, LinearOp::kMatMul);
  const TensorSpec& gate = t.at("model.layers.0.mlp.experts.5.gate_proj.weight");
  EXPECT_EQ(gate.linear.op, LinearOp::kGroupedExpertGateUp);
  EXPECT_EQ(gate.linear.out_features, 32);  // moe_intermediate_size
  EXPECT_EQ(gate.linear.in_features, 64);   // hidden
  EXPECT_EQ(gate.expert, 5);
  const TensorSpec& down = t.at("model.layers.0.mlp.experts.5.down_proj.weight");
  EXPECT_EQ(down.linear.op, LinearOp::kGroupedExpertMatMul);
  EXPECT_EQ(down.linear.out_features, 64);
  EXPECT_EQ(down.linear.in_features, 32);
  EXPECT_EQ(t.at("model.layers.0.mlp.shared_expert_gate.weight").linear.out_features, 1);
  EXPECT_EQ(t.at("lm_head.weight").linear.op, LinearOp::kMatMul);
  EXPECT_EQ(t.at("model.layers.0.self_attn.q_proj.bias").part, LinearPart::kNone);
  EXPECT_EQ(t.at("model.embed_tokens.weight").part, LinearPart::kNone);
}

TEST(LinearSpecTest, PartNames) {
  EXPECT_STREQ(LinearPartName(LinearPart::kNone), "none");
  EXPECT_STREQ(LinearPartName(LinearPart::kWeight), "weight");
  EXPECT_STREQ(LinearPartName(LinearPart::kScales), "scales");
  EXPECT_STREQ(LinearPartName(LinearPart::kZeroPoints), "zero_points");
}

TEST(ParamCountTest, SmallQwen3MoeByHand) {
  ModelDescription d = MustParse(SmallConfig("Qwen3MoeForCausalLM"));
  // Per layer: attention 64*64 + 2*32*64 + 64*64 = 12288, q/k norm 2*16, 2 norms 2*64,
  // router 8*64 = 512, experts 8 x 3 x 32*64 = 49152. Plus embed, lm_head 128*64 each, norm 64.
  const int64_t shared_per_layer = 12288 + 32 + 128 + 512;
  const int64_t globals = 2 * 128 * 64 + 64;
  EXPECT_EQ(d.total_params(), 4 * (shared_per_layer + 49152) + globals);
  EXPECT_EQ(d.active_params_per_token(), 4 * (shared_per_layer + 2 * 3 * 32 * 64) + globals);

  ModelDescription dense = MustParse(SmallConfig("LlamaForCausalLM"));
  EXPECT_EQ(dense.active_params_per_token(), dense.total_params());
}

TEST(PackedExpertsTest, NamesShapesAndSlices) {
  Json j = SmallConfig("Qwen3MoeForCausalLM");
  j["moe_intermediate_size"] = 24;
  ModelDescription d = MustParse(j);
  std::vector<PackedExpertSpec> packed = PackedExpertTensors(d);
  ASSERT_EQ(packed.size(), 4u);
  const PackedExpertSpec& p = packed[2];
  EXPECT_EQ(p.layer, 2);
  EXPECT_EQ(p.gate_up_name, "model.layers.2.mlp.experts.gate_up_proj");
  EXPECT_THAT(p.gate_up_shape, ElementsAre(8, 48, 64));  // [E, 2I, H]
  EXPECT_EQ(p.down_name, "model.layers.2.mlp.experts.down_proj");
  EXPECT_THAT(p.down_shape, ElementsAre(8, 64, 24));  // [E, H, I]
  EXPECT_EQ(p.router_name, "model.layers.2.mlp.gate.weight");
  EXPECT_EQ(p.per_expert_router_name, "model.layers.2.mlp.gate.weight");

  absl::StatusOr<PackedSlice> gate = p.SliceFor(TensorRole::kExpertGate, 3);
  ASSERT_TRUE(gate.ok()) << gate.status();
  EXPECT_EQ(gate->packed_name, p.gate_up_name);
  EXPECT_EQ(gate->element_offset, 3 * 48 * 64);
  EXPECT_THAT(gate->shape, ElementsAre(24, 64));
  absl::StatusOr<PackedSlice> up = p.SliceFor(TensorRole::kExpertUp, 3);
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->element_offset, 3 * 48 * 64 + 24 * 64);  // rows [I, 2I) of expert 3
  absl::StatusOr<PackedSlice> down = p.SliceFor(TensorRole::kExpertDown, 3);
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(down->packed_name, p.down_name);
  EXPECT_EQ(down->element_offset, 3 * 64 * 24);
  EXPECT_THAT(down->shape, ElementsAre(64, 24));

  EXPECT_EQ(p.SliceFor(TensorRole::kExpertGate, 8).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(p.SliceFor(TensorRole::kRouter, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PackedExpertsTest, SlicesTileThePackedTensorsAndMatchPerExpertShapes) {
  for (const char* arch :
       {"MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM"}) {
    ModelDescription d = MustParse(SmallConfig(arch));
    std::vector<PackedExpertSpec> packed = PackedExpertTensors(d);
    ASSERT_EQ(static_cast<int>(packed.size()), d.num_moe_layers()) << arch;
    std::map<int, const PackedExpertSpec*> by_layer;
    for (const PackedExpertSpec& p : packed) by_layer[p.layer] = &p;
    // Every per-expert tensor has a slice of the same shape; together the
    // slices cover each packed tensor exactly once.
    std::map<std::string, std::set<int64_t>> offsets;
    std::map<std::string, int64_t> covered;
    for (const TensorSpec& t : ExpectedTensors(d)) {
      if (!IsRoutedExpertRole(t.role)) continue;
      absl::StatusOr<PackedSlice> s = by_layer.at(t.layer)->SliceFor(t.role, t.expert);
      ASSERT_TRUE(s.ok()) << s.status();
      EXPECT_EQ(s->shape, t.shape) << t.name;
      EXPECT_TRUE(offsets[s->packed_name].insert(s->element_offset).second) << t.name;
      covered[s->packed_name] += s->num_elements();
    }
    for (const PackedExpertSpec& p : packed) {
      EXPECT_EQ(covered[p.gate_up_name],
                p.gate_up_shape[0] * p.gate_up_shape[1] * p.gate_up_shape[2])
          << arch;
      EXPECT_EQ(covered[p.down_name], p.down_shape[0] * p.down_shape[1] * p.down_shape[2]) << arch;
    }
  }
}

TEST(PackedExpertsTest, MixtralRouterMovesToMlpGate) {
  std::vector<PackedExpertSpec> packed =
      PackedExpertTensors(MustParse(SmallConfig("MixtralForCausalLM")));
  ASSERT_EQ(packed.size(), 4u);
  EXPECT_EQ(packed[0].gate_up_name, "model.layers.0.mlp.experts.gate_up_proj");
  EXPECT_THAT(packed[0].gate_up_shape, ElementsAre(8, 96, 64));
  EXPECT_EQ(packed[0].router_name, "model.layers.0.mlp.gate.weight");
  EXPECT_EQ(packed[0].per_expert_router_name, "model.layers.0.block_sparse_moe.gate.weight");
}

TEST(PackedExpertsTest, OnlyMoeLayersAndNoneForDense) {
  Json j = SmallConfig("Qwen2MoeForCausalLM");
  j["decoder_sparse_step"] = 2;
  std::vector<PackedExpertSpec> packed = PackedExpertTensors(MustParse(j));
  ASSERT_EQ(packed.size(), 2u);
  EXPECT_EQ(packed[0].layer, 1);
  EXPECT_EQ(packed[1].layer, 3);
  EXPECT_TRUE(PackedExpertTensors(MustParse(SmallConfig("Qwen3ForCausalLM"))).empty());
}

TEST(TensorRoleTest, NamesAreDistinct) {
  std::set<std::string> names;
  for (int r = 0; r <= static_cast<int>(TensorRole::kSharedExpertGate); ++r) {
    EXPECT_TRUE(names.insert(TensorRoleName(static_cast<TensorRole>(r))).second);
  }
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("?")));
}

}  // namespace
}  // namespace epserve
