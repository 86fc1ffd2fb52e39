#include "cli/client/bench_report.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace epserve::client {
namespace {

std::string RateText(double rate) { return std::isinf(rate) ? "inf" : absl::StrCat(rate); }

void Heading(std::string& out, const std::string& title, char fill) {
  const int width = 50;
  const int pad = width - static_cast<int>(title.size());
  const int left = pad > 0 ? pad / 2 : 0;
  const int right = pad > 0 ? pad - left : 0;
  absl::StrAppend(&out, std::string(static_cast<size_t>(left), fill), title,
                  std::string(static_cast<size_t>(right), fill), "\n");
}

void Row(std::string& out, const std::string& name, const std::string& value) {
  absl::StrAppend(&out, absl::StrFormat("%-40s %s\n", name + ":", value));
}

std::string Fixed(double v) { return absl::StrFormat("%.2f", v); }

void LatencyRows(std::string& out, const std::string& name, const LatencyStats& s, bool p90) {
  Row(out, absl::StrCat("Mean ", name, " (ms)"), Fixed(s.mean_ms));
  Row(out, absl::StrCat("Median ", name, " (ms)"), Fixed(s.median_ms));
  if (p90) Row(out, absl::StrCat("P90 ", name, " (ms)"), Fixed(s.p90_ms));
  Row(out, absl::StrCat("P99 ", name, " (ms)"), Fixed(s.p99_ms));
}

void LatencyJson(nlohmann::json& j, const std::string& name, const LatencyStats& s) {
  j["mean_" + name + "_ms"] = s.mean_ms;
  j["median_" + name + "_ms"] = s.median_ms;
  j["std_" + name + "_ms"] = s.std_ms;
  j["p90_" + name + "_ms"] = s.p90_ms;
  j["p99_" + name + "_ms"] = s.p99_ms;
}

}  // namespace

std::string FormatTable(const BenchConfig& config, const BenchSummary& summary) {
  std::string out;
  Heading(out, " Serving Benchmark Result ", '=');
  Row(out, "Successful requests", absl::StrCat(summary.completed));
  if (summary.failed > 0) {
    Row(out, "Failed requests", absl::StrCat(summary.failed));
    for (const auto& [code, n] : summary.failures_by_code) Row(out, "  " + code, absl::StrCat(n));
  }
  Row(out, "Request rate (req/s)", RateText(config.request_rate));
  Row(out, "Maximum request concurrency",
      config.max_concurrency > 0 ? absl::StrCat(config.max_concurrency) : "none");
  Row(out, "Benchmark duration (s)", Fixed(summary.duration_s));
  Row(out, "Total input tokens", absl::StrCat(summary.total_input_tokens));
  Row(out, "Total generated tokens", absl::StrCat(summary.total_output_tokens));
  Row(out, "Request throughput (req/s)", Fixed(summary.request_throughput));
  Row(out, "Output token throughput (tok/s)", Fixed(summary.output_throughput));
  Row(out, "Total token throughput (tok/s)", Fixed(summary.total_token_throughput));
  Heading(out, "Time to First Token", '-');
  LatencyRows(out, "TTFT", summary.ttft, /*p90=*/true);
  Heading(out, "Time per Output Token (excl. 1st token)", '-');
  LatencyRows(out, "TPOT", summary.tpot, /*p90=*/false);
  Heading(out, "Inter-token Latency", '-');
  LatencyRows(out, "ITL", summary.itl, /*p90=*/false);
  Heading(out, "End-to-end Latency", '-');
  Row(out, "Mean E2EL (ms)", Fixed(summary.e2e.mean_ms));
  Heading(out, "", '=');
  return out;
}

nlohmann::json ReportJson(const BenchConfig& config, const BenchSummary& summary,
                          const std::vector<RequestResult>& results) {
  nlohmann::json j;
  j["server"] = config.server;
  j["backend"] = config.backend;
  j["num_prompts"] = config.num_prompts;
  // JSON has no infinity; "inf" as on the command line.
  if (std::isinf(config.request_rate)) {
    j["request_rate"] = "inf";
  } else {
    j["request_rate"] = config.request_rate;
  }
  j["arrival"] = ArrivalName(config.arrival);
  j["max_concurrency"] =
      config.max_concurrency > 0 ? nlohmann::json(config.max_concurrency) : nlohmann::json(nullptr);
  j["input_len"] = config.input_len;
  j["output_len"] = config.output_len;
  j["range_ratio"] = config.range_ratio;
  j["seed"] = config.seed;
  j["warmup"] = config.warmup;

  j["duration"] = summary.duration_s;
  j["completed"] = summary.completed;
  j["failed"] = summary.failed;
  j["failures"] = summary.failures_by_code;
  j["total_input_tokens"] = summary.total_input_tokens;
  j["total_output_tokens"] = summary.total_output_tokens;
  j["request_throughput"] = summary.request_throughput;
  j["output_throughput"] = summary.output_throughput;
  j["total_token_throughput"] = summary.total_token_throughput;
  LatencyJson(j, "ttft", summary.ttft);
  LatencyJson(j, "tpot", summary.tpot);
  LatencyJson(j, "itl", summary.itl);
  LatencyJson(j, "e2el", summary.e2e);

  // Per request, in send order; seconds as vLLM writes them.
  nlohmann::json input_lens = nlohmann::json::array(), output_lens = nlohmann::json::array(),
                 ttfts = nlohmann::json::array(), e2els = nlohmann::json::array(),
                 itls = nlohmann::json::array(), errors = nlohmann::json::array();
  for (const RequestResult& r : results) {
    input_lens.push_back(r.prompt_tokens);
    output_lens.push_back(r.output_tokens);
    ttfts.push_back(r.ttft_s);
    e2els.push_back(r.e2e_s);
    itls.push_back(r.itl_s);
    errors.push_back(r.ok ? "" : absl::StrCat(r.error_code, ": ", r.error_message));
  }
  j["input_lens"] = std::move(input_lens);
  j["output_lens"] = std::move(output_lens);
  j["ttfts"] = std::move(ttfts);
  j["e2els"] = std::move(e2els);
  j["itls"] = std::move(itls);
  j["errors"] = std::move(errors);
  return j;
}

}  // namespace epserve::client
