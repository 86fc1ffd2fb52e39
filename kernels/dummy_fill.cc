// FillDummyHost (ops.h): the dummy-weight generator on host memory. Its own
// file so that programs using it (the weight loader in the router) do not
// link the CPU backend.
#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype_convert.h"
#include "common/status.h"
#include "kernels/ops.h"

namespace epserve::kernels {

absl::Status FillDummyHost(Tensor* t, uint64_t state0, float half_width, bool ones) {
  if (t == nullptr || !t->defined()) {
    return absl::InvalidArgumentError("FillDummy: t: expected a tensor, found none");
  }
  if (t->dtype != DataType::kFloat32 && t->dtype != DataType::kBFloat16 &&
      t->dtype != DataType::kFloat16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "FillDummy: t: expected dtype float32, bfloat16 or float16, found ",
        DataTypeName(t->dtype)));
  }
  if (t->storage->device().type != DeviceType::kCpu || t->mutable_data() == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("FillDummy: t: expected a writable host tensor, found one on ",
                     t->storage->device().ToString(),
                     t->mutable_data() == nullptr ? " (read-only)" : ""));
  }
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = t->numel();
  const size_t elem = DataTypeSize(t->dtype);
  std::vector<float> chunk(static_cast<size_t>(std::min<int64_t>(kChunk, std::max<int64_t>(n, 1))));
  uint64_t state = state0;
  char* out = static_cast<char*>(t->mutable_data());
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t m = std::min(kChunk, n - start);
    for (int64_t i = 0; i < m; ++i) {
      if (ones) {
        chunk[i] = 1.0f;
      } else {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const float u = static_cast<float>(z >> 40) / static_cast<float>(1 << 24);
        chunk[i] = (2.0f * u - 1.0f) * half_width;
      }
    }
    RETURN_IF_ERROR(ConvertElements(chunk.data(), DataType::kFloat32, out + start * elem,
                                    t->dtype, m));
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels
