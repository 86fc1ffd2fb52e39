#include "common/model_config/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model_config/architecture.h"
#include "common/model_config/config_reader.h"
#include "common/status.h"

namespace epserve {
namespace model_config {

const std::vector<const ArchitectureDef*>& AllArchitectures() {
  static const std::vector<const ArchitectureDef*> all = {
      &LlamaArchitecture(),   &Qwen2Architecture(),    &Qwen3Architecture(),
      &MixtralArchitecture(), &Qwen2MoeArchitecture(), &Qwen3MoeArchitecture(),
      &OlmoeArchitecture(),
  };
  return all;
}

const ArchitectureDef* FindArchitecture(absl::string_view architecture) {
  for (const ArchitectureDef* def : AllArchitectures()) {
    if (architecture == def->architecture) return def;
  }
  return nullptr;
}

namespace {

const ArchitectureDef* FindByModelType(absl::string_view model_type) {
  for (const ArchitectureDef* def : AllArchitectures()) {
    if (model_type == def->model_type) return def;
  }
  return nullptr;
}

absl::Status UnsupportedArchitecture(const std::string& file, absl::string_view what,
                                     absl::string_view name) {
  return absl::UnimplementedError(
      absl::StrCat(file, ": unsupported ", what, " '", name,
                   "' (supported: ", absl::StrJoin(SupportedArchitectures(), ", "), ")"));
}

}  // namespace
}  // namespace model_config

std::vector<std::string> SupportedArchitectures() {
  std::vector<std::string> names;
  for (const model_config::ArchitectureDef* def : model_config::AllArchitectures()) {
    names.push_back(def->architecture);
  }
  return names;
}

absl::StatusOr<ModelDescription> ParseModelConfig(const nlohmann::json& config,
                                                  const std::string& file_name) {
  using model_config::ArchitectureDef;
  using model_config::ConfigReader;
  if (!config.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_name, ": expected a JSON object (found ", config.type_name(), ")"));
  }
  // Before an architecture is known, errors name the config as a whole.
  ConfigReader top(config, file_name, "config");
  ASSIGN_OR_RETURN(std::string model_type, top.String("model_type", ""));
  const ArchitectureDef* def = nullptr;
  std::string architecture;
  const nlohmann::json* archs = top.Find("architectures");
  if (archs != nullptr && !archs->is_array()) {
    return top.WrongType("architectures", *archs, "a list of strings");
  }
  if (archs != nullptr && !archs->empty()) {
    if (!(*archs)[0].is_string()) {
      return top.WrongType("architectures", (*archs)[0], "a list of strings");
    }
    architecture = (*archs)[0].get<std::string>();
    def = model_config::FindArchitecture(architecture);
    if (def == nullptr) {
      return model_config::UnsupportedArchitecture(file_name, "architecture", architecture);
    }
  } else if (!model_type.empty()) {
    def = model_config::FindByModelType(model_type);
    if (def == nullptr) {
      return model_config::UnsupportedArchitecture(file_name, "model_type", model_type);
    }
    architecture = def->architecture;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(file_name, ": names neither 'architectures' nor 'model_type' (supported: ",
                     absl::StrJoin(SupportedArchitectures(), ", "), ")"));
  }

  ConfigReader reader(config, file_name, architecture);
  ASSIGN_OR_RETURN(ModelDescription desc, def->parse(reader));
  desc.architecture = architecture;
  desc.model_type = model_type.empty() ? def->model_type : model_type;
  desc.config_file = file_name;
  return desc;
}

absl::StatusOr<ModelDescription> LoadModelConfig(const std::string& model_dir) {
  const std::string path = absl::StrCat(model_dir, "/config.json");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json config = nlohmann::json::parse(text.str(), /*cb=*/nullptr,
                                                /*allow_exceptions=*/false);
  if (config.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  return ParseModelConfig(config, path);
}

}  // namespace epserve
