#include "worker/models/mlp_block.h"

#include "common/status.h"

namespace epserve::models {

absl::Status DenseMlpForward(kernels::Backend& backend, const MlpWeights& w,
                             const kernels::Tensor& x, kernels::Tensor* out) {
  const int64_t t = x.shape[0];
  const int64_t width = w.gate_proj.out_features();
  ASSIGN_OR_RETURN(kernels::Tensor gate, backend.Empty(DataType::kFloat32, {t, width}));
  ASSIGN_OR_RETURN(kernels::Tensor up, backend.Empty(DataType::kFloat32, {t, width}));
  RETURN_IF_ERROR(backend.MatMul(x, w.gate_proj, /*bias=*/{}, &gate));
  RETURN_IF_ERROR(backend.MatMul(x, w.up_proj, /*bias=*/{}, &up));
  RETURN_IF_ERROR(backend.SiluAndMul(gate, up, &gate));
  return backend.MatMul(gate, w.down_proj, /*bias=*/{}, out);
}

}  // namespace epserve::models
