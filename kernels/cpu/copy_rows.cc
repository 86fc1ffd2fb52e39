// CopyRows: blocks of rows from src to dst, converting the element type.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/dtype_convert.h"
#include "common/status.h"
#include "kernels/cpu/cpu_backend.h"

namespace epserve::kernels::cpu {

absl::Status CpuBackend::CopyRowsImpl(const Tensor& src, const Tensor& blocks, Tensor* dst) {
  const int64_t width = src.shape[1];
  const int64_t src_rows = src.shape[0], dst_rows = dst->shape[0];
  const int64_t num_blocks = blocks.shape[0];
  const int32_t* b = blocks.data_as<int32_t>();
  for (int64_t i = 0; i < num_blocks; ++i) {
    const int64_t from = b[3 * i], to = b[3 * i + 1], rows = b[3 * i + 2];
    if (rows < 0 || from < 0 || to < 0 || from + rows > src_rows || to + rows > dst_rows) {
      return absl::InvalidArgumentError(absl::StrCat(
          "CopyRows: blocks[", i, "] = (src ", from, ", dst ", to, ", rows ", rows,
          ") is outside src [", src_rows, ", ", width, "] or dst [", dst_rows, ", ", width, "]"));
    }
  }
  const size_t src_row_bytes = static_cast<size_t>(width) * DataTypeSize(src.dtype);
  const size_t dst_row_bytes = static_cast<size_t>(width) * DataTypeSize(dst->dtype);
  const char* in = static_cast<const char*>(src.data());
  char* out = static_cast<char*>(dst->mutable_data());
  for (int64_t i = 0; i < num_blocks; ++i) {
    const int64_t from = b[3 * i], to = b[3 * i + 1], rows = b[3 * i + 2];
    if (src.dtype == dst->dtype) {
      std::memcpy(out + to * dst_row_bytes, in + from * src_row_bytes,
                  static_cast<size_t>(rows) * src_row_bytes);
    } else {
      RETURN_IF_ERROR(ConvertElements(in + from * src_row_bytes, src.dtype,
                                      out + to * dst_row_bytes, dst->dtype, rows * width));
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
