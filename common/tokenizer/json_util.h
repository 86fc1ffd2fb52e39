// Small helpers for reading tokenizer.json with errors that name the key path.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace epserve::tokenizer {

using Json = nlohmann::json;

inline absl::Status JsonError(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", where, ": ", what));
}

// The "type" of a component object at `where`, or an error.
inline absl::StatusOr<std::string> ComponentType(const Json& j, absl::string_view where) {
  if (!j.is_object()) return JsonError(where, "expected an object");
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) return JsonError(where, "missing string field 'type'");
  return it->get<std::string>();
}

// Reads j[key] as T; a missing key gives `fallback`, a wrong type an error.
template <typename T>
absl::StatusOr<T> Field(const Json& j, const char* key, absl::string_view where, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const Json::exception&) {
    return JsonError(where, absl::StrCat("field '", key, "' has the wrong type (", it->type_name(),
                                         ")"));
  }
}

// Reads a required j[key] as T.
template <typename T>
absl::StatusOr<T> RequiredField(const Json& j, const char* key, absl::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    return JsonError(where, absl::StrCat("missing field '", key, "'"));
  }
  return Field<T>(j, key, where, T{});
}

inline absl::Status Unsupported(absl::string_view kind, absl::string_view type,
                                absl::string_view where, absl::string_view supported) {
  return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported ", kind, " '", type,
                                               "' at ", where, " (supported: ", supported, ")"));
}

}  // namespace epserve::tokenizer
