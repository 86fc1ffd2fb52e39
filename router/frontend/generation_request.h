// GenerationRequest: a client's generation request as every front end hands
// it to the engine (router/engine Engine::Submit): validated, tokenized, with
// max_tokens resolved against the context length. No front-end types: the
// deadline is a time point on the engine's clock, not an RPC context.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "epserve/v1/epserve.pb.h"

namespace epserve::frontend {

// The clock of arrival times and deadlines (the engine's clock).
using RequestClock = std::chrono::steady_clock;

struct GenerationRequest {
  std::string id;                    // non-empty, validated
  // Who submitted it (the front end's caller identity: an API key, or the
  // client's address); only the same caller may Abort it.
  std::string owner;
  std::vector<uint32_t> prompt_ids;  // non-empty, each < vocab_size
  // As validated, router-only fields (stop, include_stop_str_in_output,
  // skip_special_tokens) included: the output processor reads those.
  v1::SamplingParams sampling;
  uint32_t max_tokens = 16;  // resolved: prompt + max_tokens <= context length
  int priority = 0;          // lower runs first
  std::optional<RequestClock::time_point> deadline;  // none: no deadline
  RequestClock::time_point arrival = RequestClock::now();
};

}  // namespace epserve::frontend
