// config.json -> ModelDescription, through a registry of architectures keyed on
// `architectures[0]` (`model_type` when `architectures` is absent or empty).
// Each architecture reads exactly the keys it needs, with explicit defaults; a
// dense architecture never reads a MoE key. Both transformers v4 spellings
// (rope_theta + rope_scaling, torch_dtype) and v5 ones (rope_parameters, dtype)
// are accepted. Every error names the file, the architecture and the key.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config/model_description.h"
#include "nlohmann/json.hpp"

namespace epserve {

// Reads `model_dir`/config.json and parses it.
absl::StatusOr<ModelDescription> LoadModelConfig(const std::string& model_dir);

// Parses an already-read config. `file_name` only appears in error messages
// and in ModelDescription::config_file.
absl::StatusOr<ModelDescription> ParseModelConfig(const nlohmann::json& config,
                                                  const std::string& file_name);

// The registered architecture class names, in registration order.
std::vector<std::string> SupportedArchitectures();

}  // namespace epserve
