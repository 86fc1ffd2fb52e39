#include "worker/sampling/logprobs.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace epserve::sampling {

int64_t SanitizeLogits(absl::Span<float> logits) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  int64_t num_finite = 0;
  int64_t num_pos_inf = 0;
  for (float& x : logits) {
    if (std::isnan(x)) x = -kInf;
    if (x == kInf) {
      ++num_pos_inf;
    } else if (x != -kInf) {
      ++num_finite;
    }
  }
  if (num_pos_inf == 0) return num_finite;
  for (float& x : logits) x = x == kInf ? 0.0f : -kInf;
  return num_pos_inf;
}

double LogSumExp(absl::Span<const float> logits) {
  float max = -std::numeric_limits<float>::infinity();
  for (float x : logits) max = std::max(max, x);
  if (max == -std::numeric_limits<float>::infinity()) return max;
  double sum = 0.0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  return max + std::log(sum);
}

std::vector<TokenLogprob> TopLogprobs(absl::Span<const float> logits, double log_sum_exp,
                                      size_t n) {
  n = std::min(n, logits.size());
  if (n == 0) return {};
  // "a before b": larger logit first, then lower id.
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  // A heap of the best n so far whose top is the worst of them.
  std::vector<int32_t> heap;
  heap.reserve(n);
  for (int32_t id = 0; id < static_cast<int32_t>(logits.size()); ++id) {
    if (heap.size() < n) {
      heap.push_back(id);
      std::push_heap(heap.begin(), heap.end(), before);
    } else if (before(id, heap.front())) {
      std::pop_heap(heap.begin(), heap.end(), before);
      heap.back() = id;
      std::push_heap(heap.begin(), heap.end(), before);
    }
  }
  std::sort(heap.begin(), heap.end(), before);
  std::vector<TokenLogprob> out;
  out.reserve(n);
  for (int32_t id : heap) {
    const float x = logits[id];
    out.push_back({id, x == -std::numeric_limits<float>::infinity()
                           ? x
                           : static_cast<float>(static_cast<double>(x) - log_sum_exp)});
  }
  return out;
}

}  // namespace epserve::sampling
