// Normalizers of tokenizer.json ("normalizer" key). They rewrite the text of
// one segment (the text between added tokens) before pre-tokenization. Only
// the ids matter here, so no offset alignment is kept.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace epserve::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual absl::Status Normalize(std::string& text) const = 0;
};

// Builds the normalizer described by `j` (null JSON: none, returns nullptr).
// Unknown types give UNIMPLEMENTED naming the type and `where`.
absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(const Json& j,
                                                                const std::string& where);

}  // namespace epserve::tokenizer
