// Helpers shared by the sampler tests: many seeded draws from one row, and
// the statistical check used on their histogram.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "worker/sampling/sampler.h"

namespace epserve::sampling::testing {

// Draw counts per token of `num_draws` samples from `logits` ([vocab]) under
// `params`, seed `seed`, steps 0 .. num_draws-1 (one batch of num_draws rows,
// so each draw uses its own Philox counter).
inline std::vector<int64_t> Histogram(const Sampler& sampler, const std::vector<float>& logits,
                                      SamplingParams params, int num_draws, uint64_t seed) {
  params.seed = seed;
  const int64_t vocab = static_cast<int64_t>(logits.size());
  // Batches of up to ~4M floats.
  const int rows_per_call = static_cast<int>(std::max<int64_t>(1, (int64_t{1} << 22) / vocab));
  std::vector<int64_t> counts(logits.size(), 0);
  for (int first = 0; first < num_draws; first += rows_per_call) {
    const int num_rows = std::min(rows_per_call, num_draws - first);
    std::vector<float> batch;
    batch.reserve(logits.size() * static_cast<size_t>(num_rows));
    std::vector<SamplingRow> rows(static_cast<size_t>(num_rows));
    for (int i = 0; i < num_rows; ++i) {
      batch.insert(batch.end(), logits.begin(), logits.end());
      rows[static_cast<size_t>(i)].params = &params;
      rows[static_cast<size_t>(i)].step = static_cast<uint64_t>(first + i);
    }
    auto results = sampler.SampleBatch(batch, vocab, rows);
    EXPECT_TRUE(results.ok()) << results.status();
    if (!results.ok()) return counts;
    for (const auto& r : *results) {
      EXPECT_TRUE(r.ok()) << r.status();
      if (r.ok()) ++counts[static_cast<size_t>(r->token_id)];
    }
  }
  return counts;
}

// Softmax in double of logits / temperature (-inf allowed).
inline std::vector<double> Softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max = -INFINITY;
  for (float x : logits) max = std::max(max, x / temperature);
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(logits[i] / temperature - max);
  for (double& v : p) v /= sum;
  return p;
}

// Tokens with expected probability 0 must never be drawn; every other
// token's count must lie within 5 binomial standard deviations (+1 for
// discreteness) of num_draws * p. With fixed seeds the outcome is
// deterministic; 5 sigma keeps a correct sampler far from the bound for
// any seed (per-token false-alarm rate ~6e-7).
inline void ExpectFrequencies(const std::vector<int64_t>& counts, const std::vector<double>& p,
                              int num_draws) {
  ASSERT_EQ(counts.size(), p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " is outside the kept set but was sampled";
      continue;
    }
    const double mean = num_draws * p[i];
    const double sigma = std::sqrt(num_draws * p[i] * (1.0 - p[i]));
    EXPECT_NEAR(static_cast<double>(counts[i]), mean, 5.0 * sigma + 1.0)
        << "token " << i << " expected probability " << p[i];
  }
}

// p restricted to `keep` (others 0) and renormalised.
inline std::vector<double> Restrict(std::vector<double> p, const std::vector<int>& keep) {
  std::vector<double> out(p.size(), 0.0);
  double sum = 0.0;
  for (int id : keep) sum += p[static_cast<size_t>(id)];
  for (int id : keep) out[static_cast<size_t>(id)] = p[static_cast<size_t>(id)] / sum;
  return out;
}

// Logits whose softmax is exactly proportional to `probs` (log p).
inline std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

}  // namespace epserve::sampling::testing
