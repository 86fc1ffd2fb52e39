// The output of `epserve bench`: a table on stdout in the layout of vLLM's
// benchmark_serving, and the same numbers (plus per-request values) as JSON
// with vLLM's key names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/client/bench_stats.h"
#include "nlohmann/json.hpp"

namespace epserve::client {

// The workload a run was asked for, echoed in the report.
struct BenchConfig {
  std::string server;
  std::string backend = "grpc";  // grpc or openai
  int num_prompts = 0;
  double request_rate = 0;  // requests/s; infinity: all at t = 0
  Arrival arrival = Arrival::kPoisson;
  int max_concurrency = 0;  // 0 = no cap
  int64_t input_len = 0;
  int64_t output_len = 0;
  double range_ratio = 0;
  uint64_t seed = 0;
  int warmup = 0;
};

std::string FormatTable(const BenchConfig& config, const BenchSummary& summary);

nlohmann::json ReportJson(const BenchConfig& config, const BenchSummary& summary,
                          const std::vector<RequestResult>& results);

}  // namespace epserve::client
