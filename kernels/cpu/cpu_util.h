// Helpers shared by the CPU op files: element widening and GEMM panels.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/dtype.h"
#include "kernels/linear_weight.h"

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

// y[t, 0:n] = x[t, :] · w^T (+ bias[0:n]) for t < rows, y with row stride
// ldy, n = w.out_features(), k = w.in_features(), in any format the CPU
// backend Supports. A float32 weight goes to cblas_sgemm as it is; any other
// is dequantized to float32 a panel of output rows at a time into
// thread-local scratch (bf16/fp16 widened; fp8-block: float(fp8) x its
// block's scale; awq-int4: float(q - z) x float(scale)) and fed to
// cblas_sgemm, so no float32 copy of the weights is kept and a quantized
// layer gives the bits of the float32 layer holding its dequantized values.
// Up to kQuantizedGemvRows rows, an awq-int4 layer is instead read once in
// place (each int32 unpacked in registers, the zero point folded in per
// group: s * (sum x q - z * sum x), OpenMP over `num_threads`). Shared by
// MatMul and GroupedExpertMatMul.
inline constexpr int64_t kQuantizedGemvRows = 4;
void LinearF32(const float* x, int64_t rows, const LinearWeight& w, const void* bias,
               DataType bias_type, float* y, int64_t ldy, int num_threads);

// Rows [n0, n0 + nb) of `w` dequantized to float32 into dst [nb, K] (awq-int4:
// n0 and nb multiples of 8).
void DequantizeRows(const LinearWeight& w, int64_t n0, int64_t nb, float* dst);

}  // namespace epserve::kernels::cpu
