// Validation of epserve.v1.GenerateRequest at the router, before a request is
// tokenized, queued or sent to a worker.
//
// Two steps, because the prompt length of a text request is known only after
// tokenization:
//   1. ValidateGenerateRequest: every check that needs no tokenizer (request
//      id, prompt shape and size, token ids against the vocabulary, every
//      sampling field, stop strings). For a token_ids prompt it also runs
//      ResolveMaxTokens, since the prompt length is already known.
//   2. ResolveMaxTokens: once the prompt is tokenized, checks it against the
//      model's context length and returns the max_tokens to generate.
//
// Errors are INVALID_ARGUMENT whose message starts with the offending field
// path ("sampling_params.top_p must be in (0, 1], got 0",
// "token_ids.ids[3]: id 99999 is outside the vocabulary [0, 151936)"), except:
//   FAILED_PRECONDITION  a text prompt or stop strings sent to a model served
//                        without a tokenizer;
//   INTERNAL             GenerateLimits without a vocabulary or context length
//                        (a server bug, not the client's).
//
// Sampling fields (epserve.proto documents each range) are checked by
// sampling::Validate on the sampler's view of the parameters, so the router
// and the worker accept exactly the same values. In particular top_k follows
// the sampler's convention: 0 or -1 disables top-k filtering, k >= 1 keeps the
// k most likely tokens, k < -1 is rejected; k >= vocab_size is accepted and
// behaves as disabled.
//
// Fields without a range: seed, ignore_eos, logprobs (alone),
// include_stop_str_in_output, skip_special_tokens, add_special_tokens (ignored
// for token_ids prompts) and priority (any int32; lower runs first).
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "epserve/v1/epserve.pb.h"

namespace epserve::router {

// The served model's limits and the router's request size limits; filled
// from the model config and router options by the caller.
struct GenerateLimits {
  uint32_t vocab_size = 0;          // token ids must be < this; > 0
  uint32_t max_context_length = 0;  // prompt tokens + max_tokens must be <= this; > 0
  bool has_tokenizer = true;        // text prompts and stop strings need one
  uint32_t max_stop_strings = 16;
  uint32_t max_stop_string_bytes = 256;
  uint32_t max_stop_token_ids = 256;
  // request_id appears in logs and metrics labels: at most this many bytes,
  // each printable ASCII other than space (0x21..0x7e). Empty is allowed (the
  // router assigns one).
  uint32_t max_request_id_bytes = 256;
  uint64_t max_prompt_text_bytes = 4u << 20;
  // Also bounded by the context: a prompt must leave room for one generated
  // token (at most max_context_length - 1 ids).
  uint32_t max_prompt_token_ids = 1u << 20;
};

// Everything checkable before tokenization. OK, or the first error found (see
// the file comment for codes and messages).
absl::Status ValidateGenerateRequest(const v1::GenerateRequest& req, const GenerateLimits& limits);

// After tokenization, the number of tokens to generate at most:
//   max_tokens unset: max_context_length - prompt_tokens (must be >= 1);
//   max_tokens set:   max_tokens, with prompt_tokens + max_tokens <=
//                     max_context_length.
// `prompt_tokens` is the number of prompt token ids (>= 1: an empty prompt is
// INVALID_ARGUMENT "prompt: empty after tokenization"). min_tokens must not
// exceed the result. Errors name the prompt length, max_tokens and the context
// length.
absl::StatusOr<uint32_t> ResolveMaxTokens(const v1::SamplingParams& params, size_t prompt_tokens,
                                          const GenerateLimits& limits);

}  // namespace epserve::router
