// ValidateGenerateRequest / ResolveMaxTokens, table-style. Each bad row
// changes one thing in a valid request (or in the limits) and expects a status
// code and a message that starts with the offending field path. Each good row
// must pass, and for token_ids prompts resolve to the stated max_tokens.
#include "router/validation/generate_validation.h"

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace epserve::router {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Code = absl::StatusCode;

constexpr uint32_t kVocab = 151936;
constexpr uint32_t kContext = 4096;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

GenerateLimits BaseLimits() {
  GenerateLimits limits;
  limits.vocab_size = kVocab;
  limits.max_context_length = kContext;
  return limits;
}

// A valid request: three prompt ids, default sampling parameters.
v1::GenerateRequest BaseRequest() {
  v1::GenerateRequest req;
  req.set_request_id("req-1");
  for (uint32_t id : {1u, 2u, 3u}) req.mutable_token_ids()->add_ids(id);
  return req;
}

void SetPromptIds(v1::GenerateRequest& req, size_t n, uint32_t id = 7) {
  req.mutable_token_ids()->clear_ids();
  for (size_t i = 0; i < n; ++i) req.mutable_token_ids()->add_ids(id);
}

using RequestEdit = std::function<void(v1::GenerateRequest&)>;
using LimitsEdit = std::function<void(GenerateLimits&)>;

struct BadCase {
  std::string name;
  RequestEdit edit_request;
  LimitsEdit edit_limits;  // may be empty
  Code code;
  std::string prefix;  // the message starts with this (the field path)
  std::string detail;  // and contains this (the value or limit found)
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class ValidateBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ValidateBadTest, RejectsNamingTheField) {
  const BadCase& c = GetParam();
  v1::GenerateRequest req = BaseRequest();
  c.edit_request(req);
  GenerateLimits limits = BaseLimits();
  if (c.edit_limits) c.edit_limits(limits);
  const absl::Status status = ValidateGenerateRequest(req, limits);
  EXPECT_EQ(status.code(), c.code) << status;
  EXPECT_THAT(std::string(status.message()), StartsWith(c.prefix));
  EXPECT_THAT(std::string(status.message()), HasSubstr(c.detail));
}

RequestEdit Sampling(std::function<void(v1::SamplingParams&)> edit) {
  return [edit](v1::GenerateRequest& req) { edit(*req.mutable_sampling_params()); };
}

const BadCase kBadCases[] = {
    // Prompt.
    {"InputUnset",
     [](auto& r) { r.clear_input(); },
     {},
     Code::kInvalidArgument,
     "input:",
     "set either text or token_ids"},
    {"EmptyText",
     [](auto& r) { r.set_text(""); },
     {},
     Code::kInvalidArgument,
     "text: empty prompt",
     ""},
    {"EmptyTokenIds",
     [](auto& r) { r.mutable_token_ids()->clear_ids(); },
     {},
     Code::kInvalidArgument,
     "token_ids.ids: empty prompt",
     ""},
    {"TokenIdAtVocabSize",
     [](auto& r) { r.mutable_token_ids()->add_ids(kVocab); },
     {},
     Code::kInvalidArgument,
     "token_ids.ids[3]:",
     "id 151936 is outside the vocabulary [0, 151936)"},
    {"TokenIdMaxUint32",
     [](auto& r) { r.mutable_token_ids()->set_ids(0, std::numeric_limits<uint32_t>::max()); },
     {},
     Code::kInvalidArgument,
     "token_ids.ids[0]:",
     "id 4294967295 is outside"},
    {"TextTooLong", [](auto& r) { r.set_text("123456789"); },
     [](auto& l) { l.max_prompt_text_bytes = 8; }, Code::kInvalidArgument,
     "text:", "9 bytes exceeds the limit of 8 bytes"},
    {"TextTooLongDefaultLimit",
     [](auto& r) { r.set_text(std::string((4u << 20) + 1, 'a')); },
     {},
     Code::kInvalidArgument,
     "text:",
     "4194305 bytes exceeds the limit of 4194304 bytes"},
    {"TooManyPromptIds", [](auto& r) { SetPromptIds(r, 5); },
     [](auto& l) { l.max_prompt_token_ids = 4; }, Code::kInvalidArgument,
     "token_ids.ids:", "5 ids exceeds the limit of 4 ids"},
    {"PromptIdsFillContext", [](auto& r) { SetPromptIds(r, 8); },
     [](auto& l) { l.max_context_length = 8; }, Code::kInvalidArgument, "prompt (8 tokens)",
     "context length is 8"},
    {"PromptIdsPlusMaxTokensExceedContext",
     [](auto& r) {
       SetPromptIds(r, 1000);
       r.mutable_sampling_params()->set_max_tokens(3500);
     },
     {},
     Code::kInvalidArgument,
     "prompt (1000 tokens) + sampling_params.max_tokens (3500)",
     "= 4500 exceeds the model's context length 4096"},
    {"TextWithoutTokenizer", [](auto& r) { r.set_text("hello"); },
     [](auto& l) { l.has_tokenizer = false; }, Code::kFailedPrecondition, "text:", "no tokenizer"},

    // request_id.
    {"RequestIdTooLong",
     [](auto& r) { r.set_request_id(std::string(257, 'x')); },
     {},
     Code::kInvalidArgument,
     "request_id:",
     "257 bytes exceed the limit of 256 bytes"},
    {"RequestIdNewline",
     [](auto& r) { r.set_request_id("a\nb"); },
     {},
     Code::kInvalidArgument,
     "request_id:",
     "byte 1 is 0x0a"},
    {"RequestIdTab",
     [](auto& r) { r.set_request_id("\tab"); },
     {},
     Code::kInvalidArgument,
     "request_id:",
     "byte 0 is 0x09"},
    {"RequestIdSpace",
     [](auto& r) { r.set_request_id("a b"); },
     {},
     Code::kInvalidArgument,
     "request_id:",
     "byte 1 is 0x20"},
    {"RequestIdNul",
     [](auto& r) { r.set_request_id(std::string("ab\0", 3)); },
     {},
     Code::kInvalidArgument,
     "request_id:",
     "byte 2 is 0x00"},
    {"RequestIdDel",
     [](auto& r) { r.set_request_id("id\x7f"); },
     {},
     Code::kInvalidArgument,
     "request_id:",
     "byte 2 is 0x7f"},
    {"RequestIdNonAscii",
     [](auto& r) { r.set_request_id("id-\xc3\xa9"); },
     {},
     Code::kInvalidArgument,
     "request_id:",
     "byte 3 is 0xc3"},
    {"RequestIdEscapeSequence",
     [](auto& r) { r.set_request_id("\x1b[2J"); },
     {},
     Code::kInvalidArgument,
     "request_id:",
     "byte 0 is 0x1b"},

    // Sampling fields, checked by sampling::Validate.
    {"TemperatureNegative",
     Sampling([](auto& p) { p.set_temperature(-1.0f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.temperature must be >= 0 and finite",
     "got -1"},
    {"TemperatureNaN",
     Sampling([](auto& p) { p.set_temperature(kNaN); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.temperature must be >= 0 and finite",
     "got nan"},
    {"TemperatureInf",
     Sampling([](auto& p) { p.set_temperature(kInf); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.temperature must be >= 0 and finite",
     "got inf"},
    {"TopPZero",
     Sampling([](auto& p) { p.set_top_p(0.0f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.top_p must be in (0, 1]",
     "got 0"},
    {"TopPAboveOne",
     Sampling([](auto& p) { p.set_top_p(1.5f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.top_p must be in (0, 1]",
     "got 1.5"},
    {"TopPNaN",
     Sampling([](auto& p) { p.set_top_p(kNaN); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.top_p must be in (0, 1]",
     "got nan"},
    {"TopKBelowMinusOne",
     Sampling([](auto& p) { p.set_top_k(-2); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.top_k",
     "got -2"},
    {"MinPNegative",
     Sampling([](auto& p) { p.set_min_p(-0.1f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.min_p must be in [0, 1]",
     "got -0.1"},
    {"MinPAboveOne",
     Sampling([](auto& p) { p.set_min_p(1.5f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.min_p must be in [0, 1]",
     "got 1.5"},
    {"MinPNaN",
     Sampling([](auto& p) { p.set_min_p(kNaN); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.min_p must be in [0, 1]",
     "got nan"},
    {"PresencePenaltyAbove",
     Sampling([](auto& p) { p.set_presence_penalty(2.5f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.presence_penalty must be in [-2, 2]",
     "got 2.5"},
    {"PresencePenaltyBelow",
     Sampling([](auto& p) { p.set_presence_penalty(-2.5f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.presence_penalty must be in [-2, 2]",
     "got -2.5"},
    {"PresencePenaltyNaN",
     Sampling([](auto& p) { p.set_presence_penalty(kNaN); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.presence_penalty must be in [-2, 2]",
     "got nan"},
    {"FrequencyPenaltyAbove",
     Sampling([](auto& p) { p.set_frequency_penalty(2.5f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.frequency_penalty must be in [-2, 2]",
     "got 2.5"},
    {"FrequencyPenaltyBelow",
     Sampling([](auto& p) { p.set_frequency_penalty(-2.5f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.frequency_penalty must be in [-2, 2]",
     "got -2.5"},
    {"FrequencyPenaltyNaN",
     Sampling([](auto& p) { p.set_frequency_penalty(kNaN); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.frequency_penalty must be in [-2, 2]",
     "got nan"},
    {"RepetitionPenaltyZero",
     Sampling([](auto& p) { p.set_repetition_penalty(0.0f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.repetition_penalty must be > 0",
     "got 0"},
    {"RepetitionPenaltyNegative",
     Sampling([](auto& p) { p.set_repetition_penalty(-1.0f); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.repetition_penalty must be > 0",
     "got -1"},
    {"RepetitionPenaltyNaN",
     Sampling([](auto& p) { p.set_repetition_penalty(kNaN); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.repetition_penalty must be > 0",
     "got nan"},
    {"RepetitionPenaltyInf",
     Sampling([](auto& p) { p.set_repetition_penalty(kInf); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.repetition_penalty must be > 0",
     "got inf"},
    {"TopLogprobsAbove20",
     Sampling([](auto& p) {
       p.set_logprobs(true);
       p.set_top_logprobs(21);
     }),
     {},
     Code::kInvalidArgument,
     "sampling_params.top_logprobs must be in [0, 20]",
     "got 21"},
    {"TopLogprobsWithoutLogprobs",
     Sampling([](auto& p) { p.set_top_logprobs(5); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.top_logprobs = 5",
     "requires sampling_params.logprobs = true"},
    {"StopTokenIdAtVocabSize",
     Sampling([](auto& p) {
       p.add_stop_token_ids(0);
       p.add_stop_token_ids(kVocab);
     }),
     {},
     Code::kInvalidArgument,
     "sampling_params.stop_token_ids[1]",
     "got 151936"},
    {"StopTokenIdMaxUint32",
     Sampling([](auto& p) { p.add_stop_token_ids(std::numeric_limits<uint32_t>::max()); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.stop_token_ids[0]",
     "[0, 151936)"},

    // max_tokens / min_tokens.
    {"MaxTokensZero",
     Sampling([](auto& p) { p.set_max_tokens(0); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.max_tokens must be >= 1, got 0",
     ""},
    {"MaxTokensFillsContext",
     Sampling([](auto& p) { p.set_max_tokens(kContext); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.max_tokens (4096)",
     "must be < the model's context length 4096"},
    {"MaxTokensFillsContextTextPrompt",
     [](auto& r) {
       r.set_text("hello");
       r.mutable_sampling_params()->set_max_tokens(kContext);
     },
     {},
     Code::kInvalidArgument,
     "sampling_params.max_tokens (4096)",
     "context length 4096"},
    {"MinTokensAboveMaxTokens",
     Sampling([](auto& p) {
       p.set_max_tokens(4);
       p.set_min_tokens(9);
     }),
     {},
     Code::kInvalidArgument,
     "sampling_params.min_tokens (9) must be <= max_tokens (4)",
     ""},
    {"MinTokensFillsContext",
     Sampling([](auto& p) { p.set_min_tokens(kContext); }),
     {},
     Code::kInvalidArgument,
     "sampling_params.min_tokens (4096)",
     "context length 4096"},
    {"MinTokensAboveRoomLeftByPromptIds",
     [](auto& r) {
       SetPromptIds(r, 10);
       r.mutable_sampling_params()->set_min_tokens(7);
     },
     [](auto& l) { l.max_context_length = 16; }, Code::kInvalidArgument,
     "sampling_params.min_tokens (7) must be <= max_tokens (6",
     "context length 16 minus the prompt of 10 tokens"},

    // Stop strings and stop token ids.
    {"TooManyStopStrings",
     Sampling([](auto& p) {
       for (int i = 0; i < 17; ++i) p.add_stop(absl::StrCat("s", i));
     }),
     {},
     Code::kInvalidArgument,
     "sampling_params.stop:",
     "17 stop strings exceed the limit of 16"},
    {"EmptyStopString",
     Sampling([](auto& p) {
       p.add_stop("a");
       p.add_stop("b");
       p.add_stop("");
     }),
     {},
     Code::kInvalidArgument,
     "sampling_params.stop[2]: empty stop string",
     ""},
    {"StopStringTooLong",
     Sampling([](auto& p) {
       p.add_stop("a");
       p.add_stop(std::string(257, 'x'));
     }),
     {},
     Code::kInvalidArgument,
     "sampling_params.stop[1]:",
     "257 bytes exceed the limit of 256 bytes"},
    {"StopStringsWithoutTokenizer", Sampling([](auto& p) { p.add_stop("END"); }),
     [](auto& l) { l.has_tokenizer = false; }, Code::kFailedPrecondition,
     "sampling_params.stop:", "need a tokenizer"},
    {"TooManyStopTokenIds",
     Sampling([](auto& p) {
       for (int i = 0; i < 257; ++i) p.add_stop_token_ids(i);
     }),
     {},
     Code::kInvalidArgument,
     "sampling_params.stop_token_ids:",
     "257 ids exceed the limit of 256"},

    // Limits the server failed to fill in.
    {"LimitsWithoutVocabulary", [](auto&) {}, [](auto& l) { l.vocab_size = 0; }, Code::kInternal,
     "GenerateLimits", "vocab_size 0"},
    {"LimitsWithoutContextLength", [](auto&) {}, [](auto& l) { l.max_context_length = 0; },
     Code::kInternal, "GenerateLimits", "max_context_length 0"},
};

INSTANTIATE_TEST_SUITE_P(Table, ValidateBadTest, ::testing::ValuesIn(kBadCases),
                         [](const auto& param_info) { return param_info.param.name; });

struct GoodCase {
  std::string name;
  RequestEdit edit_request;
  LimitsEdit edit_limits;  // may be empty
  // For token_ids prompts: what ResolveMaxTokens must return.
  std::optional<uint32_t> max_tokens;
};

void PrintTo(const GoodCase& c, std::ostream* os) { *os << c.name; }

class ValidateGoodTest : public ::testing::TestWithParam<GoodCase> {};

TEST_P(ValidateGoodTest, Accepts) {
  const GoodCase& c = GetParam();
  v1::GenerateRequest req = BaseRequest();
  c.edit_request(req);
  GenerateLimits limits = BaseLimits();
  if (c.edit_limits) c.edit_limits(limits);
  EXPECT_TRUE(ValidateGenerateRequest(req, limits).ok()) << ValidateGenerateRequest(req, limits);
  if (c.max_tokens.has_value()) {
    ASSERT_TRUE(req.has_token_ids());
    const absl::StatusOr<uint32_t> resolved =
        ResolveMaxTokens(req.sampling_params(), req.token_ids().ids_size(), limits);
    ASSERT_TRUE(resolved.ok()) << resolved.status();
    EXPECT_EQ(*resolved, *c.max_tokens);
  }
}

// Every sampling field at its lower bound, and every size limit reached.
void LowerBounds(v1::GenerateRequest& r) {
  r.set_request_id(std::string(256, '!'));
  SetPromptIds(r, kContext - 1, /*id=*/0);
  r.mutable_token_ids()->set_ids(1, kVocab - 1);
  v1::SamplingParams& p = *r.mutable_sampling_params();
  p.set_temperature(0.0f);
  p.set_top_p(1e-6f);
  p.set_top_k(-1);
  p.set_min_p(0.0f);
  p.set_presence_penalty(-2.0f);
  p.set_frequency_penalty(-2.0f);
  p.set_repetition_penalty(1e-6f);
  p.set_max_tokens(1);
  p.set_min_tokens(1);
  p.set_logprobs(true);
  p.set_top_logprobs(0);
  for (int i = 0; i < 16; ++i) p.add_stop(std::string(256, static_cast<char>('a' + i)));
  for (uint32_t i = 0; i < 255; ++i) p.add_stop_token_ids(i);
  p.add_stop_token_ids(kVocab - 1);
  r.set_priority(std::numeric_limits<int32_t>::min());
}

// Every sampling field at its upper bound.
void UpperBounds(v1::GenerateRequest& r) {
  r.set_request_id("~");
  SetPromptIds(r, 96, /*id=*/kVocab - 1);
  v1::SamplingParams& p = *r.mutable_sampling_params();
  p.set_temperature(std::numeric_limits<float>::max());
  p.set_top_p(1.0f);
  p.set_top_k(std::numeric_limits<int32_t>::max());
  p.set_min_p(1.0f);
  p.set_presence_penalty(2.0f);
  p.set_frequency_penalty(2.0f);
  p.set_repetition_penalty(std::numeric_limits<float>::max());
  p.set_max_tokens(kContext - 96);
  p.set_min_tokens(kContext - 96);
  p.set_logprobs(true);
  p.set_top_logprobs(20);
  p.set_seed(std::numeric_limits<uint64_t>::max());
  p.set_ignore_eos(true);
  p.set_include_stop_str_in_output(true);
  p.set_skip_special_tokens(false);
  r.set_add_special_tokens(false);
  r.set_priority(std::numeric_limits<int32_t>::max());
}

const GoodCase kGoodCases[] = {
    {"Defaults", [](auto&) {}, {}, kContext - 3},
    {"DefaultsTextPrompt", [](auto& r) { r.set_text("Hello, world"); }, {}, std::nullopt},
    {"EmptyRequestId", [](auto& r) { r.clear_request_id(); }, {}, kContext - 3},
    {"RequestIdPrintableAscii",
     [](auto& r) { r.set_request_id("!\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"); },
     {},
     kContext - 3},
    {"Greedy", Sampling([](auto& p) { p.set_temperature(0.0f); }), {}, kContext - 3},
    {"TopKZeroDisables", Sampling([](auto& p) { p.set_top_k(0); }), {}, kContext - 3},
    {"TopKOne", Sampling([](auto& p) { p.set_top_k(1); }), {}, kContext - 3},
    {"AllFieldsAtLowerBounds", LowerBounds, {}, 1},
    {"AllFieldsAtUpperBounds", UpperBounds, {}, kContext - 96},
    {"MaxTokensFillsContextAfterOnePromptId",
     [](auto& r) {
       SetPromptIds(r, 1);
       r.mutable_sampling_params()->set_max_tokens(kContext - 1);
     },
     {},
     kContext - 1},
    {"PromptIdsLeaveOneToken", [](auto& r) { SetPromptIds(r, kContext - 1); }, {}, 1},
    {"MinTokensEqualsRoomLeftByPrompt",
     [](auto& r) {
       SetPromptIds(r, 10);
       r.mutable_sampling_params()->set_min_tokens(6);
     },
     [](auto& l) { l.max_context_length = 16; }, 6},
    {"TextAtByteLimit", [](auto& r) { r.set_text("12345678"); },
     [](auto& l) { l.max_prompt_text_bytes = 8; }, std::nullopt},
    {"TextWithMaxTokensBelowContext",
     [](auto& r) {
       r.set_text("hello");
       r.mutable_sampling_params()->set_max_tokens(kContext - 1);
       r.mutable_sampling_params()->set_min_tokens(kContext - 1);
     },
     {},
     std::nullopt},
    {"PromptIdsAtCountLimit", [](auto& r) { SetPromptIds(r, 4); },
     [](auto& l) { l.max_prompt_token_ids = 4; }, kContext - 4},
    {"TokenIdsWithoutTokenizer", Sampling([](auto& p) { p.add_stop_token_ids(kVocab - 1); }),
     [](auto& l) { l.has_tokenizer = false; }, kContext - 3},
};

INSTANTIATE_TEST_SUITE_P(Table, ValidateGoodTest, ::testing::ValuesIn(kGoodCases),
                         [](const auto& param_info) { return param_info.param.name; });

// ResolveMaxTokens on its own: the prompt length is the tokenizer's output.
struct ResolveCase {
  std::string name;
  std::optional<uint32_t> max_tokens;  // unset: default to the rest of the context
  uint32_t min_tokens;
  size_t prompt_tokens;
  // Either the resolved value or the error message (exact).
  std::optional<uint32_t> want;
  std::string error;
};

void PrintTo(const ResolveCase& c, std::ostream* os) { *os << c.name; }

class ResolveMaxTokensTest : public ::testing::TestWithParam<ResolveCase> {};

TEST_P(ResolveMaxTokensTest, ResolvesOrNamesTheNumbers) {
  const ResolveCase& c = GetParam();
  v1::SamplingParams params;
  if (c.max_tokens.has_value()) params.set_max_tokens(*c.max_tokens);
  params.set_min_tokens(c.min_tokens);
  const absl::StatusOr<uint32_t> got = ResolveMaxTokens(params, c.prompt_tokens, BaseLimits());
  if (c.want.has_value()) {
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, *c.want);
  } else {
    ASSERT_FALSE(got.ok()) << *got;
    EXPECT_EQ(got.status().code(), Code::kInvalidArgument);
    EXPECT_EQ(got.status().message(), c.error);
  }
}

const ResolveCase kResolveCases[] = {
    {"UnsetTakesRestOfContext", std::nullopt, 0, 100, 3996, ""},
    {"UnsetOnePromptToken", std::nullopt, 0, 1, kContext - 1, ""},
    {"UnsetLastToken", std::nullopt, 0, kContext - 1, 1, ""},
    {"SetFitsExactly", 96, 0, 4000, 96, ""},
    {"SetWellInside", 16, 16, 100, 16, ""},
    {"EmptyPrompt", std::nullopt, 0, 0, std::nullopt, "prompt: empty after tokenization"},
    {"EmptyPromptWithMaxTokens", 16, 0, 0, std::nullopt, "prompt: empty after tokenization"},
    {"UnsetPromptFillsContext", std::nullopt, 0, kContext, std::nullopt,
     "prompt (4096 tokens) leaves no room to generate: the model's context length is 4096 "
     "(prompt + generated tokens)"},
    {"UnsetPromptBeyondContext", std::nullopt, 0, 5000, std::nullopt,
     "prompt (5000 tokens) leaves no room to generate: the model's context length is 4096 "
     "(prompt + generated tokens)"},
    {"SetExceedsByOne", 97, 0, 4000, std::nullopt,
     "prompt (4000 tokens) + sampling_params.max_tokens (97) = 4097 exceeds the model's "
     "context length 4096"},
    {"SetExceeds", 4000, 0, 1000, std::nullopt,
     "prompt (1000 tokens) + sampling_params.max_tokens (4000) = 5000 exceeds the model's "
     "context length 4096"},
    {"SetPromptBeyondContext", 10, 0, 5000, std::nullopt,
     "prompt (5000 tokens) + sampling_params.max_tokens (10) = 5010 exceeds the model's "
     "context length 4096"},
    {"SetWithHugePrompt", 1, 0, std::numeric_limits<size_t>::max(), std::nullopt,
     absl::StrCat("prompt (", std::numeric_limits<size_t>::max(),
                  " tokens) exceeds the model's context length 4096")},
    {"SetZero", 0, 0, 100, std::nullopt, "sampling_params.max_tokens must be >= 1, got 0"},
    {"MinTokensAboveSet", 4, 9, 100, std::nullopt,
     "sampling_params.min_tokens (9) must be <= max_tokens (4)"},
    {"MinTokensAboveRestOfContext", std::nullopt, 4000, 100, std::nullopt,
     "sampling_params.min_tokens (4000) must be <= max_tokens (3996: the model's context "
     "length 4096 minus the prompt of 100 tokens)"},
};

INSTANTIATE_TEST_SUITE_P(Table, ResolveMaxTokensTest, ::testing::ValuesIn(kResolveCases),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(ResolveMaxTokensLimitsTest, RejectsUnfilledLimits) {
  GenerateLimits limits = BaseLimits();
  limits.max_context_length = 0;
  const absl::StatusOr<uint32_t> got = ResolveMaxTokens(v1::SamplingParams(), 1, limits);
  EXPECT_EQ(got.status().code(), Code::kInternal);
}

}  // namespace
}  // namespace epserve::router
