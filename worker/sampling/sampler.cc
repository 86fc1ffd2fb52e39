#include "worker/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "worker/sampling/penalties.h"
#include "worker/sampling/philox.h"

namespace epserve::sampling {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Per-thread buffers, reused across the rows a thread samples.
struct RowScratch {
  std::vector<float> work;            // [vocab] processed logits
  std::vector<float> logprob_source;  // [vocab] distribution the logprobs describe
  std::vector<int32_t> candidates;    // ids still eligible
  std::vector<double> weights;        // exp(x - max) of the candidates
  PenaltyScratch penalty;
};

// Lowest id among the largest values of a sanitised row (at least one finite).
int32_t ArgMax(absl::Span<const float> x) {
  int32_t best = 0;
  for (int32_t id = 1; id < static_cast<int32_t>(x.size()); ++id) {
    if (x[id] > x[best]) best = id;
  }
  return best;
}

// Probabilities are exp(x - max) in float32 (x - max <= 0, so no overflow),
// summed in double.

// Keeps the smallest prefix of `candidates` in (logit desc, id asc) order whose
// mass reaches top_p of the candidates' total: a token is kept when the mass
// before it is < top_p * total. Sorts only as much of the list as needed:
// partial sorts over a geometrically growing prefix.
void ApplyTopP(const std::vector<float>& x, float max, float top_p,
               std::vector<int32_t>& candidates) {
  auto before = [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  double total = 0.0;
  for (int32_t id : candidates) total += std::exp(x[id] - max);
  const double target = static_cast<double>(top_p) * total;
  // Tokens that are certainly cut need not be sorted: everything not before
  // token i (itself and the tokens after it) has weight <= w_i, so the mass
  // before i is >= total - n * w_i, which is >= target once
  // w_i <= (total - target) / n. Half that bound leaves room for rounding.
  const double certainly_cut = 0.5 * (total - target) / static_cast<double>(candidates.size());
  if (certainly_cut > 0.0) {
    const double log_cut = std::log(certainly_cut);
    candidates.erase(std::remove_if(candidates.begin(), candidates.end(),
                                    [&](int32_t id) {
                                      return static_cast<double>(x[id]) - max < log_cut;
                                    }),
                     candidates.end());
  }
  const size_t n = candidates.size();
  double prefix = 0.0;
  size_t sorted = 0;
  while (sorted < n) {
    const size_t end = std::min(n, std::max<size_t>(256, 4 * sorted));
    auto first = candidates.begin() + static_cast<ptrdiff_t>(sorted);
    auto last = candidates.begin() + static_cast<ptrdiff_t>(end);
    if (end < n) std::nth_element(first, last, candidates.end(), before);
    std::sort(first, last, before);
    for (size_t i = sorted; i < end; ++i) {
      if (prefix >= target) {
        candidates.resize(i);
        return;
      }
      prefix += std::exp(x[candidates[i]] - max);
    }
    sorted = end;
  }
}

absl::StatusOr<SampledToken> SampleRow(size_t row_index, absl::Span<const float> logits,
                                       const SamplingRow& row, const Sampler::Options& options,
                                       RowScratch& s) {
  auto row_error = [&](const absl::Status& status) {
    return absl::Status(status.code(), absl::StrCat("row ", row_index, ": ", status.message()));
  };
  const SamplingParams& params = *row.params;
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (absl::Status st = Validate(params, vocab); !st.ok()) return row_error(st);
  if (absl::Status st = CheckTokenIds(row.prompt_ids, row.output_ids, vocab); !st.ok()) {
    return row_error(st);
  }

  std::vector<float>& x = s.work;
  x.assign(logits.begin(), logits.end());
  ApplyMinTokensMask(absl::MakeSpan(x), params, row.output_ids.size(), options.eos_token_ids);
  ApplyPenalties(absl::MakeSpan(x), params, row.prompt_ids, row.output_ids, &s.penalty);
  if (SanitizeLogits(absl::MakeSpan(x)) == 0) {
    return row_error(absl::InvalidArgumentError(
        "no token has a finite logit after NaN masking, penalties and min_tokens masking "
        "(every logit is NaN or -inf)"));
  }

  const bool want_processed = params.logprobs && options.logprobs_mode == LogprobsMode::kProcessed;
  SampledToken out;
  if (IsGreedy(params)) {
    out.token_id = ArgMax(x);
    if (want_processed) s.logprob_source = x;
  } else {
    const float temperature = std::max(params.temperature, kMinTemperature);
    for (float& v : x) v /= temperature;  // -inf stays -inf
    const float max = *std::max_element(x.begin(), x.end());
    // min_p: p / p_max = exp(x - max) >= min_p.
    const double min_log_ratio = params.min_p > 0.0f
                                     ? std::log(static_cast<double>(params.min_p))
                                     : -std::numeric_limits<double>::infinity();
    std::vector<int32_t>& cand = s.candidates;
    cand.clear();
    for (int32_t id = 0; id < static_cast<int32_t>(vocab); ++id) {
      if (x[id] != kNegInf && static_cast<double>(x[id]) - max >= min_log_ratio) {
        cand.push_back(id);
      }
    }
    bool id_order = true;
    // top_k: every candidate >= the k-th largest logit (ties kept).
    if (params.top_k > 0 && static_cast<size_t>(params.top_k) < cand.size()) {
      auto kth = cand.begin() + (params.top_k - 1);
      std::nth_element(cand.begin(), kth, cand.end(),
                       [&](int32_t a, int32_t b) { return x[a] > x[b]; });
      const float threshold = x[*kth];
      cand.erase(std::remove_if(cand.begin(), cand.end(),
                                [&](int32_t id) { return x[id] < threshold; }),
                 cand.end());
      id_order = false;
    }
    if (params.top_p < 1.0f) {
      ApplyTopP(x, max, params.top_p, cand);
      id_order = false;
    }
    if (!id_order) std::sort(cand.begin(), cand.end());

    // Inverse CDF in ascending id order.
    std::vector<double>& w = s.weights;
    w.resize(cand.size());
    double total = 0.0;
    for (size_t i = 0; i < cand.size(); ++i) {
      w[i] = std::exp(x[cand[i]] - max);
      total += w[i];
    }
    const uint64_t seed = params.seed.has_value() ? *params.seed : DrawSeed();
    const double target = UniformDouble(seed, row.step) * total;
    double cumulative = 0.0;
    out.token_id = cand.back();  // if rounding leaves target unreached
    for (size_t i = 0; i < cand.size(); ++i) {
      cumulative += w[i];
      if (cumulative > target) {
        out.token_id = cand[i];
        break;
      }
    }
    if (want_processed) {
      s.logprob_source.assign(x.size(), kNegInf);
      for (int32_t id : cand) s.logprob_source[id] = x[id];
    }
  }

  if (params.logprobs) {
    if (!want_processed) {
      s.logprob_source.assign(logits.begin(), logits.end());
      SanitizeLogits(absl::MakeSpan(s.logprob_source));
    }
    const std::vector<float>& dist = s.logprob_source;
    const double lse = LogSumExp(dist);
    const float chosen = dist[out.token_id];
    out.logprob =
        chosen == kNegInf ? chosen : static_cast<float>(static_cast<double>(chosen) - lse);
    out.top_logprobs = TopLogprobs(dist, lse, params.top_logprobs);
  }
  return out;
}

}  // namespace

Sampler::Sampler(Options options) : options_(std::move(options)) {}

absl::StatusOr<std::vector<absl::StatusOr<SampledToken>>> Sampler::SampleBatch(
    absl::Span<const float> logits, int64_t vocab_size, absl::Span<const SamplingRow> rows) const {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("vocab_size must be > 0, got ", vocab_size));
  }
  if (logits.size() != rows.size() * static_cast<size_t>(vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logits must hold [num_rows = ", rows.size(), ", vocab_size = ", vocab_size,
        "] = ", rows.size() * static_cast<size_t>(vocab_size), " floats, got ", logits.size()));
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].params == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("rows[", i, "].params is null"));
    }
  }

  std::vector<absl::StatusOr<SampledToken>> results(rows.size(),
                                                    absl::InternalError("row not sampled"));
  const size_t vocab = static_cast<size_t>(vocab_size);
  // Rows are independent (their own random streams), so any split gives the
  // same tokens. Thread t takes rows t, t + T, t + 2T, ...
  auto run = [&](size_t first, size_t stride) {
    RowScratch scratch;
    for (size_t i = first; i < rows.size(); i += stride) {
      results[i] = SampleRow(i, logits.subspan(i * vocab, vocab), rows[i], options_, scratch);
    }
  };
  const size_t num_threads =
      std::min<size_t>(rows.size(), static_cast<size_t>(std::max(options_.num_threads, 1)));
  if (num_threads <= 1) {
    run(0, 1);
  } else {
    std::vector<std::thread> threads;
    threads.reserve(num_threads - 1);
    for (size_t t = 1; t < num_threads; ++t) threads.emplace_back(run, t, num_threads);
    run(0, num_threads);
    for (std::thread& thread : threads) thread.join();
  }
  return results;
}

}  // namespace epserve::sampling
