// Validate(): every field's range, and errors that name the field, the
// allowed range and the value found.
#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "common/sampling/sampling_params.h"

namespace epserve::sampling {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kVocab = 1000;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(ValidateTest, DefaultsAndBoundariesAreValid) {
  EXPECT_TRUE(Validate(SamplingParams{}, kVocab).ok());
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.top_k = -1;
  p.min_p = 1.0f;
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 2.0f;
  p.repetition_penalty = 1e-3f;
  p.logprobs = true;
  p.top_logprobs = 20;
  p.stop_token_ids = {0, kVocab - 1};
  EXPECT_TRUE(Validate(p, kVocab).ok());
  p.top_k = 1;
  p.min_p = 0.0f;
  p.top_p = 1e-6f;
  p.temperature = 100.0f;
  EXPECT_TRUE(Validate(p, kVocab).ok());
}

struct BadCase {
  std::string name;
  std::function<void(SamplingParams&)> mutate;
  std::string field;  // must appear in the message
  std::string range;  // must appear in the message
};

class ValidateBadTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ValidateBadTest, NamesFieldAndRange) {
  SamplingParams p;
  GetParam().mutate(p);
  const absl::Status status = Validate(p, kVocab);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr(GetParam().field), HasSubstr(GetParam().range)));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, ValidateBadTest,
    ::testing::Values(
        BadCase{"NegativeTemperature", [](SamplingParams& p) { p.temperature = -0.1f; },
                "sampling_params.temperature", ">= 0 and finite"},
        BadCase{"NaNTemperature", [](SamplingParams& p) { p.temperature = kNaN; },
                "sampling_params.temperature", ">= 0 and finite"},
        BadCase{"InfTemperature", [](SamplingParams& p) { p.temperature = kInf; },
                "sampling_params.temperature", "got inf"},
        BadCase{"ZeroTopP", [](SamplingParams& p) { p.top_p = 0.0f; }, "sampling_params.top_p",
                "in (0, 1]"},
        BadCase{"TopPAboveOne", [](SamplingParams& p) { p.top_p = 1.01f; },
                "sampling_params.top_p", "in (0, 1]"},
        BadCase{"NaNTopP", [](SamplingParams& p) { p.top_p = kNaN; }, "sampling_params.top_p",
                "in (0, 1]"},
        BadCase{"TopKBelowMinusOne", [](SamplingParams& p) { p.top_k = -2; },
                "sampling_params.top_k", "got -2"},
        BadCase{"NegativeMinP", [](SamplingParams& p) { p.min_p = -0.01f; },
                "sampling_params.min_p", "in [0, 1]"},
        BadCase{"MinPAboveOne", [](SamplingParams& p) { p.min_p = 1.5f; }, "sampling_params.min_p",
                "got 1.5"},
        BadCase{"PresenceTooLarge", [](SamplingParams& p) { p.presence_penalty = 2.5f; },
                "sampling_params.presence_penalty", "in [-2, 2]"},
        BadCase{"PresenceNaN", [](SamplingParams& p) { p.presence_penalty = kNaN; },
                "sampling_params.presence_penalty", "in [-2, 2]"},
        BadCase{"FrequencyTooSmall", [](SamplingParams& p) { p.frequency_penalty = -2.01f; },
                "sampling_params.frequency_penalty", "in [-2, 2]"},
        BadCase{"ZeroRepetition", [](SamplingParams& p) { p.repetition_penalty = 0.0f; },
                "sampling_params.repetition_penalty", "> 0 and finite"},
        BadCase{"NegativeRepetition", [](SamplingParams& p) { p.repetition_penalty = -1.0f; },
                "sampling_params.repetition_penalty", "> 0 and finite"},
        BadCase{"InfRepetition", [](SamplingParams& p) { p.repetition_penalty = kInf; },
                "sampling_params.repetition_penalty", "> 0 and finite"},
        BadCase{"TooManyTopLogprobs",
                [](SamplingParams& p) {
                  p.logprobs = true;
                  p.top_logprobs = 21;
                },
                "sampling_params.top_logprobs", "in [0, 20], got 21"},
        BadCase{"TopLogprobsWithoutLogprobs", [](SamplingParams& p) { p.top_logprobs = 3; },
                "sampling_params.top_logprobs", "requires sampling_params.logprobs = true"},
        BadCase{"StopIdOutsideVocab",
                [](SamplingParams& p) { p.stop_token_ids = {5, static_cast<int32_t>(kVocab)}; },
                "sampling_params.stop_token_ids[1]", "[0, 1000)"},
        BadCase{"NegativeStopId", [](SamplingParams& p) { p.stop_token_ids = {-1}; },
                "sampling_params.stop_token_ids[0]", "got -1"}),
    [](const ::testing::TestParamInfo<BadCase>& param_info) { return param_info.param.name; });

TEST(ValidateTest, RejectsNonPositiveVocab) {
  const absl::Status status = Validate(SamplingParams{}, 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("vocab_size"));
}

}  // namespace
}  // namespace epserve::sampling
