// Backend::SampleTokens on the GPU against the host sampler
// (worker/sampling/sampler.h) on the same logits: every sampling parameter,
// penalties and min_tokens (as edits), raw and processed logprobs, non-finite
// logits, ties, the real vocabulary size (Qwen3: 151936) and a small one.
//
// Tolerances: token ids and top-logprob ids exact; logprobs 1e-4 absolute
// (float32 exp on both sides, double sums in another order). A draw could in
// principle differ where u falls within the last-ulp difference of exp
// (~1e-7 of the mass) of a boundary; the seeds here are fixed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "tests/gpu/gpu_test_util.h"
#include "worker/sampling/sampler.h"

namespace epserve::kernels::testing {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const std::vector<int32_t> kEos = {2, 7};

struct Case {
  std::string name;
  sampling::SamplingParams params;
  std::vector<int32_t> prompt;
  std::vector<int32_t> output;
};

sampling::SamplingParams Params(float temperature, float top_p = 1.0f, int32_t top_k = 0,
                                float min_p = 0.0f) {
  sampling::SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  p.top_k = top_k;
  p.min_p = min_p;
  return p;
}

// The edits the worker would send for a row (each id once).
void AddEdits(const Case& c, int64_t vocab, SampleRow* spec, std::vector<SampleEdit>* edits) {
  const sampling::SamplingParams& p = c.params;
  std::map<int32_t, SampleEdit> by_id;
  const bool penalties = p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f ||
                         p.presence_penalty != 0.0f;
  if (penalties) {
    for (int32_t id : c.prompt) {
      by_id[id].token_id = id;
      by_id[id].in_history = 1;
    }
    for (int32_t id : c.output) {
      by_id[id].token_id = id;
      by_id[id].in_history = 1;
      ++by_id[id].output_count;
    }
  }
  if (c.output.size() < p.min_tokens) {
    std::vector<int32_t> masked = p.stop_token_ids;
    if (!p.ignore_eos) masked.insert(masked.end(), kEos.begin(), kEos.end());
    for (int32_t id : masked) {
      if (id < 0 || id >= vocab) continue;
      by_id[id].token_id = id;
      by_id[id].mask = 1;
    }
  }
  spec->edits_begin = static_cast<int32_t>(edits->size());
  for (const auto& [id, e] : by_id) edits->push_back(e);
  spec->edits_end = static_cast<int32_t>(edits->size());
}

class CudaSamplingTest : public GpuTest<::testing::TestWithParam<bool /*processed logprobs*/>> {
 protected:

  // Samples every case at `steps` generation steps on both sides and
  // compares.
  void Compare(const std::vector<Case>& cases, const std::vector<float>& logits, int64_t vocab,
               int steps) {
    const bool processed = GetParam();
    sampling::Sampler::Options so;
    so.eos_token_ids = kEos;
    so.logprobs_mode =
        processed ? sampling::LogprobsMode::kProcessed : sampling::LogprobsMode::kRaw;
    sampling::Sampler host(so);
    const int64_t num_logits = static_cast<int64_t>(logits.size()) / vocab;
    ASSERT_EQ(num_logits, static_cast<int64_t>(cases.size()));
    Tensor host_logits = HostTensor(logits, {num_logits, vocab});
    auto dev_logits = gpu_->ToDevice(host_logits);
    ASSERT_TRUE(dev_logits.ok()) << dev_logits.status();

    for (int step = 0; step < steps; ++step) {
      std::vector<sampling::SamplingRow> rows(cases.size());
      std::vector<SampleRow> specs(cases.size());
      std::vector<SampleEdit> edits;
      int64_t top_n = 0;
      for (size_t i = 0; i < cases.size(); ++i) {
        const Case& c = cases[i];
        rows[i].params = &c.params;
        rows[i].prompt_ids = c.prompt;
        rows[i].output_ids = c.output;
        rows[i].step = static_cast<uint64_t>(step) * 7919u + c.output.size();
        SampleRow& s = specs[i];
        s.logits_row = static_cast<int32_t>(i);
        s.temperature = sampling::IsGreedy(c.params)
                            ? 0.0f
                            : std::max(c.params.temperature, sampling::kMinTemperature);
        s.top_p = c.params.top_p;
        s.top_k = c.params.top_k;
        s.log_min_p = c.params.min_p > 0.0f ? std::log(static_cast<double>(c.params.min_p))
                                            : -std::numeric_limits<double>::infinity();
        s.repetition_penalty = c.params.repetition_penalty;
        s.frequency_penalty = c.params.frequency_penalty;
        s.presence_penalty = c.params.presence_penalty;
        s.seed = *c.params.seed;
        s.step = rows[i].step;
        s.logprobs = c.params.logprobs ? 1 : 0;
        s.num_top_logprobs = c.params.logprobs ? static_cast<int32_t>(c.params.top_logprobs) : 0;
        top_n = std::max<int64_t>(top_n, s.num_top_logprobs);
        AddEdits(c, vocab, &s, &edits);
      }
      auto want = host.SampleBatch(logits, vocab, rows);
      ASSERT_TRUE(want.ok()) << want.status();
      const int64_t width = kSampleHeader + 2 * top_n;
      auto packed_d = gpu_->Empty(DataType::kInt32, {static_cast<int64_t>(cases.size()), width});
      ASSERT_TRUE(packed_d.ok());
      absl::Status st = gpu_->SampleTokens(*dev_logits, specs, edits, top_n, processed, &*packed_d);
      ASSERT_TRUE(st.ok()) << st;
      std::vector<int32_t> packed(cases.size() * static_cast<size_t>(width));
      st = gpu_->CopyToHost(*packed_d, packed.data(), packed.size() * 4);
      ASSERT_TRUE(st.ok()) << st;
      auto as_float = [](int32_t bits) {
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
      };
      for (size_t i = 0; i < cases.size(); ++i) {
        const std::string where = absl::StrCat(cases[i].name, " step ", step);
        const int32_t* w = packed.data() + i * static_cast<size_t>(width);
        if (!(*want)[i].ok()) {
          EXPECT_EQ(w[1], kSampleNoFiniteLogit) << where << ": " << (*want)[i].status();
          continue;
        }
        ASSERT_EQ(w[1], kSampleOk) << where;
        const sampling::SampledToken& t = *(*want)[i];
        EXPECT_EQ(w[0], t.token_id) << where;
        if (!cases[i].params.logprobs) continue;
        ASSERT_TRUE(t.logprob.has_value());
        const float lp = as_float(w[2]);
        if (std::isinf(*t.logprob)) {
          EXPECT_EQ(lp, *t.logprob) << where;
        } else {
          EXPECT_NEAR(lp, *t.logprob, 1e-4) << where;
        }
        ASSERT_EQ(t.top_logprobs.size(), cases[i].params.top_logprobs) << where;
        for (size_t j = 0; j < t.top_logprobs.size(); ++j) {
          EXPECT_EQ(w[kSampleHeader + j], t.top_logprobs[j].token_id) << where << " top " << j;
          const float got = as_float(w[kSampleHeader + top_n + static_cast<int64_t>(j)]);
          if (std::isinf(t.top_logprobs[j].logprob)) {
            EXPECT_EQ(got, t.top_logprobs[j].logprob) << where << " top " << j;
          } else {
            EXPECT_NEAR(got, t.top_logprobs[j].logprob, 1e-4) << where << " top " << j;
          }
        }
      }
    }
  }

  static Tensor HostTensor(const std::vector<float>& v, std::vector<int64_t> shape) {
    auto t = EmptyHostTensor(DataType::kFloat32, std::move(shape));
    EXPECT_TRUE(t.ok());
    std::memcpy(t->mutable_data_as<float>(), v.data(), v.size() * 4);
    return *t;
  }
};

std::vector<float> RandomLogits(int64_t rows, int64_t vocab, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(rows * vocab));
  for (float& x : v) x = n(rng);
  return v;
}

std::vector<Case> EveryParameter(int64_t vocab) {
  std::vector<Case> cases;
  auto add = [&](std::string name, sampling::SamplingParams p) {
    p.seed = 1000 + cases.size();
    p.logprobs = true;
    p.top_logprobs = 5;
    cases.push_back({std::move(name), std::move(p), {}, {}});
  };
  add("greedy", Params(0.0f));
  add("temperature 1", Params(1.0f));
  add("temperature 0.7", Params(0.7f));
  add("temperature 1e-3 (raised to 0.01)", Params(1e-3f));
  add("top_k 1", Params(1.0f, 1.0f, 1));
  add("top_k 50", Params(1.3f, 1.0f, 50));
  add("top_p 0.9", Params(1.0f, 0.9f));
  add("top_p 0.3", Params(0.8f, 0.3f));
  add("min_p 0.05", Params(1.0f, 1.0f, 0, 0.05f));
  add("all cuts", Params(0.5f, 0.8f, 20, 0.02f));
  add("top_k beyond vocab", Params(1.0f, 1.0f, static_cast<int32_t>(vocab) + 5));
  sampling::SamplingParams few = Params(1.2f, 0.95f);
  few.top_logprobs = 0;
  add("no top logprobs", few);
  cases.back().params.top_logprobs = 0;
  sampling::SamplingParams none = Params(0.9f);
  cases.push_back({"no logprobs", none, {}, {}});
  cases.back().params.seed = 77;
  // Penalties over a history; min_tokens masking EOS and a stop id.
  std::vector<int32_t> prompt, output;
  for (int i = 0; i < 40; ++i) prompt.push_back(static_cast<int32_t>((i * 37) % vocab));
  for (int i = 0; i < 25; ++i) output.push_back(static_cast<int32_t>((i * 11 + 3) % vocab));
  sampling::SamplingParams pen = Params(1.0f, 0.95f);
  pen.repetition_penalty = 1.3f;
  pen.frequency_penalty = 0.4f;
  pen.presence_penalty = -0.3f;
  add("penalties", pen);
  cases.back().prompt = prompt;
  cases.back().output = output;
  sampling::SamplingParams greedy_pen = Params(0.0f);
  greedy_pen.repetition_penalty = 2.0f;
  add("greedy with repetition penalty", greedy_pen);
  cases.back().prompt = prompt;
  cases.back().output = output;
  sampling::SamplingParams additive = Params(0.7f, 1.0f, 30);
  additive.frequency_penalty = 1.5f;
  add("frequency only", additive);
  cases.back().prompt = prompt;
  cases.back().output = output;
  sampling::SamplingParams min_tokens = Params(1.0f);
  min_tokens.min_tokens = 100;
  min_tokens.stop_token_ids = {5, 7};
  min_tokens.repetition_penalty = 1.1f;
  add("min_tokens with penalties", min_tokens);
  cases.back().output = output;
  sampling::SamplingParams ignore = Params(0.0f);
  ignore.min_tokens = 100;
  ignore.ignore_eos = true;
  ignore.stop_token_ids = {3};
  add("min_tokens ignore_eos", ignore);
  cases.back().output = output;
  return cases;
}

TEST_P(CudaSamplingTest, EveryParameterAtTheQwen3Vocabulary) {
  constexpr int64_t kVocab = 151936;
  std::vector<Case> cases = EveryParameter(kVocab);
  std::vector<float> logits =
      RandomLogits(static_cast<int64_t>(cases.size()), kVocab, 3.0f, 17);
  // Make min_tokens and penalties matter: the masked / penalised ids lead.
  for (size_t i = 0; i < cases.size(); ++i) {
    float* row = logits.data() + i * kVocab;
    row[2] = row[5] = row[7] = 25.0f;
    for (int32_t id : cases[i].output) row[id] += 12.0f;
  }
  Compare(cases, logits, kVocab, /*steps=*/6);
}

TEST_P(CudaSamplingTest, EveryParameterAtASmallVocabulary) {
  constexpr int64_t kVocab = 1000;
  std::vector<Case> cases = EveryParameter(kVocab);
  Compare(cases, RandomLogits(static_cast<int64_t>(cases.size()), kVocab, 2.0f, 23), kVocab,
          /*steps=*/12);
}

// Many equal logits: top_k keeps every tie at the k-th value; top_p keeps
// ties at its threshold in id order.
TEST_P(CudaSamplingTest, TiesAtTheThresholds) {
  constexpr int64_t kVocab = 4096;
  std::vector<Case> cases;
  for (int k : {1, 3, 10, 100}) {
    sampling::SamplingParams p = Params(1.0f, 1.0f, k);
    p.seed = 5 + static_cast<uint64_t>(k);
    p.logprobs = true;
    p.top_logprobs = 8;
    cases.push_back({absl::StrCat("top_k ", k), p, {}, {}});
  }
  for (float tp : {0.05f, 0.2f, 0.5f, 0.99f}) {
    sampling::SamplingParams p = Params(1.0f, tp);
    p.seed = 50 + static_cast<uint64_t>(tp * 100);
    cases.push_back({absl::StrCat("top_p ", tp), p, {}, {}});
  }
  std::vector<float> logits(cases.size() * kVocab);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> level(0, 7);
  for (float& x : logits) x = static_cast<float>(level(rng)) * 0.5f;  // 8 values, many ties
  Compare(cases, logits, kVocab, /*steps=*/10);
}

// NaN is never drawn; +inf logits share the mass; a row with no finite
// logit after masking is reported per row while the others are sampled.
TEST_P(CudaSamplingTest, NonFiniteLogitsAsTheHostSampler) {
  constexpr int64_t kVocab = 2048;
  std::vector<Case> cases;
  for (float t : {0.0f, 1.0f}) {
    sampling::SamplingParams p = Params(t, 0.9f);
    p.seed = 9;
    p.logprobs = true;
    p.top_logprobs = 4;
    cases.push_back({absl::StrCat("NaN and -inf, T ", t), p, {}, {}});
    cases.push_back({absl::StrCat("two +inf, T ", t), p, {}, {}});
    cases.push_back({absl::StrCat("nothing finite after min_tokens, T ", t), p, {}, {1}});
    cases.back().params.min_tokens = 5;
  }
  std::vector<float> logits = RandomLogits(static_cast<int64_t>(cases.size()), kVocab, 1.0f, 5);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (size_t i = 0; i < cases.size(); ++i) {
    float* row = logits.data() + i * kVocab;
    switch (i % 3) {
      case 0:
        for (int64_t j = 0; j < kVocab; j += 3) row[j] = nan;
        for (int64_t j = 1; j < kVocab; j += 5) row[j] = -kInf;
        row[100] = 50.0f;
        row[101] = nan;
        break;
      case 1:
        row[700] = kInf;
        row[33] = kInf;
        break;
      case 2:  // only EOS ids (2, 7) are finite, and min_tokens masks them
        for (int64_t j = 0; j < kVocab; ++j) row[j] = (j == 2 || j == 7) ? 1.0f : -kInf;
        row[9] = nan;
        break;
    }
  }
  Compare(cases, logits, kVocab, /*steps=*/4);
}

INSTANTIATE_TEST_SUITE_P(Logprobs, CudaSamplingTest, ::testing::Values(false, true),
                         [](const auto& param_info) { return param_info.param ? "processed" : "raw"; });

// Bad arguments are named before anything runs.
TEST(CudaSamplingArgs, BadRowsAndEditsAreNamed) {
  EPSERVE_REQUIRE_GPU();
  auto gpu = CreateBackend(DeviceSpec{DeviceType::kCuda, 0});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto logits = (*gpu)->Empty(DataType::kFloat32, {2, 100});
  auto packed = (*gpu)->Empty(DataType::kInt32, {1, kSampleHeader});
  ASSERT_TRUE(logits.ok() && packed.ok());
  SampleRow row;
  row.logits_row = 2;
  absl::Status s = (*gpu)->SampleTokens(*logits, {row}, {}, 0, false, &*packed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("rows[0].logits_row"), std::string::npos) << s;
  row.logits_row = 0;
  row.edits_end = 1;
  SampleEdit edit;
  edit.token_id = 100;
  s = (*gpu)->SampleTokens(*logits, {row}, {edit}, 0, false, &*packed);
  EXPECT_NE(s.message().find("edits[0].token_id"), std::string::npos) << s;
  edit.token_id = 3;
  row.temperature = -1.0f;
  s = (*gpu)->SampleTokens(*logits, {row}, {edit}, 0, false, &*packed);
  EXPECT_NE(s.message().find("rows[0].temperature"), std::string::npos) << s;
  row.temperature = 1.0f;
  s = (*gpu)->SampleTokens(*logits, {row}, {edit}, 21, false, &*packed);
  EXPECT_NE(s.message().find("top_n"), std::string::npos) << s;
}

}  // namespace
}  // namespace epserve::kernels::testing
