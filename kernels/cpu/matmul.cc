// MatMul (nn.Linear) through OpenBLAS. bf16/fp16 and quantized (fp8-block,
// awq-int4) weights are widened / dequantized per call, a panel of weight rows
// at a time, into thread-local scratch: no fp32 copy of the weights is kept
// (measured in docs/kernels.md).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <vector>

#include "common/dtype_convert.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_util.h"

namespace epserve::kernels::cpu {
namespace {

// Rows of w widened per panel: about 2 MiB of fp32, at least 16 rows.
int64_t PanelRows(int64_t k) { return std::max<int64_t>(16, (int64_t{1} << 19) / std::max<int64_t>(k, 1)); }

}  // namespace

void DequantizeRows(const LinearWeight& w, int64_t n0, int64_t nb, float* dst) {
  const int64_t k = w.in_features();
  switch (w.format) {
    case WeightFormat::kUnquantized: {
      const size_t elem = DataTypeSize(w.weight.dtype);
      const char* src =
          static_cast<const char*>(w.weight.data()) + static_cast<size_t>(n0 * k) * elem;
      WidenToF32(src, w.weight.dtype, nb * k, dst);
      return;
    }
    case WeightFormat::kFp8Block: {
      static const std::array<float, 256> kFp8 = [] {
        std::array<float, 256> t{};
        for (int b = 0; b < 256; ++b)
          t[static_cast<size_t>(b)] = Fp8E4M3ToFp32(static_cast<uint8_t>(b));
        return t;
      }();
      const int64_t bn = w.block_shape[0], bk = w.block_shape[1];
      const int64_t scale_cols = (k + bk - 1) / bk;
      const uint8_t* q = w.weight.data_as<uint8_t>();
      const float* scales = w.scales.data_as<float>();
      for (int64_t r = 0; r < nb; ++r) {
        const uint8_t* row = q + (n0 + r) * k;
        const float* srow = scales + ((n0 + r) / bn) * scale_cols;
        float* out = dst + r * k;
        for (int64_t c0 = 0; c0 < k; c0 += bk) {
          const float s = srow[c0 / bk];
          const int64_t c1 = std::min(k, c0 + bk);
          for (int64_t c = c0; c < c1; ++c) out[c] = kFp8[row[c]] * s;
        }
      }
      return;
    }
    case WeightFormat::kAwqInt4: {
      // Output feature 8j + i sits at nibble kOrder[i] of word j.
      static constexpr int kOrder[8] = {0, 4, 1, 5, 2, 6, 3, 7};
      const int64_t n = w.out_features(), words = n / 8, g = w.group_size;
      const int32_t* qweight = w.weight.data_as<int32_t>();
      const int32_t* qzeros = w.zero_points.data_as<int32_t>();
      const int64_t j0 = n0 / 8, j1 = (n0 + nb) / 8;
      for (int64_t c = 0; c < k; ++c) {
        const int64_t group = c / g;
        const int32_t* qrow = qweight + c * words;
        const int32_t* zrow = qzeros + group * words;
        for (int64_t j = j0; j < j1; ++j) {
          const uint32_t qw = static_cast<uint32_t>(qrow[j]), zw = static_cast<uint32_t>(zrow[j]);
          for (int i = 0; i < 8; ++i) {
            const int shift = 4 * kOrder[i];
            const int v =
                static_cast<int>((qw >> shift) & 15u) - static_cast<int>((zw >> shift) & 15u);
            const int64_t col = 8 * j + i;
            const float s = LoadF32(w.scales.data(), w.scales.dtype, group * n + col);
            dst[(col - n0) * k + c] = static_cast<float>(v) * s;
          }
        }
      }
      return;
    }
  }
}

void LinearF32(const float* x, int64_t rows, const LinearWeight& w, const void* bias,
               DataType bias_type, float* y, int64_t ldy) {
  const int64_t n = w.out_features(), k = w.in_features();
  if (rows == 0 || n == 0) return;
  auto fill_bias = [&](int64_t n0, int64_t nb) {
    if (bias == nullptr) return 0.0f;
    for (int64_t t = 0; t < rows; ++t) {
      float* yr = y + t * ldy + n0;
      for (int64_t j = 0; j < nb; ++j) yr[j] = LoadF32(bias, bias_type, n0 + j);
    }
    return 1.0f;  // beta: accumulate onto the bias
  };
  if (k == 0) {
    for (int64_t t = 0; t < rows; ++t) std::fill(y + t * ldy, y + t * ldy + n, 0.0f);
    fill_bias(0, n);
    return;
  }
  if (w.format == WeightFormat::kUnquantized && w.weight.dtype == DataType::kFloat32) {
    const float beta = fill_bias(0, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(n), static_cast<int>(k), 1.0f, x, static_cast<int>(k),
                w.weight.data_as<float>(), static_cast<int>(k), beta, y, static_cast<int>(ldy));
    return;
  }
  int64_t panel = std::min(n, PanelRows(k));
  if (w.format == WeightFormat::kAwqInt4) panel = std::max<int64_t>(8, panel / 8 * 8);
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(panel * k));
  for (int64_t n0 = 0; n0 < n; n0 += panel) {
    const int64_t nb = std::min(panel, n - n0);
    float* dst = scratch.data();
    // Dequantized on the calling thread: an OpenMP region between two
    // OpenBLAS calls makes the two thread pools spin against each other (10x
    // slower on 2 cores, measured).
    DequantizeRows(w, n0, nb, dst);
    const float beta = fill_bias(n0, nb);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(nb), static_cast<int>(k), 1.0f, x, static_cast<int>(k), dst,
                static_cast<int>(k), beta, y + n0, static_cast<int>(ldy));
  }
}

bool CpuBackend::Supports(LinearOp /*op*/, WeightFormat format) const {
  switch (format) {
    case WeightFormat::kUnquantized:
    case WeightFormat::kFp8Block:
    case WeightFormat::kAwqInt4:
      return true;
  }
  return false;
}

absl::Status CpuBackend::MatMulImpl(const Tensor& x, const LinearWeight& linear, const Tensor& bias,
                                    Tensor* y) {
  LinearF32(x.data_as<float>(), x.shape[0], linear, bias.defined() ? bias.data() : nullptr,
            bias.dtype, y->mutable_data_as<float>(), linear.out_features());
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
