// The bench report: the table's rows and the JSON's vLLM key names.
#include "cli/client/bench_report.h"

#include <gtest/gtest.h>

#include <limits>

namespace epserve::client {
namespace {

TEST(BenchReport, TableAndJsonCarryTheSummary) {
  BenchConfig config;
  config.server = "127.0.0.1:1";
  config.num_prompts = 3;
  config.request_rate = std::numeric_limits<double>::infinity();
  config.max_concurrency = 2;
  config.input_len = 16;
  config.output_len = 8;
  RequestResult ok;
  ok.ok = true;
  ok.prompt_tokens = 16;
  ok.output_tokens = 8;
  ok.ttft_s = 0.01;
  ok.e2e_s = 0.08;
  ok.itl_s = std::vector<double>(7, 0.01);
  RequestResult failed;
  failed.error_code = "RESOURCE_EXHAUSTED";
  failed.error_message = "queue full";
  const std::vector<RequestResult> results = {ok, ok, failed};
  const BenchSummary summary = Summarize(results, 0.5);

  const std::string table = FormatTable(config, summary);
  EXPECT_NE(table.find("Successful requests:                     2\n"), std::string::npos) << table;
  EXPECT_NE(table.find("Failed requests:"), std::string::npos);
  EXPECT_NE(table.find("RESOURCE_EXHAUSTED"), std::string::npos);
  EXPECT_NE(table.find("Request rate (req/s):                    inf"), std::string::npos);
  EXPECT_NE(table.find("Total generated tokens:                  16"), std::string::npos);
  EXPECT_NE(table.find("Output token throughput (tok/s):         32.00"), std::string::npos);
  EXPECT_NE(table.find("Mean TTFT (ms):                          10.00"), std::string::npos);
  EXPECT_NE(table.find("P90 TTFT (ms):"), std::string::npos);
  EXPECT_NE(table.find("Mean TPOT (ms):                          10.00"), std::string::npos);
  EXPECT_NE(table.find("Median ITL (ms):                         10.00"), std::string::npos);
  EXPECT_NE(table.find("Mean E2EL (ms):                          80.00"), std::string::npos);

  const nlohmann::json j = ReportJson(config, summary, results);
  EXPECT_EQ(j["completed"], 2);
  EXPECT_EQ(j["failed"], 1);
  EXPECT_EQ(j["failures"]["RESOURCE_EXHAUSTED"], 1);
  EXPECT_EQ(j["total_output_tokens"], 16);
  EXPECT_EQ(j["total_input_tokens"], 32);
  EXPECT_EQ(j["request_rate"], "inf");
  EXPECT_EQ(j["max_concurrency"], 2);
  EXPECT_DOUBLE_EQ(j["request_throughput"].get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(j["mean_ttft_ms"].get<double>(), 10.0);
  for (const char* key :
       {"median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_itl_ms", "mean_e2el_ms", "duration",
        "output_throughput", "total_token_throughput"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  ASSERT_EQ(j["errors"].size(), 3u);
  EXPECT_EQ(j["errors"][2], "RESOURCE_EXHAUSTED: queue full");
  EXPECT_EQ(j["output_lens"][0], 8);
  EXPECT_EQ(j["itls"][0].size(), 7u);
}

}  // namespace
}  // namespace epserve::client
