#include "common/model_config/model_description.h"

#include "common/model_config/tensor_spec.h"
#include "common/shape.h"

namespace epserve {

const char* LayerKindName(LayerKind kind) {
  switch (kind) {
    case LayerKind::kDense:
      return "dense";
    case LayerKind::kMoe:
      return "moe";
  }
  return "?";
}

const char* QkNormKindName(QkNormKind kind) {
  switch (kind) {
    case QkNormKind::kNone:
      return "none";
    case QkNormKind::kPerHead:
      return "per_head";
    case QkNormKind::kFull:
      return "full";
  }
  return "?";
}

const char* AttentionKindName(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::kGqa:
      return "gqa";
    case AttentionKind::kMla:
      return "mla";
  }
  return "?";
}

const char* FeedForwardKindName(FeedForwardKind kind) {
  switch (kind) {
    case FeedForwardKind::kDense:
      return "dense";
    case FeedForwardKind::kMoe:
      return "moe";
    case FeedForwardKind::kMoeShared:
      return "moe_shared";
  }
  return "?";
}

const char* QuantMethodName(QuantMethod m) {
  switch (m) {
    case QuantMethod::kNone:
      return "none";
    case QuantMethod::kFp8:
      return "fp8";
    case QuantMethod::kAwq:
      return "awq";
    case QuantMethod::kGptq:
      return "gptq";
    case QuantMethod::kOther:
      return "other";
  }
  return "?";
}

std::vector<LayerKind> ModelDescription::layer_kinds() const {
  std::vector<LayerKind> kinds;
  kinds.reserve(layers.size());
  for (const LayerSpec& l : layers) kinds.push_back(l.feed_forward.layer_kind());
  return kinds;
}

int ModelDescription::num_moe_layers() const {
  int n = 0;
  for (const LayerSpec& l : layers) n += l.feed_forward.is_moe() ? 1 : 0;
  return n;
}

int64_t ModelDescription::total_params() const {
  int64_t total = 0;
  for (const TensorSpec& t : ExpectedTensors(*this)) total += NumElements(t.shape);
  return total;
}

int64_t ModelDescription::active_params_per_token() const {
  // Experts of one layer have equal shapes, so top_k of them weigh
  // top_k / num_experts of the layer's routed-expert parameters.
  int64_t active = 0;
  int64_t routed = 0;
  for (const TensorSpec& t : ExpectedTensors(*this)) {
    if (IsRoutedExpertRole(t.role)) {
      routed += NumElements(t.shape);
    } else {
      active += NumElements(t.shape);
    }
  }
  if (moe.num_experts > 0) active += routed / moe.num_experts * moe.routing.top_k;
  return active;
}

}  // namespace epserve
