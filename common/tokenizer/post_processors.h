// Post-processors of tokenizer.json ("post_processor" key): add special
// tokens around a single encoded sequence when add_special_tokens is set.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace epserve::tokenizer {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Rewrites the ids of one sequence (add_special_tokens=true only).
  virtual void Process(std::vector<int32_t>& ids) const = 0;
};

// Builds the post-processor described by `j` (null JSON: none, nullptr).
absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessorFromJson(const Json& j,
                                                                     const std::string& where);

}  // namespace epserve::tokenizer
