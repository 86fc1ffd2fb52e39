// RMSNorm as transformers computes it in float32:
//   y = w * (x * rsqrt(mean(x^2) + eps))
// The mean of squares is accumulated in double (at least as accurate as
// torch's float32 reduction); the scaling is float32 in HF's order.
#include <cmath>

#include "kernels/cpu/cpu_backend.h"

namespace epserve::kernels::cpu {
namespace {

// y[0:n] = w * (x * rsqrt(mean(x^2) + eps)); y may alias x.
inline void NormRow(const float* x, const float* w, int64_t n, float eps, float* y) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(mean + eps)));
  for (int64_t i = 0; i < n; ++i) y[i] = w[i] * (x[i] * inv);
}

}  // namespace

absl::Status CpuBackend::RmsNormImpl(const Tensor& x, Tensor* residual, const Tensor& w,
                                     float eps, Tensor* y) {
  const int64_t t = x.shape[0], h = x.shape[1];
  if (h == 0) return absl::OkStatus();
  const float* xs = x.data_as<float>();
  const float* ws = w.data_as<float>();
  float* ys = y->mutable_data_as<float>();
  float* rs = residual != nullptr ? residual->mutable_data_as<float>() : nullptr;
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (t * h >= (1 << 14))
  for (int64_t r = 0; r < t; ++r) {
    const float* xr = xs + r * h;
    if (rs != nullptr) {
      float* rr = rs + r * h;
      for (int64_t i = 0; i < h; ++i) rr[i] += xr[i];
      NormRow(rr, ws, h, eps, ys + r * h);
    } else {
      NormRow(xr, ws, h, eps, ys + r * h);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::HeadRmsNormImpl(Tensor* x, const Tensor& w, float eps) {
  const int64_t d = w.shape[0];
  const int64_t rows = x->shape[0] * (x->shape[1] / d);  // (token, head) pairs
  float* xs = x->mutable_data_as<float>();
  const float* ws = w.data_as<float>();
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (rows * d >= (1 << 14))
  for (int64_t r = 0; r < rows; ++r) NormRow(xs + r * d, ws, d, eps, xs + r * d);
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
