// Building blocks: penalties on crafted histories (exact logits),
// min_tokens masking, Philox known answers, NaN/inf sanitisation and the
// top-n log-softmax.
#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/sampling/logprobs.h"
#include "worker/sampling/penalties.h"
#include "worker/sampling/philox.h"

namespace epserve::sampling {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

TEST(PenaltiesTest, RepetitionFrequencyPresenceExact) {
  //                       0     1     2     3     4     5
  std::vector<float> x = {2.0f, -1.0f, 0.5f, 0.0f, 3.0f, -2.0f};
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  const std::vector<int32_t> prompt = {0, 1, 3, 0};
  const std::vector<int32_t> output = {2, 2, 1, 4};
  ApplyPenalties(absl::MakeSpan(x), p, prompt, output);
  // Each id penalised once by repetition however often it occurs; the
  // additive penalties count the output only.
  EXPECT_FLOAT_EQ(x[0], 2.0f / 1.5f);                        // prompt only
  EXPECT_FLOAT_EQ(x[1], -1.0f * 1.5f - 0.5f * 1 - 0.25f);    // prompt + output once
  EXPECT_FLOAT_EQ(x[2], 0.5f / 1.5f - 0.5f * 2 - 0.25f);     // output twice
  EXPECT_FLOAT_EQ(x[3], 0.0f);                               // 0 * 1.5 stays 0
  EXPECT_FLOAT_EQ(x[4], 3.0f / 1.5f - 0.5f * 1 - 0.25f);     // output once
  EXPECT_FLOAT_EQ(x[5], -2.0f);                              // untouched
}

TEST(PenaltiesTest, NegativeAdditivePenaltiesAndRepetitionBelowOne) {
  std::vector<float> x = {1.0f, -1.0f, 4.0f};
  SamplingParams p;
  p.repetition_penalty = 0.5f;  // < 1 encourages repetition
  p.frequency_penalty = -1.0f;
  p.presence_penalty = -2.0f;
  const std::vector<int32_t> output = {0, 0, 0, 1};
  ApplyPenalties(absl::MakeSpan(x), p, /*prompt_ids=*/{}, output);
  EXPECT_FLOAT_EQ(x[0], 1.0f / 0.5f + 3.0f + 2.0f);
  EXPECT_FLOAT_EQ(x[1], -1.0f * 0.5f + 1.0f + 2.0f);
  EXPECT_FLOAT_EQ(x[2], 4.0f);
}

TEST(PenaltiesTest, ScratchIsLeftClearForTheNextRow) {
  PenaltyScratch scratch;
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.frequency_penalty = 1.0f;
  std::vector<float> a = {1.0f, 1.0f, 1.0f};
  const std::vector<int32_t> prompt_a = {0}, output_a = {1, 1};
  ApplyPenalties(absl::MakeSpan(a), p, prompt_a, output_a, &scratch);
  EXPECT_THAT(a, ElementsAre(0.5f, 0.5f - 2.0f, 1.0f));
  std::vector<float> b = {1.0f, 1.0f, 1.0f};
  const std::vector<int32_t> output_b = {2};
  ApplyPenalties(absl::MakeSpan(b), p, /*prompt_ids=*/{}, output_b, &scratch);
  EXPECT_THAT(b, ElementsAre(1.0f, 1.0f, 0.5f - 1.0f));
}

TEST(PenaltiesTest, DefaultsChangeNothing) {
  std::vector<float> x = {1.0f, -3.0f, 0.25f};
  const std::vector<float> before = x;
  const std::vector<int32_t> ids = {0, 1, 2};
  ApplyPenalties(absl::MakeSpan(x), SamplingParams{}, ids, ids);
  EXPECT_EQ(x, before);
}

TEST(PenaltiesTest, CheckTokenIdsNamesListIndexAndValue) {
  const std::vector<int32_t> ok = {0, 9}, bad = {3, 10};
  EXPECT_TRUE(CheckTokenIds(ok, ok, 10).ok());
  const absl::Status s = CheckTokenIds(ok, bad, 10);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("output_ids[1] = 10"));
  const std::vector<int32_t> negative = {-4};
  EXPECT_THAT(std::string(CheckTokenIds(negative, ok, 10).message()),
              HasSubstr("prompt_ids[0] = -4"));
}

TEST(MinTokensTest, MasksEosAndStopIdsUntilReached) {
  SamplingParams p;
  p.min_tokens = 3;
  p.stop_token_ids = {4};
  const std::vector<int32_t> eos = {1, 2};
  std::vector<float> x(6, 1.0f);
  ApplyMinTokensMask(absl::MakeSpan(x), p, /*num_generated=*/2, eos);
  EXPECT_THAT(x, ElementsAre(1.0f, -kInf, -kInf, 1.0f, -kInf, 1.0f));

  std::vector<float> reached(6, 1.0f);
  ApplyMinTokensMask(absl::MakeSpan(reached), p, /*num_generated=*/3, eos);
  EXPECT_EQ(reached, std::vector<float>(6, 1.0f));

  p.ignore_eos = true;  // EOS is then an ordinary token; stop ids still masked
  std::vector<float> ignore(6, 1.0f);
  ApplyMinTokensMask(absl::MakeSpan(ignore), p, /*num_generated=*/0, eos);
  EXPECT_THAT(ignore, ElementsAre(1.0f, 1.0f, 1.0f, 1.0f, -kInf, 1.0f));
}

// Random123's published known-answer vectors (tests/kat_vectors).
TEST(PhiloxTest, KnownAnswers) {
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                       {0xffffffff, 0xffffffff}),
            (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                       {0xa4093822, 0x299f31d0}),
            (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(PhiloxTest, UniformIsAPureFunctionInRange) {
  EXPECT_EQ(UniformDouble(42, 7), UniformDouble(42, 7));
  EXPECT_NE(UniformDouble(42, 7), UniformDouble(42, 8));
  EXPECT_NE(UniformDouble(42, 7), UniformDouble(43, 7));
  EXPECT_NE(UniformDouble(42, 7, /*lane=*/0), UniformDouble(42, 7, /*lane=*/1));
  // Mean of U[0,1) over 100k steps: sd of the mean = 1/sqrt(12 * 1e5) ~ 9.1e-4;
  // 5 sigma.
  double sum = 0.0;
  for (uint64_t step = 0; step < 100000; ++step) {
    const double u = UniformDouble(1234, step);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 5 * 9.2e-4);
}

TEST(PhiloxTest, DrawSeedGivesDistinctSeeds) {
  const uint64_t a = DrawSeed(), b = DrawSeed(), c = DrawSeed();
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);
  EXPECT_NE(a, c);
}

TEST(SanitizeTest, NaNBecomesMinusInfinity) {
  std::vector<float> x = {1.0f, kNaN, -kInf, 2.0f};
  EXPECT_EQ(SanitizeLogits(absl::MakeSpan(x)), 2);
  EXPECT_THAT(x, ElementsAre(1.0f, -kInf, -kInf, 2.0f));
}

TEST(SanitizeTest, PlusInfinitySharesAllTheMass) {
  std::vector<float> x = {1.0f, kInf, kNaN, kInf, 5.0f};
  EXPECT_EQ(SanitizeLogits(absl::MakeSpan(x)), 2);
  EXPECT_THAT(x, ElementsAre(-kInf, 0.0f, -kInf, 0.0f, -kInf));
}

TEST(SanitizeTest, NothingFinite) {
  std::vector<float> x = {kNaN, -kInf, kNaN};
  EXPECT_EQ(SanitizeLogits(absl::MakeSpan(x)), 0);
  EXPECT_EQ(LogSumExp(x), -kInf);
}

TEST(TopLogprobsTest, SortedTiesByLowestIdAndLogSoftmaxValues) {
  const std::vector<float> x = {0.5f, 2.0f, -kInf, 2.0f, 1.0f, 0.5f};
  const double lse = LogSumExp(x);
  double expected_sum = 0.0;
  for (float v : x) expected_sum += std::exp(static_cast<double>(v));
  EXPECT_NEAR(lse, std::log(expected_sum), 1e-12);
  const std::vector<TokenLogprob> top = TopLogprobs(x, lse, 5);
  ASSERT_EQ(top.size(), 5u);
  const std::vector<int32_t> ids = {top[0].token_id, top[1].token_id, top[2].token_id,
                                    top[3].token_id, top[4].token_id};
  EXPECT_THAT(ids, ElementsAre(1, 3, 4, 0, 5));
  for (const TokenLogprob& t : top) EXPECT_NEAR(t.logprob, x[t.token_id] - lse, 1e-6);
  // More than the vocabulary: every token, -inf last.
  const std::vector<TokenLogprob> all = TopLogprobs(x, lse, 20);
  ASSERT_EQ(all.size(), 6u);
  EXPECT_EQ(all.back().token_id, 2);
  EXPECT_EQ(all.back().logprob, -kInf);
  EXPECT_TRUE(TopLogprobs(x, lse, 0).empty());
}

}  // namespace
}  // namespace epserve::sampling
