#include "tests/models/fixture_reference.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace epserve::models::testing {

namespace fs = std::filesystem;

std::string FixtureReferenceDir(const std::string& fixture) {
  return (fs::path(EPSERVE_SOURCE_DIR) / "tests/fixtures/models" / fixture).string();
}

std::string FixtureModelDir(const std::string& fixture) {
  if (fixture == "tiny-qwen3-moe") {
    return (fs::path(EPSERVE_SOURCE_DIR) / "checkpoints/tiny-random-qwen3-moe").string();
  }
  return FixtureReferenceDir(fixture);
}

absl::StatusOr<FixtureReference> LoadFixtureReference(const std::string& dir) {
  std::ifstream json_in(fs::path(dir) / "reference.json");
  if (!json_in) return absl::NotFoundError(absl::StrCat(dir, "/reference.json: cannot open"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_in);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/reference.json: ", e.what()));
  }
  std::ifstream bin(fs::path(dir) / "logits.bin", std::ios::binary);
  if (!bin) return absl::NotFoundError(absl::StrCat(dir, "/logits.bin: cannot open"));
  std::stringstream ss;
  ss << bin.rdbuf();
  const std::string bytes = ss.str();

  FixtureReference ref;
  ref.fixture = j.value("fixture", "");
  ref.vocab_size = j.at("vocab_size").get<int64_t>();
  for (const auto& p : j.at("prompts")) {
    ReferencePrompt prompt;
    prompt.name = p.at("name").get<std::string>();
    prompt.ids = p.at("ids").get<std::vector<int32_t>>();
    prompt.max_abs_logit = p.at("max_abs_logit").get<float>();
    prompt.greedy_new_tokens = p.at("greedy").at("new_tokens").get<std::vector<int32_t>>();
    const size_t offset = p.at("logits_offset_bytes").get<size_t>();
    const size_t count = prompt.ids.size() * static_cast<size_t>(ref.vocab_size);
    if (offset + count * sizeof(float) > bytes.size()) {
      return absl::OutOfRangeError(absl::StrCat(dir, "/logits.bin: prompt ", prompt.name,
                                                " runs past the end of the file"));
    }
    prompt.logits.resize(count);
    std::memcpy(prompt.logits.data(), bytes.data() + offset, count * sizeof(float));
    ref.prompts.push_back(std::move(prompt));
  }
  return ref;
}

}  // namespace epserve::models::testing
