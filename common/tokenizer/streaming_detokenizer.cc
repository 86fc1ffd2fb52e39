#include "common/tokenizer/streaming_detokenizer.h"

#include "absl/strings/match.h"
#include "common/status.h"

namespace epserve::tokenizer {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of `text` without trailing copies of `suffix`.
size_t WithoutTrailing(absl::string_view text, absl::string_view suffix) {
  size_t end = text.size();
  if (suffix.empty()) return end;
  while (end >= suffix.size() && text.substr(end - suffix.size(), suffix.size()) == suffix) {
    end -= suffix.size();
  }
  return end;
}

}  // namespace

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, StreamingOptions options)
    : tokenizer_(tokenizer), options_(std::move(options)) {}

absl::StatusOr<Delta> StreamingDetokenizer::Append(int32_t id) {
  if (finished_) {
    return absl::FailedPreconditionError("streaming detokenizer: sequence already finished");
  }
  if (tokenizer_.IdToToken(id) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", id, " at position ", num_tokens_,
                                                   " is out of range [0, ",
                                                   tokenizer_.vocab_size(), ")"));
  }
  ++num_tokens_;
  if (options_.skip_special_tokens && tokenizer_.IsSpecial(id)) return Delta{};
  window_.push_back(id);
  // A run of byte-fallback tokens decodes all-or-nothing (one invalid byte
  // turns the whole run into U+FFFD), so its text is held until the run ends.
  size_t decoded = window_.size();
  while (decoded > 0 && tokenizer_.IsByteToken(window_[decoded - 1])) --decoded;
  ASSIGN_OR_RETURN(std::string text,
                   tokenizer_.DecodeWindow(absl::MakeConstSpan(window_.data(), decoded),
                                           DecodeContext{window_at_start_, false},
                                           options_.skip_special_tokens));
  // Unstable tail: U+FFFD from an incomplete UTF-8 sequence (or byte-fallback
  // run) that later tokens may complete, and characters a final Strip may drop.
  size_t stable = WithoutTrailing(text, kReplacement);
  const size_t before_strip = stable;
  stable = WithoutTrailing(absl::string_view(text).substr(0, stable),
                           tokenizer_.trailing_strip_content());
  if (stable < window_released_ || text.compare(0, window_released_, text, 0, window_released_) != 0) {
    return absl::InternalError("streaming detokenizer: decoded text changed behind the stream");
  }
  Delta delta = Release(text.substr(window_released_, stable - window_released_), false);
  window_released_ = stable;
  // A clean boundary: nothing held, no open byte-fallback run, and (at the
  // start) some text out so that leading-strip rules are settled.
  const bool clean = decoded == window_.size() && stable == text.size() &&
                     before_strip == text.size() && (!window_at_start_ || !text.empty());
  if (clean) {
    window_.clear();
    window_at_start_ = false;
    window_released_ = 0;
  }
  return delta;
}

absl::StatusOr<Delta> StreamingDetokenizer::Finish() {
  if (finished_) return Delta{};
  ASSIGN_OR_RETURN(std::string text,
                   tokenizer_.DecodeWindow(window_, DecodeContext{window_at_start_, true},
                                           options_.skip_special_tokens));
  std::string rest = text.size() > window_released_ ? text.substr(window_released_) : "";
  window_.clear();
  Delta delta = Release(rest, true);
  finished_ = true;
  return delta;
}

Delta StreamingDetokenizer::Release(const std::string& stable, bool final) {
  Delta delta;
  pending_ += stable;
  // Earliest stop string occurrence in the pending text (ties: longer first).
  size_t best_pos = std::string::npos, best_len = 0;
  int best_index = -1;
  for (size_t i = 0; i < options_.stop_strings.size(); ++i) {
    const std::string& s = options_.stop_strings[i];
    if (s.empty()) continue;
    const size_t pos = pending_.find(s);
    if (pos != std::string::npos &&
        (pos < best_pos || (pos == best_pos && s.size() > best_len))) {
      best_pos = pos;
      best_len = s.size();
      best_index = static_cast<int>(i);
    }
  }
  if (best_index >= 0) {
    delta.text = pending_.substr(0, best_pos + (options_.include_stop_str_in_output ? best_len : 0));
    delta.matched_stop = true;
    delta.stop_index = best_index;
    pending_.clear();
    finished_ = true;
    return delta;
  }
  size_t hold = 0;  // longest suffix of pending_ that is a proper prefix of a stop string
  if (!final) {
    for (const std::string& s : options_.stop_strings) {
      for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size()); n > hold; --n) {
        if (absl::EndsWith(pending_, absl::string_view(s).substr(0, n))) {
          hold = n;
          break;
        }
      }
    }
  }
  delta.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return delta;
}

}  // namespace epserve::tokenizer
