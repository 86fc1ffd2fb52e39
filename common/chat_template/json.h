// Conversion between nlohmann::ordered_json and Jinja values, and Python's
// json.dumps as Hugging Face's `tojson` filter calls it.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/value.h"
#include "nlohmann/json.hpp"

namespace epserve::jinja {

// Nesting deeper than this is refused, in both directions.
inline constexpr int kMaxJsonDepth = 256;

// Objects keep their key order (as Python's json.loads does); integers that do
// not fit in int64 are refused.
absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& json);

// json.dumps(value, ensure_ascii=..., indent=..., separators=..., sort_keys=...).
struct JsonDumpOptions {
  bool ensure_ascii = false;
  bool has_indent = false;  // indent is not None
  std::string indent;       // one level of indentation when has_indent
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
absl::Status DumpJson(const Value& value, const JsonDumpOptions& options, std::string* out);

}  // namespace epserve::jinja
