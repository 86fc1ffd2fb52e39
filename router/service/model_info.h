// What the router tells clients about the served model: config.json through
// the architecture registry (so an unsupported or malformed config fails the
// router at start), and generation_config.json for EOS ids.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "epserve/v1/epserve.pb.h"

namespace epserve::router {

// Reads DIR/config.json. `weight_dtype` is what the workers run in. Errors
// name the file and the offending key.
absl::StatusOr<v1::GetModelInfoResponse> ReadModelInfo(const std::string& model_dir,
                                                       absl::string_view weight_dtype);

}  // namespace epserve::router
