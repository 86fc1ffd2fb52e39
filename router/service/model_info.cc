#include "router/service/model_info.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/model_config/model_config.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace epserve::router {
namespace {

using json = nlohmann::json;

// generation_config.json's eos_token_id (an int or a list), if any.
absl::StatusOr<std::vector<int64_t>> GenerationEos(const std::filesystem::path& path) {
  std::vector<int64_t> ids;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return ids;
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  json j = json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a well-formed JSON object"));
  }
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return ids;
  if (it->is_number_unsigned()) ids.push_back(it->get<int64_t>());
  if (it->is_array()) {
    for (const json& v : *it) {
      if (!v.is_number_unsigned()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path.string(), ": key 'eos_token_id' must hold non-negative integers, found ", v.dump()));
      }
      ids.push_back(v.get<int64_t>());
    }
  }
  if (!it->is_number_unsigned() && !it->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path.string(), ": key 'eos_token_id' must be an integer or a list, found ", it->dump()));
  }
  return ids;
}

}  // namespace

absl::StatusOr<v1::GetModelInfoResponse> ReadModelInfo(const std::string& model_dir,
                                                       absl::string_view weight_dtype) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return absl::NotFoundError(absl::StrCat("model directory '", model_dir, "' does not exist"));
  }
  ASSIGN_OR_RETURN(ModelDescription desc, LoadModelConfig(model_dir));
  v1::GetModelInfoResponse info;
  info.set_model_path(fs::weakly_canonical(fs::absolute(model_dir), ec).string());
  info.set_architecture(desc.architecture);
  info.set_model_type(desc.model_type);
  info.set_vocab_size(static_cast<uint32_t>(desc.vocab_size));
  info.set_max_context_length(static_cast<uint32_t>(desc.max_position_embeddings));
  info.set_num_layers(static_cast<uint32_t>(desc.num_layers));
  if (desc.is_moe()) {
    info.set_num_experts(static_cast<uint32_t>(desc.moe.num_experts));
    info.set_num_experts_per_token(static_cast<uint32_t>(desc.moe.routing.top_k));
  }
  info.set_dtype(std::string(weight_dtype));
  if (!desc.bos_token_ids.empty()) info.set_bos_token_id(static_cast<uint32_t>(desc.bos_token_ids[0]));
  ASSIGN_OR_RETURN(std::vector<int64_t> eos, GenerationEos(fs::path(model_dir) / "generation_config.json"));
  // generation_config.json, when it names EOS ids, has the final say.
  for (int64_t id : eos.empty() ? desc.eos_token_ids : eos) {
    info.add_eos_token_ids(static_cast<uint32_t>(id));
  }
  return info;
}

}  // namespace epserve::router
