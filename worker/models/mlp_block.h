// The dense SwiGLU MLP: out = down(silu(gate(x)) * up(x)). Also the shape of
// every expert, and of Qwen2-MoE's shared expert.
#pragma once

#include "absl/status/status.h"
#include "kernels/ops.h"
#include "worker/models/model_tensors.h"

namespace epserve::models {

absl::Status DenseMlpForward(kernels::Backend& backend, const MlpWeights& w,
                             const kernels::Tensor& x,  // [T, H]
                             kernels::Tensor* out);     // [T, H]

}  // namespace epserve::models
