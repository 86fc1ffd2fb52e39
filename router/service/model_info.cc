#include "router/service/model_info.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace epserve::router {
namespace {

using json = nlohmann::json;

absl::StatusOr<json> ReadJson(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::stringstream buf;
  buf << in.rdbuf();
  json parsed = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a well-formed JSON object"));
  }
  return parsed;
}

// Reads an optional unsigned key; an entry of the wrong type is an error.
absl::Status ReadUint(const json& j, const char* key, const std::string& file, uint32_t* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_unsigned()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": key '", key, "' must be a non-negative integer, found ", it->dump()));
  }
  *out = it->get<uint32_t>();
  return absl::OkStatus();
}

// eos_token_id may be an int or a list of ints.
void ReadEos(const json& j, v1::GetModelInfoResponse* info) {
  auto it = j.find("eos_token_id");
  if (it == j.end()) return;
  info->clear_eos_token_ids();
  if (it->is_number_unsigned()) info->add_eos_token_ids(it->get<uint32_t>());
  if (it->is_array()) {
    for (const json& v : *it) {
      if (v.is_number_unsigned()) info->add_eos_token_ids(v.get<uint32_t>());
    }
  }
}

}  // namespace

absl::StatusOr<v1::GetModelInfoResponse> ReadModelInfo(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model directory '", model_dir, "' does not exist"));
  }
  fs::path config_path = fs::path(model_dir) / "config.json";
  auto config = ReadJson(config_path);
  if (!config.ok()) return config.status();
  const std::string file = config_path.string();
  const json& c = *config;

  v1::GetModelInfoResponse info;
  info.set_model_path(fs::weakly_canonical(fs::absolute(model_dir), ec).string());
  if (auto it = c.find("model_type"); it != c.end() && it->is_string()) {
    info.set_model_type(it->get<std::string>());
  }
  if (auto it = c.find("architectures");
      it != c.end() && it->is_array() && !it->empty() && (*it)[0].is_string()) {
    info.set_architecture((*it)[0].get<std::string>());
  } else {
    info.set_architecture(info.model_type());
  }
  if (info.architecture().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": neither 'architectures' nor 'model_type' is set"));
  }
  uint32_t value = 0;
  if (auto s = ReadUint(c, "vocab_size", file, &value); !s.ok()) return s;
  info.set_vocab_size(value);
  value = 0;
  if (auto s = ReadUint(c, "max_position_embeddings", file, &value); !s.ok()) return s;
  info.set_max_context_length(value);
  value = 0;
  if (auto s = ReadUint(c, "num_hidden_layers", file, &value); !s.ok()) return s;
  info.set_num_layers(value);
  // The expert-count key differs between architectures (Mixtral:
  // num_local_experts; Qwen-MoE / OLMoE: num_experts); dense models have none.
  value = 0;
  for (const char* key : {"num_local_experts", "num_experts"}) {
    if (auto s = ReadUint(c, key, file, &value); !s.ok()) return s;
  }
  info.set_num_experts(value);
  value = 0;
  if (auto s = ReadUint(c, "num_experts_per_tok", file, &value); !s.ok()) return s;
  info.set_num_experts_per_token(info.num_experts() > 0 ? value : 0);
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (auto it = c.find(key); it != c.end() && it->is_string()) info.set_dtype(it->get<std::string>());
  }
  if (auto it = c.find("bos_token_id"); it != c.end() && it->is_number_unsigned()) {
    info.set_bos_token_id(it->get<uint32_t>());
  }
  ReadEos(c, &info);
  // generation_config.json, when present, has the final say on EOS ids.
  fs::path gen_path = fs::path(model_dir) / "generation_config.json";
  if (fs::exists(gen_path, ec)) {
    auto gen = ReadJson(gen_path);
    if (!gen.ok()) return gen.status();
    ReadEos(*gen, &info);
  }
  return info;
}

}  // namespace epserve::router
