// What the router knows of the served model without loading weights: a
// summary of config.json (and generation_config.json for EOS ids).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "epserve/v1/epserve.pb.h"

namespace epserve::router {

// Reads DIR/config.json. Errors name the file and the offending key.
absl::StatusOr<v1::GetModelInfoResponse> ReadModelInfo(const std::string& model_dir);

}  // namespace epserve::router
