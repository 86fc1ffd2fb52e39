// MatMul (nn.Linear) through OpenBLAS. bf16/fp16 weights are widened per call,
// a panel of weight rows at a time, into thread-local scratch: no fp32 copy of
// the weights is kept (measured in docs/kernels.md).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_util.h"

namespace epserve::kernels::cpu {
namespace {

// Rows of w widened per panel: about 2 MiB of fp32, at least 16 rows.
int64_t PanelRows(int64_t k) { return std::max<int64_t>(16, (int64_t{1} << 19) / std::max<int64_t>(k, 1)); }

}  // namespace

void LinearF32(const float* x, int64_t rows, int64_t k, const void* w, DataType w_type,
               int64_t n, const void* bias, DataType bias_type, float* y, int64_t ldy) {
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
  if (w_type == DataType::kFloat32) {
    const float beta = fill_bias(0, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(n), static_cast<int>(k), 1.0f, x, static_cast<int>(k),
                static_cast<const float*>(w), static_cast<int>(k), beta, y,
                static_cast<int>(ldy));
    return;
  }
  const int64_t panel = std::min(n, PanelRows(k));
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(panel * k));
  const size_t elem = DataTypeSize(w_type);
  for (int64_t n0 = 0; n0 < n; n0 += panel) {
    const int64_t nb = std::min(panel, n - n0);
    const char* src = static_cast<const char*>(w) + static_cast<size_t>(n0 * k) * elem;
    float* dst = scratch.data();
    // Widened on the calling thread: an OpenMP region between two OpenBLAS
    // calls makes the two thread pools spin against each other (10x slower
    // on 2 cores, measured).
    WidenToF32(src, w_type, nb * k, dst);
    const float beta = fill_bias(n0, nb);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(nb), static_cast<int>(k), 1.0f, x, static_cast<int>(k), dst,
                static_cast<int>(k), beta, y + n0, static_cast<int>(ldy));
  }
}

bool CpuBackend::Supports(LinearOp /*op*/, WeightFormat format) const {
  switch (format) {
    case WeightFormat::kUnquantized:
      return true;
  }
  return false;
}

absl::Status CpuBackend::MatMulImpl(const Tensor& x, const LinearWeight& linear, const Tensor& bias,
                                    Tensor* y) {
  const Tensor& w = linear.weight;  // unquantized [N, K] (Supports)
  LinearF32(x.data_as<float>(), x.shape[0], x.shape[1], w.data(), w.dtype, w.shape[0],
            bias.defined() ? bias.data() : nullptr, bias.dtype, y->mutable_data_as<float>(),
            w.shape[0]);
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
