// epserve-run tokenize / detokenize argument handling and output.
#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "cli/run/tokenize_command.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"

namespace epserve::tokenizer::testing {
namespace {

using ::testing::HasSubstr;

struct Result {
  int code;
  std::string out, err;
};

Result RunCli(bool tokenize, std::vector<std::string> args) {
  args.insert(args.begin(), tokenize ? "tokenize" : "detokenize");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  std::ostringstream out, err;
  const int code = tokenize
                       ? cli::RunTokenizeCommand(static_cast<int>(argv.size()), argv.data(), out, err)
                       : cli::RunDetokenizeCommand(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

TEST(CliTest, TokenizeAndDetokenizeMatchReference) {
  ASSERT_TRUE(ReferenceTokenizer("qwen3").ok()) << ReferenceTokenizer("qwen3").status();
  const std::string path = TokenizerDir() + "/qwen3";
  const auto fixture = LoadFixture("qwen3");
  const auto corpus = LoadCorpus();
  size_t index = 0;
  while (corpus[index].name != "special_qwen") ++index;
  const Result r = RunCli(true, {"--tokenizer", path, "--text", corpus[index].text});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"], fixture["cases"][index]["ids_special"]);
  EXPECT_EQ(j["num_tokens"], j["ids"].size());
  EXPECT_EQ(j["tokens"].size(), j["ids"].size());

  const std::string ids = absl::StrJoin(j["ids"].get<std::vector<int32_t>>(), ",");
  const Result d = RunCli(false, {"--tokenizer=" + path, "--token-ids", ids, "--skip-special-tokens"});
  ASSERT_EQ(d.code, 0) << d.err;
  EXPECT_EQ(nlohmann::json::parse(d.out)["text"], fixture["cases"][index]["decode_skip"]);
}

TEST(CliTest, BadArgumentsExitTwoWithOneLine) {
  const std::vector<std::vector<std::string>> tokenize_cases = {
      {},
      {"--tokenizer", "x"},
      {"--tokenizer", "x", "--text", "a", "--text-file", "b"},
      {"--tokenizer", "x", "--text"},
      {"--bogus"},
      {"positional"},
      {"--tokenizer", "x", "--text-file", "/nonexistent/file"},
  };
  for (const auto& args : tokenize_cases) {
    const Result r = RunCli(true, args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("epserve-run tokenize: error: "));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  const Result d = RunCli(false, {"--tokenizer", "x", "--token-ids", "1,two,3"});
  EXPECT_EQ(d.code, 2);
  EXPECT_THAT(d.err, HasSubstr("'two' is not an integer"));
  EXPECT_EQ(RunCli(false, {"--tokenizer", "x"}).code, 2);
}

TEST(CliTest, RuntimeErrorsExitOne) {
  EXPECT_EQ(RunCli(true, {"--tokenizer", "/nonexistent", "--text", "a"}).code, 1);
  ASSERT_TRUE(ReferenceTokenizer("qwen3").ok());
  const Result r = RunCli(false, {"--tokenizer", TokenizerDir() + "/qwen3", "--token-ids", "1,9999999"});
  EXPECT_EQ(r.code, 1);
  EXPECT_THAT(r.err, HasSubstr("token id 9999999 at position 1"));
}

}  // namespace
}  // namespace epserve::tokenizer::testing
