#include "common/sampling/sampling_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace epserve::sampling {
namespace {

absl::Status Invalid(absl::string_view field, absl::string_view expected, float found) {
  return absl::InvalidArgumentError(
      absl::StrCat("sampling_params.", field, " must be ", expected, ", got ", found));
}

}  // namespace

absl::Status Validate(const SamplingParams& params, int64_t vocab_size) {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vocab_size must be > 0 to validate sampling_params, got ", vocab_size));
  }
  if (!std::isfinite(params.temperature) || params.temperature < 0.0f) {
    return Invalid("temperature", ">= 0 and finite (0 = greedy)", params.temperature);
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {  // also rejects NaN
    return Invalid("top_p", "in (0, 1]", params.top_p);
  }
  if (params.top_k < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling_params.top_k must be 0 or -1 (disabled) or >= 1, got ",
                     params.top_k));
  }
  if (!(params.min_p >= 0.0f && params.min_p <= 1.0f)) {
    return Invalid("min_p", "in [0, 1]", params.min_p);
  }
  if (!(std::abs(params.presence_penalty) <= kMaxAbsAdditivePenalty)) {
    return Invalid("presence_penalty", "in [-2, 2]", params.presence_penalty);
  }
  if (!(std::abs(params.frequency_penalty) <= kMaxAbsAdditivePenalty)) {
    return Invalid("frequency_penalty", "in [-2, 2]", params.frequency_penalty);
  }
  if (!std::isfinite(params.repetition_penalty) || params.repetition_penalty <= 0.0f) {
    return Invalid("repetition_penalty", "> 0 and finite (1 = disabled)",
                   params.repetition_penalty);
  }
  if (params.top_logprobs > kMaxTopLogprobs) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sampling_params.top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ",
        params.top_logprobs));
  }
  if (params.top_logprobs > 0 && !params.logprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling_params.top_logprobs = ", params.top_logprobs,
                     " requires sampling_params.logprobs = true"));
  }
  for (size_t i = 0; i < params.stop_token_ids.size(); ++i) {
    const int32_t id = params.stop_token_ids[i];
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling_params.stop_token_ids[", i, "] must be in [0, ", vocab_size,
                       ") (the vocabulary), got ", id));
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::sampling
