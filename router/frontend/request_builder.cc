#include "router/frontend/request_builder.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/secure_random.h"
#include "common/status.h"

namespace epserve::frontend {

RequestBuilder::RequestBuilder(router::GenerateLimits limits,
                               std::shared_ptr<const tokenizer::Tokenizer> tokenizer)
    : limits_(limits), tokenizer_(std::move(tokenizer)) {}

absl::StatusOr<GenerationRequest> RequestBuilder::Build(
    const v1::GenerateRequest& req, RequestClock::time_point arrival,
    std::optional<RequestClock::time_point> deadline) {
  RETURN_IF_ERROR(router::ValidateGenerateRequest(req, limits_));
  GenerationRequest r;
  r.arrival = arrival;
  if (req.has_token_ids()) {
    r.prompt_ids.assign(req.token_ids().ids().begin(), req.token_ids().ids().end());
  } else {
    if (tokenizer_ == nullptr) {
      // Validation refuses text prompts when limits_.has_tokenizer is false.
      return absl::InternalError("text: the request builder has no tokenizer");
    }
    tokenizer::EncodeOptions options;
    options.add_special_tokens = !req.has_add_special_tokens() || req.add_special_tokens();
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(req.text(), options);
    if (!ids.ok()) return Annotate(ids.status(), "text");
    r.prompt_ids.assign(ids->begin(), ids->end());
  }
  ASSIGN_OR_RETURN(r.max_tokens,
                   router::ResolveMaxTokens(req.sampling_params(), r.prompt_ids.size(), limits_));
  r.sampling = req.sampling_params();
  r.priority = req.priority();
  if (req.request_id().empty()) {
    // 128 random bits: an id another client cannot guess (Abort also checks
    // the caller).
    ASSIGN_OR_RETURN(std::string random, RandomHex(16));
    r.id = absl::StrCat("gen-", random);
  } else {
    r.id = req.request_id();
  }
  r.deadline = deadline;
  return r;
}

}  // namespace epserve::frontend
