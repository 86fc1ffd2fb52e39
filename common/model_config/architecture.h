// Internal: one ArchitectureDef per supported architecture (llama.cc,
// qwen2.cc, ...), collected by the registry in model_config.cc.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model_config/config_reader.h"
#include "common/model_config/model_description.h"

namespace epserve::model_config {

// How an architecture names its MoE block and routed expert projections in
// the per-expert layout: model.layers.{i}.<block>.experts.{e}.<gate|up|down>.weight
struct ExpertNaming {
  const char* block = "mlp";
  const char* gate = "gate_proj";
  const char* up = "up_proj";
  const char* down = "down_proj";
};

struct ArchitectureDef {
  const char* architecture;  // "Qwen3MoeForCausalLM"
  const char* model_type;    // "qwen3_moe"
  // Reads the architecture's keys. The reader's context (file, architecture)
  // is already set; architecture/model_type/config_file are filled by the caller.
  absl::StatusOr<ModelDescription> (*parse)(const ConfigReader& reader);
  ExpertNaming experts;
};

const ArchitectureDef& LlamaArchitecture();
const ArchitectureDef& Qwen2Architecture();
const ArchitectureDef& Qwen3Architecture();
const ArchitectureDef& MixtralArchitecture();
const ArchitectureDef& Qwen2MoeArchitecture();
const ArchitectureDef& Qwen3MoeArchitecture();
const ArchitectureDef& OlmoeArchitecture();

// All of the above, in registration order.
const std::vector<const ArchitectureDef*>& AllArchitectures();
// By class name; nullptr when unknown.
const ArchitectureDef* FindArchitecture(absl::string_view architecture);

}  // namespace epserve::model_config
