// Jinja filters, as jinja2.filters implements them, with Hugging Face's
// `tojson` (json.dumps, no HTML escaping, no key sorting).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/builtins.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/json.h"
#include "common/chat_template/operators.h"
#include "common/chat_template/py_string.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

// ------------------------------------------------------------------- helpers

// Jinja's make_attrgetter: "a.b.0" looks up item "a", then "b", then 0.
class AttrGetter {
 public:
  static absl::StatusOr<AttrGetter> Make(const std::optional<Value>& attribute) {
    AttrGetter g;
    if (!attribute.has_value() || attribute->is_none()) return g;
    if (attribute->is_integral()) {
      g.parts_.push_back(Value::Int(attribute->AsInt()));
      return g;
    }
    if (!attribute->is_string()) return RuntimeError("attribute must be a string or an integer");
    const std::vector<std::string> parts = absl::StrSplit(attribute->AsString(), '.');
    for (const std::string& part : parts) {
      int64_t index = 0;
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                       [](char c) { return c >= '0' && c <= '9'; });
      if (digits && absl::SimpleAtoi(part, &index)) {
        g.parts_.push_back(Value::Int(index));
      } else {
        g.parts_.push_back(Value::String(part));
      }
    }
    return g;
  }

  absl::StatusOr<Value> Get(Value item, const Value* default_value = nullptr) const {
    for (const Value& part : parts_) {
      ASSIGN_OR_RETURN(item, GetItem(item, part));
      if (default_value != nullptr && item.is_undefined()) item = *default_value;
    }
    return item;
  }

 private:
  std::vector<Value> parts_;
};

// Jinja's ignore_case: lower-cases strings for case-insensitive comparisons.
absl::StatusOr<Value> IgnoreCase(const Value& v) {
  if (!v.is_string()) return v;
  ASSIGN_OR_RETURN(std::string lower, PyLower(v.AsString()));
  return Value::String(std::move(lower));
}

absl::StatusOr<std::vector<Value>> SortKeys(const ValueList& items, const AttrGetter& getter,
                                            bool case_sensitive) {
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const Value& item : items) {
    ASSIGN_OR_RETURN(Value key, getter.Get(item));
    if (!case_sensitive) {
      ASSIGN_OR_RETURN(key, IgnoreCase(key));
    }
    keys.push_back(std::move(key));
  }
  return keys;
}

// Python's sorted(items, key=..., reverse=...): stable, equal keys keep their
// order also when reversed. Returns the permutation.
absl::StatusOr<std::vector<size_t>> SortedOrder(const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(keys.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  absl::Status error;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    absl::StatusOr<bool> less = reverse ? PyLess(keys[b], keys[a]) : PyLess(keys[a], keys[b]);
    if (!less.ok()) {
      if (error.ok()) error = less.status();
      return false;
    }
    return *less;
  });
  RETURN_IF_ERROR(error);
  return order;
}

absl::StatusOr<bool> OptionalBool(const std::optional<Value>& v, bool fallback) {
  return v.has_value() ? Truthy(*v) : fallback;
}

absl::StatusOr<int64_t> RequireInt(const Value& v, absl::string_view what) {
  if (!v.is_integral()) {
    return RuntimeError(absl::StrCat("'", TypeName(v),
                                     "' object cannot be interpreted as an integer (", what, ")"));
  }
  return v.AsInt();
}

Value Iterator(ValueList items) { return Value::Sequence(SeqKind::kIterator, std::move(items)); }

// ------------------------------------------------------------------- filters

absl::StatusOr<Value> Abs(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("abs", args, {}, 0).status());
  if (v.is_integral()) {
    if (v.AsInt() == INT64_MIN) return UnsupportedError("integer result outside the 64-bit range");
    return Value::Int(std::llabs(v.AsInt()));
  }
  if (v.is_float()) return Value::Float(std::fabs(v.AsDouble()));
  return RuntimeError(absl::StrCat("bad operand type for abs(): '", TypeName(v), "'"));
}

absl::StatusOr<Value> Batch(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("batch", args, {"linecount", "fill_with"}, 1));
  ASSIGN_OR_RETURN(int64_t count, RequireInt(*bound[0], "linecount"));
  if (count < 1) return UnsupportedError("batch with a linecount below 1");
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  ValueList batches;
  ValueList current;
  for (const Value& item : items->items) {
    if (static_cast<int64_t>(current.size()) == count) {
      batches.push_back(Value::List(std::move(current)));
      current.clear();
    }
    current.push_back(item);
  }
  if (!current.empty()) {
    if (bound[1].has_value() && !bound[1]->is_none()) {
      while (static_cast<int64_t>(current.size()) < count) current.push_back(*bound[1]);
    }
    batches.push_back(Value::List(std::move(current)));
  }
  return Iterator(std::move(batches));
}

template <absl::StatusOr<std::string> (*Fn)(std::string_view)>
absl::StatusOr<Value> StringFilter(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("filter", args, {}, 0).status());
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  ASSIGN_OR_RETURN(std::string out, Fn(s));
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Center(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("center", args, {"width"}, 0));
  int64_t width = 80;
  if (bound[0].has_value()) {
    ASSIGN_OR_RETURN(width, RequireInt(*bound[0], "width"));
  }
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return Value::String(PyPad(s, width, " ", kPadCenter));
}

absl::StatusOr<Value> Default(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("default", args, {"default_value", "boolean"}, 0));
  ASSIGN_OR_RETURN(bool boolean, OptionalBool(bound[1], false));
  if (v.is_undefined() || (boolean && !Truthy(v))) {
    return bound[0].has_value() ? *bound[0] : Value::String("");
  }
  return v;
}

absl::StatusOr<Value> DictSort(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("dictsort", args, {"case_sensitive", "by", "reverse"}, 0));
  ASSIGN_OR_RETURN(bool case_sensitive, OptionalBool(bound[0], false));
  ASSIGN_OR_RETURN(bool reverse, OptionalBool(bound[2], false));
  size_t pos = 0;
  if (bound[1].has_value()) {
    if (bound[1]->is_string() && bound[1]->AsString() == "value") {
      pos = 1;
    } else if (!bound[1]->is_string() || bound[1]->AsString() != "key") {
      return RuntimeError("You can only sort by either \"key\" or \"value\"");
    }
  }
  if (!v.is_dict())
    return RuntimeError(absl::StrCat("'", TypeName(v), "' object has no attribute 'items'"));
  std::vector<Value> keys;
  ValueList pairs;
  for (const auto& [k, item] : v.AsDict().entries()) {
    Value key = pos == 0 ? k : item;
    if (!case_sensitive) {
      ASSIGN_OR_RETURN(key, IgnoreCase(key));
    }
    keys.push_back(std::move(key));
    pairs.push_back(Value::Tuple({k, item}));
  }
  ASSIGN_OR_RETURN(std::vector<size_t> order, SortedOrder(keys, reverse));
  ValueList out;
  for (size_t i : order) out.push_back(pairs[i]);
  return Value::List(std::move(out));
}

absl::StatusOr<Value> Escape(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("escape", args, {}, 0).status());
  if (v.is_markup()) return v;
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return Value::Markup(HtmlEscape(s));
}

absl::StatusOr<Value> Safe(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("safe", args, {}, 0).status());
  if (v.is_markup()) return v;
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return Value::Markup(std::move(s));
}

absl::StatusOr<Value> First(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("first", args, {}, 0).status());
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  if (items->items.empty()) return Value::Undefined("No first item, sequence was empty.");
  return items->items.front();
}

absl::StatusOr<Value> Last(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("last", args, {}, 0).status());
  if (v.is_sequence() && v.seq_kind() == SeqKind::kIterator) {
    return RuntimeError("'generator' object is not reversible");
  }
  if (!v.is_undefined() && !v.is_string() && !v.is_sequence() && !v.is_dict()) {
    return RuntimeError(absl::StrCat("'", TypeName(v), "' object is not reversible"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  if (items->items.empty()) return Value::Undefined("No last item, sequence was empty.");
  return items->items.back();
}

// Python float(str): optional whitespace and sign, decimal digits with
// optional '_' separators, fraction and exponent, or inf / infinity / nan.
std::optional<double> ParsePyFloat(absl::string_view s) {
  absl::string_view t = absl::StripAsciiWhitespace(s);
  std::string clean;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '_') {
      if (i == 0 || i + 1 == t.size() ||
          !absl::ascii_isdigit(static_cast<unsigned char>(t[i - 1])) ||
          !absl::ascii_isdigit(static_cast<unsigned char>(t[i + 1]))) {
        return std::nullopt;
      }
      continue;
    }
    clean.push_back(t[i]);
  }
  std::string lower = absl::AsciiStrToLower(clean);
  absl::string_view body = lower;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) body.remove_prefix(1);
  if (body == "inf" || body == "infinity" || body == "nan") {
    double d = body == "nan" ? NAN : INFINITY;
    return lower[0] == '-' ? -d : d;
  }
  // Digits, at most one '.', optional exponent: nothing else (no hex, no
  // leading/trailing garbage).
  size_t i = 0;
  size_t digits = 0;
  while (i < body.size() && absl::ascii_isdigit(static_cast<unsigned char>(body[i]))) ++i, ++digits;
  if (i < body.size() && body[i] == '.') {
    ++i;
    while (i < body.size() && absl::ascii_isdigit(static_cast<unsigned char>(body[i])))
      ++i, ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (i < body.size() && body[i] == 'e') {
    ++i;
    if (i < body.size() && (body[i] == '+' || body[i] == '-')) ++i;
    const size_t exp_start = i;
    while (i < body.size() && absl::ascii_isdigit(static_cast<unsigned char>(body[i]))) ++i;
    if (i == exp_start) return std::nullopt;
  }
  if (i != body.size()) return std::nullopt;
  return std::strtod(clean.c_str(), nullptr);
}

// Python int(str, base) for base 10 (and 2..36 without prefixes).
std::optional<int64_t> ParsePyInt(absl::string_view s, int base) {
  absl::string_view t = absl::StripAsciiWhitespace(s);
  bool negative = false;
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
    negative = t[0] == '-';
    t.remove_prefix(1);
  }
  if (base == 16 && (absl::StartsWith(t, "0x") || absl::StartsWith(t, "0X"))) t.remove_prefix(2);
  if (base == 8 && (absl::StartsWith(t, "0o") || absl::StartsWith(t, "0O"))) t.remove_prefix(2);
  if (base == 2 && (absl::StartsWith(t, "0b") || absl::StartsWith(t, "0B"))) t.remove_prefix(2);
  if (t.empty()) return std::nullopt;
  // Accumulates the magnitude; 2^63 is allowed for INT64_MIN.
  constexpr uint64_t kLimit = uint64_t{1} << 63;
  uint64_t magnitude = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '_' && i > 0 && i + 1 < t.size() && t[i - 1] != '_') continue;
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    if (c >= 'a' && c <= 'z') d = c - 'a' + 10;
    if (c >= 'A' && c <= 'Z') d = c - 'A' + 10;
    if (d < 0 || d >= base) return std::nullopt;
    if (magnitude > (kLimit - static_cast<uint64_t>(d)) / static_cast<uint64_t>(base))
      return std::nullopt;
    magnitude = magnitude * static_cast<uint64_t>(base) + static_cast<uint64_t>(d);
  }
  if (!negative && magnitude == kLimit) return std::nullopt;
  return negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude);
}

absl::StatusOr<Value> Float(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("float", args, {"default"}, 0));
  const Value fallback = bound[0].has_value() ? *bound[0] : Value::Float(0.0);
  if (v.is_undefined()) return UndefinedError(v);  // Undefined.__float__ raises
  if (v.is_number()) return Value::Float(v.AsDouble());
  if (v.is_string()) {
    if (std::optional<double> d = ParsePyFloat(v.AsString())) return Value::Float(*d);
  }
  return fallback;
}

absl::StatusOr<Value> Int(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("int", args, {"default", "base"}, 0));
  const Value fallback = bound[0].has_value() ? *bound[0] : Value::Int(0);
  int base = 10;
  if (bound[1].has_value()) {
    ASSIGN_OR_RETURN(int64_t b, RequireInt(*bound[1], "base"));
    if (b != 2 && b != 8 && b != 10 && b != 16)
      return UnsupportedError("int with a base other than 2, 8, 10, 16");
    base = static_cast<int>(b);
  }
  const auto from_double = [&](double d) -> absl::StatusOr<Value> {
    if (std::isnan(d)) return fallback;
    if (std::isinf(d)) return RuntimeError("cannot convert float infinity to integer");
    if (d >= 9.2233720368547758e18 || d < -9.2233720368547758e18) {
      return UnsupportedError("integer result outside the 64-bit range");
    }
    return Value::Int(static_cast<int64_t>(std::trunc(d)));
  };
  if (v.is_undefined()) return UndefinedError(v);  // Undefined.__int__ raises
  if (v.is_integral()) return Value::Int(v.AsInt());
  if (v.is_float()) return from_double(v.AsDouble());
  if (v.is_string()) {
    if (std::optional<int64_t> i = ParsePyInt(v.AsString(), base)) return Value::Int(*i);
    if (std::optional<double> d = ParsePyFloat(v.AsString())) return from_double(*d);
  }
  return fallback;
}

absl::StatusOr<Value> Items(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("items", args, {}, 0).status());
  if (v.is_undefined()) return Iterator({});
  if (!v.is_dict()) return RuntimeError("Can only get item pairs from a mapping.");
  ValueList items;
  for (const auto& [k, item] : v.AsDict().entries()) items.push_back(Value::Tuple({k, item}));
  return Iterator(std::move(items));
}

absl::StatusOr<Value> Join(Interpreter& interp, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("join", args, {"d", "attribute"}, 0));
  std::string separator;
  if (bound[0].has_value()) {
    ASSIGN_OR_RETURN(separator, ToStr(*bound[0]));
  }
  ASSIGN_OR_RETURN(AttrGetter getter, AttrGetter::Make(bound[1]));
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  std::string out;
  for (size_t i = 0; i < items->items.size(); ++i) {
    if (i > 0) out += separator;
    ASSIGN_OR_RETURN(Value item, getter.Get(items->items[i]));
    RETURN_IF_ERROR(AppendStr(item, &out));
    RETURN_IF_ERROR(interp.CheckSize(out.size()));
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Length(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("length", args, {}, 0).status());
  ASSIGN_OR_RETURN(int64_t n, PyLen(v));
  return Value::Int(n);
}

absl::StatusOr<Value> List(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("list", args, {}, 0).status());
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  return Value::List(items->items);
}

absl::StatusOr<Value> Map(Interpreter& interp, const Value& v, const CallArgs& args) {
  ValueList out;
  if (args.positional.empty()) {
    // map(attribute="x", default=...)
    std::optional<Value> attribute;
    std::optional<Value> default_value;
    for (const auto& [key, value] : args.keyword) {
      if (key == "attribute") {
        attribute = value;
      } else if (key == "default") {
        default_value = value;
      } else {
        return RuntimeError(absl::StrCat("Unexpected keyword argument '", key, "'"));
      }
    }
    if (!attribute.has_value()) return RuntimeError("map requires a filter argument");
    ASSIGN_OR_RETURN(AttrGetter getter, AttrGetter::Make(attribute));
    if (!Truthy(v)) return Iterator({});
    ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
    const Value* fallback =
        default_value.has_value() && !default_value->is_none() ? &*default_value : nullptr;
    for (const Value& item : items->items) {
      ASSIGN_OR_RETURN(Value mapped, getter.Get(item, fallback));
      out.push_back(std::move(mapped));
    }
    return Iterator(std::move(out));
  }
  // map("filter", args...)
  if (!args.positional[0].is_string()) return RuntimeError("map: the filter name must be a string");
  const std::string& name = args.positional[0].AsString();
  FilterFn fn = FindFilter(name);
  if (fn == nullptr) return UnsupportedError(absl::StrCat("the filter '", name, "'"));
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  if (!Truthy(v)) return Iterator({});
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  for (const Value& item : items->items) {
    ASSIGN_OR_RETURN(Value mapped, fn(interp, item, rest));
    out.push_back(std::move(mapped));
  }
  return Iterator(std::move(out));
}

absl::StatusOr<Value> MinMax(const Value& v, const CallArgs& args, bool want_max) {
  ASSIGN_OR_RETURN(auto bound,
                   BindArgs(want_max ? "max" : "min", args, {"case_sensitive", "attribute"}, 0));
  ASSIGN_OR_RETURN(bool case_sensitive, OptionalBool(bound[0], false));
  ASSIGN_OR_RETURN(AttrGetter getter, AttrGetter::Make(bound[1]));
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  if (items->items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  ASSIGN_OR_RETURN(std::vector<Value> keys, SortKeys(items->items, getter, case_sensitive));
  size_t best = 0;
  for (size_t i = 1; i < keys.size(); ++i) {
    ASSIGN_OR_RETURN(bool better,
                     want_max ? PyLess(keys[best], keys[i]) : PyLess(keys[i], keys[best]));
    if (better) best = i;
  }
  return items->items[best];
}

absl::StatusOr<Value> Max(Interpreter&, const Value& v, const CallArgs& args) {
  return MinMax(v, args, true);
}
absl::StatusOr<Value> Min(Interpreter&, const Value& v, const CallArgs& args) {
  return MinMax(v, args, false);
}

// select / reject / selectattr / rejectattr.
absl::StatusOr<Value> SelectOrReject(Interpreter& interp, const Value& v, const CallArgs& args,
                                     bool select, bool by_attribute) {
  if (!Truthy(v)) return Iterator({});
  size_t next = 0;
  AttrGetter getter;
  if (by_attribute) {
    if (args.positional.empty()) return RuntimeError("Missing parameter for attribute name");
    ASSIGN_OR_RETURN(getter, AttrGetter::Make(args.positional[0]));
    next = 1;
  }
  TestFn test = nullptr;
  CallArgs test_args;
  if (args.positional.size() > next) {
    if (!args.positional[next].is_string()) return RuntimeError("the test name must be a string");
    const std::string& name = args.positional[next].AsString();
    test = FindTest(name);
    if (test == nullptr) return UnsupportedError(absl::StrCat("the test '", name, "'"));
    test_args.positional.assign(args.positional.begin() + static_cast<long>(next) + 1,
                                args.positional.end());
    test_args.keyword = args.keyword;
  } else if (!args.keyword.empty()) {
    return RuntimeError("keyword arguments without a test name");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  ValueList out;
  for (const Value& item : items->items) {
    ASSIGN_OR_RETURN(Value subject, getter.Get(item));
    bool passes = false;
    if (test != nullptr) {
      ASSIGN_OR_RETURN(passes, test(interp, subject, test_args));
    } else {
      passes = Truthy(subject);
    }
    if (passes == select) out.push_back(item);
  }
  return Iterator(std::move(out));
}

absl::StatusOr<Value> Select(Interpreter& interp, const Value& v, const CallArgs& args) {
  return SelectOrReject(interp, v, args, true, false);
}
absl::StatusOr<Value> Reject(Interpreter& interp, const Value& v, const CallArgs& args) {
  return SelectOrReject(interp, v, args, false, false);
}
absl::StatusOr<Value> SelectAttr(Interpreter& interp, const Value& v, const CallArgs& args) {
  return SelectOrReject(interp, v, args, true, true);
}
absl::StatusOr<Value> RejectAttr(Interpreter& interp, const Value& v, const CallArgs& args) {
  return SelectOrReject(interp, v, args, false, true);
}

absl::StatusOr<Value> Replace(Interpreter& interp, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("replace", args, {"old", "new", "count"}, 2));
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  ASSIGN_OR_RETURN(std::string old_text, ToStr(*bound[0]));
  ASSIGN_OR_RETURN(std::string new_text, ToStr(*bound[1]));
  int64_t count = -1;
  if (bound[2].has_value() && !bound[2]->is_none()) {
    ASSIGN_OR_RETURN(count, RequireInt(*bound[2], "count"));
  }
  std::string out = PyReplace(s, old_text, new_text, count);
  RETURN_IF_ERROR(interp.CheckSize(out.size()));
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Reverse(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("reverse", args, {}, 0).status());
  if (v.is_string()) {
    std::vector<uint32_t> cps = ToCodePoints(v.AsString());
    std::reverse(cps.begin(), cps.end());
    return Value::String(FromCodePoints(cps, 0, cps.size()));
  }
  const bool generator = v.is_sequence() && v.seq_kind() == SeqKind::kIterator;
  if (!v.is_undefined() && !v.is_sequence() && !v.is_dict()) {
    return RuntimeError("argument must be iterable");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  ValueList out(items->items.rbegin(), items->items.rend());
  // reversed() of a sequence is an iterator; a generator is listed first.
  return generator ? Value::List(std::move(out)) : Iterator(std::move(out));
}

// Python round(x, ndigits) for floats: correctly rounded, ties to even.
double RoundFloat(double x, int64_t ndigits) {
  if (!std::isfinite(x)) return x;
  if (ndigits > 330) return x;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(ndigits), x);
  return std::strtod(buf, nullptr);
}

absl::StatusOr<Value> Round(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("round", args, {"precision", "method"}, 0));
  int64_t precision = 0;
  if (bound[0].has_value()) {
    ASSIGN_OR_RETURN(precision, RequireInt(*bound[0], "precision"));
  }
  std::string method = "common";
  if (bound[1].has_value()) {
    ASSIGN_OR_RETURN(method, ToStr(*bound[1]));
  }
  if (method != "common" && method != "ceil" && method != "floor") {
    return RuntimeError("method must be common, ceil or floor");
  }
  if (!v.is_number()) {
    return RuntimeError(absl::StrCat("type ", TypeName(v), " doesn't define __round__ method"));
  }
  if (precision < 0) return UnsupportedError("round with a negative precision");
  if (method == "common") {
    if (v.is_integral()) return Value::Int(v.AsInt());
    return Value::Float(RoundFloat(v.AsDouble(), precision));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double scaled = v.AsDouble() * scale;
  const double r = method == "ceil" ? std::ceil(scaled) : std::floor(scaled);
  return Value::Float(r / scale);
}

absl::StatusOr<Value> Sort(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound,
                   BindArgs("sort", args, {"reverse", "case_sensitive", "attribute"}, 0));
  ASSIGN_OR_RETURN(bool reverse, OptionalBool(bound[0], false));
  ASSIGN_OR_RETURN(bool case_sensitive, OptionalBool(bound[1], false));
  // attribute may list several comma-separated attributes: the key is a list.
  std::vector<AttrGetter> getters;
  if (bound[2].has_value() && bound[2]->is_string()) {
    for (absl::string_view part : absl::StrSplit(bound[2]->AsString(), ',')) {
      ASSIGN_OR_RETURN(AttrGetter g, AttrGetter::Make(Value::String(std::string(part))));
      getters.push_back(std::move(g));
    }
  } else {
    ASSIGN_OR_RETURN(AttrGetter g, AttrGetter::Make(bound[2]));
    getters.push_back(std::move(g));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  std::vector<Value> keys;
  for (const Value& item : items->items) {
    ValueList key;
    for (const AttrGetter& g : getters) {
      ASSIGN_OR_RETURN(Value k, g.Get(item));
      if (!case_sensitive) {
        ASSIGN_OR_RETURN(k, IgnoreCase(k));
      }
      key.push_back(std::move(k));
    }
    keys.push_back(Value::List(std::move(key)));
  }
  ASSIGN_OR_RETURN(std::vector<size_t> order, SortedOrder(keys, reverse));
  ValueList out;
  for (size_t i : order) out.push_back(items->items[i]);
  return Value::List(std::move(out));
}

absl::StatusOr<Value> String(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("string", args, {}, 0).status());
  if (v.is_string()) return v;
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return Value::String(std::move(s));
}

absl::StatusOr<Value> Sum(Interpreter& interp, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("sum", args, {"attribute", "start"}, 0));
  ASSIGN_OR_RETURN(AttrGetter getter, AttrGetter::Make(bound[0]));
  Value total = bound[1].has_value() ? *bound[1] : Value::Int(0);
  if (total.is_string()) return RuntimeError("sum() can't sum strings [use ''.join(seq) instead]");
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  for (const Value& item : items->items) {
    ASSIGN_OR_RETURN(Value x, getter.Get(item));
    ASSIGN_OR_RETURN(
        total, ApplyArithmetic(ast::BinaryOp::kAdd, total, x, interp.options().max_output_bytes));
  }
  return total;
}

// transformers' tojson(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False) = json.dumps(...).
absl::StatusOr<Value> ToJson(Interpreter& interp, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("tojson", args,
                                        {"ensure_ascii", "indent", "separators", "sort_keys"}, 0));
  JsonDumpOptions options;
  ASSIGN_OR_RETURN(options.ensure_ascii, OptionalBool(bound[0], false));
  ASSIGN_OR_RETURN(options.sort_keys, OptionalBool(bound[3], false));
  if (bound[1].has_value() && !bound[1]->is_none()) {
    options.has_indent = true;
    options.item_separator = std::string(1, ',');  // not = ",": GCC 12 -Wrestrict false positive
    if (bound[1]->is_string()) {
      options.indent = bound[1]->AsString();
    } else if (bound[1]->is_integral()) {
      options.indent = std::string(
          static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(bound[1]->AsInt(), 1024))),
          ' ');
    } else {
      return RuntimeError("indent must be an integer, a string or None");
    }
  }
  if (bound[2].has_value() && !bound[2]->is_none()) {
    const Value& sep = *bound[2];
    if (!sep.is_sequence() ||
        (sep.seq_kind() != SeqKind::kTuple && sep.seq_kind() != SeqKind::kList) ||
        sep.AsSeq().items.size() != 2 || !sep.AsSeq().items[0].is_string() ||
        !sep.AsSeq().items[1].is_string()) {
      return RuntimeError("separators must be a (item_separator, key_separator) pair of strings");
    }
    options.item_separator = sep.AsSeq().items[0].AsString();
    options.key_separator = sep.AsSeq().items[1].AsString();
  }
  std::string out;
  RETURN_IF_ERROR(DumpJson(v, options, &out));
  RETURN_IF_ERROR(interp.CheckSize(out.size()));
  return Value::String(std::move(out));
}

absl::StatusOr<Value> Trim(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("trim", args, {"chars"}, 0));
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  if (!bound[0].has_value() || bound[0]->is_none())
    return Value::String(PyStrip(s, nullptr, true, true));
  if (!bound[0]->is_string()) {
    return RuntimeError(absl::StrCat("strip arg must be None or str, not ", TypeName(*bound[0])));
  }
  return Value::String(PyStrip(s, &bound[0]->AsString(), true, true));
}

absl::StatusOr<Value> Unique(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("unique", args, {"case_sensitive", "attribute"}, 0));
  ASSIGN_OR_RETURN(bool case_sensitive, OptionalBool(bound[0], false));
  ASSIGN_OR_RETURN(AttrGetter getter, AttrGetter::Make(bound[1]));
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(v));
  ASSIGN_OR_RETURN(std::vector<Value> keys, SortKeys(items->items, getter, case_sensitive));
  DictData seen;
  ValueList out;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (seen.Find(keys[i]) != nullptr) continue;
    RETURN_IF_ERROR(seen.Set(keys[i], Value::None()));
    out.push_back(items->items[i]);
  }
  return Iterator(std::move(out));
}

absl::StatusOr<Value> WordCount(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(BindArgs("wordcount", args, {}, 0).status());
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  if (!IsAscii(s)) return UnsupportedError("wordcount of non-ASCII text");
  int64_t words = 0;
  bool in_word = false;
  for (char c : s) {
    const bool word_char = absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
    if (word_char && !in_word) ++words;
    in_word = word_char;
  }
  return Value::Int(words);
}

absl::StatusOr<Value> Indent(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("indent", args, {"width", "first", "blank"}, 0));
  std::string indentation = "    ";
  if (bound[0].has_value()) {
    if (bound[0]->is_string()) {
      indentation = bound[0]->AsString();
    } else {
      ASSIGN_OR_RETURN(int64_t width, RequireInt(*bound[0], "width"));
      indentation.assign(static_cast<size_t>(std::clamp<int64_t>(width, 0, 1024)), ' ');
    }
  }
  ASSIGN_OR_RETURN(bool first, OptionalBool(bound[1], false));
  ASSIGN_OR_RETURN(bool blank, OptionalBool(bound[2], false));
  if (v.is_undefined()) return UndefinedError(v);
  if (!v.is_string()) {
    return RuntimeError(
        absl::StrCat("unsupported operand type(s) for +=: '", TypeName(v), "' and 'str'"));
  }
  std::vector<std::string> lines = PySplitLines(v.AsString() + "\n", /*keepends=*/false);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) {
      out += "\n";
      if (blank || !lines[i].empty()) out += indentation;
    }
    out += lines[i];
  }
  if (first) out = indentation + out;
  return v.is_markup() ? Value::Markup(std::move(out)) : Value::String(std::move(out));
}

const std::unordered_map<std::string_view, FilterFn>& Filters() {
  static const auto* filters = new std::unordered_map<std::string_view, FilterFn>{
      {"abs", Abs},
      {"batch", Batch},
      {"capitalize", StringFilter<PyCapitalize>},
      {"center", Center},
      {"count", Length},
      {"d", Default},
      {"default", Default},
      {"dictsort", DictSort},
      {"e", Escape},
      {"escape", Escape},
      {"first", First},
      {"float", Float},
      {"indent", Indent},
      {"int", Int},
      {"items", Items},
      {"join", Join},
      {"last", Last},
      {"length", Length},
      {"list", List},
      {"lower", StringFilter<PyLower>},
      {"map", Map},
      {"max", Max},
      {"min", Min},
      {"reject", Reject},
      {"rejectattr", RejectAttr},
      {"replace", Replace},
      {"reverse", Reverse},
      {"round", Round},
      {"safe", Safe},
      {"select", Select},
      {"selectattr", SelectAttr},
      {"sort", Sort},
      {"string", String},
      {"sum", Sum},
      {"title", StringFilter<JinjaTitle>},
      {"tojson", ToJson},
      {"trim", Trim},
      {"unique", Unique},
      {"upper", StringFilter<PyUpper>},
      {"wordcount", WordCount},
  };
  return *filters;
}

}  // namespace

FilterFn FindFilter(std::string_view name) {
  const auto& filters = Filters();
  auto it = filters.find(name);
  return it == filters.end() ? nullptr : it->second;
}

}  // namespace epserve::jinja
