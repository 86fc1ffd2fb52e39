// The `epserve` client against a real router with one local CPU worker on the
// bundled tiny model: generate reproduces epserve-run's greedy continuation,
// and bench runs a small workload to completion.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"

namespace epserve::testing {
namespace {

using std::chrono::seconds;

constexpr char kModel[] = EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe";
constexpr char kPrompt[] = "Hello, world! The capital of France is";

// Runs `argv` through /bin/sh with stdout and stderr in separate files.
struct Output {
  int exit_code;
  std::string out;
  std::string err;
};
Output RunSplit(const std::vector<std::string>& argv, seconds timeout) {
  static int counter = 0;
  const std::string base = absl::StrCat(ScratchDir(), "/cmd_", ++counter);
  std::string line;
  for (const std::string& a : argv) {
    std::string quoted = "'";
    for (char c : a) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    absl::StrAppend(&line, quoted, "' ");
  }
  absl::StrAppend(&line, "> ", base, ".out 2> ", base, ".err");
  RunResult r = RunToExit("/bin/sh", {"-c", line}, timeout);
  return Output{r.exit_code, ReadFile(base + ".out"), ReadFile(base + ".err")};
}

std::string Describe(const Output& o) {
  return absl::StrCat("exit ", o.exit_code, "\nstdout:\n", o.out, "\nstderr:\n", o.err);
}

class ClientCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    router_ = RouterHandle::Start({absl::StrCat("--model=", kModel), "--local-workers=1"});
    ASSERT_NE(router_, nullptr);
    ASSERT_TRUE(WaitFor([&] { return router_->Serving(); }, seconds(60)))
        << router_->process().output();
  }

  std::string server() const { return "--server=" + router_->grpc_address(); }

  std::unique_ptr<RouterHandle> router_;
};

TEST_F(ClientCluster, GreedyGenerateEqualsEpserveRun) {
  const Output offline =
      RunSplit({Binary("epserve-run"), "generate", absl::StrCat("--model=", kModel),
                absl::StrCat("--prompt=", kPrompt), "--temperature=0", "--max-tokens=16"},
               seconds(120));
  ASSERT_EQ(offline.exit_code, 0) << Describe(offline);
  const nlohmann::json expected = nlohmann::json::parse(offline.out);
  const std::vector<uint32_t> expected_ids = expected["generated_ids"].get<std::vector<uint32_t>>();
  ASSERT_FALSE(expected_ids.empty());

  // Text mode: the text on stdout, the outcome on stderr.
  const Output text =
      RunSplit({Binary("epserve"), "generate", server(), absl::StrCat("--prompt=", kPrompt),
                "--temperature", "0", "--max-tokens", "16"},
               seconds(120));
  ASSERT_EQ(text.exit_code, 0) << Describe(text);
  EXPECT_EQ(text.out, expected["text"].get<std::string>() + "\n");
  EXPECT_THAT(text.err, ::testing::HasSubstr(absl::StrCat(
                            "finish_reason=", expected["finish_reason"].get<std::string>(), " ")));
  EXPECT_THAT(text.err,
              ::testing::HasSubstr(absl::StrCat("prompt_tokens=", expected["prompt_ids"].size(),
                                                " completion_tokens=", expected_ids.size(), " ")));
  EXPECT_THAT(text.err, ::testing::ContainsRegex("ttft_ms=[0-9.]+ total_ms=[0-9.]+"));

  // JSON mode: one line per response message; chunks then one complete.
  const Output json =
      RunSplit({Binary("epserve"), "generate", server(), absl::StrCat("--prompt=", kPrompt),
                "--temperature=0", "--max-tokens=16", "--json"},
               seconds(120));
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  std::vector<uint32_t> chunk_ids;
  std::string chunk_text;
  std::vector<nlohmann::json> completes;
  for (absl::string_view line : absl::StrSplit(json.out, '\n', absl::SkipEmpty())) {
    const nlohmann::json message = nlohmann::json::parse(line);
    if (message.contains("chunk")) {
      for (const auto& id : message["chunk"]["token_ids"]) chunk_ids.push_back(id.get<uint32_t>());
      chunk_text += message["chunk"]["text"].get<std::string>();
    } else {
      ASSERT_TRUE(message.contains("complete")) << line;
      completes.push_back(message["complete"]);
    }
  }
  ASSERT_EQ(completes.size(), 1u) << json.out;
  EXPECT_EQ(completes[0]["output_ids"].get<std::vector<uint32_t>>(), expected_ids);
  EXPECT_EQ(chunk_ids, expected_ids);
  EXPECT_EQ(chunk_text, expected["text"].get<std::string>());
  EXPECT_EQ(completes[0]["usage"]["completion_tokens"].get<uint32_t>(), expected_ids.size());
}

TEST_F(ClientCluster, BenchCompletesEveryRequest) {
  const std::string report = ScratchDir() + "/bench.json";
  const Output bench =
      RunSplit({Binary("epserve"), "bench", server(), "--num-prompts=20", "--request-rate=inf",
                "--max-concurrency=4", "--input-len=16", "--output-len=8", "--json-out=" + report},
               seconds(170));
  ASSERT_EQ(bench.exit_code, 0) << Describe(bench);
  EXPECT_THAT(bench.out, ::testing::HasSubstr("Successful requests:                     20\n"));
  const nlohmann::json j = nlohmann::json::parse(ReadFile(report));
  EXPECT_EQ(j["completed"], 20) << j.dump(2);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["total_output_tokens"], 160);
  EXPECT_EQ(j["total_input_tokens"], 320);
  EXPECT_EQ(j["max_concurrency"], 4);
  for (const auto& len : j["output_lens"]) EXPECT_EQ(len, 8);
  EXPECT_GT(j["mean_ttft_ms"].get<double>(), 0);
  EXPECT_GT(j["request_throughput"].get<double>(), 0);
}

TEST_F(ClientCluster, FailedCallPrintsTheCodeAndExitsOne) {
  const Output bad = RunSplit({Binary("epserve"), "generate", server(), "--prompt=hi",
                               "--temperature=-1", "--max-tokens=4"},
                              seconds(30));
  EXPECT_EQ(bad.exit_code, 1) << Describe(bad);
  EXPECT_THAT(bad.err, ::testing::HasSubstr("INVALID_ARGUMENT: "));
  EXPECT_THAT(bad.err, ::testing::HasSubstr("temperature"));
}

TEST(ClientInterrupt, CtrlCCancelsTheCallAndExits130) {
  // A TCP listener that never speaks HTTP/2: the call waits until cancelled.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  Process p =
      Start(Binary("epserve"),
            {"generate", absl::StrCat("--server=127.0.0.1:", ntohs(addr.sin_port)), "--prompt=hi"},
            ScratchDir() + "/generate.log");
  std::this_thread::sleep_for(seconds(1));
  p.proc.Signal(SIGINT);
  const std::optional<int> code = p.proc.Wait(seconds(10));
  close(fd);
  // 130 is also what a process killed by SIGINT reports: the message shows
  // the command handled it.
  EXPECT_EQ(code, 130) << p.output();
  EXPECT_THAT(p.output(), ::testing::HasSubstr("interrupted (call cancelled)"));
}

}  // namespace
}  // namespace epserve::testing
