// Small configs of each supported architecture, as config.json would hold them.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/model_config/model_description.h"
#include "nlohmann/json.hpp"

namespace epserve::testing {

// A minimal valid config of `architecture` (one of SupportedArchitectures()):
// 4 layers, hidden 64, 4 heads / 2 kv heads of 16, vocab 128; MoE ones 8 experts, top-2.
nlohmann::json SmallConfig(const std::string& architecture);

// ParseModelConfig(config, "/m/config.json").
absl::StatusOr<ModelDescription> Parse(const nlohmann::json& config);

// The error message of Parse(config), or "OK".
std::string ErrorOf(const nlohmann::json& config);

}  // namespace epserve::testing
