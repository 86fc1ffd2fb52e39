// Which quantized checkpoints can be served. The router checks this before
// any worker starts, the worker again before it loads anything.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "common/model_config/model_description.h"

namespace epserve::checkpoint {

// OK for an unquantized `desc`. Otherwise FAILED_PRECONDITION naming the
// config file, the architecture, the method (with its block or bit width and
// group size) and `backend` ("cpu", "cuda"; only named in the message).
absl::Status CheckQuantizationSupported(const ModelDescription& desc, const std::string& backend);

}  // namespace epserve::checkpoint
