#include "cli/client/bench_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace epserve::client {

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(q, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - static_cast<double>(lo)) * (values[hi] - values[lo]);
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

absl::StatusOr<Arrival> ParseArrival(absl::string_view name) {
  if (name == "poisson") return Arrival::kPoisson;
  if (name == "fixed") return Arrival::kFixed;
  return absl::InvalidArgumentError(
      absl::StrCat("--arrival: expected poisson or fixed, found '", name, "'"));
}

const char* ArrivalName(Arrival arrival) {
  return arrival == Arrival::kPoisson ? "poisson" : "fixed";
}

std::vector<double> ArrivalSchedule(int num_requests, double rate, Arrival arrival,
                                    std::mt19937_64& rng) {
  std::vector<double> times(static_cast<size_t>(std::max(num_requests, 0)), 0.0);
  if (std::isinf(rate)) return times;
  std::exponential_distribution<double> gap(rate);
  for (size_t i = 1; i < times.size(); ++i) {
    times[i] = times[i - 1] + (arrival == Arrival::kPoisson ? gap(rng) : 1.0 / rate);
  }
  return times;
}

LengthBounds LengthRange(int64_t len, double range_ratio) {
  LengthBounds b;
  b.min = std::max<int64_t>(
      1, static_cast<int64_t>(std::floor(static_cast<double>(len) * (1.0 - range_ratio))));
  b.max = std::max<int64_t>(
      b.min, static_cast<int64_t>(std::floor(static_cast<double>(len) * (1.0 + range_ratio))));
  return b;
}

std::vector<int64_t> SampleLengths(int n, int64_t len, double range_ratio, std::mt19937_64& rng) {
  const LengthBounds b = LengthRange(len, range_ratio);
  std::uniform_int_distribution<int64_t> dist(b.min, b.max);
  std::vector<int64_t> out(static_cast<size_t>(std::max(n, 0)));
  for (int64_t& l : out) l = dist(rng);
  return out;
}

std::vector<uint32_t> RandomTokenIds(int64_t n, uint32_t vocab_size,
                                     const std::vector<uint32_t>& excluded, std::mt19937_64& rng) {
  std::uniform_int_distribution<uint32_t> dist(0, vocab_size - 1);
  std::vector<uint32_t> ids;
  ids.reserve(static_cast<size_t>(std::max<int64_t>(n, 0)));
  while (static_cast<int64_t>(ids.size()) < n) {
    const uint32_t id = dist(rng);
    if (std::find(excluded.begin(), excluded.end(), id) == excluded.end()) ids.push_back(id);
  }
  return ids;
}

void TokenTimer::OnTokens(double now, int64_t num_tokens) {
  for (int64_t k = 0; k < num_tokens; ++k) {
    if (!ttft_) {
      ttft_ = now - send_time_;
    } else {
      itl_.push_back(now - last_);
    }
    last_ = now;
  }
  num_tokens_ += std::max<int64_t>(num_tokens, 0);
}

LatencyStats SummarizeLatencies(const std::vector<double>& seconds) {
  std::vector<double> ms(seconds.size());
  std::transform(seconds.begin(), seconds.end(), ms.begin(), [](double s) { return s * 1e3; });
  LatencyStats s;
  s.mean_ms = Mean(ms);
  double var = 0;
  for (double v : ms) var += (v - s.mean_ms) * (v - s.mean_ms);
  s.std_ms = ms.empty() ? 0 : std::sqrt(var / static_cast<double>(ms.size()));
  s.median_ms = Percentile(ms, 50);
  s.p90_ms = Percentile(ms, 90);
  s.p99_ms = Percentile(ms, 99);
  return s;
}

BenchSummary Summarize(const std::vector<RequestResult>& results, double duration_s) {
  BenchSummary s;
  s.num_requests = static_cast<int64_t>(results.size());
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2e;
  for (const RequestResult& r : results) {
    if (!r.ok) {
      ++s.failed;
      ++s.failures_by_code[r.error_code];
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s);
    e2e.push_back(r.e2e_s);
    if (r.output_tokens > 1) {
      tpot.push_back((r.e2e_s - r.ttft_s) / static_cast<double>(r.output_tokens - 1));
    }
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
  }
  if (duration_s > 0) {
    s.request_throughput = static_cast<double>(s.completed) / duration_s;
    s.output_throughput = static_cast<double>(s.total_output_tokens) / duration_s;
    s.total_token_throughput =
        static_cast<double>(s.total_input_tokens + s.total_output_tokens) / duration_s;
  }
  s.ttft = SummarizeLatencies(ttft);
  s.tpot = SummarizeLatencies(tpot);
  s.itl = SummarizeLatencies(itl);
  s.e2e = SummarizeLatencies(e2e);
  return s;
}

}  // namespace epserve::client
