#include "cli/client/generate_request.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace epserve::client {

absl::StatusOr<v1::GenerateRequest> BuildGenerateRequest(const GenerateOptions& options) {
  if (options.prompt.has_value() == options.token_ids.has_value()) {
    return absl::InvalidArgumentError("give exactly one of --prompt TEXT or --token-ids 1,2,3");
  }
  if (options.token_ids && options.token_ids->empty()) {
    return absl::InvalidArgumentError("--token-ids: expected at least one id");
  }
  v1::GenerateRequest request;
  request.set_request_id(options.request_id);
  request.set_priority(options.priority);
  if (options.prompt) {
    request.set_text(*options.prompt);
  } else {
    request.mutable_token_ids()->mutable_ids()->Add(options.token_ids->begin(),
                                                    options.token_ids->end());
  }
  v1::SamplingParams& p = *request.mutable_sampling_params();
  if (options.max_tokens) p.set_max_tokens(*options.max_tokens);
  if (options.temperature) p.set_temperature(*options.temperature);
  if (options.top_p) p.set_top_p(*options.top_p);
  if (options.top_k) p.set_top_k(*options.top_k);
  if (options.min_p) p.set_min_p(*options.min_p);
  if (options.seed) p.set_seed(*options.seed);
  for (const std::string& s : options.stop) p.add_stop(s);
  p.mutable_stop_token_ids()->Add(options.stop_token_ids.begin(), options.stop_token_ids.end());
  p.set_ignore_eos(options.ignore_eos);
  p.set_logprobs(options.logprobs || options.top_logprobs.has_value());
  if (options.top_logprobs) p.set_top_logprobs(*options.top_logprobs);
  return request;
}

absl::StatusOr<std::vector<uint32_t>> ParseIdList(absl::string_view text, absl::string_view flag) {
  std::vector<uint32_t> ids;
  if (absl::StripAsciiWhitespace(text).empty()) return ids;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    uint32_t id = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(item), &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": expected comma-separated token ids (0..4294967295), found '",
                       item, "' in '", text, "'"));
    }
    ids.push_back(id);
  }
  return ids;
}

std::vector<std::string> SplitStopLists(const std::vector<std::string>& occurrences) {
  std::vector<std::string> out;
  for (const std::string& text : occurrences) {
    std::string item;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == ',' || text[i + 1] == '\\')) {
        item += text[++i];
      } else if (text[i] == ',') {
        if (!item.empty()) out.push_back(std::move(item));
        item.clear();
      } else {
        item += text[i];
      }
    }
    if (!item.empty()) out.push_back(std::move(item));
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ExtractRepeatedFlag(std::vector<std::string>& args,
                                                             absl::string_view name) {
  const std::string bare = absl::StrCat("--", name);
  const std::string with_value = bare + "=";
  std::vector<std::string> values;
  std::vector<std::string> rest;
  size_t i = 0;
  if (!args.empty()) rest.push_back(args[i++]);  // the program
  for (; i < args.size() && args[i] != "--"; ++i) {
    const std::string& a = args[i];
    if (a == bare) {
      if (i + 1 >= args.size()) return absl::InvalidArgumentError(bare + " needs a value");
      values.push_back(args[++i]);
    } else if (absl::StartsWith(a, with_value)) {
      values.push_back(a.substr(with_value.size()));
    } else {
      rest.push_back(a);
    }
  }
  rest.insert(rest.end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  args = std::move(rest);
  return values;
}

std::string FinishReasonName(v1::FinishReason reason) {
  absl::string_view name = v1::FinishReason_Name(reason);
  if (name.empty()) return "unknown";
  absl::ConsumePrefix(&name, "FINISH_REASON_");
  return absl::AsciiStrToLower(name);
}

std::string DescribeCompletion(const v1::GenerateComplete& complete, std::optional<double> ttft_ms,
                               double total_ms) {
  std::string stop = "none";
  if (complete.has_stop_token_id()) {
    stop = absl::StrCat("token:", complete.stop_token_id());
  } else if (complete.has_stop_str()) {
    stop = nlohmann::json(complete.stop_str())
               .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return absl::StrFormat(
      "finish_reason=%s matched_stop=%s prompt_tokens=%d completion_tokens=%d cached_tokens=%d "
      "ttft_ms=%s total_ms=%.1f",
      FinishReasonName(complete.finish_reason()), stop, complete.usage().prompt_tokens(),
      complete.usage().completion_tokens(), complete.usage().cached_tokens(),
      ttft_ms ? absl::StrFormat("%.1f", *ttft_ms) : "none", total_ms);
}

std::string StatusCodeName(int code) {
  // grpc::StatusCode and absl::StatusCode share their numbers and names.
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace epserve::client
