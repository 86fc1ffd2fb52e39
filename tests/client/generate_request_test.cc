// `epserve generate` requests from command-line values, the list syntaxes,
// and the outcome line.
#include "cli/client/generate_request.h"

#include <gtest/gtest.h>

namespace epserve::client {
namespace {

TEST(BuildGenerateRequest, NeedsExactlyOneInput) {
  GenerateOptions none;
  EXPECT_FALSE(BuildGenerateRequest(none).ok());
  GenerateOptions both;
  both.prompt = "hi";
  both.token_ids = std::vector<uint32_t>{1};
  EXPECT_FALSE(BuildGenerateRequest(both).ok());
  GenerateOptions empty_ids;
  empty_ids.token_ids = std::vector<uint32_t>{};
  EXPECT_FALSE(BuildGenerateRequest(empty_ids).ok());
}

TEST(BuildGenerateRequest, UnsetValuesStayUnset) {
  GenerateOptions o;
  o.prompt = "Hello";
  auto r = BuildGenerateRequest(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text(), "Hello");
  const v1::SamplingParams& p = r->sampling_params();
  EXPECT_FALSE(p.has_temperature());
  EXPECT_FALSE(p.has_top_p());
  EXPECT_FALSE(p.has_seed());
  EXPECT_FALSE(p.has_max_tokens());
  EXPECT_FALSE(p.logprobs());
  EXPECT_EQ(r->request_id(), "");
}

TEST(BuildGenerateRequest, CopiesEverySetValue) {
  GenerateOptions o;
  o.token_ids = std::vector<uint32_t>{5, 6, 7};
  o.max_tokens = 16;
  o.temperature = 0.0f;  // set to zero is not unset: greedy
  o.top_p = 0.9f;
  o.top_k = 40;
  o.min_p = 0.05f;
  o.seed = 42;
  o.stop = {"a", "b"};
  o.stop_token_ids = {3};
  o.ignore_eos = true;
  o.top_logprobs = 2;
  o.request_id = "r1";
  o.priority = -1;
  auto r = BuildGenerateRequest(o);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_token_ids());
  EXPECT_EQ(std::vector<uint32_t>(r->token_ids().ids().begin(), r->token_ids().ids().end()),
            (std::vector<uint32_t>{5, 6, 7}));
  const v1::SamplingParams& p = r->sampling_params();
  EXPECT_TRUE(p.has_temperature());
  EXPECT_EQ(p.temperature(), 0.0f);
  EXPECT_EQ(p.max_tokens(), 16u);
  EXPECT_FLOAT_EQ(p.top_p(), 0.9f);
  EXPECT_EQ(p.top_k(), 40);
  EXPECT_FLOAT_EQ(p.min_p(), 0.05f);
  EXPECT_EQ(p.seed(), 42u);
  ASSERT_EQ(p.stop_size(), 2);
  EXPECT_EQ(p.stop(1), "b");
  ASSERT_EQ(p.stop_token_ids_size(), 1);
  EXPECT_TRUE(p.ignore_eos());
  EXPECT_TRUE(p.logprobs());  // implied by top_logprobs
  EXPECT_EQ(p.top_logprobs(), 2u);
  EXPECT_EQ(r->request_id(), "r1");
  EXPECT_EQ(r->priority(), -1);
}

TEST(ParseIdList, CommaSeparated) {
  EXPECT_EQ(*ParseIdList("1,2, 3", "token-ids"), (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_TRUE(ParseIdList("", "token-ids")->empty());
  auto bad = ParseIdList("1,x", "stop-token-ids");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--stop-token-ids"), absl::string_view::npos);
  EXPECT_NE(bad.status().message().find("'x'"), absl::string_view::npos);
  EXPECT_FALSE(ParseIdList("-1", "token-ids").ok());
  EXPECT_FALSE(ParseIdList("1,,2", "token-ids").ok());
}

TEST(SplitStopLists, RepeatsAndCommaListsAndEscapes) {
  EXPECT_EQ(SplitStopLists({"a,b", "c"}), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(SplitStopLists({"x\\,y", "back\\\\slash"}),
            (std::vector<std::string>{"x,y", "back\\slash"}));
  EXPECT_EQ(SplitStopLists({"", ",,", " "}), (std::vector<std::string>{" "}));
  EXPECT_EQ(SplitStopLists({"\n\n"}), (std::vector<std::string>{"\n\n"}));
}

TEST(ExtractRepeatedFlag, TakesBothSpellingsAndLeavesTheRest) {
  std::vector<std::string> args = {"epserve",  "generate", "--stop", "a",  "--stop-token-ids", "1",
                                   "--stop=b", "--prompt", "hi",     "--", "--stop=c"};
  auto values = ExtractRepeatedFlag(args, "stop");
  ASSERT_TRUE(values.ok()) << values.status();
  EXPECT_EQ(*values, (std::vector<std::string>{"a", "b"}));
  // "--" ends the flags: what follows is left alone.
  EXPECT_EQ(args, (std::vector<std::string>{"epserve", "generate", "--stop-token-ids", "1",
                                            "--prompt", "hi", "--", "--stop=c"}));

  std::vector<std::string> tail = {"epserve", "generate", "--", "--stop=c"};
  EXPECT_TRUE(ExtractRepeatedFlag(tail, "stop")->empty());
  EXPECT_EQ(tail.size(), 4u);

  std::vector<std::string> missing = {"epserve", "--stop"};
  EXPECT_FALSE(ExtractRepeatedFlag(missing, "stop").ok());
}

TEST(DescribeCompletion, NamesReasonStopUsageAndTimes) {
  v1::GenerateComplete c;
  c.set_finish_reason(v1::FINISH_REASON_LENGTH);
  c.mutable_usage()->set_prompt_tokens(5);
  c.mutable_usage()->set_completion_tokens(16);
  EXPECT_EQ(DescribeCompletion(c, 12.34, 45.67),
            "finish_reason=length matched_stop=none prompt_tokens=5 completion_tokens=16 "
            "cached_tokens=0 ttft_ms=12.3 total_ms=45.7");
  c.set_finish_reason(v1::FINISH_REASON_STOP);
  c.set_stop_str("\n\"");
  EXPECT_EQ(DescribeCompletion(c, std::nullopt, 1),
            "finish_reason=stop matched_stop=\"\\n\\\"\" prompt_tokens=5 completion_tokens=16 "
            "cached_tokens=0 ttft_ms=none total_ms=1.0");
  c.set_stop_token_id(151645);
  EXPECT_NE(DescribeCompletion(c, 1, 1).find("matched_stop=token:151645"), std::string::npos);
}

TEST(Names, FinishReasonsAndStatusCodes) {
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_STOP), "stop");
  EXPECT_EQ(FinishReasonName(v1::FINISH_REASON_ABORT), "abort");
  EXPECT_EQ(FinishReasonName(static_cast<v1::FinishReason>(99)), "unknown");
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(12), "UNIMPLEMENTED");
  EXPECT_EQ(StatusCodeName(4), "DEADLINE_EXCEEDED");
}

}  // namespace
}  // namespace epserve::client
