#include "common/chat_template/json.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

absl::StatusOr<Value> FromJsonAt(const nlohmann::ordered_json& json, int depth) {
  if (depth > kMaxJsonDepth) {
    return LimitError(absl::StrCat("JSON nesting deeper than ", kMaxJsonDepth, " levels"));
  }
  using Type = nlohmann::ordered_json::value_t;
  switch (json.type()) {
    case Type::null:
      return Value::None();
    case Type::boolean:
      return Value::Bool(json.get<bool>());
    case Type::number_integer:
      return Value::Int(json.get<int64_t>());
    case Type::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return UnsupportedError(absl::StrCat("integer ", u, " (larger than 64-bit signed)"));
      }
      return Value::Int(static_cast<int64_t>(u));
    }
    case Type::number_float:
      return Value::Float(json.get<double>());
    case Type::string:
      return Value::String(json.get<std::string>());
    case Type::array: {
      ValueList items;
      items.reserve(json.size());
      for (const auto& item : json) {
        ASSIGN_OR_RETURN(Value v, FromJsonAt(item, depth + 1));
        items.push_back(std::move(v));
      }
      return Value::List(std::move(items));
    }
    case Type::object: {
      auto dict = std::make_shared<DictData>();
      for (const auto& [key, item] : json.items()) {
        ASSIGN_OR_RETURN(Value v, FromJsonAt(item, depth + 1));
        RETURN_IF_ERROR(dict->Set(Value::String(key), std::move(v)));
      }
      return Value::Dict(std::move(dict));
    }
    default:
      return UnsupportedError("binary or discarded JSON values");
  }
}

void AppendJsonString(absl::string_view text, bool ensure_ascii, std::string* out) {
  const std::string_view s(text.data(), text.size());
  out->push_back('"');
  for (size_t pos = 0; pos < s.size();) {
    const uint32_t cp = DecodeUtf8(s, &pos);
    switch (cp) {
      case '"':
        *out += "\\\"";
        continue;
      case '\\':
        *out += "\\\\";
        continue;
      case '\n':
        *out += "\\n";
        continue;
      case '\r':
        *out += "\\r";
        continue;
      case '\t':
        *out += "\\t";
        continue;
      case '\b':
        *out += "\\b";
        continue;
      case '\f':
        *out += "\\f";
        continue;
      default:
        break;
    }
    if (cp < 0x20 || (ensure_ascii && cp > 0x7E)) {
      if (cp > 0xFFFF) {
        const uint32_t v = cp - 0x10000;
        absl::StrAppendFormat(out, "\\u%04x\\u%04x", 0xD800 | (v >> 10), 0xDC00 | (v & 0x3FF));
      } else {
        absl::StrAppendFormat(out, "\\u%04x", cp);
      }
    } else {
      AppendUtf8(cp, out);
    }
  }
  out->push_back('"');
}

std::string JsonFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  return FloatRepr(d);
}

class JsonWriter {
 public:
  JsonWriter(const JsonDumpOptions& options, std::string* out) : options_(options), out_(out) {}

  absl::Status Write(const Value& v, int depth) {
    if (depth > kMaxJsonDepth) {
      return LimitError(absl::StrCat("tojson: nesting deeper than ", kMaxJsonDepth, " levels"));
    }
    switch (v.kind()) {
      case Value::Kind::kNone:
        *out_ += "null";
        return absl::OkStatus();
      case Value::Kind::kBool:
        *out_ += v.AsBool() ? "true" : "false";
        return absl::OkStatus();
      case Value::Kind::kInt:
        absl::StrAppend(out_, v.AsInt());
        return absl::OkStatus();
      case Value::Kind::kFloat:
        *out_ += JsonFloat(v.AsDouble());
        return absl::OkStatus();
      case Value::Kind::kString:
        AppendJsonString(v.AsString(), options_.ensure_ascii, out_);
        return absl::OkStatus();
      case Value::Kind::kSequence:
        if (v.seq_kind() == SeqKind::kList || v.seq_kind() == SeqKind::kTuple) {
          return WriteList(v.AsSeq().items, depth);
        }
        break;
      case Value::Kind::kDict:
        return WriteDict(v.AsDict(), depth);
      default:
        break;
    }
    return RuntimeError(absl::StrCat("Object of type ", TypeName(v), " is not JSON serializable"));
  }

 private:
  void NewLine(int level) {
    if (!options_.has_indent) return;
    out_->push_back('\n');
    for (int i = 0; i < level; ++i) *out_ += options_.indent;
  }

  absl::Status WriteList(const ValueList& items, int depth) {
    if (items.empty()) {
      *out_ += "[]";
      return absl::OkStatus();
    }
    out_->push_back('[');
    NewLine(depth + 1);
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) {
        *out_ += options_.item_separator;
        NewLine(depth + 1);
      }
      RETURN_IF_ERROR(Write(items[i], depth + 1));
    }
    NewLine(depth);
    out_->push_back(']');
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> KeyString(const Value& key) {
    switch (key.kind()) {
      case Value::Kind::kString:
        return key.AsString();
      case Value::Kind::kNone:
        return std::string("null");
      case Value::Kind::kBool:
        return std::string(key.AsBool() ? "true" : "false");
      case Value::Kind::kInt:
        return absl::StrCat(key.AsInt());
      case Value::Kind::kFloat:
        return JsonFloat(key.AsDouble());
      default:
        return RuntimeError(
            absl::StrCat("keys must be str, int, float, bool or None, not ", TypeName(key)));
    }
  }

  absl::Status WriteDict(const DictData& dict, int depth) {
    if (dict.size() == 0) {
      *out_ += "{}";
      return absl::OkStatus();
    }
    std::vector<const std::pair<Value, Value>*> entries;
    for (const auto& entry : dict.entries()) entries.push_back(&entry);
    if (options_.sort_keys) {
      absl::Status error;
      std::stable_sort(entries.begin(), entries.end(), [&](const auto* a, const auto* b) {
        absl::StatusOr<bool> less = PyLess(a->first, b->first);
        if (!less.ok()) {
          if (error.ok()) error = less.status();
          return false;
        }
        return *less;
      });
      RETURN_IF_ERROR(error);
    }
    out_->push_back('{');
    NewLine(depth + 1);
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i > 0) {
        *out_ += options_.item_separator;
        NewLine(depth + 1);
      }
      ASSIGN_OR_RETURN(std::string key, KeyString(entries[i]->first));
      AppendJsonString(key, options_.ensure_ascii, out_);
      *out_ += options_.key_separator;
      RETURN_IF_ERROR(Write(entries[i]->second, depth + 1));
    }
    NewLine(depth);
    out_->push_back('}');
    return absl::OkStatus();
  }

  const JsonDumpOptions& options_;
  std::string* out_;
};

}  // namespace

absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& json) { return FromJsonAt(json, 0); }

absl::Status DumpJson(const Value& value, const JsonDumpOptions& options, std::string* out) {
  return JsonWriter(options, out).Write(value, 0);
}

}  // namespace epserve::jinja
