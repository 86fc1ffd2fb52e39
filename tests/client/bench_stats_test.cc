// The arithmetic of `epserve bench`: percentiles, arrival schedules, length
// ranges, random prompts, token timing and the summary.
#include "cli/client/bench_stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

namespace epserve::client {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(Percentile, MatchesHandComputedLinearInterpolation) {
  // Sorted: 1 2 3 4 10 (n = 5, rank = q/100 * 4).
  const std::vector<double> v = {10, 3, 1, 4, 2};
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 3);             // rank 2
  EXPECT_DOUBLE_EQ(Percentile(v, 25), 2);             // rank 1
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 4 + 0.6 * 6);   // rank 3.6: 4 + 0.6 * (10 - 4) = 7.6
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 4 + 0.96 * 6);  // rank 3.96: 9.76
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 10);
  // Even count: the median is the mean of the middle two.
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4}, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({7}, 99), 7);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(Mean({1, 2, 3, 10}), 4);
  EXPECT_DOUBLE_EQ(Mean({}), 0);
}

TEST(Arrival, ParsesNames) {
  EXPECT_EQ(*ParseArrival("poisson"), Arrival::kPoisson);
  EXPECT_EQ(*ParseArrival("fixed"), Arrival::kFixed);
  EXPECT_FALSE(ParseArrival("uniform").ok());
  EXPECT_STREQ(ArrivalName(Arrival::kFixed), "fixed");
}

TEST(ArrivalSchedule, FixedIsExact) {
  std::mt19937_64 rng(0);
  const std::vector<double> t = ArrivalSchedule(5, /*rate=*/4.0, Arrival::kFixed, rng);
  ASSERT_EQ(t.size(), 5u);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_DOUBLE_EQ(t[i], 0.25 * static_cast<double>(i));
}

TEST(ArrivalSchedule, InfiniteRateSendsEverythingAtZero) {
  std::mt19937_64 rng(0);
  for (Arrival a : {Arrival::kPoisson, Arrival::kFixed}) {
    const std::vector<double> t = ArrivalSchedule(7, kInf, a, rng);
    ASSERT_EQ(t.size(), 7u);
    for (double x : t) EXPECT_EQ(x, 0.0);
  }
}

TEST(ArrivalSchedule, PoissonGapsHaveMeanOneOverRate) {
  std::mt19937_64 rng(1234);
  const double rate = 20.0;
  const int n = 20001;
  const std::vector<double> t = ArrivalSchedule(n, rate, Arrival::kPoisson, rng);
  ASSERT_EQ(t.size(), static_cast<size_t>(n));
  EXPECT_EQ(t[0], 0.0);
  std::vector<double> gaps;
  for (size_t i = 1; i < t.size(); ++i) {
    ASSERT_GE(t[i], t[i - 1]);
    gaps.push_back(t[i] - t[i - 1]);
  }
  // 20000 exponential gaps: the mean's standard error is 1/rate/sqrt(20000),
  // 0.7% of the mean; 3% is > 4 standard errors. The exponential's median is
  // ln 2 / rate and its standard deviation equals its mean.
  EXPECT_NEAR(Mean(gaps), 1 / rate, 0.03 / rate);
  EXPECT_NEAR(Percentile(gaps, 50), std::log(2.0) / rate, 0.05 / rate);
  const double mean = Mean(gaps);
  double var = 0;
  for (double g : gaps) var += (g - mean) * (g - mean);
  EXPECT_NEAR(std::sqrt(var / static_cast<double>(gaps.size())), 1 / rate, 0.05 / rate);
  // Same seed, same schedule.
  std::mt19937_64 again(1234);
  EXPECT_EQ(ArrivalSchedule(n, rate, Arrival::kPoisson, again), t);
}

TEST(LengthRange, FollowsVllmRandomDataset) {
  // [floor(L * (1 - r)), floor(L * (1 + r))]
  EXPECT_EQ(LengthRange(100, 0.0).min, 100);
  EXPECT_EQ(LengthRange(100, 0.0).max, 100);
  EXPECT_EQ(LengthRange(100, 0.25).min, 75);
  EXPECT_EQ(LengthRange(100, 0.25).max, 125);
  EXPECT_EQ(LengthRange(10, 0.33).min, 6);   // floor(6.7)
  EXPECT_EQ(LengthRange(10, 0.33).max, 13);  // floor(13.3)
  // Never below one token.
  EXPECT_EQ(LengthRange(2, 0.9).min, 1);
  EXPECT_EQ(LengthRange(2, 0.9).max, 3);
}

TEST(SampleLengths, StayInsideTheRangeAndCoverIt) {
  std::mt19937_64 rng(7);
  const std::vector<int64_t> lens = SampleLengths(2000, 100, 0.1, rng);
  ASSERT_EQ(lens.size(), 2000u);
  std::set<int64_t> seen(lens.begin(), lens.end());
  EXPECT_EQ(*seen.begin(), 90);
  EXPECT_EQ(*seen.rbegin(), 110);
  EXPECT_EQ(seen.size(), 21u);  // every value of [90, 110]
  std::mt19937_64 rng0(7);
  for (int64_t l : SampleLengths(50, 16, 0.0, rng0)) EXPECT_EQ(l, 16);
}

TEST(RandomTokenIds, InVocabularyAndNeverExcluded) {
  std::mt19937_64 rng(3);
  const std::vector<uint32_t> excluded = {0, 5, 9};
  const std::vector<uint32_t> ids = RandomTokenIds(5000, 10, excluded, rng);
  ASSERT_EQ(ids.size(), 5000u);
  std::set<uint32_t> seen(ids.begin(), ids.end());
  EXPECT_EQ(seen, (std::set<uint32_t>{1, 2, 3, 4, 6, 7, 8}));
}

TEST(TokenTimer, OneGapPerChunkPlusZeroGapsForItsOtherTokens) {
  TokenTimer timer(/*send_time=*/10.0);
  EXPECT_FALSE(timer.ttft().has_value());
  timer.OnTokens(10.5, 2);  // first token: TTFT 0.5; its chunk-mate: gap 0
  timer.OnTokens(10.7, 0);  // a chunk without tokens changes nothing
  timer.OnTokens(10.8, 1);  // gap 0.3 since the last token
  timer.OnTokens(11.0, 3);  // gap 0.2, then 0, 0
  ASSERT_TRUE(timer.ttft().has_value());
  EXPECT_DOUBLE_EQ(*timer.ttft(), 0.5);
  ASSERT_EQ(timer.itl().size(), 5u);
  EXPECT_DOUBLE_EQ(timer.itl()[0], 0.0);
  EXPECT_NEAR(timer.itl()[1], 0.3, 1e-12);
  EXPECT_NEAR(timer.itl()[2], 0.2, 1e-12);
  EXPECT_DOUBLE_EQ(timer.itl()[3], 0.0);
  EXPECT_DOUBLE_EQ(timer.itl()[4], 0.0);
  EXPECT_EQ(timer.num_tokens(), 6);
}

RequestResult Ok(int64_t prompt, int64_t output, double ttft, double e2e, std::vector<double> itl) {
  RequestResult r;
  r.ok = true;
  r.prompt_tokens = prompt;
  r.output_tokens = output;
  r.ttft_s = ttft;
  r.e2e_s = e2e;
  r.itl_s = std::move(itl);
  return r;
}

TEST(Summarize, ComputesThroughputAndLatencies) {
  RequestResult failed;
  failed.error_code = "UNAVAILABLE";
  const std::vector<RequestResult> results = {
      Ok(10, 5, 0.1, 0.5, {0.1, 0.1, 0.1, 0.1}),  // TPOT (0.5 - 0.1) / 4 = 0.1
      Ok(20, 3, 0.3, 0.7, {0.2, 0.2}),            // TPOT (0.7 - 0.3) / 2 = 0.2
      Ok(30, 1, 0.2, 0.2, {}),                    // one token: no TPOT
      failed, failed};
  const BenchSummary s = Summarize(results, /*duration_s=*/2.0);
  EXPECT_EQ(s.num_requests, 5);
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 2);
  EXPECT_EQ(s.failures_by_code.at("UNAVAILABLE"), 2);
  EXPECT_EQ(s.total_input_tokens, 60);
  EXPECT_EQ(s.total_output_tokens, 9);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 4.5);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 34.5);
  EXPECT_NEAR(s.ttft.mean_ms, 200, 1e-9);
  EXPECT_NEAR(s.ttft.median_ms, 200, 1e-9);
  EXPECT_NEAR(s.ttft.p99_ms, 200 + 0.98 * 100, 1e-9);  // sorted 100 200 300, rank 1.98
  EXPECT_NEAR(s.tpot.mean_ms, 150, 1e-9);
  EXPECT_NEAR(s.itl.mean_ms, (0.4 + 0.4) / 6 * 1e3, 1e-9);
  EXPECT_NEAR(s.itl.median_ms, 100, 1e-9);
  EXPECT_NEAR(s.e2e.mean_ms, (0.5 + 0.7 + 0.2) / 3 * 1e3, 1e-9);
}

TEST(Summarize, NothingSucceeded) {
  RequestResult failed;
  failed.error_code = "UNIMPLEMENTED";
  const BenchSummary s = Summarize({failed}, 1.0);
  EXPECT_EQ(s.completed, 0);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.ttft.mean_ms, 0);
  EXPECT_EQ(s.request_throughput, 0);
}

}  // namespace
}  // namespace epserve::client
