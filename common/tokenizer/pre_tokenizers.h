// Pre-tokenizers of tokenizer.json ("pre_tokenizer" key): they cut a
// normalized segment into words that the model tokenizes independently.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace epserve::tokenizer {

struct PreSplit {
  std::string text;
  // True when the split starts at byte 0 of the original input (Metaspace's
  // prepend_scheme "first" prepends only there).
  bool at_input_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `splits` by their pre-tokenized pieces (empty pieces dropped).
  virtual absl::Status PreTokenize(std::vector<PreSplit>& splits) const = 0;
};

// Builds the pre-tokenizer described by `j` (null JSON: none, nullptr).
absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(const Json& j,
                                                                   const std::string& where);

}  // namespace epserve::tokenizer
