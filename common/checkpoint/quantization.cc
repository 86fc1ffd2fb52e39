#include "common/checkpoint/quantization.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model_config/tensor_spec.h"

namespace epserve::checkpoint {
namespace {

constexpr char kSupported[] =
    "supported: unquantized float32, bfloat16, float16; fp8 with weight_block_size [bn, bk], "
    "fmt e4m3, activation_scheme dynamic; awq with bits 4, zero_point true, version gemm";

}  // namespace

absl::Status CheckQuantizationSupported(const ModelDescription& desc, const std::string& backend) {
  const QuantizationParams& q = desc.quantization;
  if (q.method == QuantMethod::kNone) return absl::OkStatus();
  const std::string where = absl::StrCat(desc.config_file, ": ", desc.architecture,
                                         " checkpoint quantized with '", q.method_name, "'");
  auto refuse = [&](const std::string& why) {
    return absl::FailedPreconditionError(absl::StrCat(where, ": ", why, " cannot be served on the ",
                                                      backend, " backend (", kSupported, ")"));
  };
  switch (q.method) {
    case QuantMethod::kFp8:
      if (q.weight_block_size.size() != 2 || q.weight_block_size[0] <= 0 ||
          q.weight_block_size[1] <= 0) {
        return refuse(q.weight_block_size.empty()
                          ? std::string("per-tensor fp8 (no weight_block_size)")
                          : absl::StrCat("weight_block_size [",
                                         absl::StrJoin(q.weight_block_size, ", "), "]"));
      }
      if (q.fp8_format != "e4m3") return refuse(absl::StrCat("fp8 fmt '", q.fp8_format, "'"));
      if (q.activation_scheme != "dynamic") {
        return refuse(
            absl::StrCat("activation_scheme '", q.activation_scheme, "' (static input scales)"));
      }
      break;
    case QuantMethod::kAwq:
      if (q.bits != 4) return refuse(absl::StrCat(q.bits, "-bit awq"));
      if (!q.zero_point) return refuse("awq without zero_point");
      if (q.version != "gemm") return refuse(absl::StrCat("awq version '", q.version, "'"));
      if (q.group_size <= 0) return refuse(absl::StrCat("awq group_size ", q.group_size));
      break;
    case QuantMethod::kGptq:
      return refuse(absl::StrCat(q.bits, "-bit gptq, group size ", q.group_size,
                                 q.desc_act ? ", act-order" : ""));
    default:
      return refuse("this method");
  }
  if (backend.rfind("cuda", 0) == 0) {
    return refuse(
        "a quantized checkpoint (the CUDA backend has no fp8-block or awq-int4 kernels "
        "yet; run it with --device cpu)");
  }
  // Every quantized layer's shape must fit its format.
  for (const TensorSpec& spec : ExpectedTensors(desc)) {
    if (spec.part != LinearPart::kWeight || spec.linear.format != WeightFormat::kAwqInt4) continue;
    const int64_t n = spec.linear.out_features, k = spec.linear.in_features;
    if (n % 8 != 0 || k % q.group_size != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(where, ": layer ", spec.name, " (", n, " x ", k,
                       ") does not fit awq-int4 with group size ", q.group_size,
                       ": its output features must be a multiple of 8 and its input features a "
                       "multiple of the group size"));
    }
  }
  return absl::OkStatus();
}

}  // namespace epserve::checkpoint
