// RequestBuilder: a front end's client request → the GenerationRequest the
// engine runs. One builder per served model, shared by every front end
// (the gRPC ClientService today; an HTTP front end renders its chat prompt
// into the same epserve.v1.GenerateRequest and calls the same Build).
//
//   GenerateRequest ─ValidateGenerateRequest─► tokenize (text prompts)
//                   ─ResolveMaxTokens─► request id ─► GenerationRequest
//
// Errors are those of router/validation (INVALID_ARGUMENT naming the field,
// FAILED_PRECONDITION without a tokenizer, INTERNAL for unfilled limits) and
// the tokenizer's, annotated with "text".
//
// Thread-safety: Build may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"
#include "router/frontend/generation_request.h"
#include "router/validation/generate_validation.h"

#include "epserve/v1/epserve.pb.h"

namespace epserve::frontend {

class RequestBuilder {
 public:
  // `limits`: vocab_size, max_context_length and has_tokenizer filled from the
  // model. `tokenizer` may be null only when !limits.has_tokenizer (text
  // prompts and stop strings are then refused by validation).
  RequestBuilder(router::GenerateLimits limits,
                 std::shared_ptr<const tokenizer::Tokenizer> tokenizer);

  // Validates `req`, tokenizes a text prompt (add_special_tokens unset means
  // true), resolves max_tokens and assigns "gen-<n>-<k>" when request_id is
  // empty. `arrival` and `deadline` (none: no deadline) are copied into the
  // result. Nothing is queued: the caller submits the result.
  absl::StatusOr<GenerationRequest> Build(const v1::GenerateRequest& req,
                                          RequestClock::time_point arrival,
                                          std::optional<RequestClock::time_point> deadline);

  const router::GenerateLimits& limits() const { return limits_; }

 private:
  const router::GenerateLimits limits_;
  const std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
};

}  // namespace epserve::frontend
