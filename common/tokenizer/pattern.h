// The "pattern" of Split / Replace components: {"String": s} or {"Regex": r},
// and the SplitDelimiterBehavior rules shared by the Split pre-tokenizer.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"
#include "common/tokenizer/regex.h"

namespace epserve::tokenizer {

using Range = std::pair<size_t, size_t>;  // [begin, end) byte offsets

class Pattern {
 public:
  static absl::StatusOr<Pattern> FromJson(const Json& j, absl::string_view where);
  static Pattern Literal(std::string s);

  // All non-overlapping matches in `text`, left to right.
  absl::Status FindAll(absl::string_view text, std::vector<Range>& out) const;
  // Replaces every match in `text` with `content`.
  absl::Status ReplaceAll(std::string& text, absl::string_view content) const;

 private:
  std::string literal_;
  std::shared_ptr<const Regex> regex_;  // null: literal
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<SplitBehavior> ParseSplitBehavior(const std::string& name, absl::string_view where);

// Cuts `text` of length `size` at `matches` following `behavior` (after
// swapping matches and gaps when `invert`); returns the non-empty pieces.
std::vector<Range> ApplySplitBehavior(size_t size, const std::vector<Range>& matches,
                                      SplitBehavior behavior, bool invert);

}  // namespace epserve::tokenizer
