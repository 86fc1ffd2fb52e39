#include "common/model_config/config_reader.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace epserve::model_config {
namespace {

// Integers written as 4096.0 are accepted; 4096.5 is not.
std::optional<int64_t> AsInt(const Json& v) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() &&
        v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::nullopt;
    }
    return v.get<int64_t>();
  }
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) < 9.0e15) {
      return static_cast<int64_t>(d);
    }
  }
  return std::nullopt;
}

}  // namespace

std::string DescribeJson(const Json& value) {
  switch (value.type()) {
    case Json::value_t::string:
      return absl::StrCat("string ", value.dump());
    case Json::value_t::boolean:
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float:
      return absl::StrCat(value.type_name(), " ", value.dump());
    default:
      return value.type_name();
  }
}

ConfigReader::ConfigReader(const Json& object, std::string file, std::string architecture,
                           std::string path_prefix)
    : object_(&object),
      file_(std::move(file)),
      architecture_(std::move(architecture)),
      prefix_(std::move(path_prefix)) {}

std::string ConfigReader::Path(absl::string_view key) const { return absl::StrCat(prefix_, key); }

const Json* ConfigReader::Find(absl::string_view key) const {
  if (!object_->is_object()) return nullptr;
  auto it = object_->find(std::string(key));
  if (it == object_->end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status ConfigReader::Missing(absl::string_view key) const {
  return absl::InvalidArgumentError(
      absl::StrCat(file_, ": ", architecture_, " requires '", Path(key), "' (missing)"));
}

absl::Status ConfigReader::WrongType(absl::string_view key, const Json& found,
                                     absl::string_view expected) const {
  return absl::InvalidArgumentError(absl::StrCat(file_, ": ", architecture_, ": '", Path(key),
                                                 "' must be ", expected, " (found ",
                                                 DescribeJson(found), ")"));
}

absl::Status ConfigReader::Invalid(absl::string_view key, absl::string_view what) const {
  return absl::InvalidArgumentError(
      absl::StrCat(file_, ": ", architecture_, ": '", Path(key), "' ", what));
}

absl::Status ConfigReader::Unsupported(absl::string_view key, absl::string_view what) const {
  return absl::UnimplementedError(
      absl::StrCat(file_, ": ", architecture_, ": '", Path(key), "' ", what));
}

absl::StatusOr<int64_t> ConfigReader::RequiredInt(absl::string_view key) const {
  const Json* v = Find(key);
  if (v == nullptr) return Missing(key);
  std::optional<int64_t> i = AsInt(*v);
  if (!i) return WrongType(key, *v, "an integer");
  return *i;
}

absl::StatusOr<int64_t> ConfigReader::Int(absl::string_view key, int64_t fallback) const {
  if (!Has(key)) return fallback;
  return RequiredInt(key);
}

absl::StatusOr<double> ConfigReader::RequiredDouble(absl::string_view key) const {
  const Json* v = Find(key);
  if (v == nullptr) return Missing(key);
  if (!v->is_number()) return WrongType(key, *v, "a number");
  return v->get<double>();
}

absl::StatusOr<double> ConfigReader::Double(absl::string_view key, double fallback) const {
  if (!Has(key)) return fallback;
  return RequiredDouble(key);
}

absl::StatusOr<std::optional<double>> ConfigReader::OptionalDouble(absl::string_view key) const {
  if (!Has(key)) return std::optional<double>();
  absl::StatusOr<double> d = RequiredDouble(key);
  if (!d.ok()) return d.status();
  return std::optional<double>(*d);
}

absl::StatusOr<bool> ConfigReader::Bool(absl::string_view key, bool fallback) const {
  const Json* v = Find(key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) return WrongType(key, *v, "a boolean");
  return v->get<bool>();
}

absl::StatusOr<std::string> ConfigReader::String(absl::string_view key,
                                                 std::string fallback) const {
  const Json* v = Find(key);
  if (v == nullptr) return fallback;
  if (!v->is_string()) return WrongType(key, *v, "a string");
  return v->get<std::string>();
}

absl::StatusOr<std::vector<int64_t>> ConfigReader::IntList(absl::string_view key) const {
  std::vector<int64_t> out;
  const Json* v = Find(key);
  if (v == nullptr) return out;
  if (!v->is_array()) return WrongType(key, *v, "a list of integers");
  for (const Json& item : *v) {
    std::optional<int64_t> i = AsInt(item);
    if (!i) return WrongType(key, item, "a list of integers (one element is not)");
    out.push_back(*i);
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ConfigReader::StringList(absl::string_view key) const {
  std::vector<std::string> out;
  const Json* v = Find(key);
  if (v == nullptr) return out;
  if (!v->is_array()) return WrongType(key, *v, "a list of strings");
  for (const Json& item : *v) {
    if (!item.is_string()) return WrongType(key, item, "a list of strings (one element is not)");
    out.push_back(item.get<std::string>());
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> ConfigReader::IntOrIntList(absl::string_view key) const {
  const Json* v = Find(key);
  if (v == nullptr) return std::vector<int64_t>();
  if (v->is_array()) return IntList(key);
  std::optional<int64_t> i = AsInt(*v);
  if (!i) return WrongType(key, *v, "an integer or a list of integers");
  return std::vector<int64_t>{*i};
}

absl::StatusOr<std::optional<ConfigReader>> ConfigReader::Object(absl::string_view key) const {
  const Json* v = Find(key);
  if (v == nullptr) return std::optional<ConfigReader>();
  if (!v->is_object()) return WrongType(key, *v, "an object");
  return std::optional<ConfigReader>(
      ConfigReader(*v, file_, architecture_, absl::StrCat(Path(key), ".")));
}

}  // namespace epserve::model_config
