// Rotary embeddings in place. Matches transformers' float32 math: the angle
// is float(position) * inv_freq[i] rounded to float, cos/sin of that angle
// rounded to float, then multiplied by the attention factor (yarn).
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

namespace epserve::kernels::cpu {
namespace {

// Rotates every D-wide head of row x[0:width] by (cos, sin)[0:D/2].
void RotateRow(float* x, int64_t width, int64_t d, const float* cos, const float* sin,
               RopeLayout layout) {
  const int64_t half = d / 2;
  for (int64_t h0 = 0; h0 < width; h0 += d) {
    float* head = x + h0;
    if (layout == RopeLayout::kNeox) {
      for (int64_t i = 0; i < half; ++i) {
        const float a = head[i], b = head[i + half];
        head[i] = a * cos[i] - b * sin[i];
        head[i + half] = b * cos[i] + a * sin[i];
      }
    } else {
      for (int64_t i = 0; i < half; ++i) {
        const float a = head[2 * i], b = head[2 * i + 1];
        head[2 * i] = a * cos[i] - b * sin[i];
        head[2 * i + 1] = b * cos[i] + a * sin[i];
      }
    }
  }
}

}  // namespace

absl::Status CpuBackend::RopeImpl(const RopeFrequencies& freqs, RopeLayout layout,
                                  int64_t head_dim, const Tensor& positions, Tensor* q,
                                  Tensor* k) {
  const int64_t t = positions.shape[0];
  const int32_t* pos = positions.data_as<int32_t>();
  for (int64_t i = 0; i < t; ++i) {
    if (pos[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("Rope: positions[", i, "] = ", pos[i], " is negative"));
    }
  }
  const int64_t half = head_dim / 2;
  const int64_t q_width = q->shape[1], k_width = k->shape[1];
  float* qs = q->mutable_data_as<float>();
  float* ks = k->mutable_data_as<float>();
  const float* inv = freqs.inv_freq.data();
  const float attn = freqs.attention_factor;
#pragma omp parallel num_threads(num_threads_) if (t * (q_width + k_width) >= (1 << 14))
  {
    std::vector<float> cos(half), sin(half);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < t; ++r) {
      const float p = static_cast<float>(pos[r]);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = p * inv[i];
        cos[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attn;
        sin[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attn;
      }
      RotateRow(qs + r * q_width, q_width, head_dim, cos.data(), sin.data(), layout);
      RotateRow(ks + r * k_width, k_width, head_dim, cos.data(), sin.data(), layout);
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
