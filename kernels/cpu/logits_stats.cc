// Row statistics of logits (LogitsArgmax, LogitsTopN): the reference for the
// device sampling path. NaN counts as -inf.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace epserve::kernels::cpu {
namespace {

inline float Clean(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }

}  // namespace

absl::Status CpuBackend::LogitsArgmaxImpl(const Tensor& logits, Tensor* argmax, Tensor* row_max,
                                          Tensor* logsumexp) {
  const int64_t r = logits.shape[0], v = logits.shape[1];
  const float* x = logits.data_as<float>();
  int32_t* ids = argmax->mutable_data_as<int32_t>();
  float* mx = row_max->mutable_data_as<float>();
  float* lse = logsumexp->mutable_data_as<float>();
#pragma omp parallel for num_threads(num_threads_) if (r > 1)
  for (int64_t i = 0; i < r; ++i) {
    const float* row = x + i * v;
    int32_t best = 0;
    float best_v = Clean(row[0]);
    for (int64_t j = 1; j < v; ++j) {
      const float c = Clean(row[j]);
      if (c > best_v) {
        best_v = c;
        best = static_cast<int32_t>(j);
      }
    }
    ids[i] = best;
    mx[i] = best_v;
    if (!std::isfinite(best_v)) {
      lse[i] = best_v;
      continue;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < v; ++j) sum += std::exp(static_cast<double>(Clean(row[j])) - best_v);
    lse[i] = static_cast<float>(best_v + std::log(sum));
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::LogitsTopNImpl(const Tensor& logits, int64_t n, Tensor* ids,
                                        Tensor* values) {
  const int64_t r = logits.shape[0], v = logits.shape[1];
  const float* x = logits.data_as<float>();
  int32_t* out_ids = ids->mutable_data_as<int32_t>();
  float* out_values = values->mutable_data_as<float>();
#pragma omp parallel for num_threads(num_threads_) if (r > 1)
  for (int64_t i = 0; i < r; ++i) {
    const float* row = x + i * v;
    std::vector<int32_t> order(static_cast<size_t>(v));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + n, order.end(), [&](int32_t a, int32_t b) {
      const float ca = Clean(row[a]), cb = Clean(row[b]);
      return ca != cb ? ca > cb : a < b;
    });
    for (int64_t j = 0; j < n; ++j) {
      out_ids[i * n + j] = order[j];
      out_values[i * n + j] = Clean(row[order[j]]);
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
