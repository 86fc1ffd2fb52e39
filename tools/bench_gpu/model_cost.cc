#include "tools/bench_gpu/model_cost.h"

#include <algorithm>
#include <cmath>

#include "common/checkpoint/dtype_policy.h"
#include "common/model_config/tensor_spec.h"
#include "common/shape.h"

namespace epserve::bench_gpu {

WeightBytes CountWeightBytes(const ModelDescription& desc, DataType weight_dtype) {
  WeightBytes w;
  w.num_moe_layers = desc.num_moe_layers();
  uint64_t routed = 0;
  for (const TensorSpec& spec : ExpectedTensors(desc)) {
    const uint64_t bytes = static_cast<uint64_t>(NumElements(spec.shape)) *
                           DataTypeSize(checkpoint::StorageDtype(spec.role, weight_dtype));
    w.total_held += bytes;
    if (IsRoutedExpertRole(spec.role)) {
      routed += bytes;
    } else if (spec.role == TensorRole::kEmbedding && !desc.tie_word_embeddings) {
      w.embedding += bytes;
    } else {
      // A tied embedding is read whole by the lm_head every step.
      w.every_step += bytes;
    }
  }
  const uint64_t num_experts = static_cast<uint64_t>(desc.moe.num_experts);
  if (num_experts > 0 && w.num_moe_layers > 0) {
    w.per_expert = routed / (num_experts * static_cast<uint64_t>(w.num_moe_layers));
  }
  return w;
}

double ExpectedDistinctExperts(int num_experts, int top_k, int64_t num_tokens) {
  if (num_experts <= 0 || top_k <= 0 || num_tokens <= 0) return 0.0;
  if (num_tokens == 1) return top_k;
  const double e = num_experts;
  return e *
         (1.0 - std::pow(1.0 - static_cast<double>(top_k) / e, static_cast<double>(num_tokens)));
}

DecodeBytes DecodeStepBytes(const ModelDescription& desc, const WeightBytes& weights, int64_t batch,
                            int64_t context, DataType kv_dtype) {
  DecodeBytes b;
  b.weights = static_cast<double>(weights.every_step);
  b.experts = weights.num_moe_layers *
              ExpectedDistinctExperts(desc.moe.num_experts, desc.moe.routing.top_k, batch) *
              static_cast<double>(weights.per_expert);
  b.kv = static_cast<double>(batch) * static_cast<double>(context) * desc.num_layers * 2.0 *
         desc.num_kv_heads * static_cast<double>(desc.head_dim) *
         static_cast<double>(DataTypeSize(kv_dtype));
  return b;
}

PrefillFlops PrefillStepFlops(const ModelDescription& desc, int64_t num_seqs, int64_t prompt_len) {
  double per_token = 0;  // matrix elements a token passes through
  double routed = 0;     // every routed expert's matrix elements
  double lm_head = 0;
  for (const TensorSpec& spec : ExpectedTensors(desc)) {
    const double n = static_cast<double>(NumElements(spec.shape));
    if (IsRoutedExpertRole(spec.role)) {
      routed += n;
    } else if (spec.role == TensorRole::kEmbedding) {
      if (desc.tie_word_embeddings) lm_head = n;
    } else if (spec.role == TensorRole::kLmHead) {
      lm_head = n;
    } else if (spec.shape.size() == 2) {
      per_token += n;  // norms and biases (1-D) are not matrix work
    }
  }
  if (desc.moe.num_experts > 0) per_token += routed / desc.moe.num_experts * desc.moe.routing.top_k;
  const double tokens = static_cast<double>(num_seqs) * static_cast<double>(prompt_len);
  const double pairs = static_cast<double>(num_seqs) * static_cast<double>(prompt_len) *
                       static_cast<double>(prompt_len + 1) / 2.0;
  PrefillFlops f;
  f.linear = 2.0 * tokens * per_token;
  f.lm_head = 2.0 * static_cast<double>(num_seqs) * lm_head;
  f.attention = 4.0 * desc.num_layers * desc.num_heads * static_cast<double>(desc.head_dim) * pairs;
  f.nominal = 2.0 * tokens * static_cast<double>(desc.active_params_per_token()) + f.attention;
  return f;
}

std::vector<GemmShape> PrefillGemmShapes(const ModelDescription& desc, const std::string& config,
                                         int64_t num_tokens) {
  const int64_t h = desc.hidden_size;
  const int64_t q = desc.num_heads * desc.head_dim;
  const int64_t kv = desc.num_kv_heads * desc.head_dim;
  std::vector<GemmShape> shapes = {
      {config + " qkv_proj", num_tokens, q + 2 * kv, h},
      {config + " o_proj", num_tokens, h, q},
  };
  const bool has_dense = std::any_of(desc.layers.begin(), desc.layers.end(),
                                     [](const LayerSpec& l) { return !l.feed_forward.is_moe(); });
  if (has_dense && desc.intermediate_size > 0) {
    shapes.push_back({config + " mlp gate_up", num_tokens, 2 * desc.intermediate_size, h});
    shapes.push_back({config + " mlp down", num_tokens, h, desc.intermediate_size});
  }
  if (desc.is_moe()) {
    const int64_t shared = desc.moe.shared_expert_intermediate_size;
    if (shared > 0) {
      shapes.push_back({config + " shared gate_up", num_tokens, 2 * shared, h});
      shapes.push_back({config + " shared down", num_tokens, h, shared});
    }
    const int64_t rows = std::max<int64_t>(
        1, num_tokens * desc.moe.routing.top_k / std::max(1, desc.moe.num_experts));
    const int64_t inter = desc.moe.moe_intermediate_size;
    shapes.push_back({config + " expert gate_up", rows, 2 * inter, h});
    shapes.push_back({config + " expert down", rows, h, inter});
  }
  return shapes;
}

}  // namespace epserve::bench_gpu
