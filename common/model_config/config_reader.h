// Internal: typed reads of config.json keys with errors that name the file,
// the architecture and the key path.
//
//   /m/config.json: Qwen3MoeForCausalLM requires 'num_experts' (missing)
//   /m/config.json: LlamaForCausalLM: 'hidden_size' must be an integer (found string "x")
//
// A key that is absent or JSON null counts as missing: the default applies,
// or the key is reported when required.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace epserve::model_config {

using Json = nlohmann::json;

class ConfigReader {
 public:
  // `object` must outlive the reader. `path_prefix` ("rope_scaling.") is put
  // in front of key names in messages.
  ConfigReader(const Json& object, std::string file, std::string architecture,
               std::string path_prefix = "");

  const std::string& file() const { return file_; }
  const std::string& architecture() const { return architecture_; }

  // The value at `key`, or nullptr when absent or null.
  const Json* Find(absl::string_view key) const;
  bool Has(absl::string_view key) const { return Find(key) != nullptr; }

  absl::StatusOr<int64_t> RequiredInt(absl::string_view key) const;
  absl::StatusOr<int64_t> Int(absl::string_view key, int64_t fallback) const;
  absl::StatusOr<double> RequiredDouble(absl::string_view key) const;
  absl::StatusOr<double> Double(absl::string_view key, double fallback) const;
  absl::StatusOr<std::optional<double>> OptionalDouble(absl::string_view key) const;
  absl::StatusOr<bool> Bool(absl::string_view key, bool fallback) const;
  absl::StatusOr<std::string> String(absl::string_view key, std::string fallback) const;
  // Absent/null: empty.
  absl::StatusOr<std::vector<int64_t>> IntList(absl::string_view key) const;
  absl::StatusOr<std::vector<std::string>> StringList(absl::string_view key) const;
  // An integer or a list of integers (eos_token_id); absent/null: empty.
  absl::StatusOr<std::vector<int64_t>> IntOrIntList(absl::string_view key) const;
  // A nested object as a reader of its own; absent/null: nullopt.
  absl::StatusOr<std::optional<ConfigReader>> Object(absl::string_view key) const;

  // Error builders, all naming file, architecture and key path.
  absl::Status Missing(absl::string_view key) const;
  absl::Status WrongType(absl::string_view key, const Json& found,
                         absl::string_view expected) const;
  absl::Status Invalid(absl::string_view key, absl::string_view what) const;
  absl::Status Unsupported(absl::string_view key, absl::string_view what) const;

 private:
  std::string Path(absl::string_view key) const;

  const Json* object_;
  std::string file_;
  std::string architecture_;
  std::string prefix_;
};

// A short rendering of a JSON value for messages: its type and, for scalars,
// its value (`string "garbage"`, `number 1.5`, `array`).
std::string DescribeJson(const Json& value);

}  // namespace epserve::model_config
