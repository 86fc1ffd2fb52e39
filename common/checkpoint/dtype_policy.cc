#include "common/checkpoint/dtype_policy.h"

#include "absl/strings/str_cat.h"

namespace epserve::checkpoint {
namespace {

bool IsComputeFloat(DataType t) {
  return t == DataType::kFloat32 || t == DataType::kBFloat16 || t == DataType::kFloat16;
}

constexpr char kAccepted[] = "auto, bfloat16, float16, float32";

}  // namespace

absl::StatusOr<DataType> ResolveWeightDtype(absl::string_view policy,
                                            const ModelDescription& desc,
                                            const std::map<DataType, uint64_t>& checkpoint_bytes) {
  if (policy != "auto") {
    // Accept the spellings people pass to other servers too.
    std::string name(policy);
    if (name == "half" || name == "fp16") name = "float16";
    if (name == "bf16") name = "bfloat16";
    if (name == "float" || name == "fp32") name = "float32";
    absl::StatusOr<DataType> parsed = ParseDataType(name);
    if (!parsed.ok() || !IsComputeFloat(*parsed)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--dtype: unknown dtype '", policy, "' (accepted: ", kAccepted, ")"));
    }
    return *parsed;
  }
  if (desc.dtype.has_value()) {
    if (!IsComputeFloat(*desc.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(
          desc.config_file, ": dtype ", DataTypeName(*desc.dtype),
          " cannot be computed in; pass --dtype (accepted: ", kAccepted, ")"));
    }
    return *desc.dtype;
  }
  DataType best = DataType::kFloat32;
  uint64_t best_bytes = 0;
  for (const auto& [type, bytes] : checkpoint_bytes) {
    if (IsComputeFloat(type) && bytes > best_bytes) {
      best = type;
      best_bytes = bytes;
    }
  }
  return best;
}

bool IsNormRole(TensorRole role) {
  return role == TensorRole::kFinalNorm || role == TensorRole::kInputNorm ||
         role == TensorRole::kPostAttnNorm || role == TensorRole::kQNorm ||
         role == TensorRole::kKNorm;
}

DataType StorageDtype(TensorRole role, DataType weight_dtype) {
  return IsNormRole(role) || role == TensorRole::kRouter ? DataType::kFloat32 : weight_dtype;
}

}  // namespace epserve::checkpoint
