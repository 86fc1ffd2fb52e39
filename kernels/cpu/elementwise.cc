// Elementwise ops: SiLU-and-mul (SwiGLU), Add, sigmoid-gated add (shared expert).
#include <cmath>

#include "kernels/cpu/cpu_backend.h"

namespace epserve::kernels::cpu {
namespace {

inline float Silu(float g) { return g / (1.0f + std::exp(-g)); }
inline float Sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }

}  // namespace

absl::Status CpuBackend::SiluAndMulImpl(const Tensor& gate, const Tensor* up, Tensor* out) {
  const int64_t t = out->shape[0], n = out->shape[1];
  const float* g = gate.data_as<float>();
  // Packed: row r is [gate(n) | up(n)]; separate: two [t, n] tensors.
  const int64_t g_stride = up == nullptr ? 2 * n : n;
  const float* u = up == nullptr ? g + n : up->data_as<float>();
  float* o = out->mutable_data_as<float>();
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (t * n >= (1 << 15))
  for (int64_t r = 0; r < t; ++r) {
    const float* gr = g + r * g_stride;
    const float* ur = u + r * g_stride;
    float* orow = o + r * n;
    for (int64_t i = 0; i < n; ++i) orow[i] = Silu(gr[i]) * ur[i];
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::AddImpl(const Tensor& a, const Tensor& b, Tensor* out) {
  const int64_t n = a.numel();
  const float* as = a.data_as<float>();
  const float* bs = b.data_as<float>();
  float* o = out->mutable_data_as<float>();
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) o[i] = as[i] + bs[i];
  return absl::OkStatus();
}

absl::Status CpuBackend::SigmoidGateMulAddImpl(const Tensor& gate_logit, const Tensor& x,
                                               Tensor* out) {
  const int64_t t = x.shape[0], h = x.shape[1];
  const float* g = gate_logit.data_as<float>();
  const float* xs = x.data_as<float>();
  float* o = out->mutable_data_as<float>();
#pragma omp parallel for num_threads(num_threads_) schedule(static) if (t * h >= (1 << 15))
  for (int64_t r = 0; r < t; ++r) {
    const float s = Sigmoid(g[r]);
    for (int64_t i = 0; i < h; ++i) o[r * h + i] += s * xs[r * h + i];
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
