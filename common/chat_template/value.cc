#include "common/chat_template/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace epserve::jinja {

Value Value::Undefined(std::string hint) {
  Value v;
  v.rep_ = UndefinedRep{std::make_shared<const std::string>(std::move(hint))};
  return v;
}

Value Value::None() {
  Value v;
  v.rep_ = NoneRep{};
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.rep_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.rep_ = i;
  return v;
}

Value Value::Float(double d) {
  Value v;
  v.rep_ = d;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.rep_ = StringRep{std::make_shared<const std::string>(std::move(s)), false};
  return v;
}

Value Value::Markup(std::string s) {
  Value v;
  v.rep_ = StringRep{std::make_shared<const std::string>(std::move(s)), true};
  return v;
}

Value Value::Sequence(SeqKind kind, ValueList items) {
  auto data = std::make_shared<SeqData>();
  data->kind = kind;
  data->items = std::move(items);
  Value v;
  v.rep_ = SeqPtr(std::move(data));
  return v;
}

Value Value::Dict(std::shared_ptr<const DictData> dict) {
  Value v;
  v.rep_ = std::move(dict);
  return v;
}

Value Value::Namespace(std::shared_ptr<NamespaceData> ns) {
  Value v;
  v.rep_ = std::move(ns);
  return v;
}

Value Value::Loop(std::shared_ptr<LoopData> loop) {
  Value v;
  v.rep_ = std::move(loop);
  return v;
}

Value Value::Function(std::shared_ptr<const Callable> fn) {
  Value v;
  v.rep_ = std::move(fn);
  return v;
}

int64_t Value::AsInt() const {
  if (is_bool()) return AsBool() ? 1 : 0;
  return std::get<int64_t>(rep_);
}

double Value::AsDouble() const {
  if (is_float()) return std::get<double>(rep_);
  return static_cast<double>(AsInt());
}

const void* Value::identity() const {
  switch (kind()) {
    case Kind::kString:
      return std::get<StringRep>(rep_).text.get();
    case Kind::kSequence:
      return std::get<SeqPtr>(rep_).get();
    case Kind::kDict:
      return std::get<DictPtr>(rep_).get();
    case Kind::kNamespace:
      return std::get<NamespacePtr>(rep_).get();
    case Kind::kLoop:
      return std::get<LoopPtr>(rep_).get();
    case Kind::kCallable:
      return std::get<CallablePtr>(rep_).get();
    default:
      return nullptr;
  }
}

std::string Value::UndefinedMessage() const {
  const auto* rep = std::get_if<UndefinedRep>(&rep_);
  if (rep == nullptr || rep->hint == nullptr || rep->hint->empty()) return "value is undefined";
  return *rep->hint;
}

namespace {

bool IsHashable(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kSequence:
      if (v.seq_kind() != SeqKind::kTuple) return v.seq_kind() == SeqKind::kIterator;
      for (const Value& item : v.AsSeq().items) {
        if (!IsHashable(item)) return false;
      }
      return true;
    case Value::Kind::kDict:
      return false;
    default:
      return true;
  }
}

}  // namespace

absl::Status DictData::Set(Value key, Value value) {
  if (!IsHashable(key)) return RuntimeError(absl::StrCat("unhashable type: '", TypeName(key), "'"));
  if (key.is_string()) {
    auto [it, inserted] = string_index_.emplace(key.AsString(), entries_.size());
    if (!inserted) {
      entries_[it->second].second = std::move(value);
      return absl::OkStatus();
    }
  } else {
    for (auto& [k, v] : entries_) {
      if (!k.is_string() && PyEquals(k, key)) {
        v = std::move(value);
        return absl::OkStatus();
      }
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
  return absl::OkStatus();
}

const Value* DictData::FindString(absl::string_view key) const {
  auto it = string_index_.find(std::string(key.data(), key.size()));
  return it == string_index_.end() ? nullptr : &entries_[it->second].second;
}

const Value* DictData::Find(const Value& key) const {
  if (key.is_string()) return FindString(key.AsString());
  if (!IsHashable(key)) return nullptr;
  for (const auto& [k, v] : entries_) {
    if (!k.is_string() && PyEquals(k, key)) return &v;
  }
  return nullptr;
}

Value* NamespaceData::Find(absl::string_view name) {
  for (auto& [k, v] : attrs) {
    if (k == name) return &v;
  }
  return nullptr;
}

void NamespaceData::Set(absl::string_view name, Value value) {
  if (Value* existing = Find(name)) {
    *existing = std::move(value);
    return;
  }
  attrs.emplace_back(std::string(name.data(), name.size()), std::move(value));
}

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.AsBool();
    case Value::Kind::kInt:
      return v.AsInt() != 0;
    case Value::Kind::kFloat:
      return v.AsDouble() != 0.0;  // NaN is truthy, as in Python
    case Value::Kind::kString:
      return !v.AsString().empty();
    case Value::Kind::kSequence:
      return v.seq_kind() == SeqKind::kIterator || !v.AsSeq().items.empty();
    case Value::Kind::kDict:
      return v.AsDict().size() != 0;
    default:
      return true;
  }
}

std::string TypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return "Undefined";
    case Value::Kind::kNone:
      return "NoneType";
    case Value::Kind::kBool:
      return "bool";
    case Value::Kind::kInt:
      return "int";
    case Value::Kind::kFloat:
      return "float";
    case Value::Kind::kString:
      return v.is_markup() ? "Markup" : "str";
    case Value::Kind::kSequence:
      switch (v.seq_kind()) {
        case SeqKind::kList:
          return "list";
        case SeqKind::kTuple:
          return "tuple";
        case SeqKind::kRange:
          return "range";
        case SeqKind::kDictKeys:
          return "dict_keys";
        case SeqKind::kDictValues:
          return "dict_values";
        case SeqKind::kDictItems:
          return "dict_items";
        case SeqKind::kIterator:
          return "generator";
      }
      return "sequence";
    case Value::Kind::kDict:
      return "dict";
    case Value::Kind::kNamespace:
      return "Namespace";
    case Value::Kind::kLoop:
      return "LoopContext";
    case Value::Kind::kCallable:
      return "function";
  }
  return "object";
}

namespace {

// Python equality of two sequences compared as sets (dict keys / items views).
bool SetEquals(const ValueList& a, const ValueList& b) {
  if (a.size() != b.size()) return false;
  for (const Value& x : a) {
    bool found = false;
    for (const Value& y : b) {
      if (PyEquals(x, y)) {
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

bool ElementsEqual(const ValueList& a, const ValueList& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!PyEquals(a[i], b[i])) return false;
  }
  return true;
}

}  // namespace

bool PyEquals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.AsInt() == b.AsInt();
    return a.AsDouble() == b.AsDouble();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.AsString() == b.AsString();
    case Value::Kind::kSequence: {
      const SeqKind ka = a.seq_kind();
      if (ka != b.seq_kind()) return false;
      switch (ka) {
        case SeqKind::kList:
        case SeqKind::kTuple:
        case SeqKind::kRange:
          return ElementsEqual(a.AsSeq().items, b.AsSeq().items);
        case SeqKind::kDictKeys:
        case SeqKind::kDictItems:
          return SetEquals(a.AsSeq().items, b.AsSeq().items);
        default:
          return a.identity() == b.identity();
      }
    }
    case Value::Kind::kDict: {
      const DictData& da = a.AsDict();
      const DictData& db = b.AsDict();
      if (da.size() != db.size()) return false;
      for (const auto& [k, v] : da.entries()) {
        const Value* other = db.Find(k);
        if (other == nullptr || !PyEquals(v, *other)) return false;
      }
      return true;
    }
    default:
      return a.identity() == b.identity();
  }
}

absl::StatusOr<bool> PyLess(const Value& a, const Value& b) {
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.AsInt() < b.AsInt();
    return a.AsDouble() < b.AsDouble();
  }
  if (a.is_string() && b.is_string()) return a.AsString() < b.AsString();
  if (a.is_sequence() && b.is_sequence() && a.seq_kind() == b.seq_kind() &&
      (a.seq_kind() == SeqKind::kList || a.seq_kind() == SeqKind::kTuple)) {
    const ValueList& x = a.AsSeq().items;
    const ValueList& y = b.AsSeq().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!PyEquals(x[i], y[i])) return PyLess(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return RuntimeError(absl::StrCat("'<' not supported between instances of '", TypeName(a),
                                   "' and '", TypeName(b), "'"));
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  absl::string_view sci(buf, result.ptr - buf);  // "-d.ddde+XX"
  std::string out;
  if (sci.front() == '-') {
    out.push_back('-');
    sci.remove_prefix(1);
  }
  const size_t e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e)) {
    if (c != '.') digits.push_back(c);
  }
  int exponent = 0;
  std::from_chars(sci.data() + e + (sci[e + 1] == '+' ? 2 : 1), sci.data() + sci.size(), exponent);
  const int decpt = exponent + 1;  // position of the decimal point after the first digit
  const int num_digits = static_cast<int>(digits.size());
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0.";
      out.append(static_cast<size_t>(-decpt), '0');
      out += digits;
    } else if (decpt >= num_digits) {
      out += digits;
      out.append(static_cast<size_t>(decpt - num_digits), '0');
      out += ".0";
    } else {
      out += digits.substr(0, decpt);
      out += '.';
      out += digits.substr(decpt);
    }
  } else {
    out += digits[0];
    if (num_digits > 1) {
      out += '.';
      out += digits.substr(1);
    }
    absl::StrAppendFormat(&out, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  }
  return out;
}

void AppendStringRepr(absl::string_view text, std::string* out) {
  const std::string_view s(text.data(), text.size());
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out->push_back(quote);
  for (size_t pos = 0; pos < s.size();) {
    const uint32_t cp = DecodeUtf8(s, &pos);
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(cp));
    } else if (cp == '\t') {
      *out += "\\t";
    } else if (cp == '\n') {
      *out += "\\n";
    } else if (cp == '\r') {
      *out += "\\r";
    } else if (cp < 0x20 || cp == 0x7F) {
      absl::StrAppendFormat(out, "\\x%02x", cp);
    } else if (cp < 0x7F || IsPyPrintable(cp)) {
      AppendUtf8(cp, out);
    } else if (cp <= 0xFF) {
      absl::StrAppendFormat(out, "\\x%02x", cp);
    } else if (cp <= 0xFFFF) {
      absl::StrAppendFormat(out, "\\u%04x", cp);
    } else {
      absl::StrAppendFormat(out, "\\U%08x", cp);
    }
  }
  out->push_back(quote);
}

namespace {

absl::Status AppendItems(const ValueList& items, std::string* out) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) *out += ", ";
    RETURN_IF_ERROR(AppendRepr(items[i], out));
  }
  return absl::OkStatus();
}

absl::Status AppendSequence(const Value& v, std::string* out) {
  const SeqData& seq = v.AsSeq();
  switch (seq.kind) {
    case SeqKind::kList:
      *out += '[';
      RETURN_IF_ERROR(AppendItems(seq.items, out));
      *out += ']';
      return absl::OkStatus();
    case SeqKind::kTuple:
      *out += '(';
      RETURN_IF_ERROR(AppendItems(seq.items, out));
      if (seq.items.size() == 1) *out += ',';
      *out += ')';
      return absl::OkStatus();
    case SeqKind::kDictKeys:
    case SeqKind::kDictValues:
    case SeqKind::kDictItems:
      *out += TypeName(v);
      *out += "([";
      RETURN_IF_ERROR(AppendItems(seq.items, out));
      *out += "])";
      return absl::OkStatus();
    default:
      return UnsupportedError(absl::StrCat("converting a ", TypeName(v), " object to a string"));
  }
}

}  // namespace

absl::Status AppendStr(const Value& v, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return absl::OkStatus();
    case Value::Kind::kNone:
      *out += "None";
      return absl::OkStatus();
    case Value::Kind::kBool:
      *out += v.AsBool() ? "True" : "False";
      return absl::OkStatus();
    case Value::Kind::kInt:
      absl::StrAppend(out, v.AsInt());
      return absl::OkStatus();
    case Value::Kind::kFloat:
      *out += FloatRepr(v.AsDouble());
      return absl::OkStatus();
    case Value::Kind::kString:
      *out += v.AsString();
      return absl::OkStatus();
    case Value::Kind::kSequence:
      return AppendSequence(v, out);
    case Value::Kind::kDict: {
      *out += '{';
      bool first = true;
      for (const auto& [k, item] : v.AsDict().entries()) {
        if (!first) *out += ", ";
        first = false;
        RETURN_IF_ERROR(AppendRepr(k, out));
        *out += ": ";
        RETURN_IF_ERROR(AppendRepr(item, out));
      }
      *out += '}';
      return absl::OkStatus();
    }
    default:
      return UnsupportedError(absl::StrCat("converting a ", TypeName(v), " object to a string"));
  }
}

absl::StatusOr<std::string> ToStr(const Value& v) {
  if (v.is_string()) return v.AsString();
  std::string out;
  RETURN_IF_ERROR(AppendStr(v, &out));
  return out;
}

absl::Status AppendRepr(const Value& v, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      *out += "Undefined";
      return absl::OkStatus();
    case Value::Kind::kString:
      if (v.is_markup()) {
        *out += "Markup(";
        AppendStringRepr(v.AsString(), out);
        *out += ')';
      } else {
        AppendStringRepr(v.AsString(), out);
      }
      return absl::OkStatus();
    default:
      return AppendStr(v, out);
  }
}

absl::StatusOr<std::shared_ptr<const SeqData>> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::make_shared<const SeqData>();
    case Value::Kind::kString: {
      auto seq = std::make_shared<SeqData>();
      const std::string& s = v.AsString();
      for (size_t pos = 0; pos < s.size();) {
        const size_t begin = pos;
        DecodeUtf8(s, &pos);
        seq->items.push_back(Value::String(s.substr(begin, pos - begin)));
      }
      return seq;
    }
    case Value::Kind::kSequence: {
      const SeqData& data = v.AsSeq();
      if (data.kind == SeqKind::kIterator) {
        if (data.consumed) {
          return UnsupportedError(
              "iterating a filter result (generator) a second time; convert it with |list first");
        }
        data.consumed = true;
      }
      return v.shared_seq();
    }
    case Value::Kind::kDict: {
      auto seq = std::make_shared<SeqData>();
      for (const auto& [k, item] : v.AsDict().entries()) seq->items.push_back(k);
      return seq;
    }
    default:
      return RuntimeError(absl::StrCat("'", TypeName(v), "' object is not iterable"));
  }
}

absl::StatusOr<int64_t> PyLen(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(CodePointCount(v.AsString()));
    case Value::Kind::kSequence:
      if (v.seq_kind() == SeqKind::kIterator) break;
      return static_cast<int64_t>(v.AsSeq().items.size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.AsDict().size());
    default:
      break;
  }
  return RuntimeError(absl::StrCat("object of type '", TypeName(v), "' has no len()"));
}

}  // namespace epserve::jinja
