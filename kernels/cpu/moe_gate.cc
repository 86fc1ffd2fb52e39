// MoE router (RoutingParams as every backend runs it: softmax scoring, no
// correction bias, no groups, scaling 1): softmax over experts in fp32, top-k,
// optional renormalisation.
//
// Non-finite logits (the rule stated in ops.h):
//   NaN  -> treated as -inf (never preferred over a number);
//   +inf -> the +inf experts share the probability mass equally;
//   all -inf / NaN -> uniform over all experts.
// Ties in probability go to the lower expert id. Hence ids are always k
// distinct experts and weights finite, in [0, 1].
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace epserve::kernels::cpu {
namespace {

// probs[0:e] from logits[0:e] under the rule above.
void RouterSoftmax(const float* logits, int64_t e, float* probs) {
  int64_t num_pos_inf = 0;
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < e; ++i) {
    const float x = logits[i];
    if (std::isnan(x)) continue;
    if (x == std::numeric_limits<float>::infinity()) ++num_pos_inf;
    mx = std::max(mx, x);
  }
  if (num_pos_inf > 0) {
    const float share = 1.0f / static_cast<float>(num_pos_inf);
    for (int64_t i = 0; i < e; ++i) {
      probs[i] = logits[i] == std::numeric_limits<float>::infinity() ? share : 0.0f;
    }
    return;
  }
  if (mx == -std::numeric_limits<float>::infinity()) {  // all -inf or NaN
    std::fill(probs, probs + e, 1.0f / static_cast<float>(e));
    return;
  }
  float sum = 0.0f;
  for (int64_t i = 0; i < e; ++i) {
    const float x = logits[i];
    probs[i] = std::isnan(x) ? 0.0f : std::exp(x - mx);
    sum += probs[i];
  }
  for (int64_t i = 0; i < e; ++i) probs[i] /= sum;  // sum >= 1 (the max term is 1)
}

}  // namespace

absl::Status CpuBackend::MoeGateImpl(const Tensor& router_logits, const RoutingParams& routing,
                                     Tensor* topk_ids, Tensor* topk_weights) {
  const int64_t t = router_logits.shape[0], e = router_logits.shape[1];
  const int64_t top_k = routing.top_k;
  const bool renormalize = routing.renormalize;
  const float* logits = router_logits.data_as<float>();
  int32_t* ids = topk_ids->mutable_data_as<int32_t>();
  float* weights = topk_weights->mutable_data_as<float>();
#pragma omp parallel num_threads(num_threads_) if (t * e >= (1 << 14))
  {
    std::vector<float> probs(e);
    std::vector<int32_t> order(e);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < t; ++r) {
      RouterSoftmax(logits + r * e, e, probs.data());
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                        [&](int32_t a, int32_t b) {
                          return probs[a] != probs[b] ? probs[a] > probs[b] : a < b;
                        });
      float sum = 0.0f;
      for (int64_t j = 0; j < top_k; ++j) sum += probs[order[j]];
      for (int64_t j = 0; j < top_k; ++j) {
        ids[r * top_k + j] = order[j];
        // sum > 0: the most probable expert has probability >= 1/E.
        weights[r * top_k + j] = renormalize ? probs[order[j]] / sum : probs[order[j]];
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cpu
