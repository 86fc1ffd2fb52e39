#include "common/checkpoint/quantization.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace epserve::checkpoint {

absl::Status CheckQuantizationSupported(const ModelDescription& desc, const std::string& backend) {
  const QuantizationParams& q = desc.quantization;
  if (q.method == QuantMethod::kNone) return absl::OkStatus();
  std::string detail;
  if (q.method == QuantMethod::kFp8 && !q.weight_block_size.empty()) {
    detail = absl::StrCat(", block ", absl::StrJoin(q.weight_block_size, "x"));
  }
  if (q.bits > 0) detail = absl::StrCat(", ", q.bits, "-bit, group size ", q.group_size);
  return absl::FailedPreconditionError(absl::StrCat(
      desc.config_file, ": ", desc.architecture, " checkpoint quantized with '", q.method_name, "'",
      detail, "; ", QuantMethodName(q.method), " weights are not yet supported on the ", backend,
      " backend (supported: unquantized float32, bfloat16, float16)"));
}

}  // namespace epserve::checkpoint
