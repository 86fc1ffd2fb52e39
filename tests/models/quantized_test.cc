// Quantized checkpoints (fp8-block, awq-int4) on the CPU backend: every
// fixture quantized by the reference quantizers (quantize_reference.h) gives
// the logits of its exactly dequantized float32 twin, dense and MoE layers,
// also when a rank holds only its experts; bad quantized checkpoints fail at
// load naming what is wrong.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/quantization.h"
#include "common/dtype_convert.h"
#include "common/model_config/model_config.h"
#include "common/placement.h"
#include "common/safetensors/checkpoint.h"
#include "common/safetensors/writer.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "nlohmann/json.hpp"
#include "tests/models/fixture_reference.h"
#include "tests/models/quantize_reference.h"
#include "worker/models/offline_runner.h"
#include "worker/weights/weight_loader.h"

namespace epserve::testing {
namespace {

using models::testing::FixtureModelDir;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string Scratch(const std::string& name) {
  const fs::path dir = fs::path(EPSERVE_TEST_SCRATCH) / absl::StrCat(getpid()) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

struct Case {
  std::string fixture;
  QuantFormat format;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrCat(info.param.fixture,
                      info.param.format == QuantFormat::kFp8Block ? "_fp8block" : "_awqint4");
}

class QuantizedParity : public ::testing::TestWithParam<Case> {};

TEST_P(QuantizedParity, LogitsAndGreedyEqualTheDequantizedFloat32Twin) {
  const Case& c = GetParam();
  QuantizedPair pair;
  // Mixtral's experts are 24 wide: AWQ groups of 8 there.
  const std::string patch =
      c.fixture == "mixtral" && c.format == QuantFormat::kAwqInt4 ? R"({"group_size": 8})" : "{}";
  absl::Status made =
      QuantizeModel(FixtureModelDir(c.fixture), Scratch(CaseName({c, 0})), c.format, &pair, patch);
  ASSERT_TRUE(made.ok()) << made;
  models::OfflineRunnerOptions qo, to;
  qo.model_dir = pair.quantized_dir;
  to.model_dir = pair.twin_dir;
  absl::StatusOr<std::unique_ptr<models::OfflineRunner>> q = models::OfflineRunner::Load(qo);
  ASSERT_TRUE(q.ok()) << q.status();
  absl::StatusOr<std::unique_ptr<models::OfflineRunner>> t = models::OfflineRunner::Load(to);
  ASSERT_TRUE(t.ok()) << t.status();

  // The quantized runner holds the quantized tensors, not float32 copies.
  const std::string probe = c.format == QuantFormat::kFp8Block
                                ? "model.layers.0.self_attn.q_proj.weight"
                                : "model.layers.0.self_attn.q_proj.qweight";
  const kernels::Tensor* held = (*q)->weights().Find(probe);
  ASSERT_NE(held, nullptr);
  EXPECT_EQ(held->dtype,
            c.format == QuantFormat::kFp8Block ? DataType::kFloat8E4M3 : DataType::kInt32);
  EXPECT_LT((*q)->weights().report().bytes_held, (*t)->weights().report().bytes_held);

  const std::vector<int32_t> ids = {1, 17, 250, 3, 99, 42, 7, 311, 5, 128, 64, 2};
  absl::StatusOr<std::vector<float>> ql = (*q)->PromptLogits(ids);
  absl::StatusOr<std::vector<float>> tl = (*t)->PromptLogits(ids);
  ASSERT_TRUE(ql.ok()) << ql.status();
  ASSERT_TRUE(tl.ok()) << tl.status();
  ASSERT_EQ(ql->size(), tl->size());
  float max_abs = 0.0f, max_diff = 0.0f;
  for (size_t i = 0; i < tl->size(); ++i) {
    max_abs = std::max(max_abs, std::fabs((*tl)[i]));
    max_diff = std::max(max_diff, std::fabs((*ql)[i] - (*tl)[i]));
  }
  EXPECT_LE(max_diff, 1e-4f * max_abs) << "max |logit| " << max_abs;
  RecordProperty("max_diff_over_max_logit", absl::StrCat(max_diff / max_abs));

  absl::StatusOr<std::vector<int32_t>> qg = (*q)->GreedyGenerate(ids, 16);
  absl::StatusOr<std::vector<int32_t>> tg = (*t)->GreedyGenerate(ids, 16);
  ASSERT_TRUE(qg.ok() && tg.ok());
  EXPECT_EQ(*qg, *tg);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, QuantizedParity,
                         ::testing::Values(Case{"qwen3", QuantFormat::kFp8Block},
                                           Case{"qwen3", QuantFormat::kAwqInt4},
                                           Case{"qwen3_moe", QuantFormat::kFp8Block},
                                           Case{"qwen3_moe", QuantFormat::kAwqInt4},
                                           Case{"mixtral", QuantFormat::kFp8Block},
                                           Case{"mixtral", QuantFormat::kAwqInt4}),
                         CaseName);

// The linear op on one quantized layer against its twin's float32 layer, at
// the row counts of the in-place GEMV (1..4) and of the dequantized panels.
TEST(Quantized, MatMulOnAQuantizedLayerEqualsTheFloat32Layer) {
  for (QuantFormat format : {QuantFormat::kFp8Block, QuantFormat::kAwqInt4}) {
    QuantizedPair pair;
    ASSERT_TRUE(QuantizeModel(FixtureModelDir("qwen3"), Scratch("matmul"), format, &pair).ok());
    absl::StatusOr<ModelDescription> qd = LoadModelConfig(pair.quantized_dir);
    absl::StatusOr<ModelDescription> td = LoadModelConfig(pair.twin_dir);
    ASSERT_TRUE(qd.ok() && td.ok());
    auto qw = weights::LoadWeights(*qd, pair.quantized_dir, weights::LoadOptions());
    auto tw = weights::LoadWeights(*td, pair.twin_dir, weights::LoadOptions());
    ASSERT_TRUE(qw.ok() && tw.ok());
    const std::string module = "model.layers.0.self_attn.o_proj";
    const kernels::LinearWeight* ql =
        qw->FindLinear(module + (format == QuantFormat::kFp8Block ? ".weight" : ".qweight"));
    const kernels::LinearWeight* tl = tw->FindLinear(module + ".weight");
    ASSERT_NE(ql, nullptr);
    ASSERT_NE(tl, nullptr);
    auto backend = kernels::CreateBackend(kernels::DeviceSpec{});
    ASSERT_TRUE(backend.ok());
    const int64_t k = tl->in_features(), n = tl->out_features();
    for (int64_t rows : {1, 2, 3, 4, 5, 9}) {
      SCOPED_TRACE(rows);
      kernels::Tensor x = *kernels::EmptyHostTensor(DataType::kFloat32, {rows, k});
      for (int64_t i = 0; i < rows * k; ++i) {
        x.mutable_data_as<float>()[i] = static_cast<float>((i * 37) % 101 - 50) / 50.0f;
      }
      kernels::Tensor yq = *kernels::EmptyHostTensor(DataType::kFloat32, {rows, n});
      kernels::Tensor yt = *kernels::EmptyHostTensor(DataType::kFloat32, {rows, n});
      ASSERT_TRUE((*backend)->MatMul(x, *ql, kernels::Tensor{}, &yq).ok());
      ASSERT_TRUE((*backend)->MatMul(x, *tl, kernels::Tensor{}, &yt).ok());
      float max_abs = 0.0f, max_diff = 0.0f;
      for (int64_t i = 0; i < rows * n; ++i) {
        max_abs = std::max(max_abs, std::fabs(yt.data_as<float>()[i]));
        max_diff = std::max(max_diff, std::fabs(yq.data_as<float>()[i] - yt.data_as<float>()[i]));
      }
      EXPECT_LE(max_diff, 1e-5f * max_abs);
    }
  }
}

TEST(Quantized, ModulesToNotConvertStayUnquantized) {
  QuantizedPair pair;
  ASSERT_TRUE(QuantizeModel(FixtureModelDir("qwen3_moe"), Scratch("not_convert"),
                            QuantFormat::kFp8Block, &pair,
                            R"({"modules_to_not_convert": ["self_attn"]})")
                  .ok());
  absl::StatusOr<ModelDescription> desc = LoadModelConfig(pair.quantized_dir);
  ASSERT_TRUE(desc.ok());
  for (const TensorSpec& spec : ExpectedTensors(*desc)) {
    if (spec.part != LinearPart::kWeight) continue;
    const bool attention = spec.name.find("self_attn") != std::string::npos;
    const bool kept = attention || spec.role == TensorRole::kRouter;
    EXPECT_EQ(spec.linear.format == WeightFormat::kUnquantized, kept) << spec.name;
  }
  models::OfflineRunnerOptions qo, to;
  qo.model_dir = pair.quantized_dir;
  to.model_dir = pair.twin_dir;
  auto q = models::OfflineRunner::Load(qo);
  auto t = models::OfflineRunner::Load(to);
  ASSERT_TRUE(q.ok() && t.ok());
  const std::vector<int32_t> ids = {1, 5, 9, 200};
  EXPECT_EQ(*(*q)->GreedyGenerate(ids, 8), *(*t)->GreedyGenerate(ids, 8));
}

TEST(Quantized, ARankReadsOnlyItsOwnExpertsQuantizedTensors) {
  for (QuantFormat format : {QuantFormat::kFp8Block, QuantFormat::kAwqInt4}) {
    QuantizedPair pair;
    ASSERT_TRUE(
        QuantizeModel(FixtureModelDir("qwen3_moe"), Scratch("ep_load"), format, &pair).ok());
    absl::StatusOr<ModelDescription> desc = LoadModelConfig(pair.quantized_dir);
    ASSERT_TRUE(desc.ok());
    weights::LoadOptions all;
    absl::StatusOr<weights::ModelWeights> full =
        weights::LoadWeights(*desc, pair.quantized_dir, all);
    ASSERT_TRUE(full.ok()) << full.status();
    weights::LoadOptions half;
    half.expert_to_rank = *PlaceExperts(8, 2, PlacementStrategy::kLinear);
    half.rank = 1;
    absl::StatusOr<weights::ModelWeights> mine =
        weights::LoadWeights(*desc, pair.quantized_dir, half);
    ASSERT_TRUE(mine.ok()) << mine.status();
    EXPECT_EQ(mine->report().local_experts, (std::vector<int>{4, 5, 6, 7}));
    EXPECT_LT(mine->report().bytes_read, full->report().bytes_read);
    const std::string own = format == QuantFormat::kFp8Block
                                ? "model.layers.1.mlp.experts.5.up_proj.weight_scale_inv"
                                : "model.layers.1.mlp.experts.5.up_proj.qzeros";
    const std::string other = format == QuantFormat::kFp8Block
                                  ? "model.layers.1.mlp.experts.1.up_proj.weight_scale_inv"
                                  : "model.layers.1.mlp.experts.1.up_proj.qzeros";
    EXPECT_NE(mine->Find(own), nullptr);
    EXPECT_EQ(mine->Find(other), nullptr);
    EXPECT_NE(mine->FindLinear(own.substr(0, own.rfind('.')) +
                               (format == QuantFormat::kFp8Block ? ".weight" : ".qweight")),
              nullptr);
  }
}

// Rewrites `dir`/model.safetensors without `drop` and with `replace` added.
void RewriteCheckpoint(const std::string& dir, const std::string& drop,
                       std::vector<safetensors::TensorToWrite> replace = {}) {
  auto ckpt = safetensors::SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  std::vector<safetensors::TensorToWrite> tensors = std::move(replace);
  for (const std::string& name : (*ckpt)->TensorNames()) {
    if (name == drop) continue;
    bool replaced = false;
    for (const auto& r : tensors) replaced = replaced || r.name == name;
    if (replaced) continue;
    const safetensors::TensorInfo* info = (*ckpt)->Find(name);
    auto data = (*ckpt)->Data(name);
    ASSERT_TRUE(data.ok());
    tensors.push_back({name, info->dtype, info->shape,
                       std::string(reinterpret_cast<const char*>(data->data()), data->size())});
  }
  ckpt->reset();
  ASSERT_TRUE(safetensors::WriteSafetensors(dir + "/model.safetensors", tensors).ok());
}

absl::Status LoadQuantized(const std::string& dir) {
  absl::StatusOr<ModelDescription> desc = LoadModelConfig(dir);
  if (!desc.ok()) return desc.status();
  return weights::LoadWeights(*desc, dir, weights::LoadOptions()).status();
}

TEST(Quantized, BadQuantizedCheckpointsFailNamingWhatIsWrong) {
  {  // a missing scale tensor
    QuantizedPair pair;
    ASSERT_TRUE(QuantizeModel(FixtureModelDir("qwen3"), Scratch("missing_scale"),
                              QuantFormat::kFp8Block, &pair)
                    .ok());
    RewriteCheckpoint(pair.quantized_dir, "model.layers.1.mlp.down_proj.weight_scale_inv");
    absl::Status s = LoadQuantized(pair.quantized_dir);
    EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("model.layers.1.mlp.down_proj.weight_scale_inv"));
  }
  {  // scales of the wrong shape
    QuantizedPair pair;
    ASSERT_TRUE(
        QuantizeModel(FixtureModelDir("qwen3"), Scratch("bad_shape"), QuantFormat::kAwqInt4, &pair)
            .ok());
    std::vector<uint16_t> zeros(3 * 7, 0);
    RewriteCheckpoint(
        pair.quantized_dir, "",
        {{"model.layers.0.self_attn.o_proj.scales",
          DataType::kFloat16,
          {3, 7},
          std::string(reinterpret_cast<const char*>(zeros.data()), zeros.size() * 2)}});
    absl::Status s = LoadQuantized(pair.quantized_dir);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr("model.layers.0.self_attn.o_proj.scales"));
  }
  {  // an fp8 weight stored as bfloat16
    QuantizedPair pair;
    ASSERT_TRUE(
        QuantizeModel(FixtureModelDir("qwen3"), Scratch("bad_dtype"), QuantFormat::kFp8Block, &pair)
            .ok());
    absl::StatusOr<ModelDescription> desc = LoadModelConfig(pair.quantized_dir);
    ASSERT_TRUE(desc.ok());
    int64_t n = 0, k = 0;
    for (const TensorSpec& spec : ExpectedTensors(*desc)) {
      if (spec.name == "model.layers.0.mlp.up_proj.weight") n = spec.shape[0], k = spec.shape[1];
    }
    std::string bytes(static_cast<size_t>(n * k * 2), '\0');
    RewriteCheckpoint(pair.quantized_dir, "",
                      {{"model.layers.0.mlp.up_proj.weight", DataType::kBFloat16, {n, k}, bytes}});
    absl::Status s = LoadQuantized(pair.quantized_dir);
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.message()), HasSubstr("model.layers.0.mlp.up_proj.weight"));
  }
}

TEST(Quantized, UnsupportedConfigurationsAreRefusedNamingTheMethod) {
  struct Bad {
    std::string patch;
    std::string method;
    std::string says;
  };
  const Bad cases[] = {
      {R"({"bits": 8})", "awq", "8-bit awq"},
      {R"({"zero_point": false})", "awq", "awq without zero_point"},
      {R"({"version": "gemv"})", "awq", "awq version 'gemv'"},
      {R"({"activation_scheme": "static"})", "fp8", "activation_scheme 'static'"},
      {R"({"weight_block_size": null})", "fp8", "per-tensor fp8"},
      {R"({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": true})", "gptq",
       "act-order"},
      {R"({"quant_method": "compressed-tensors"})", "compressed-tensors", "this method"},
  };
  for (const Bad& bad : cases) {
    SCOPED_TRACE(bad.patch);
    QuantizedPair pair;
    ASSERT_TRUE(QuantizeModel(FixtureModelDir("qwen3"), Scratch("unsupported"),
                              bad.method == "fp8" ? QuantFormat::kFp8Block : QuantFormat::kAwqInt4,
                              &pair, bad.patch)
                    .ok());
    absl::StatusOr<ModelDescription> desc = LoadModelConfig(pair.quantized_dir);
    ASSERT_TRUE(desc.ok()) << desc.status();
    absl::Status s = checkpoint::CheckQuantizationSupported(*desc, "cpu");
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(bad.says));
    EXPECT_THAT(std::string(s.message()), HasSubstr("cpu backend"));
    EXPECT_EQ(LoadQuantized(pair.quantized_dir).code(), absl::StatusCode::kFailedPrecondition);
  }
  // The GPU backend has no quantized kernels yet: refused up front.
  QuantizedPair pair;
  ASSERT_TRUE(
      QuantizeModel(FixtureModelDir("qwen3"), Scratch("cuda"), QuantFormat::kFp8Block, &pair).ok());
  absl::StatusOr<ModelDescription> desc = LoadModelConfig(pair.quantized_dir);
  ASSERT_TRUE(desc.ok());
  absl::Status s = checkpoint::CheckQuantizationSupported(*desc, "cuda:0");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no fp8-block or awq-int4 kernels"));
}

TEST(Quantized, Fp8EncoderRoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(Fp32ToFp8E4M3(0.0f), 0x00);
  EXPECT_EQ(Fp32ToFp8E4M3(1.0f), 0x38);
  EXPECT_EQ(Fp32ToFp8E4M3(-2.0f), 0xc0);
  EXPECT_EQ(Fp32ToFp8E4M3(448.0f), 0x7e);
  EXPECT_EQ(Fp32ToFp8E4M3(1e6f), 0x7e);  // saturates, never NaN
  // 1.0625 lies halfway between 1.0 (0x38) and 1.125 (0x39): the even code.
  EXPECT_EQ(Fp32ToFp8E4M3(1.0625f), 0x38);
  for (int c = 0; c < 0x7f; ++c) {
    const float v = Fp8E4M3ToFp32(static_cast<uint8_t>(c));
    EXPECT_EQ(Fp32ToFp8E4M3(v), c) << c;
  }
}

}  // namespace
}  // namespace epserve::testing
