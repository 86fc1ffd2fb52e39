// A compiled PCRE2 pattern (UTF + Unicode properties, JIT when available),
// shareable between threads.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve::tokenizer {

class Regex {
 public:
  // Compiles `pattern`; INVALID_ARGUMENT names the pattern and the error offset.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(absl::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends to `out` the [begin, end) byte ranges of all non-overlapping
  // matches in `text` (valid UTF-8), left to right; an empty match advances by
  // one character.
  absl::Status FindAll(absl::string_view text,
                       std::vector<std::pair<size_t, size_t>>& out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace epserve::tokenizer
