// Which dtype the weights are kept in (--dtype auto|bfloat16|float16|float32).
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"
#include "common/model_config/model_description.h"
#include "common/model_config/tensor_spec.h"

namespace epserve::checkpoint {

// `policy` "auto" takes config.json's torch_dtype / dtype; without one, the
// floating dtype holding the most checkpoint bytes (`checkpoint_bytes`, by
// dtype; may be empty, e.g. for dummy weights); without either, float32.
// Other values name the dtype. Unknown values, and non-floating dtypes, are an
// error listing the accepted ones.
absl::StatusOr<DataType> ResolveWeightDtype(absl::string_view policy,
                                            const ModelDescription& desc,
                                            const std::map<DataType, uint64_t>& checkpoint_bytes);

// RMSNorm weights: final, input, post-attention, q and k norms.
bool IsNormRole(TensorRole role);

// The dtype a tensor of `role` is stored in when the model runs in
// `weight_dtype`: norm weights and router (gate) weights are kept in float32
// (routing and normalisation math is done in float32); everything else in
// `weight_dtype`.
DataType StorageDtype(TensorRole role, DataType weight_dtype);

}  // namespace epserve::checkpoint
