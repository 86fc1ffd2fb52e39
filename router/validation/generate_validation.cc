#include "router/validation/generate_validation.h"

#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/sampling/sampling_params.h"
#include "common/sampling/sampling_params_proto.h"

namespace epserve::router {
namespace {

// Printable ASCII without space: request ids stay one unquoted token in log
// lines and need no escaping in metrics labels.
constexpr unsigned char kFirstIdChar = 0x21;
constexpr unsigned char kLastIdChar = 0x7e;

absl::Status CheckLimits(const GenerateLimits& limits) {
  if (limits.vocab_size == 0 || limits.max_context_length == 0) {
    return absl::InternalError(absl::StrCat(
        "GenerateLimits needs vocab_size > 0 and max_context_length > 0, got vocab_size ",
        limits.vocab_size, ", max_context_length ", limits.max_context_length));
  }
  return absl::OkStatus();
}

absl::Status ValidateRequestId(const std::string& id, const GenerateLimits& limits) {
  if (id.size() > limits.max_request_id_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id: ", id.size(),
                                                   " bytes exceed the limit of ",
                                                   limits.max_request_id_bytes, " bytes"));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const auto c = static_cast<unsigned char>(id[i]);
    if (c < kFirstIdChar || c > kLastIdChar) {
      return absl::InvalidArgumentError(
          absl::StrCat("request_id: byte ", i, " is 0x", absl::Hex(c, absl::kZeroPad2),
                       "; allowed are printable ASCII characters other than space "
                       "(0x21..0x7e)"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePrompt(const v1::GenerateRequest& req, const GenerateLimits& limits) {
  switch (req.input_case()) {
    case v1::GenerateRequest::INPUT_NOT_SET:
      return absl::InvalidArgumentError("input: set either text or token_ids");
    case v1::GenerateRequest::kText: {
      const std::string& text = req.text();
      if (text.empty()) return absl::InvalidArgumentError("text: empty prompt");
      if (text.size() > limits.max_prompt_text_bytes) {
        return absl::InvalidArgumentError(absl::StrCat("text: prompt of ", text.size(),
                                                       " bytes exceeds the limit of ",
                                                       limits.max_prompt_text_bytes, " bytes"));
      }
      if (!limits.has_tokenizer) {
        return absl::FailedPreconditionError(
            "text: the served model has no tokenizer; send the prompt as token_ids");
      }
      return absl::OkStatus();
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = req.token_ids().ids();
      if (ids.empty()) return absl::InvalidArgumentError("token_ids.ids: empty prompt");
      if (static_cast<uint64_t>(ids.size()) > limits.max_prompt_token_ids) {
        return absl::InvalidArgumentError(absl::StrCat("token_ids.ids: prompt of ", ids.size(),
                                                       " ids exceeds the limit of ",
                                                       limits.max_prompt_token_ids, " ids"));
      }
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] >= limits.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat("token_ids.ids[", i, "]: id ", ids[i],
                                                         " is outside the vocabulary [0, ",
                                                         limits.vocab_size, ")"));
        }
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("input: unknown prompt kind ", static_cast<int>(req.input_case())));
}

absl::Status ValidateMaxTokensSet(uint32_t max_tokens) {
  if (max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling_params.max_tokens must be >= 1, got ", max_tokens));
  }
  return absl::OkStatus();
}

// max_tokens and min_tokens against each other and against the context,
// before the prompt length is known (a prompt has at least one token).
absl::Status ValidateLengths(const v1::SamplingParams& params, const GenerateLimits& limits) {
  if (params.has_max_tokens()) {
    RETURN_IF_ERROR(ValidateMaxTokensSet(params.max_tokens()));
    if (params.max_tokens() >= limits.max_context_length) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling_params.max_tokens (", params.max_tokens(),
                       ") must be < the model's context length ", limits.max_context_length,
                       ", which also holds the prompt (at least 1 token)"));
    }
    if (params.min_tokens() > params.max_tokens()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling_params.min_tokens (", params.min_tokens(),
                       ") must be <= max_tokens (", params.max_tokens(), ")"));
    }
  } else if (params.min_tokens() >= limits.max_context_length) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling_params.min_tokens (", params.min_tokens(),
                     ") must be < the model's context length ", limits.max_context_length,
                     ", which also holds the prompt (at least 1 token)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateStops(const v1::SamplingParams& params, const GenerateLimits& limits) {
  const auto& stop = params.stop();
  if (static_cast<uint64_t>(stop.size()) > limits.max_stop_strings) {
    return absl::InvalidArgumentError(absl::StrCat("sampling_params.stop: ", stop.size(),
                                                   " stop strings exceed the limit of ",
                                                   limits.max_stop_strings));
  }
  for (int i = 0; i < stop.size(); ++i) {
    if (stop[i].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling_params.stop[", i, "]: empty stop string"));
    }
    if (stop[i].size() > limits.max_stop_string_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling_params.stop[", i, "]: ", stop[i].size(),
                       " bytes exceed the limit of ", limits.max_stop_string_bytes, " bytes"));
    }
  }
  if (!stop.empty() && !limits.has_tokenizer) {
    return absl::FailedPreconditionError(
        "sampling_params.stop: stop strings need a tokenizer and the served model has none; "
        "use stop_token_ids");
  }
  // The ids themselves are range-checked by sampling::Validate.
  if (static_cast<uint64_t>(params.stop_token_ids_size()) > limits.max_stop_token_ids) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling_params.stop_token_ids: ", params.stop_token_ids_size(),
                     " ids exceed the limit of ", limits.max_stop_token_ids));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGenerateRequest(const v1::GenerateRequest& req, const GenerateLimits& limits) {
  RETURN_IF_ERROR(CheckLimits(limits));
  RETURN_IF_ERROR(ValidateRequestId(req.request_id(), limits));
  RETURN_IF_ERROR(ValidatePrompt(req, limits));
  const v1::SamplingParams& params = req.sampling_params();
  RETURN_IF_ERROR(ValidateLengths(params, limits));
  RETURN_IF_ERROR(ValidateStops(params, limits));
  RETURN_IF_ERROR(sampling::Validate(sampling::SamplingParamsFromProto(params), limits.vocab_size));
  if (req.input_case() == v1::GenerateRequest::kTokenIds) {
    RETURN_IF_ERROR(
        ResolveMaxTokens(params, static_cast<size_t>(req.token_ids().ids_size()), limits));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ResolveMaxTokens(const v1::SamplingParams& params, size_t prompt_tokens,
                                          const GenerateLimits& limits) {
  RETURN_IF_ERROR(CheckLimits(limits));
  if (prompt_tokens == 0) {
    return absl::InvalidArgumentError("prompt: empty after tokenization");
  }
  const uint64_t context = limits.max_context_length;
  uint32_t max_tokens = 0;
  if (params.has_max_tokens()) {
    RETURN_IF_ERROR(ValidateMaxTokensSet(params.max_tokens()));
    if (prompt_tokens > std::numeric_limits<uint64_t>::max() - params.max_tokens()) {
      // The sum below would overflow.
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt (", prompt_tokens, " tokens) exceeds the model's context length ", context));
    }
    const uint64_t total = static_cast<uint64_t>(prompt_tokens) + params.max_tokens();
    if (total > context) {
      return absl::InvalidArgumentError(absl::StrCat(
          "prompt (", prompt_tokens, " tokens) + sampling_params.max_tokens (", params.max_tokens(),
          ") = ", total, " exceeds the model's context length ", context));
    }
    max_tokens = params.max_tokens();
  } else {
    if (prompt_tokens >= context) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt (", prompt_tokens,
                       " tokens) leaves no room to generate: the model's context length is ",
                       context, " (prompt + generated tokens)"));
    }
    max_tokens = static_cast<uint32_t>(context - prompt_tokens);
  }
  if (params.min_tokens() > max_tokens) {
    const std::string why = params.has_max_tokens()
                                ? std::string()
                                : absl::StrCat(": the model's context length ", context,
                                               " minus the prompt of ", prompt_tokens, " tokens");
    return absl::InvalidArgumentError(absl::StrCat("sampling_params.min_tokens (",
                                                   params.min_tokens(), ") must be <= max_tokens (",
                                                   max_tokens, why, ")"));
  }
  return max_tokens;
}

}  // namespace epserve::router
