#include "common/checkpoint/load_format.h"

#include "absl/strings/str_cat.h"

namespace epserve::checkpoint {

absl::StatusOr<LoadFormat> ParseLoadFormat(absl::string_view name) {
  if (name == "auto" || name == "safetensors") return LoadFormat::kSafetensors;
  if (name == "dummy") return LoadFormat::kDummy;
  return absl::InvalidArgumentError(
      absl::StrCat("--load-format: unknown format '", name, "' (accepted: auto, dummy)"));
}

}  // namespace epserve::checkpoint
