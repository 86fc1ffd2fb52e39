// Embedding: out[t] = table[ids[t]], widened to float32.
#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_util.h"

namespace epserve::kernels::cpu {

absl::Status CpuBackend::EmbeddingImpl(const Tensor& ids, const Tensor& table, Tensor* out) {
  const int64_t t = ids.shape[0], vocab = table.shape[0], h = table.shape[1];
  const int32_t* id = ids.data_as<int32_t>();
  for (int64_t i = 0; i < t; ++i) {  // validate everything before writing
    if (id[i] < 0 || id[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("Embedding: ids[", i, "] = ", id[i],
                                                     " is outside the table [0, ", vocab, ")"));
    }
  }
  const char* src = static_cast<const char*>(table.data());
  const size_t row_bytes = static_cast<size_t>(h) * DataTypeSize(table.dtype);
  float* dst = out->mutable_data_as<float>();
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (t * h >= (1 << 15))
  for (int64_t i = 0; i < t; ++i) {
    WidenToF32(src + static_cast<size_t>(id[i]) * row_bytes, table.dtype, h, dst + i * h);
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
