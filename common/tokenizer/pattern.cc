#include "common/tokenizer/pattern.h"

#include <algorithm>

namespace epserve::tokenizer {

absl::StatusOr<Pattern> Pattern::FromJson(const Json& j, absl::string_view where) {
  Pattern p;
  if (j.is_object() && j.contains("String") && j["String"].is_string()) {
    p.literal_ = j["String"].get<std::string>();
    if (p.literal_.empty()) return JsonError(where, "empty String pattern");
    return p;
  }
  if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
    auto re = Regex::Compile(j["Regex"].get<std::string>());
    if (!re.ok()) return JsonError(where, re.status().message());
    p.regex_ = std::move(*re);
    return p;
  }
  return JsonError(where, "pattern must be {\"String\": ...} or {\"Regex\": ...}");
}

Pattern Pattern::Literal(std::string s) {
  Pattern p;
  p.literal_ = std::move(s);
  return p;
}

absl::Status Pattern::FindAll(absl::string_view text, std::vector<Range>& out) const {
  if (regex_) return regex_->FindAll(text, out);
  size_t pos = 0;
  while ((pos = text.find(literal_, pos)) != absl::string_view::npos) {
    out.emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
  return absl::OkStatus();
}

absl::Status Pattern::ReplaceAll(std::string& text, absl::string_view content) const {
  std::vector<Range> matches;
  if (auto s = FindAll(text, matches); !s.ok()) return s;
  if (matches.empty()) return absl::OkStatus();
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    out.append(text, prev, b - prev);
    out.append(content.data(), content.size());
    prev = e;
  }
  out.append(text, prev, std::string::npos);
  text = std::move(out);
  return absl::OkStatus();
}

absl::StatusOr<SplitBehavior> ParseSplitBehavior(const std::string& name, absl::string_view where) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return JsonError(where, absl::StrCat("unknown split behavior '", name, "'"));
}

std::vector<Range> ApplySplitBehavior(size_t size, const std::vector<Range>& matches,
                                      SplitBehavior behavior, bool invert) {
  // Pieces covering the whole text, each flagged as a match or a gap.
  struct Piece {
    Range range;
    bool is_match;
  };
  std::vector<Piece> pieces;
  pieces.reserve(matches.size() * 2 + 1);
  size_t prev = 0;
  for (const auto& m : matches) {
    if (m.first > prev) pieces.push_back({{prev, m.first}, invert});
    pieces.push_back({m, !invert});
    prev = m.second;
  }
  if (prev < size) pieces.push_back({{prev, size}, invert});

  std::vector<Piece> out;
  out.reserve(pieces.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      out = pieces;
      break;
    case SplitBehavior::kRemoved:
      for (const auto& p : pieces) {
        if (!p.is_match) out.push_back(p);
      }
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const auto& p : pieces) {
        if (p.is_match == previous_match && !out.empty()) {
          out.back().range.second = p.range.second;
        } else {
          out.push_back(p);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& p : pieces) {
        if (p.is_match && !previous_match && !out.empty()) {
          out.back().range.second = p.range.second;
        } else {
          out.push_back(p);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().range.first = it->range.first;
        } else {
          out.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  std::vector<Range> ranges;
  ranges.reserve(out.size());
  for (const auto& p : out) {
    if (p.range.second > p.range.first) ranges.push_back(p.range);
  }
  return ranges;
}

}  // namespace epserve::tokenizer
