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

const char* RopeTypeName(RopeType type) {
  switch (type) {
    case RopeType::kDefault:
      return "default";
    case RopeType::kLinear:
      return "linear";
    case RopeType::kLlama3:
      return "llama3";
    case RopeType::kYarn:
      return "yarn";
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

int ModelDescription::num_moe_layers() const {
  int n = 0;
  for (LayerKind k : layer_kinds) n += k == LayerKind::kMoe ? 1 : 0;
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
  if (moe.num_experts > 0) active += routed / moe.num_experts * moe.top_k;
  return active;
}

}  // namespace epserve
