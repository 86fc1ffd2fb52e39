// The loader's side of the weight-format seam: it asks the backend for every
// (linear op, format) pair the model's layers need and refuses the model
// naming the layer, the format, the op and the backend; it assembles one
// LinearWeight per held linear layer from the TensorSpecs (weight plus the
// companions the spec names).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/load_format.h"
#include "common/model_config/model_config.h"
#include "common/placement.h"
#include "kernels/cpu/cpu_backend.h"
#include "worker/weights/weight_loader.h"

namespace epserve::weights {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr int kExperts = 4;

std::string Config(const std::string& architecture) {
  const bool moe = architecture == "Qwen3MoeForCausalLM";
  return absl::StrCat(R"({"architectures": [")", architecture, R"("], "model_type": ")",
                      moe ? "qwen3_moe" : "qwen3", R"(",
    "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
    "moe_intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 1, "head_dim": 16, "num_experts": )",
                      kExperts, R"(,
    "num_experts_per_tok": 2, "norm_topk_prob": true, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float32"})");
}

// The CPU backend, refusing one linear op for every format.
class RefusingCpuBackend : public kernels::cpu::CpuBackend {
 public:
  explicit RefusingCpuBackend(LinearOp refused)
      : CpuBackend(kernels::cpu::CpuBackendOptions{}), refused_(refused) {}
  bool Supports(LinearOp op, WeightFormat format) const override {
    return op != refused_ && CpuBackend::Supports(op, format);
  }

 private:
  LinearOp refused_;
};

class LinearFormatsTest : public ::testing::Test {
 protected:
  ModelDescription Desc(const std::string& architecture) {
    dir_ = fs::path(EPSERVE_TEST_SCRATCH) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "config.json") << Config(architecture);
    auto d = LoadModelConfig(dir_.string());
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : ModelDescription();
  }
  // Dummy weights (no checkpoint needed), made on `device`.
  absl::StatusOr<ModelWeights> Load(const ModelDescription& desc, kernels::Backend* device,
                                    LoadOptions options = {}) {
    options.format = checkpoint::LoadFormat::kDummy;
    options.device = device;
    return LoadWeights(desc, dir_.string(), options);
  }
  fs::path dir_;
};

TEST_F(LinearFormatsTest, LoadRefusesALayerWhoseOpAndFormatTheBackendDoesNotRun) {
  struct Case {
    LinearOp refused;
    std::string first_layer;  // the first layer of the model that needs it
  };
  const Case cases[] = {
      {LinearOp::kMatMulShared, "layer 0 'model.layers.0.self_attn.q_proj.weight'"},
      {LinearOp::kMatMul, "layer 0 'model.layers.0.self_attn.o_proj.weight'"},
      {LinearOp::kGroupedExpertGateUp, "layer 0 'model.layers.0.mlp.experts.0.gate_proj.weight'"},
      {LinearOp::kGroupedExpertMatMul, "layer 0 'model.layers.0.mlp.experts.0.down_proj.weight'"},
  };
  const ModelDescription desc = Desc("Qwen3MoeForCausalLM");
  for (const Case& c : cases) {
    SCOPED_TRACE(LinearOpName(c.refused));
    RefusingCpuBackend backend(c.refused);
    auto w = Load(desc, &backend);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(w.status().message(),
              absl::StrCat(desc.config_file, ": Qwen3MoeForCausalLM ", c.first_layer,
                           ": weight format unquantized is not supported by ",
                           LinearOpName(c.refused), " on the cpu backend"));
  }
}

TEST_F(LinearFormatsTest, OnlyTheOpsTheModelUsesAreAsked) {
  // A dense model runs no grouped expert op: a backend without them loads it.
  const ModelDescription desc = Desc("Qwen3ForCausalLM");
  for (LinearOp refused : {LinearOp::kGroupedExpertMatMul, LinearOp::kGroupedExpertGateUp}) {
    RefusingCpuBackend backend(refused);
    auto w = Load(desc, &backend);
    EXPECT_TRUE(w.ok()) << w.status();
  }
  RefusingCpuBackend no_matmul(LinearOp::kMatMul);
  EXPECT_EQ(Load(desc, &no_matmul).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(LinearFormatsTest, TiedLmHeadNeedsMatMulOnTheEmbeddingTable) {
  ModelDescription desc = Desc("Qwen3ForCausalLM");
  desc.tie_word_embeddings = true;
  RefusingCpuBackend no_matmul(LinearOp::kMatMul);
  absl::Status s = CheckLinearFormatsSupported(desc, /*specs=*/{}, no_matmul);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(),
              HasSubstr("lm_head (tied to model.embed_tokens.weight): weight format unquantized "
                        "is not supported by MatMul on the cpu backend"));
  auto cpu = kernels::cpu::CreateCpuBackend();
  EXPECT_TRUE(CheckLinearFormatsSupported(desc, ExpectedTensors(desc), *cpu).ok());
}

TEST_F(LinearFormatsTest, EveryHeldLinearLayerIsALinearWeightSharingItsTensor) {
  const ModelDescription desc = Desc("Qwen3MoeForCausalLM");
  auto placement = PlaceExperts(kExperts, 2, PlacementStrategy::kLinear);
  ASSERT_TRUE(placement.ok()) << placement.status();
  LoadOptions options;
  options.expert_to_rank = *placement;
  options.rank = 1;
  auto cpu = kernels::cpu::CreateCpuBackend();
  auto w = Load(desc, cpu.get(), options);
  ASSERT_TRUE(w.ok()) << w.status();
  int held = 0;
  for (const TensorSpec& spec : ExpectedTensors(desc)) {
    SCOPED_TRACE(spec.name);
    const kernels::LinearWeight* linear = w->FindLinear(spec.name);
    if (spec.part != LinearPart::kWeight) {
      EXPECT_EQ(linear, nullptr);
      continue;
    }
    if (spec.expert >= 0 && (*placement)[static_cast<size_t>(spec.expert)] != 1) {
      EXPECT_EQ(linear, nullptr);  // another rank's expert
      continue;
    }
    ASSERT_NE(linear, nullptr);
    ++held;
    EXPECT_EQ(linear->format, WeightFormat::kUnquantized);
    EXPECT_EQ(linear->weight.data(), w->Find(spec.name)->data());  // shared, not copied
    EXPECT_EQ(linear->out_features(), spec.linear.out_features);
    EXPECT_EQ(linear->in_features(), spec.linear.in_features);
    EXPECT_FALSE(linear->scales.defined());
    EXPECT_FALSE(linear->zero_points.defined());
  }
  // Per layer: q, k, v, o, router and 2 of 4 experts x 3; plus lm_head.
  EXPECT_EQ(held, 2 * (5 + 2 * 3) + 1);
  EXPECT_EQ(static_cast<int>(w->linears().size()), held);
}

TEST(AssembleLinearWeightTest, TakesTheWeightAndTheCompanionsTheSpecNames) {
  auto tensor = [](std::vector<int64_t> shape) {
    return *kernels::EmptyHostTensor(DataType::kFloat32, std::move(shape));
  };
  const std::map<std::string, kernels::Tensor> stored = {
      {"l.weight", tensor({4, 8})}, {"l.scales", tensor({4, 2})}, {"l.zeros", tensor({4, 2})}};
  auto find = [&](const std::string& name) -> const kernels::Tensor* {
    auto it = stored.find(name);
    return it == stored.end() ? nullptr : &it->second;
  };
  TensorSpec spec{"l.weight", {4, 8}, TensorRole::kMlpUp, 0};
  spec.part = LinearPart::kWeight;
  spec.linear.out_features = 4;
  spec.linear.in_features = 8;

  auto plain = AssembleLinearWeight(spec, find);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->weight.data(), stored.at("l.weight").data());
  EXPECT_FALSE(plain->scales.defined());
  EXPECT_FALSE(plain->zero_points.defined());

  // The generic companion path every quantized format takes.
  spec.linear.scales_name = "l.scales";
  spec.linear.zero_points_name = "l.zeros";
  spec.linear.group_size = 4;
  spec.linear.block_shape = {1, 4};
  auto full = AssembleLinearWeight(spec, find);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->scales.data(), stored.at("l.scales").data());
  EXPECT_EQ(full->zero_points.data(), stored.at("l.zeros").data());
  EXPECT_EQ(full->group_size, 4);
  EXPECT_EQ(full->block_shape[1], 4);

  spec.linear.scales_name = "l.missing_scales";
  auto missing = AssembleLinearWeight(spec, find);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("linear layer 'l.weight' (mlp_up): missing tensor 'l.missing_scales'"));

  TensorSpec norm{"n.weight", {8}, TensorRole::kInputNorm, 0};
  EXPECT_EQ(AssembleLinearWeight(norm, find).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace epserve::weights
