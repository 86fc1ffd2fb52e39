// The forward pass against transformers (tests/fixtures/models, docs/fixtures.md):
// for every fixture and prompt, logits at every position within
// 1e-4 × max|logit| of the reference, the 16-token greedy continuation, and
// the step-shape invariances (chunked prefill, prefill then decode, batching)
// that the cluster's scheduler relies on.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "kernels/device.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/models/fixture_reference.h"
#include "worker/models/offline_runner.h"

namespace epserve::models {
namespace {

using testing::FixtureModelDir;
using testing::FixtureReference;
using testing::FixtureReferenceDir;
using testing::LoadFixtureReference;
using testing::ReferencePrompt;

constexpr double kParityTolerance = 1e-4;  // × the prompt's max |logit|
// On a GPU, bf16 weights multiply activations rounded to bf16 (tensor
// cores), as transformers does in bf16; against the float32 reference that
// costs about two bf16 ulps of the logits.
constexpr double kGpuBf16Tolerance = 3e-2;

// EPSERVE_TEST_DEVICE=cuda:K runs the suite on a GPU (ctest's
// models_parity_gpu, label gpu); without a usable GPU every test skips with
// the reason.
kernels::DeviceSpec TestDevice() { return kernels::testing::TestDeviceFromEnv(); }
const auto* const kGpuEnvironment =
    ::testing::AddGlobalTestEnvironment(new kernels::testing::GpuTestEnvironment);

struct Case {
  std::string fixture;
  std::string dtype;  // weight dtype policy
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrReplaceAll(absl::StrCat(info.param.fixture, "_", info.param.dtype),
                             {{"-", "_"}});
}

const std::vector<Case>& AllCases() {
  static const std::vector<Case> cases = {
      {"llama", "auto"},          {"qwen2", "auto"},
      {"qwen3", "auto"},          {"mixtral", "auto"},
      {"mixtral_packed", "auto"}, {"qwen2_moe", "auto"},
      {"qwen3_moe", "auto"},      {"olmoe", "auto"},
      {"tiny-qwen3-moe", "auto"}, {"qwen3_moe_bf16", "auto"},
      {"qwen3_moe_bf16", "float32"}, {"qwen3_moe_bf16_packed", "auto"},
      {"qwen3_moe_bf16_packed", "float32"},
  };
  return cases;
}

// max |a - b| over max |ref|.
double RelativeError(const std::vector<float>& got, const std::vector<float>& want,
                     double max_abs_logit) {
  double err = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - want[i]));
  }
  return err / max_abs_logit;
}

class ParityTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    auto ref = LoadFixtureReference(FixtureReferenceDir(GetParam().fixture));
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = std::move(*ref);
    OfflineRunnerOptions options;
    options.model_dir = FixtureModelDir(GetParam().fixture);
    options.dtype = GetParam().dtype;
    options.block_size = 4;  // several blocks per prompt
    options.max_context_tokens = 512;
    options.device = TestDevice();
    auto runner = OfflineRunner::Load(options);
    ASSERT_TRUE(runner.ok()) << runner.status();
    runner_ = std::move(*runner);
    ASSERT_EQ(runner_->desc().vocab_size, ref_.vocab_size);
  }

  int64_t vocab() const { return ref_.vocab_size; }
  bool gpu_low_precision() const {
    return TestDevice().type != kernels::DeviceType::kCpu &&
           runner_->weights().report().weight_dtype != DataType::kFloat32;
  }
  double tolerance() const { return gpu_low_precision() ? kGpuBf16Tolerance : kParityTolerance; }
  // Step-shape invariance: exact math on the CPU; on a GPU with bf16 weights
  // steps of different sizes take different GEMM kernels (other summation
  // orders of bf16 products).
  double invariance_tolerance() const { return gpu_low_precision() ? 1e-2 : 1e-5; }

  // Runs `ids` in chunks of `chunk` tokens, all logits rows.
  std::vector<float> ChunkedLogits(const std::vector<int32_t>& ids, size_t chunk) {
    StepSequence seq;
    seq.logits = LogitsRows::kAll;
    auto blocks = runner_->allocator().Allocate(
        kv_cache::BlocksForTokens(static_cast<int64_t>(ids.size()), runner_->cache().block_size()));
    EXPECT_TRUE(blocks.ok()) << blocks.status();
    seq.block_table = *blocks;
    std::vector<float> all;
    for (size_t start = 0; start < ids.size(); start += chunk) {
      seq.num_cached = static_cast<int64_t>(start);
      seq.token_ids.assign(ids.begin() + start, ids.begin() + std::min(ids.size(), start + chunk));
      auto logits = runner_->model().Forward(StepInput{{seq}}, runner_->cache());
      EXPECT_TRUE(logits.ok()) << logits.status();
      if (!logits.ok()) break;
      auto host = ToHostFloats(runner_->model().backend(), *logits);
      all.insert(all.end(), host->begin(), host->end());
    }
    EXPECT_TRUE(runner_->allocator().Free(seq.block_table).ok());
    return all;
  }

  FixtureReference ref_;
  std::unique_ptr<OfflineRunner> runner_;
};

TEST_P(ParityTest, LogitsMatchTransformersAtEveryPosition) {
  // bf16 checkpoints run with bf16 weights under auto, widened under float32.
  if (GetParam().fixture.find("bf16") != std::string::npos) {
    EXPECT_EQ(runner_->weights().report().weight_dtype,
              GetParam().dtype == "auto" ? DataType::kBFloat16 : DataType::kFloat32);
  }
  RecordProperty("weight_dtype", DataTypeName(runner_->weights().report().weight_dtype));
  double worst = 0.0;
  for (const ReferencePrompt& p : ref_.prompts) {
    SCOPED_TRACE(p.name);
    auto logits = runner_->PromptLogits(p.ids);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->size(), p.logits.size());
    const double err = RelativeError(*logits, p.logits, p.max_abs_logit);
    EXPECT_LE(err, tolerance());
    worst = std::max(worst, err);
    RecordProperty(absl::StrCat("rel_err_", p.name), absl::StrCat(err));
    for (size_t t = 0; t < p.ids.size(); ++t) {
      std::vector<float> row(logits->begin() + t * vocab(), logits->begin() + (t + 1) * vocab());
      std::vector<float> want(p.logits.begin() + t * vocab(), p.logits.begin() + (t + 1) * vocab());
      // In low precision the top token must agree where the reference's
      // top-2 margin exceeds twice the tolerance (closer calls may flip).
      std::vector<float> sorted = want;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      const bool decisive = !gpu_low_precision() ||
                            sorted[0] - sorted[1] > 2 * tolerance() * p.max_abs_logit;
      if (decisive) {
        EXPECT_EQ(Argmax(row), Argmax(want)) << "position " << t;
      }
    }
  }
  RecordProperty("max_rel_err", absl::StrCat(worst));
  std::printf("PARITY %s %s max_abs_err/max|logit| = %.3g\n", GetParam().fixture.c_str(),
              GetParam().dtype.c_str(), worst);
}

TEST_P(ParityTest, GreedyContinuationMatches) {
  for (const ReferencePrompt& p : ref_.prompts) {
    SCOPED_TRACE(p.name);
    auto tokens = runner_->GreedyGenerate(p.ids, 16);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    EXPECT_EQ(*tokens, p.greedy_new_tokens);
  }
}

TEST_P(ParityTest, ChunkedPrefillEqualsFullPrefill) {
  double worst = 0.0;
  for (const ReferencePrompt& p : ref_.prompts) {
    auto full = runner_->PromptLogits(p.ids);
    ASSERT_TRUE(full.ok()) << full.status();
    for (size_t chunk : {1u, 3u, 7u}) {
      SCOPED_TRACE(absl::StrCat(p.name, " chunk ", chunk));
      std::vector<float> chunked = ChunkedLogits(p.ids, chunk);
      ASSERT_EQ(chunked.size(), full->size());
      const double err = RelativeError(chunked, *full, p.max_abs_logit);
      EXPECT_LE(err, invariance_tolerance());
      worst = std::max(worst, err);
    }
  }
  RecordProperty("chunked_max_rel_diff", absl::StrCat(worst));
  std::printf("CHUNKED %s %s max_rel_diff = %.3g\n", GetParam().fixture.c_str(),
              GetParam().dtype.c_str(), worst);
}

// Prefill the prompt, then decode the reference continuation one token per
// step; every decode step's logits equal those of one full prefill.
TEST_P(ParityTest, PrefillThenDecodeEqualsFullPrefill) {
  for (const ReferencePrompt& p : ref_.prompts) {
    SCOPED_TRACE(p.name);
    std::vector<int32_t> all = p.ids;
    all.insert(all.end(), p.greedy_new_tokens.begin(), p.greedy_new_tokens.end() - 1);
    auto full = runner_->PromptLogits(all);
    ASSERT_TRUE(full.ok()) << full.status();

    StepSequence seq;
    seq.token_ids = p.ids;
    seq.logits = LogitsRows::kAll;
    auto blocks = runner_->allocator().Allocate(kv_cache::BlocksForTokens(
        static_cast<int64_t>(all.size()), runner_->cache().block_size()));
    ASSERT_TRUE(blocks.ok());
    seq.block_table = *blocks;
    std::vector<float> stepped;
    for (size_t step = 0; step < p.greedy_new_tokens.size(); ++step) {
      auto logits = runner_->model().Forward(StepInput{{seq}}, runner_->cache());
      ASSERT_TRUE(logits.ok()) << logits.status();
      auto host = ToHostFloats(runner_->model().backend(), *logits);
      stepped.insert(stepped.end(), host->begin(), host->end());
      seq.num_cached = seq.context_len();
      seq.token_ids = {p.greedy_new_tokens[step]};
      seq.logits = LogitsRows::kLast;
    }
    ASSERT_TRUE(runner_->allocator().Free(seq.block_table).ok());
    ASSERT_EQ(stepped.size(), full->size());
    const double err = RelativeError(stepped, *full, p.max_abs_logit);
    EXPECT_LE(err, invariance_tolerance());
    std::printf("DECODE %s %s %s max_rel_diff = %.3g\n", GetParam().fixture.c_str(),
                GetParam().dtype.c_str(), p.name.c_str(), err);
  }
}

// Every prompt alone vs all prompts (lengths 1, 6, 30, 40) in one step.
TEST_P(ParityTest, BatchInvariance) {
  StepInput batch;
  std::vector<std::vector<float>> alone;
  for (const ReferencePrompt& p : ref_.prompts) {
    auto logits = runner_->PromptLogits(p.ids);
    ASSERT_TRUE(logits.ok()) << logits.status();
    alone.push_back(*logits);
    StepSequence seq;
    seq.token_ids = p.ids;
    seq.logits = LogitsRows::kAll;
    auto blocks = runner_->allocator().Allocate(kv_cache::BlocksForTokens(
        static_cast<int64_t>(p.ids.size()), runner_->cache().block_size()));
    ASSERT_TRUE(blocks.ok());
    seq.block_table = *blocks;
    batch.sequences.push_back(std::move(seq));
  }
  auto logits = runner_->model().Forward(batch, runner_->cache());
  ASSERT_TRUE(logits.ok()) << logits.status();
  auto host = ToHostFloats(runner_->model().backend(), *logits);
  ASSERT_TRUE(host.ok());
  size_t row = 0;
  for (size_t i = 0; i < ref_.prompts.size(); ++i) {
    SCOPED_TRACE(ref_.prompts[i].name);
    std::vector<float> mine(host->begin() + row * vocab(),
                            host->begin() + (row + ref_.prompts[i].ids.size()) * vocab());
    row += ref_.prompts[i].ids.size();
    const double err = RelativeError(mine, alone[i], ref_.prompts[i].max_abs_logit);
    EXPECT_LE(err, invariance_tolerance());
    std::printf("BATCH %s %s %s max_rel_diff = %.3g\n", GetParam().fixture.c_str(),
                GetParam().dtype.c_str(), ref_.prompts[i].name.c_str(), err);
    ASSERT_TRUE(runner_->allocator().Free(batch.sequences[i].block_table).ok());
  }
  EXPECT_EQ(row * vocab(), host->size());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest, ::testing::ValuesIn(AllCases()), CaseName);

// A packed-expert checkpoint computes exactly what its per-expert base does.
TEST(PackedFixtures, EqualTheirBase) {
  for (const auto& [packed, base] : std::vector<std::pair<std::string, std::string>>{
           {"mixtral_packed", "mixtral"}, {"qwen3_moe_bf16_packed", "qwen3_moe_bf16"}}) {
    SCOPED_TRACE(packed);
    auto ref = LoadFixtureReference(FixtureReferenceDir(base));
    ASSERT_TRUE(ref.ok()) << ref.status();
    OfflineRunnerOptions a_options, b_options;
    a_options.model_dir = FixtureModelDir(packed);
    b_options.model_dir = FixtureModelDir(base);
    auto a = OfflineRunner::Load(a_options);
    auto b = OfflineRunner::Load(b_options);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    for (const ReferencePrompt& p : ref->prompts) {
      auto la = (*a)->PromptLogits(p.ids);
      auto lb = (*b)->PromptLogits(p.ids);
      ASSERT_TRUE(la.ok() && lb.ok());
      EXPECT_EQ(*la, *lb) << p.name;
    }
  }
}

}  // namespace
}  // namespace epserve::models
