// Tensor shapes as dimension lists.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace epserve {

// Product of the dimensions (1 for a scalar []). Callers that read shapes
// from untrusted input validate them for overflow first (see safetensors).
inline int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// "[2, 3]"; "[]" for a scalar.
std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace epserve
