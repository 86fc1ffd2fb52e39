// Building Generate requests from command-line values and describing their
// results, for `epserve generate` (and the list syntax `epserve bench` shares).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "epserve/v1/epserve.pb.h"

namespace epserve::client {

// What `epserve generate` sends. Unset optionals leave the field unset, so
// the server's default applies.
struct GenerateOptions {
  // Exactly one of the two inputs.
  std::optional<std::string> prompt;
  std::optional<std::vector<uint32_t>> token_ids;
  std::optional<uint32_t> max_tokens;
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int32_t> top_k;
  std::optional<float> min_p;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<uint32_t> stop_token_ids;
  bool ignore_eos = false;
  bool logprobs = false;
  // Implies logprobs.
  std::optional<uint32_t> top_logprobs;
  std::string request_id;
  int32_t priority = 0;
};

// Checks that exactly one input is given; range checks are the server's
// (INVALID_ARGUMENT names the field).
absl::StatusOr<v1::GenerateRequest> BuildGenerateRequest(const GenerateOptions& options);

// "1,2, 3" -> {1, 2, 3}. Empty text -> {}. `flag` names the flag in errors.
absl::StatusOr<std::vector<uint32_t>> ParseIdList(absl::string_view text, absl::string_view flag);

// The stop strings of every --stop occurrence: each occurrence is a comma
// list; "\," is a literal comma and "\\" a backslash. Empty items are dropped.
std::vector<std::string> SplitStopLists(const std::vector<std::string>& occurrences);

// Removes every "--NAME VALUE" / "--NAME=VALUE" from `args` (args[0] is the
// program) and returns the values in order; "--" ends the scan. For flags
// that may repeat, which Abseil flags cannot express.
absl::StatusOr<std::vector<std::string>> ExtractRepeatedFlag(std::vector<std::string>& args,
                                                             absl::string_view name);

// "stop", "length", "abort", "error", "unspecified".
std::string FinishReasonName(v1::FinishReason reason);

// One line for stderr after a Generate stream, e.g.
// "finish_reason=length matched_stop=none prompt_tokens=5 completion_tokens=16
//  cached_tokens=0 ttft_ms=12.3 total_ms=45.6". A stop string is JSON-quoted.
std::string DescribeCompletion(const v1::GenerateComplete& complete, std::optional<double> ttft_ms,
                               double total_ms);

// The name of a gRPC status code number ("UNAVAILABLE").
std::string StatusCodeName(int code);

}  // namespace epserve::client
