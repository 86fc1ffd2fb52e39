// The arithmetic of `epserve bench`, kept free of gRPC and clocks so it can
// be tested on its own: the random workload (arrival times, lengths, prompt
// token ids), per-request token timing, and the summary statistics. The
// definitions follow vLLM's benchmarks/benchmark_serving.py with the random
// dataset.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve::client {

// The q-th percentile (q in [0, 100]) of `values` with linear interpolation
// between closest ranks (numpy.percentile's default). 0 for no values.
double Percentile(std::vector<double> values, double q);
// Arithmetic mean; 0 for no values.
double Mean(const std::vector<double>& values);

// How request send times are spaced at a finite request rate R.
enum class Arrival {
  kPoisson,  // exponential gaps with mean 1/R (a Poisson process)
  kFixed,    // gaps of exactly 1/R
};
absl::StatusOr<Arrival> ParseArrival(absl::string_view name);  // "poisson" | "fixed"
const char* ArrivalName(Arrival arrival);

// Send time of each request, in seconds from the start of the run. Request 0
// is sent at 0 and request i after i gaps. `rate` is in requests per second;
// an infinite rate sends every request at 0. Requires rate > 0.
std::vector<double> ArrivalSchedule(int num_requests, double rate, Arrival arrival,
                                    std::mt19937_64& rng);

// Inclusive bounds of a length drawn around `len` with `range_ratio` r:
// [floor(len * (1 - r)), floor(len * (1 + r))], the lower bound raised to 1.
struct LengthBounds {
  int64_t min = 0;
  int64_t max = 0;
};
LengthBounds LengthRange(int64_t len, double range_ratio);
// `n` lengths drawn uniformly from LengthRange(len, range_ratio).
std::vector<int64_t> SampleLengths(int n, int64_t len, double range_ratio, std::mt19937_64& rng);

// `n` token ids drawn uniformly from [0, vocab_size) minus `excluded` (EOS,
// BOS). Requires at least one id that is not excluded.
std::vector<uint32_t> RandomTokenIds(int64_t n, uint32_t vocab_size,
                                     const std::vector<uint32_t>& excluded, std::mt19937_64& rng);

// Timing of one streamed request. Times are seconds on one clock. Every token
// is one arrival: a chunk of k tokens arriving at t counts as k arrivals at t,
// so it adds one gap (since the previous token, or the TTFT for the first
// token) and k - 1 zero gaps.
class TokenTimer {
 public:
  explicit TokenTimer(double send_time) : send_time_(send_time), last_(send_time) {}

  void OnTokens(double now, int64_t num_tokens);

  // Seconds from send to the first token; nullopt before any token.
  std::optional<double> ttft() const { return ttft_; }
  // Gaps between successive tokens (after the first), seconds.
  const std::vector<double>& itl() const { return itl_; }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  double send_time_;
  double last_;
  std::optional<double> ttft_;
  std::vector<double> itl_;
  int64_t num_tokens_ = 0;
};

// What one benchmark request measured.
struct RequestResult {
  bool ok = false;
  // Why it failed: a gRPC status code name ("UNAVAILABLE"), or
  // "NO_COMPLETE" for a stream that ended OK without a complete message.
  std::string error_code;
  std::string error_message;
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  double ttft_s = 0;
  double e2e_s = 0;
  std::vector<double> itl_s;
};

// Mean, median and tail percentiles of one latency, in milliseconds.
struct LatencyStats {
  double mean_ms = 0;
  double median_ms = 0;
  double std_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
};
LatencyStats SummarizeLatencies(const std::vector<double>& seconds);

struct BenchSummary {
  int64_t num_requests = 0;
  int64_t completed = 0;
  int64_t failed = 0;
  std::map<std::string, int64_t> failures_by_code;
  double duration_s = 0;
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  double request_throughput = 0;      // completed requests / s
  double output_throughput = 0;       // output tokens / s
  double total_token_throughput = 0;  // (input + output tokens) / s
  LatencyStats ttft;
  // Time per output token after the first: (e2e - ttft) / (output - 1),
  // over requests with more than one output token.
  LatencyStats tpot;
  LatencyStats itl;  // every gap of every successful request
  LatencyStats e2e;
};

// Aggregates successful requests; failed ones are only counted.
BenchSummary Summarize(const std::vector<RequestResult>& results, double duration_s);

}  // namespace epserve::client
