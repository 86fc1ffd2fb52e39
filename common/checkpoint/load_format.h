// Where a worker's weights come from (--load-format).
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve::checkpoint {

enum class LoadFormat {
  kSafetensors,  // "auto": read the checkpoint
  kDummy,        // random values at the real shapes, from config.json alone
};

// "auto" (or "safetensors") | "dummy"; anything else is INVALID_ARGUMENT
// listing the accepted names.
absl::StatusOr<LoadFormat> ParseLoadFormat(absl::string_view name);

}  // namespace epserve::checkpoint
