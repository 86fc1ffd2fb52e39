#include "kernels/cpu/cpu_backend.h"

#include <cblas.h>

#include <omp.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype_convert.h"
#include "common/status.h"
#include "kernels/cpu/cpu_util.h"

namespace epserve::kernels::cpu {
namespace {

const float* Fp16Table() {
  static const std::vector<float>* table = [] {
    auto* t = new std::vector<float>(1 << 16);
    for (uint32_t i = 0; i < (1u << 16); ++i) (*t)[i] = Fp16ToFp32(static_cast<uint16_t>(i));
    return t;
  }();
  return table->data();
}

}  // namespace

float Fp16Bits(uint16_t h) { return Fp16Table()[h]; }

void WidenToF32(const void* src, DataType type, int64_t count, float* dst) {
  switch (type) {
    case DataType::kBFloat16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < count; ++i) dst[i] = Bf16Bits(s[i]);
      break;
    }
    case DataType::kFloat16: {
      const auto* s = static_cast<const uint16_t*>(src);
      const float* table = Fp16Table();
      for (int64_t i = 0; i < count; ++i) dst[i] = table[s[i]];
      break;
    }
    default:
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
  }
}

void NarrowFromF32(const float* src, int64_t count, DataType type, void* dst) {
  switch (type) {
    case DataType::kBFloat16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < count; ++i) d[i] = Fp32ToBf16(src[i]);
      break;
    }
    case DataType::kFloat16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < count; ++i) d[i] = Fp32ToFp16(src[i]);
      break;
    }
    default:
      std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(float));
  }
}

CpuBackend::CpuBackend(const CpuBackendOptions& options)
    : num_threads_(options.num_threads > 0 ? options.num_threads : omp_get_max_threads()) {
  // OpenBLAS keeps one process-wide thread pool for the GEMMs.
  if (options.num_threads > 0) openblas_set_num_threads(options.num_threads);
}

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options) {
  return std::make_unique<CpuBackend>(options);
}

absl::StatusOr<Tensor> CpuBackend::Empty(DataType dtype, std::vector<int64_t> shape) {
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Empty: shape: expected non-negative dimensions, found ",
                       ShapeString(shape)));
    }
  }
  return EmptyHostTensor(dtype, std::move(shape));
}

absl::StatusOr<Tensor> CpuBackend::ToDevice(const Tensor& host) {
  if (!host.defined()) {
    return absl::InvalidArgumentError("ToDevice: host: expected a tensor, found an undefined one");
  }
  return host;  // host memory is this device's memory: share it
}

absl::Status CpuBackend::CopyFromHostImpl(const void* src, size_t bytes, Tensor* dst) {
  if (bytes > 0) std::memcpy(dst->mutable_data(), src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHostImpl(const Tensor& src, void* dst, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src.data(), bytes);
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
