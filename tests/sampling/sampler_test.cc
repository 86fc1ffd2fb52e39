// Sampler::SampleBatch: greedy, seeds and batch independence, penalties and
// min_tokens through the whole pipeline, logprobs, NaN/inf rows, errors.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/sampling/sampling_test_util.h"

namespace epserve::sampling {
namespace {

using ::testing::HasSubstr;
using testing::ExpectFrequencies;
using testing::Histogram;
using testing::Restrict;
using testing::Softmax;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Samples one row; fails the test on any error.
SampledToken SampleOne(const Sampler& sampler, const std::vector<float>& logits,
                       const SamplingParams& params, absl::Span<const int32_t> prompt = {},
                       absl::Span<const int32_t> output = {}, uint64_t step = 0) {
  const SamplingRow row{&params, prompt, output, step};
  auto results = sampler.SampleBatch(logits, static_cast<int64_t>(logits.size()), {row});
  EXPECT_TRUE(results.ok()) << results.status();
  EXPECT_TRUE((*results)[0].ok()) << (*results)[0].status();
  return *(*results)[0];
}

std::vector<float> RandomLogits(int64_t vocab, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (float& x : logits) x = normal(rng);
  return logits;
}

// Reference log-softmax in double.
std::vector<double> LogSoftmax(const std::vector<float>& x) {
  double max = -INFINITY;
  for (float v : x) max = std::max<double>(max, v);
  double sum = 0.0;
  for (float v : x) sum += std::exp(v - max);
  std::vector<double> out;
  for (float v : x) out.push_back(v - max - std::log(sum));
  return out;
}

TEST(GreedyTest, ArgmaxWithTiesToTheLowestId) {
  Sampler sampler({});
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_k = 1;  // ignored by greedy, as are top_p / min_p
  p.top_p = 0.1f;
  for (uint64_t seed : {1u, 2u, 3u}) {
    p.seed = seed;
    EXPECT_EQ(SampleOne(sampler, {0.5f, 3.0f, -1.0f, 3.0f, 2.9f}, p).token_id, 1);
  }
  p.seed.reset();
  EXPECT_EQ(SampleOne(sampler, {-kInf, 7.0f, 7.0f}, p).token_id, 1);
}

TEST(GreedyTest, PenaltiesApplyButTemperatureDoesNot) {
  Sampler sampler({});
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 1.0f;
  const std::vector<int32_t> output = {1};
  // 3.0 - 1.0 < 2.5
  EXPECT_EQ(SampleOne(sampler, {0.0f, 3.0f, 2.5f}, p, {}, output).token_id, 2);
}

TEST(SeedTest, SameSeedSameSequenceDifferentSeedDifferentSequence) {
  Sampler sampler({});
  const std::vector<float> logits = RandomLogits(1000, 1, /*scale=*/1.0f);
  SamplingParams p;
  auto sequence = [&](uint64_t seed) {
    p.seed = seed;
    std::vector<int32_t> tokens;
    for (uint64_t step = 0; step < 64; ++step) {
      tokens.push_back(SampleOne(sampler, logits, p, {}, {}, step).token_id);
    }
    return tokens;
  };
  EXPECT_EQ(sequence(7), sequence(7));
  EXPECT_NE(sequence(7), sequence(8));
}

TEST(SeedTest, UnseededRequestsDrawFreshSeeds) {
  Sampler sampler({});
  const std::vector<float> logits(1000, 0.0f);  // uniform: 64 equal draws ~ 1e-189
  SamplingParams p;
  std::vector<int32_t> a, b;
  for (uint64_t step = 0; step < 64; ++step) {
    a.push_back(SampleOne(sampler, logits, p, {}, {}, step).token_id);
    b.push_back(SampleOne(sampler, logits, p, {}, {}, step).token_id);
  }
  EXPECT_NE(a, b);
}

// A request's token and logprobs are the same sampled alone and in a batch
// with other requests (other params, seeds, histories, positions), with one
// or two threads.
TEST(BatchTest, RowsAreIndependentOfBatchComposition) {
  constexpr int64_t kVocab = 50000;
  std::vector<SamplingParams> params(6);
  params[0].seed = 11;
  params[0].top_k = 40;
  params[0].temperature = 0.8f;
  params[0].logprobs = true;
  params[0].top_logprobs = 5;
  params[1].seed = 12;
  params[1].top_p = 0.9f;
  params[1].repetition_penalty = 1.3f;
  params[2].temperature = 0.0f;
  params[3].seed = 11;  // same seed as row 0, different logits
  params[3].min_p = 0.05f;
  params[4].seed = 99;
  params[4].frequency_penalty = 0.7f;
  params[4].logprobs = true;
  params[5].seed = 5;
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5}, output = {9, 9, 8};
  std::vector<std::vector<float>> logits;
  for (uint32_t r = 0; r < params.size(); ++r) logits.push_back(RandomLogits(kVocab, 100 + r));

  for (int threads : {1, 2}) {
    Sampler sampler({.eos_token_ids = {0}, .num_threads = threads});
    for (uint64_t step = 0; step < 8; ++step) {
      std::vector<float> batch;
      std::vector<SamplingRow> rows;
      for (size_t r = 0; r < params.size(); ++r) {
        batch.insert(batch.end(), logits[r].begin(), logits[r].end());
        rows.push_back({&params[r], prompt, output, step + r});
      }
      auto together = sampler.SampleBatch(batch, kVocab, rows);
      ASSERT_TRUE(together.ok()) << together.status();
      for (size_t r = 0; r < params.size(); ++r) {
        if (!params[r].seed.has_value() && params[r].temperature != 0.0f) continue;
        const SampledToken alone =
            SampleOne(Sampler({.eos_token_ids = {0}}), logits[r], params[r], prompt, output,
                      step + r);
        ASSERT_TRUE((*together)[r].ok());
        const SampledToken& in_batch = *(*together)[r];
        EXPECT_EQ(in_batch.token_id, alone.token_id) << "row " << r << " step " << step;
        EXPECT_EQ(in_batch.logprob, alone.logprob);
        ASSERT_EQ(in_batch.top_logprobs.size(), alone.top_logprobs.size());
        for (size_t i = 0; i < alone.top_logprobs.size(); ++i) {
          EXPECT_EQ(in_batch.top_logprobs[i].token_id, alone.top_logprobs[i].token_id);
          EXPECT_EQ(in_batch.top_logprobs[i].logprob, alone.top_logprobs[i].logprob);
        }
      }
    }
  }
}

TEST(PenaltyPipelineTest, ProcessedLogprobsShowThePenalisedLogits) {
  Sampler sampler({.logprobs_mode = LogprobsMode::kProcessed});
  const std::vector<float> raw = {2.0f, -1.0f, 0.5f, 0.0f, 3.0f, -2.0f};
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  p.logprobs = true;
  p.top_logprobs = 6;
  const std::vector<int32_t> prompt = {0, 1, 3}, output = {2, 2, 1, 4};
  const std::vector<float> expected = {2.0f / 1.5f,       -1.5f - 0.5f - 0.25f,
                                       0.5f / 1.5f - 1.25f, 0.0f,
                                       2.0f - 0.75f,      -2.0f};
  const SampledToken t = SampleOne(sampler, raw, p, prompt, output);
  EXPECT_EQ(t.token_id, 0);  // 1.333 beats the penalised 1.25 of token 4
  const std::vector<double> ref = LogSoftmax(expected);
  ASSERT_EQ(t.top_logprobs.size(), 6u);
  for (const TokenLogprob& lp : t.top_logprobs) {
    EXPECT_NEAR(lp.logprob, ref[static_cast<size_t>(lp.token_id)], 1e-5) << lp.token_id;
  }
  EXPECT_NEAR(*t.logprob, ref[0], 1e-5);
}

TEST(PenaltyPipelineTest, SampledDistributionUsesPenalisedLogits) {
  Sampler sampler({});
  const std::vector<float> raw = {1.0f, 1.0f, 1.0f, 1.0f};
  SamplingParams p;
  p.presence_penalty = 2.0f;
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> output = {0, 1};
  // Token 0 and 1: 1/2 - 2 = -1.5; others 1.
  const std::vector<float> expected = {-1.5f, -1.5f, 1.0f, 1.0f};
  p.seed = 3;
  std::vector<float> batch;
  std::vector<SamplingRow> rows;
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) {
    batch.insert(batch.end(), raw.begin(), raw.end());
    rows.push_back({&p, {}, output, static_cast<uint64_t>(i)});
  }
  auto results = sampler.SampleBatch(batch, 4, rows);
  ASSERT_TRUE(results.ok());
  std::vector<int64_t> counts(4, 0);
  for (const auto& r : *results) ++counts[static_cast<size_t>(r->token_id)];
  ExpectFrequencies(counts, Softmax(expected), kDraws);
}

TEST(MinTokensPipelineTest, EosAndStopIdsMaskedUntilMinTokens) {
  Sampler sampler({.eos_token_ids = {0}});
  const std::vector<float> logits = {9.0f, 1.0f, 0.0f, 8.0f};  // EOS 0, stop id 3
  SamplingParams p;
  p.temperature = 0.0f;
  p.min_tokens = 2;
  p.stop_token_ids = {3};
  const std::vector<int32_t> one = {1}, two = {1, 2};
  EXPECT_EQ(SampleOne(sampler, logits, p, {}, one).token_id, 1);
  EXPECT_EQ(SampleOne(sampler, logits, p, {}, two).token_id, 0);
  p.ignore_eos = true;
  EXPECT_EQ(SampleOne(sampler, logits, p, {}, one).token_id, 0);
  // Random sampling never reaches the masked ids either.
  p.ignore_eos = false;
  p.temperature = 1.0f;
  SamplingParams random = p;
  random.seed = 5;
  std::vector<float> batch;
  std::vector<SamplingRow> rows;
  for (int i = 0; i < 5000; ++i) {
    batch.insert(batch.end(), logits.begin(), logits.end());
    rows.push_back({&random, {}, one, static_cast<uint64_t>(i)});
  }
  auto results = sampler.SampleBatch(batch, 4, rows);
  ASSERT_TRUE(results.ok());
  std::vector<int64_t> counts(4, 0);
  for (const auto& r : *results) ++counts[static_cast<size_t>(r->token_id)];
  ExpectFrequencies(counts, Restrict(Softmax(logits), {1, 2}), 5000);
}

TEST(MinTokensPipelineTest, EverythingMaskedIsAnErrorNamingTheRow) {
  Sampler sampler({.eos_token_ids = {0}});
  SamplingParams ok, masked;
  masked.min_tokens = 1;
  masked.stop_token_ids = {1};
  const std::vector<float> logits = {1.0f, 2.0f, 1.0f, 2.0f};  // two rows of 2
  const std::vector<SamplingRow> rows = {{&ok}, {&masked}};
  auto results = sampler.SampleBatch(logits, 2, rows);
  ASSERT_TRUE(results.ok());
  EXPECT_TRUE((*results)[0].ok());
  EXPECT_EQ((*results)[1].status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string((*results)[1].status().message()),
              HasSubstr("row 1: no token has a finite logit"));
}

TEST(LogprobsTest, RawModeIsTheLogSoftmaxOfTheModelLogits) {
  constexpr int64_t kVocab = 151936;
  const std::vector<float> logits = RandomLogits(kVocab, 4);
  const std::vector<double> ref = LogSoftmax(logits);
  std::vector<int32_t> order(kVocab);
  for (int32_t i = 0; i < kVocab; ++i) order[static_cast<size_t>(i)] = i;
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  Sampler sampler({});
  SamplingParams p;
  p.seed = 1;
  p.temperature = 0.7f;  // not reflected in raw logprobs
  p.repetition_penalty = 1.2f;
  p.top_k = 50;
  p.logprobs = true;
  p.top_logprobs = 20;
  const std::vector<int32_t> prompt = {order[0], order[1]};
  for (uint64_t step = 0; step < 4; ++step) {
    const SampledToken t = SampleOne(sampler, logits, p, prompt, {}, step);
    ASSERT_TRUE(t.logprob.has_value());
    EXPECT_NEAR(*t.logprob, ref[static_cast<size_t>(t.token_id)], 1e-5);
    ASSERT_EQ(t.top_logprobs.size(), 20u);
    for (size_t i = 0; i < 20; ++i) {
      EXPECT_EQ(t.top_logprobs[i].token_id, order[i]);
      EXPECT_NEAR(t.top_logprobs[i].logprob, ref[static_cast<size_t>(order[i])], 1e-5);
    }
  }
}

TEST(LogprobsTest, ProcessedModeIsTheSampledDistribution) {
  Sampler sampler({.logprobs_mode = LogprobsMode::kProcessed});
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.0f, 2.5f};
  SamplingParams p;
  p.seed = 2;
  p.temperature = 0.5f;
  p.top_k = 3;
  p.logprobs = true;
  p.top_logprobs = 5;
  // Kept: ids 1, 4, 2 at logits / 0.5.
  const std::vector<double> kept = LogSoftmax({6.0f, 5.0f, 4.0f});
  const SampledToken t = SampleOne(sampler, logits, p);
  ASSERT_EQ(t.top_logprobs.size(), 5u);
  const int32_t ids[] = {1, 4, 2, 0, 3};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(t.top_logprobs[i].token_id, ids[i]);
    EXPECT_NEAR(t.top_logprobs[i].logprob, kept[i], 1e-5);
  }
  for (size_t i = 3; i < 5; ++i) {
    EXPECT_EQ(t.top_logprobs[i].token_id, ids[i]);
    EXPECT_EQ(t.top_logprobs[i].logprob, -kInf);
  }
}

TEST(LogprobsTest, NotRequestedNotReturned) {
  Sampler sampler({});
  const SampledToken t = SampleOne(sampler, {1.0f, 2.0f}, SamplingParams{});
  EXPECT_FALSE(t.logprob.has_value());
  EXPECT_TRUE(t.top_logprobs.empty());
}

TEST(NonFiniteTest, NaNTokensAreNeverSampled) {
  Sampler sampler({});
  const std::vector<float> logits = {kNaN, 1.0f, kNaN, 0.0f, -kInf};
  ExpectFrequencies(Histogram(sampler, logits, SamplingParams{}, 10000, 8),
                    Restrict(Softmax({-kInf, 1.0f, -kInf, 0.0f, -kInf}), {1, 3}), 10000);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  greedy.logprobs = true;
  greedy.top_logprobs = 3;
  const SampledToken t = SampleOne(sampler, logits, greedy);
  EXPECT_EQ(t.token_id, 1);
  EXPECT_NEAR(*t.logprob, std::log(std::exp(1.0) / (std::exp(1.0) + 1.0)), 1e-6);
  EXPECT_EQ(t.top_logprobs[2].token_id, 0);  // NaN reported as -inf, lowest id first
  EXPECT_EQ(t.top_logprobs[2].logprob, -kInf);
}

TEST(NonFiniteTest, PlusInfinityTokensShareTheMass) {
  Sampler sampler({});
  const std::vector<float> logits = {5.0f, kInf, kNaN, kInf, 100.0f};
  ExpectFrequencies(Histogram(sampler, logits, SamplingParams{}, 10000, 9),
                    {0.0, 0.5, 0.0, 0.5, 0.0}, 10000);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  greedy.logprobs = true;
  const SampledToken t = SampleOne(sampler, logits, greedy);
  EXPECT_EQ(t.token_id, 1);
  EXPECT_NEAR(*t.logprob, std::log(0.5), 1e-6);
}

TEST(NonFiniteTest, RowWithoutFiniteLogitsFailsAloneNamingTheRow) {
  Sampler sampler({});
  SamplingParams p;
  p.seed = 1;
  const std::vector<float> logits = {1.0f, 2.0f, kNaN, -kInf, kNaN, kNaN};  // 3 rows of 2
  const std::vector<SamplingRow> rows = {{&p}, {&p}, {&p}};
  auto results = sampler.SampleBatch(logits, 2, rows);
  ASSERT_TRUE(results.ok());
  EXPECT_TRUE((*results)[0].ok());
  for (size_t r : {1u, 2u}) {
    EXPECT_EQ((*results)[r].status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string((*results)[r].status().message()),
                HasSubstr(absl::StrCat("row ", r, ": no token has a finite logit")));
  }
}

TEST(ErrorsTest, BatchShapeAndMissingParams) {
  Sampler sampler({});
  SamplingParams p;
  const std::vector<float> logits(10, 0.0f);
  const std::vector<SamplingRow> three = {{&p}, {&p}, {&p}};
  auto mismatch = sampler.SampleBatch(logits, 5, three);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(mismatch.status().message()),
              HasSubstr("[num_rows = 3, vocab_size = 5] = 15 floats, got 10"));
  const std::vector<SamplingRow> missing = {{&p}, {nullptr}};
  EXPECT_THAT(std::string(sampler.SampleBatch(logits, 5, missing).status().message()),
              HasSubstr("rows[1].params is null"));
  EXPECT_FALSE(sampler.SampleBatch(logits, 0, {}).ok());
  auto empty = sampler.SampleBatch({}, 5, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(ErrorsTest, InvalidParamsAndHistoryAreRowErrors) {
  Sampler sampler({});
  SamplingParams good, bad;
  bad.top_p = 0.0f;
  const std::vector<int32_t> out_of_vocab = {7};
  const std::vector<float> logits(15, 0.0f);
  const std::vector<SamplingRow> rows = {{&good}, {&bad}, {&good, {}, out_of_vocab}};
  auto results = sampler.SampleBatch(logits, 5, rows);
  ASSERT_TRUE(results.ok());
  EXPECT_TRUE((*results)[0].ok());
  EXPECT_THAT(std::string((*results)[1].status().message()),
              HasSubstr("row 1: sampling_params.top_p must be in (0, 1]"));
  EXPECT_THAT(std::string((*results)[2].status().message()),
              HasSubstr("row 2: output_ids[0] = 7 is outside the vocabulary [0, 5)"));
}

}  // namespace
}  // namespace epserve::sampling
