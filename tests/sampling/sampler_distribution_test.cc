// Distribution tests with fixed seeds on crafted logits: the kept set of
// top_k / top_p / min_p is exact (tokens outside it are never drawn), and
// inside it the frequencies match the renormalised softmax within 5 binomial
// sigma (ExpectFrequencies).
#include <vector>

#include "gtest/gtest.h"
#include "tests/sampling/sampling_test_util.h"

namespace epserve::sampling {
namespace {

using testing::ExpectFrequencies;
using testing::Histogram;
using testing::LogitsFor;
using testing::Restrict;
using testing::Softmax;

constexpr int kDraws = 20000;
constexpr uint64_t kSeed = 20240607;

// Probabilities 0.4, 0.3, 0.15, 0.1, 0.05 spread over ids out of order, so
// that neither id order nor position decides membership.
//                                         id: 0     1     2     3     4     5
const std::vector<double> kProbs = /*      */ {0.10, 0.30, 0.05, 0.40, 1e-30, 0.15};

class DistributionTest : public ::testing::Test {
 protected:
  Sampler sampler_{Sampler::Options{}};
  std::vector<float> logits_ = LogitsFor(kProbs);
  std::vector<double> softmax_ = Softmax(logits_);
};

TEST_F(DistributionTest, PlainTemperatureOne) {
  ExpectFrequencies(Histogram(sampler_, logits_, SamplingParams{}, kDraws, kSeed), softmax_,
                    kDraws);
}

TEST_F(DistributionTest, Temperature) {
  for (float t : {0.5f, 2.0f}) {
    SamplingParams p;
    p.temperature = t;
    ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed), Softmax(logits_, t), kDraws);
  }
}

TEST_F(DistributionTest, TinyTemperatureIsRaisedToOneHundredth) {
  // vLLM raises temperatures in (0, 0.01) to 0.01. Logits 0.01 apart: at
  // T = 0.01 the odds are e : 1; at T = 0.001 they would be e^10 : 1.
  const std::vector<float> logits = {0.0f, 0.01f};
  SamplingParams p;
  p.temperature = 0.001f;
  ExpectFrequencies(Histogram(sampler_, logits, p, kDraws, kSeed), Softmax(logits, 0.01),
                    kDraws);
}

TEST_F(DistributionTest, TopK) {
  SamplingParams p;
  p.top_k = 3;  // ids 3 (0.4), 1 (0.3), 5 (0.15)
  ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed), Restrict(softmax_, {3, 1, 5}),
                    kDraws);
  p.top_k = 1;
  ExpectFrequencies(Histogram(sampler_, logits_, p, 2000, kSeed), Restrict(softmax_, {3}), 2000);
  for (int32_t disabled : {0, -1, 6, 1000}) {
    p.top_k = disabled;
    ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed), softmax_, kDraws);
  }
}

TEST_F(DistributionTest, TopKKeepsTiesAtTheBoundary) {
  // vLLM masks logits < the k-th largest: all tokens tied with it stay.
  const std::vector<float> logits = {1.0f, 2.0f, 1.0f, 1.0f, 0.0f};
  SamplingParams p;
  p.top_k = 2;
  ExpectFrequencies(Histogram(sampler_, logits, p, kDraws, kSeed),
                    Restrict(Softmax(logits), {0, 1, 2, 3}), kDraws);
}

TEST_F(DistributionTest, TopP) {
  SamplingParams p;
  // Mass before each token in descending order: 0, 0.4, 0.7, 0.85, 0.95, 1.
  p.top_p = 0.75f;  // keeps 0.4, 0.3, 0.15 (0.7 < 0.75 <= 0.85)
  ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed), Restrict(softmax_, {3, 1, 5}),
                    kDraws);
  p.top_p = 0.65f;  // keeps 0.4, 0.3
  ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed), Restrict(softmax_, {3, 1}),
                    kDraws);
  p.top_p = 0.39f;  // the first token alone reaches it
  ExpectFrequencies(Histogram(sampler_, logits_, p, 2000, kSeed), Restrict(softmax_, {3}), 2000);
  p.top_p = 1e-6f;  // never empty
  ExpectFrequencies(Histogram(sampler_, logits_, p, 2000, kSeed), Restrict(softmax_, {3}), 2000);
  p.top_p = 0.99f;  // everything but the 1e-30 token (mass before it: 1 - 1e-30 >= 0.99)
  ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed),
                    Restrict(softmax_, {0, 1, 2, 3, 5}), kDraws);
}

TEST_F(DistributionTest, MinP) {
  SamplingParams p;
  p.min_p = 0.3f;  // keeps p >= 0.3 * 0.4 = 0.12: 0.4, 0.3, 0.15
  ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed), Restrict(softmax_, {3, 1, 5}),
                    kDraws);
  p.min_p = 1.0f;  // only the most likely token
  ExpectFrequencies(Histogram(sampler_, logits_, p, 2000, kSeed), Restrict(softmax_, {3}), 2000);
}

TEST_F(DistributionTest, MinPIsRelativeToTheTemperatureScaledDistribution) {
  // vLLM applies min_p after temperature. At T = 2 the probabilities are
  // proportional to sqrt(p): 0.05 -> sqrt(0.05/0.4) = 0.354 of the max, kept
  // by min_p = 0.3; at T = 1 it is 0.125 of the max and cut.
  SamplingParams p;
  p.min_p = 0.3f;
  p.temperature = 2.0f;
  ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed),
                    Restrict(Softmax(logits_, 2.0), {0, 1, 2, 3, 5}), kDraws);
}

TEST_F(DistributionTest, TopPRenormalisesAfterMinPAndTopK) {
  // vLLM order: min_p, then top_k, then top_p over the renormalised
  // survivors. Survivors 0.4, 0.3, 0.15 renormalise to 0.47, 0.35, 0.18: the
  // mass before the third is 0.82 >= 0.8, so top_p = 0.8 keeps two. Applied
  // to the un-renormalised distribution it would keep three (0.7 < 0.8).
  SamplingParams min_p;
  min_p.min_p = 0.3f;
  min_p.top_p = 0.8f;
  ExpectFrequencies(Histogram(sampler_, logits_, min_p, kDraws, kSeed),
                    Restrict(softmax_, {3, 1}), kDraws);
  SamplingParams top_k;
  top_k.top_k = 3;
  top_k.top_p = 0.8f;
  ExpectFrequencies(Histogram(sampler_, logits_, top_k, kDraws, kSeed),
                    Restrict(softmax_, {3, 1}), kDraws);
}

TEST_F(DistributionTest, AllFiltersTogetherWithTemperature) {
  // T = 0.5 squares the probabilities: 0.16, 0.09, 0.0225, 0.01, 0.0025
  // (normalised /0.285: 0.561, 0.316, 0.079, 0.035, 0.009). min_p = 0.05
  // cuts 0.009/0.561 = 0.016; top_k = 4 keeps the remaining four; top_p =
  // 0.9 over their renormalised mass (0.566, 0.319, 0.080, 0.035): before
  // the third 0.885 < 0.9 keeps it, before the fourth 0.965 cuts it.
  SamplingParams p;
  p.temperature = 0.5f;
  p.min_p = 0.05f;
  p.top_k = 4;
  p.top_p = 0.9f;
  ExpectFrequencies(Histogram(sampler_, logits_, p, kDraws, kSeed),
                    Restrict(Softmax(logits_, 0.5), {3, 1, 5}), kDraws);
}

// Logits over `vocab` tokens: 5 heavy tokens at the end of the vocabulary
// with 0.3, 0.25, 0.1, 0.1, 0.05 of the mass, and a tail of equal logits (0)
// holding the other 0.2, each tail token negligible.
std::vector<float> HeavyHeadFlatTail(int64_t vocab) {
  std::vector<float> logits(static_cast<size_t>(vocab), 0.0f);
  const double tail = static_cast<double>(vocab - 5);
  const std::vector<double> heavy = {0.3, 0.25, 0.1, 0.1, 0.05};
  for (size_t i = 0; i < heavy.size(); ++i) {
    logits[static_cast<size_t>(vocab - 1) - i] = static_cast<float>(std::log(heavy[i] / 0.2 * tail));
  }
  return logits;
}

TEST_F(DistributionTest, LargeVocabularyTopKTopP) {
  constexpr int64_t kVocab = 151936;
  constexpr int kLargeDraws = 500;
  const std::vector<float> logits = HeavyHeadFlatTail(kVocab);
  const std::vector<double> softmax = Softmax(logits);
  const int a = kVocab - 1, b = kVocab - 2, c = kVocab - 3, d = kVocab - 4;
  SamplingParams p;
  // Mass before each heavy token: 0, 0.3, 0.55, 0.65, 0.75 -> keeps four
  // (the two 0.1 tokens may differ by float rounding; both are kept).
  p.top_p = 0.7f;
  ExpectFrequencies(Histogram(sampler_, logits, p, kLargeDraws, kSeed),
                    Restrict(softmax, {a, b, c, d}), kLargeDraws);
  p.top_p = 1.0f;
  p.top_k = 2;
  ExpectFrequencies(Histogram(sampler_, logits, p, kLargeDraws, kSeed), Restrict(softmax, {a, b}),
                    kLargeDraws);
}

TEST_F(DistributionTest, TopPCutsInsideATieByTokenId) {
  // top_p = 0.95 keeps the heavy tokens (0.8) and the lowest-id 3/4 of the
  // tied tail (mass before a tail token of rank j: 0.8 + 0.2 j / tail).
  constexpr int64_t kVocab = 8192;
  const std::vector<float> logits = HeavyHeadFlatTail(kVocab);
  SamplingParams p;
  p.top_p = 0.95f;
  constexpr int kTailDraws = 1000;
  const std::vector<int64_t> counts = Histogram(sampler_, logits, p, kTailDraws, kSeed);
  const int64_t last_kept = static_cast<int64_t>(0.75 * (kVocab - 5));  // +-1 for rounding
  int64_t tail_draws = 0;
  for (int64_t id = 0; id < kVocab - 5; ++id) {
    const int64_t n = counts[static_cast<size_t>(id)];
    tail_draws += n;
    if (id > last_kept + 1) {
      EXPECT_EQ(n, 0) << "tail token " << id << " is past the cut";
    }
  }
  // The kept tail holds 0.15 of the original mass: 0.15 / 0.95 of the draws.
  const double expected = 0.15 / 0.95;
  const double sigma = std::sqrt(expected * (1 - expected) / kTailDraws);
  EXPECT_NEAR(static_cast<double>(tail_draws) / kTailDraws, expected, 5 * sigma);
}

}  // namespace
}  // namespace epserve::sampling
