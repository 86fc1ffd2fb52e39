// The measurements of one epserve-bench-gpu run: human-readable lines go to
// stdout as they are taken; the collected list becomes one JSON object
//
//   {"device": "...", "date": "...", "measurements": [
//     {"name": "decode_tokens_per_s", "config": "qwen3-30b-a3b", "batch": 64,
//      "value": 1234.5, "unit": "tok/s", "ratio": 0.42}, ...]}
//
// printed at the end and (re)written to --json after every section, so a run
// that dies half-way still leaves what it measured.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace epserve::bench_gpu {

struct Measurement {
  std::string name;              // "copy_bandwidth", "decode_tokens_per_s", ...
  std::string config;            // model or shape; "" for device-wide figures
  std::optional<int64_t> batch;  // sequences (decode), tokens (prefill, grouped GEMM)
  double value = 0;
  std::string unit;
  // Measured / reference (see the measurement's line); unset: none.
  std::optional<double> ratio;
};

class Report {
 public:
  Report(std::string device, std::string date, std::string json_path)
      : device_(std::move(device)), date_(std::move(date)), json_path_(std::move(json_path)) {}

  void Add(Measurement m) { measurements_.push_back(std::move(m)); }
  const std::vector<Measurement>& measurements() const { return measurements_; }

  // The JSON object above, pretty-printed.
  std::string Json() const;
  // Rewrites --json (no-op without one).
  absl::Status Flush() const;

 private:
  std::string device_;
  std::string date_;
  std::string json_path_;
  std::vector<Measurement> measurements_;
};

// One human-readable line to stdout, flushed (the run is long).
template <typename... Args>
void Line(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::fputs(absl::StrFormat(format, args...).c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

// "2025-01-31T12:34:56Z"
std::string UtcNow();

}  // namespace epserve::bench_gpu
