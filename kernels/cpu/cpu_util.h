// Helpers shared by the CPU op files: element widening and GEMM panels.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/dtype.h"

namespace epserve::kernels::cpu {

inline float Bf16Bits(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Exact fp16 -> fp32 through a 64 Ki-entry table (built once, thread-safe).
float Fp16Bits(uint16_t h);

// Widens `count` elements of a float32 / bfloat16 / float16 array to float32.
void WidenToF32(const void* src, DataType type, int64_t count, float* dst);

// Narrows float32 to a float32 / bfloat16 / float16 array (round to nearest even).
void NarrowFromF32(const float* src, int64_t count, DataType type, void* dst);

// One element of a float32 / bfloat16 / float16 array, as float32.
inline float LoadF32(const void* src, DataType type, int64_t i) {
  switch (type) {
    case DataType::kBFloat16:
      return Bf16Bits(static_cast<const uint16_t*>(src)[i]);
    case DataType::kFloat16:
      return Fp16Bits(static_cast<const uint16_t*>(src)[i]);
    default:
      return static_cast<const float*>(src)[i];
  }
}

// y[t, 0:n] = x[t, :] · w[0:n, :]^T (+ bias[0:n]) for t < rows, y with row
// stride ldy; w is float32 / bfloat16 / float16 [n, k]. bf16/fp16 weights are
// widened a panel of rows at a time into thread-local scratch and fed to
// cblas_sgemm. Shared by MatMul and GroupedExpertMatMul.
void LinearF32(const float* x, int64_t rows, int64_t k, const void* w, DataType w_type,
               int64_t n, const void* bias, DataType bias_type, float* y, int64_t ldy);

}  // namespace epserve::kernels::cpu
