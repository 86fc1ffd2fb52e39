// RequestBuilder, table-style: each bad row changes one thing in a valid
// request (or builds without a tokenizer) and expects the status code and a
// message that starts with the offending field, before or after tokenization;
// each good row expects the GenerationRequest the engine would run.
#include "router/frontend/request_builder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "byte_tokenizer.h"

namespace epserve::frontend {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using Code = absl::StatusCode;

constexpr uint32_t kVocab = 256;
constexpr uint32_t kContext = 16;

router::GenerateLimits Limits(bool has_tokenizer = true) {
  router::GenerateLimits limits;
  limits.vocab_size = kVocab;
  limits.max_context_length = kContext;
  limits.has_tokenizer = has_tokenizer;
  return limits;
}

// A valid request: three prompt ids, default sampling parameters.
v1::GenerateRequest BaseRequest() {
  v1::GenerateRequest req;
  req.set_request_id("req-1");
  for (uint32_t id : {1u, 2u, 3u}) req.mutable_token_ids()->add_ids(id);
  return req;
}

using RequestEdit = std::function<void(v1::GenerateRequest&)>;

struct BadCase {
  std::string name;
  RequestEdit edit;
  bool has_tokenizer;
  Code code;
  std::string prefix;  // the message starts with this (the field)
  std::string detail;  // and contains this (the value or limit found)
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class RequestBuilderBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(RequestBuilderBadTest, RejectsNamingTheField) {
  const BadCase& c = GetParam();
  RequestBuilder builder(Limits(c.has_tokenizer),
                         c.has_tokenizer ? testing::ByteTokenizer() : nullptr);
  v1::GenerateRequest req = BaseRequest();
  c.edit(req);
  absl::StatusOr<GenerationRequest> got = builder.Build(req, RequestClock::now(), std::nullopt);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), c.code) << got.status();
  EXPECT_THAT(std::string(got.status().message()), StartsWith(c.prefix));
  EXPECT_THAT(std::string(got.status().message()), HasSubstr(c.detail));
}

const BadCase kBadCases[] = {
    {"RequestIdWithSpace", [](v1::GenerateRequest& r) { r.set_request_id("a b"); }, true,
     Code::kInvalidArgument, "request_id: byte 1", "0x20"},
    {"NoPrompt", [](v1::GenerateRequest& r) { r.clear_input(); }, true, Code::kInvalidArgument,
     "input: set either text or token_ids", ""},
    {"EmptyText", [](v1::GenerateRequest& r) { r.set_text(""); }, true, Code::kInvalidArgument,
     "text: empty prompt", ""},
    {"TokenIdOutsideVocab", [](v1::GenerateRequest& r) { r.mutable_token_ids()->set_ids(1, 256); },
     true, Code::kInvalidArgument, "token_ids.ids[1]: id 256", "256"},
    {"TopPZero", [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_top_p(0.0f); }, true,
     Code::kInvalidArgument, "sampling_params.top_p", "0"},
    {"EmptyStopString", [](v1::GenerateRequest& r) { r.mutable_sampling_params()->add_stop(""); },
     true, Code::kInvalidArgument, "sampling_params.stop[0]: empty stop string", ""},
    {"TokenPromptOverContext",
     [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_max_tokens(14); }, true,
     Code::kInvalidArgument, "prompt (3 tokens) + sampling_params.max_tokens (14) = 17",
     "context length 16"},
    // Known only after tokenization: 6 bytes of text are 6 tokens.
    {"TextPromptOverContext",
     [](v1::GenerateRequest& r) {
       r.set_text("abcdef");
       r.mutable_sampling_params()->set_max_tokens(11);
     },
     true, Code::kInvalidArgument, "prompt (6 tokens) + sampling_params.max_tokens (11) = 17",
     "context length 16"},
    {"TextPromptLeavesNoRoom", [](v1::GenerateRequest& r) { r.set_text(std::string(16, 'x')); },
     true, Code::kInvalidArgument, "prompt (16 tokens) leaves no room to generate",
     "context length is 16"},
    {"MinTokensOverResolvedMaxTokens",
     [](v1::GenerateRequest& r) {
       r.set_text(std::string(10, 'x'));
       r.mutable_sampling_params()->set_min_tokens(7);
     },
     true, Code::kInvalidArgument, "sampling_params.min_tokens (7) must be <= max_tokens (6",
     "minus the prompt of 10 tokens"},
    {"TextWithoutTokenizer", [](v1::GenerateRequest& r) { r.set_text("hi"); }, false,
     Code::kFailedPrecondition, "text: the served model has no tokenizer", ""},
    {"StopStringWithoutTokenizer",
     [](v1::GenerateRequest& r) { r.mutable_sampling_params()->add_stop("\n"); }, false,
     Code::kFailedPrecondition, "sampling_params.stop: stop strings need a tokenizer", ""},
};

INSTANTIATE_TEST_SUITE_P(Table, RequestBuilderBadTest, ::testing::ValuesIn(kBadCases),
                         [](const auto& test) { return test.param.name; });

struct GoodCase {
  std::string name;
  RequestEdit edit;
  std::vector<uint32_t> prompt_ids;
  uint32_t max_tokens;
};

void PrintTo(const GoodCase& c, std::ostream* os) { *os << c.name; }

class RequestBuilderGoodTest : public ::testing::TestWithParam<GoodCase> {};

TEST_P(RequestBuilderGoodTest, BuildsTheEngineRequest) {
  const GoodCase& c = GetParam();
  RequestBuilder builder(Limits(), testing::ByteTokenizer());
  v1::GenerateRequest req = BaseRequest();
  c.edit(req);
  const RequestClock::time_point arrival = RequestClock::now();
  const RequestClock::time_point deadline = arrival + std::chrono::seconds(3);
  absl::StatusOr<GenerationRequest> got = builder.Build(req, arrival, deadline);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id, req.request_id());
  EXPECT_THAT(got->prompt_ids, ElementsAreArray(c.prompt_ids));
  EXPECT_EQ(got->max_tokens, c.max_tokens);
  EXPECT_EQ(got->priority, req.priority());
  EXPECT_EQ(got->sampling.SerializeAsString(), req.sampling_params().SerializeAsString());
  EXPECT_EQ(got->arrival, arrival);
  EXPECT_EQ(got->deadline, deadline);
}

const GoodCase kGoodCases[] = {
    {"TokenIdsMaxTokensFromContext", [](v1::GenerateRequest&) {}, {1, 2, 3}, kContext - 3},
    {"TokenIdsMaxTokensSet",
     [](v1::GenerateRequest& r) {
       r.mutable_sampling_params()->set_max_tokens(5);
       r.set_priority(-2);
     },
     {1, 2, 3},
     5},
    {"TextTokenized",
     [](v1::GenerateRequest& r) {
       r.set_text("hey");
       r.mutable_sampling_params()->set_max_tokens(13);
     },
     {'h', 'e', 'y'},
     13},
    {"TextWithStopsAndRouterOnlyFields",
     [](v1::GenerateRequest& r) {
       r.set_text("ab");
       r.mutable_sampling_params()->add_stop("\n\n");
       r.mutable_sampling_params()->set_include_stop_str_in_output(true);
       r.mutable_sampling_params()->set_skip_special_tokens(false);
       r.mutable_sampling_params()->set_min_tokens(14);
     },
     {'a', 'b'},
     kContext - 2},
};

INSTANTIATE_TEST_SUITE_P(Table, RequestBuilderGoodTest, ::testing::ValuesIn(kGoodCases),
                         [](const auto& test) { return test.param.name; });

TEST(RequestBuilderTest, AssignsDistinctIdsWhenNoneIsGiven) {
  RequestBuilder builder(Limits(), testing::ByteTokenizer());
  v1::GenerateRequest req = BaseRequest();
  req.clear_request_id();
  absl::StatusOr<GenerationRequest> a = builder.Build(req, RequestClock::now(), std::nullopt);
  absl::StatusOr<GenerationRequest> b = builder.Build(req, RequestClock::now(), std::nullopt);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_THAT(a->id, StartsWith("gen-"));
  EXPECT_THAT(b->id, StartsWith("gen-"));
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(a->deadline, std::nullopt);
  // 128 random bits as hex: nothing in one id tells the next.
  EXPECT_THAT(a->id, ::testing::MatchesRegex("gen-[0-9a-f]{32}"));
  int same = 0;
  for (size_t i = 4; i < a->id.size(); ++i) same += a->id[i] == b->id[i] ? 1 : 0;
  EXPECT_LT(same, 16);  // about 2 of 32 positions agree by chance
}

TEST(RequestBuilderTest, TokenIdPromptsNeedNoTokenizer) {
  RequestBuilder builder(Limits(/*has_tokenizer=*/false), nullptr);
  absl::StatusOr<GenerationRequest> got =
      builder.Build(BaseRequest(), RequestClock::now(), std::nullopt);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(got->prompt_ids, ElementsAreArray({1u, 2u, 3u}));
}

}  // namespace
}  // namespace epserve::frontend
