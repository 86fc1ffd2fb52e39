// epserve-run logits / generate on the fixtures: the JSON they print agrees
// with the transformers reference; bad input is one line and exit 1 or 2.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_join.h"
#include "cli/run/generate_command.h"
#include "cli/run/logits_command.h"
#include "nlohmann/json.hpp"
#include "tests/models/fixture_reference.h"

namespace epserve::cli {
namespace {

using models::testing::FixtureModelDir;
using models::testing::FixtureReferenceDir;
using models::testing::LoadFixtureReference;

struct Result {
  int rc;
  std::string out, err;
};

using CommandFn = int (*)(int, char**, std::ostream&, std::ostream&);
const CommandFn kLogits = RunLogitsCommand;
const CommandFn kGenerate = RunGenerateCommand;

Result RunCommand(CommandFn command, std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  std::ostringstream out, err;
  const int rc = command(static_cast<int>(argv.size()), argv.data(), out, err);
  return {rc, out.str(), err.str()};
}

TEST(LogitsCommand, PrintsEveryPositionWithinParityTolerance) {
  auto ref = LoadFixtureReference(FixtureReferenceDir("qwen3_moe"));
  ASSERT_TRUE(ref.ok()) << ref.status();
  const auto& p = ref->prompts[1];
  Result r = RunCommand(kLogits, {"logits", "--model", FixtureModelDir("qwen3_moe"),
                                    "--token-ids", absl::StrJoin(p.ids, ",")});
  ASSERT_EQ(r.rc, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["vocab_size"], ref->vocab_size);
  ASSERT_EQ(j["logits"].size(), p.ids.size());
  for (size_t t = 0; t < p.ids.size(); ++t) {
    for (int64_t v = 0; v < ref->vocab_size; ++v) {
      EXPECT_NEAR(j["logits"][t][v].get<float>(), p.logits[t * ref->vocab_size + v],
                  1e-4 * p.max_abs_logit);
    }
  }
}

// The binary, as a pipe sees it: stdout is the JSON object alone (log lines,
// e.g. the dtype cast of a bfloat16 checkpoint, go to stderr).
TEST(LogitsCommand, BinaryPrintsOnlyJsonOnStdout) {
  const std::string command = std::string(EPSERVE_RUN_BINARY) + " logits --model '" +
                              FixtureModelDir("qwen3_moe_bf16") + "' --token-ids 1,2,3 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << command;
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) out.append(buf, n);
  ASSERT_EQ(pclose(pipe), 0) << command;
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.front(), '{') << out.substr(0, 200);
  EXPECT_TRUE(nlohmann::json::accept(out)) << out.substr(0, 200);
}

TEST(GenerateCommand, GreedyPromptTextMatchesReference) {
  auto ref = LoadFixtureReference(FixtureReferenceDir("tiny-qwen3-moe"));
  ASSERT_TRUE(ref.ok()) << ref.status();
  const auto& p = ref->prompts[1];  // "Hello, world!"
  Result r = RunCommand(kGenerate, {"generate", "--model", FixtureModelDir("tiny-qwen3-moe"),
                                      "--prompt", "Hello, world!", "--max-tokens", "16",
                                      "--ignore-eos"});
  ASSERT_EQ(r.rc, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_ids"].get<std::vector<int32_t>>(), p.ids);
  EXPECT_EQ(j["generated_ids"].get<std::vector<int32_t>>(), p.greedy_new_tokens);
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_TRUE(j["text"].is_string());
}

TEST(RunCommands, BadInputIsOneLineAndANonZeroExit) {
  const std::string model = FixtureModelDir("qwen3");
  struct Case {
    CommandFn command;
    std::vector<std::string> args;
    int rc;
    std::string message;
  };
  const std::vector<Case> cases = {
      {kLogits, {"logits", "--model", model, "--token-ids", "1,512"}, 1, "token id 512"},
      {kLogits, {"logits", "--model", model, "--token-ids", "1,-3"}, 1, "token id -3"},
      {kLogits, {"logits", "--model", "/no/such/dir", "--token-ids", "1"}, 1,
       "/no/such/dir"},
      {kLogits, {"logits", "--model", model, "--token-ids", "1", "--dtype", "int4"}, 1,
       "int4"},
      {kLogits, {"logits", "--model", model, "--token-ids", "1,a"}, 2, "'a'"},
      {kLogits, {"logits", "--model", model}, 2, "--token-ids"},
      {kGenerate, {"generate", "--model", model, "--token-ids", "1"}, 2, "--max-tokens"},
      {kGenerate,
       {"generate", "--model", model, "--token-ids", "1", "--prompt", "x", "--max-tokens", "2"},
       2, "exactly one"},
      {kGenerate, {"generate", "--model", model, "--token-ids", "9999", "--max-tokens", "2"},
       1, "9999"},
      {kGenerate, {"generate", "--model", "/no/such/dir", "--prompt", "hi",
                            "--max-tokens", "2"}, 1, "/no/such/dir"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.args, " "));
    Result r = RunCommand(c.command, c.args);
    EXPECT_EQ(r.rc, c.rc);
    EXPECT_TRUE(r.out.empty());
    EXPECT_THAT(r.err, ::testing::HasSubstr(c.message));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// The command line (not only the library) reproduces transformers' greedy
// continuation for every fixture and every prompt.
TEST(GenerateCommand, GreedyTokenIdsMatchReferenceForEveryFixture) {
  int checked = 0;
  for (const char* fixture : {"llama", "qwen2", "qwen3", "mixtral", "mixtral_packed", "qwen2_moe",
                              "qwen3_moe", "olmoe", "qwen3_moe_bf16", "qwen3_moe_bf16_packed",
                              "tiny-qwen3-moe"}) {
    SCOPED_TRACE(fixture);
    auto ref = LoadFixtureReference(FixtureReferenceDir(fixture));
    ASSERT_TRUE(ref.ok()) << ref.status();
    for (const auto& p : ref->prompts) {
      Result r = RunCommand(kGenerate, {"generate", "--model", FixtureModelDir(fixture),
                                        "--token-ids", absl::StrJoin(p.ids, ","), "--max-tokens",
                                        std::to_string(p.greedy_new_tokens.size()), "--ignore-eos"});
      ASSERT_EQ(r.rc, 0) << r.err;
      EXPECT_EQ(nlohmann::json::parse(r.out)["generated_ids"].get<std::vector<int32_t>>(),
                p.greedy_new_tokens);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 44);
}

std::vector<int> GeneratedIds(const Result& r) {
  return nlohmann::json::parse(r.out)["generated_ids"].get<std::vector<int>>();
}

TEST(GenerateCommand, SeededSamplingIsReproducibleAndFlagsAreValidated) {
  const std::string model = EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe";
  std::vector<std::string> base = {"generate", "--model", model, "--prompt", "Hello, world!",
                                   "--max-tokens", "12", "--ignore-eos", "--temperature", "1.0"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    return RunCommand(kGenerate, args);
  };
  Result a = with({"--seed", "7"});
  Result b = with({"--seed", "7"});
  Result c = with({"--seed", "8"});
  ASSERT_EQ(a.rc, 0) << a.err;
  ASSERT_EQ(c.rc, 0) << c.err;
  EXPECT_EQ(GeneratedIds(a), GeneratedIds(b));
  EXPECT_NE(GeneratedIds(a), GeneratedIds(c));  // 12 draws from a near-uniform random model
  // top-k 1 is greedy whatever the temperature and seed.
  Result greedy = RunCommand(kGenerate, {"generate", "--model", model, "--prompt", "Hello, world!",
                                         "--max-tokens", "12", "--ignore-eos"});
  Result topk1 = with({"--seed", "3", "--top-k", "1"});
  ASSERT_EQ(topk1.rc, 0) << topk1.err;
  EXPECT_EQ(GeneratedIds(topk1), GeneratedIds(greedy));
  // Logprobs: one entry per token, top-n sorted.
  Result lp = with({"--seed", "7", "--top-logprobs", "3"});
  ASSERT_EQ(lp.rc, 0) << lp.err;
  auto j = nlohmann::json::parse(lp.out);
  ASSERT_EQ(j["logprobs"].size(), 12u);
  EXPECT_EQ(j["generated_ids"], nlohmann::json::parse(a.out)["generated_ids"]);
  for (const auto& step : j["logprobs"]) {
    ASSERT_EQ(step["top"].size(), 3u);
    EXPECT_GE(step["top"][0]["logprob"].get<double>(), step["top"][2]["logprob"].get<double>());
    EXPECT_LE(step["logprob"].get<double>(), 0.0);
  }
  // Bad values name the field.
  for (const auto& [flag, value, expected] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--temperature", "-1", "sampling_params.temperature"},
           {"--top-p", "0", "sampling_params.top_p"},
           {"--min-p", "2", "sampling_params.min_p"},
           {"--repetition-penalty", "0", "sampling_params.repetition_penalty"},
           {"--top-logprobs", "50", "sampling_params.top_logprobs"},
           {"--seed", "abc", "--seed"}}) {
    Result bad = RunCommand(kGenerate, {"generate", "--model", model, "--prompt", "Hi",
                                        "--max-tokens", "2", flag, value});
    EXPECT_EQ(bad.rc, 2) << flag;
    EXPECT_THAT(bad.err, ::testing::HasSubstr(expected));
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  }
}

}  // namespace
}  // namespace epserve::cli
