#include "common/model_config/model_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

namespace {

// Weights of more than this many bytes are refused while parsing (no machine
// holds them; their sizes would overflow the loaders' arithmetic).
constexpr long double kMaxWeightBytes = 1125899906842624.0L;  // 1 PiB

// An upper bound of the weight bytes the sizes imply (every layer counted
// with each kind of feed-forward it may have, 2 bytes per parameter), in
// long double so that absurd values cannot overflow; the error names the
// key whose term is the largest.
absl::Status CheckImpliedWeightBytes(const model_config::ConfigReader& r,
                                     const ModelDescription& d) {
  using L = long double;
  const L layers = d.num_layers, hidden = static_cast<L>(d.hidden_size);
  // Each term names the config keys that make it up, so that the error
  // points at whichever of them is absurd.
  struct Term {
    const char* key;
    int64_t value;
    std::string others;  // the other factors, by key
    L bytes;
  };
  const char* experts_key = r.Has("num_local_experts") ? "num_local_experts" : "num_experts";
  const char* expert_width_key =
      r.Has("moe_intermediate_size") ? "moe_intermediate_size" : "intermediate_size";
  const Term terms[] = {
      {"vocab_size", d.vocab_size, "",
       2 * static_cast<L>(d.vocab_size) * hidden * (d.tie_word_embeddings ? 1 : 2)},
      {"num_hidden_layers", d.num_layers,
       absl::StrCat(", head_dim ", d.head_dim, ", num_attention_heads ", d.num_heads,
                    ", num_key_value_heads ", d.num_kv_heads),
       2 * layers * hidden * static_cast<L>(d.head_dim) *
           (2.0L * d.num_heads + 2.0L * d.num_kv_heads)},
      {"intermediate_size", d.intermediate_size, "",
       2 * layers * 3 * hidden * static_cast<L>(d.intermediate_size)},
      {experts_key, d.moe.num_experts,
       absl::StrCat(", ", expert_width_key, " ", d.moe.moe_intermediate_size),
       2 * layers * 3 * hidden * static_cast<L>(d.moe.num_experts) *
           static_cast<L>(d.moe.moe_intermediate_size)},
      {"shared_expert_intermediate_size", d.moe.shared_expert_intermediate_size, "",
       2 * layers * 3 * hidden * static_cast<L>(d.moe.shared_expert_intermediate_size)},
  };
  L total = 0;
  const Term* largest = &terms[0];
  for (const Term& t : terms) {
    total += t.bytes;
    if (t.bytes > largest->bytes) largest = &t;
  }
  if (total <= kMaxWeightBytes) return absl::OkStatus();
  return r.Invalid(
      largest->key,
      absl::StrCat("(", largest->value, ")", largest->others, " with hidden_size ", d.hidden_size,
                   " and num_hidden_layers ", d.num_layers, " implies ",
                   absl::StrFormat("%.3g", static_cast<double>(largest->bytes)),
                   " bytes of weights (", absl::StrFormat("%.3g", static_cast<double>(total)),
                   " in all), more than any machine holds (limit 1 PiB)"));
}

}  // namespace

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
  RETURN_IF_ERROR(CheckImpliedWeightBytes(reader, desc));
  desc.architecture = architecture;
  desc.model_type = model_type.empty() ? def->model_type : model_type;
  desc.config_file = file_name;
  return desc;
}

absl::StatusOr<ModelDescription> LoadModelConfig(const std::string& model_dir) {
  const std::string path = absl::StrCat(model_dir, "/config.json");
  // A FIFO or a device would block the read (or never end it).
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (!ec && std::filesystem::exists(st) && !std::filesystem::is_regular_file(st)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
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
