// Attribute and item access, slicing, the methods of str / dict / list and
// the attributes of `loop`.
#include <algorithm>
#include <array>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/builtins.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/py_string.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

using MethodFn = absl::StatusOr<Value> (*)(Interpreter& interp, const Value& self,
                                           const CallArgs& args);

struct Method {
  absl::string_view name;
  MethodFn fn;
};

class BoundMethod : public Callable {
 public:
  BoundMethod(Value self, absl::string_view type, const Method& method)
      : self_(std::move(self)),
        description_(absl::StrCat(type, ".", method.name, "()")),
        fn_(method.fn) {}
  std::string Describe() const override { return description_; }
  absl::StatusOr<Value> Call(Interpreter& interp, const CallArgs& args) const override {
    absl::StatusOr<Value> result = fn_(interp, self_, args);
    if (!result.ok()) {
      return absl::Status(result.status().code(),
                          absl::StrCat(description_, ": ", result.status().message()));
    }
    return result;
  }

 private:
  Value self_;
  std::string description_;
  MethodFn fn_;
};

// ------------------------------------------------------------ argument helpers

absl::StatusOr<std::optional<int64_t>> OptionalIndex(const std::optional<Value>& v) {
  if (!v.has_value() || v->is_none()) return std::optional<int64_t>();
  if (!v->is_integral()) {
    return RuntimeError("slice indices must be integers or None or have an __index__ method");
  }
  return std::optional<int64_t>(v->AsInt());
}

absl::StatusOr<std::string> RequireString(const Value& v, absl::string_view what) {
  if (!v.is_string()) {
    return RuntimeError(absl::StrCat(what, " must be str, not ", TypeName(v)));
  }
  return v.AsString();
}

// Strings to match for startswith / endswith: a str or a tuple of str.
absl::StatusOr<std::vector<std::string>> Affixes(const Value& v, absl::string_view fn) {
  if (v.is_string()) return std::vector<std::string>{v.AsString()};
  if (v.is_sequence() && v.seq_kind() == SeqKind::kTuple) {
    std::vector<std::string> out;
    for (const Value& item : v.AsSeq().items) {
      if (!item.is_string()) {
        return RuntimeError(
            absl::StrCat("tuple for ", fn, " must only contain str, not ", TypeName(item)));
      }
      out.push_back(item.AsString());
    }
    return out;
  }
  return RuntimeError(
      absl::StrCat(fn, " first arg must be str or a tuple of str, not ", TypeName(v)));
}

Value StringList(std::vector<std::string> parts) {
  ValueList items;
  items.reserve(parts.size());
  for (std::string& p : parts) items.push_back(Value::String(std::move(p)));
  return Value::List(std::move(items));
}

// ----------------------------------------------------------------- str methods

absl::StatusOr<Value> StripImpl(const Value& self, const CallArgs& args, bool left, bool right) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("strip", args, {"chars"}, 0));
  if (!bound[0].has_value() || bound[0]->is_none()) {
    return Value::String(PyStrip(self.AsString(), nullptr, left, right));
  }
  ASSIGN_OR_RETURN(std::string chars, RequireString(*bound[0], "strip arg"));
  return Value::String(PyStrip(self.AsString(), &chars, left, right));
}

absl::StatusOr<Value> StrStrip(Interpreter&, const Value& self, const CallArgs& args) {
  return StripImpl(self, args, true, true);
}
absl::StatusOr<Value> StrLStrip(Interpreter&, const Value& self, const CallArgs& args) {
  return StripImpl(self, args, true, false);
}
absl::StatusOr<Value> StrRStrip(Interpreter&, const Value& self, const CallArgs& args) {
  return StripImpl(self, args, false, true);
}

absl::StatusOr<Value> SplitImpl(const Value& self, const CallArgs& args, bool from_right) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("split", args, {"sep", "maxsplit"}, 0));
  int64_t maxsplit = -1;
  if (bound[1].has_value()) {
    if (!bound[1]->is_integral()) return RuntimeError("maxsplit must be an integer");
    maxsplit = bound[1]->AsInt();
  }
  if (!bound[0].has_value() || bound[0]->is_none()) {
    return StringList(PySplit(self.AsString(), nullptr, maxsplit, from_right));
  }
  ASSIGN_OR_RETURN(std::string sep, RequireString(*bound[0], "separator"));
  if (sep.empty()) return RuntimeError("empty separator");
  return StringList(PySplit(self.AsString(), &sep, maxsplit, from_right));
}

absl::StatusOr<Value> StrSplit(Interpreter&, const Value& self, const CallArgs& args) {
  return SplitImpl(self, args, false);
}
absl::StatusOr<Value> StrRSplit(Interpreter&, const Value& self, const CallArgs& args) {
  return SplitImpl(self, args, true);
}

absl::StatusOr<Value> StrSplitLines(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("splitlines", args, {"keepends"}, 0));
  const bool keepends = bound[0].has_value() && Truthy(*bound[0]);
  return StringList(PySplitLines(self.AsString(), keepends));
}

absl::StatusOr<Value> AffixImpl(const Value& self, const CallArgs& args, bool prefix) {
  const absl::string_view fn = prefix ? "startswith" : "endswith";
  ASSIGN_OR_RETURN(auto bound, BindArgs(fn, args, {"prefix", "start", "end"}, 1));
  ASSIGN_OR_RETURN(std::vector<std::string> affixes, Affixes(*bound[0], fn));
  ASSIGN_OR_RETURN(std::optional<int64_t> start, OptionalIndex(bound[1]));
  ASSIGN_OR_RETURN(std::optional<int64_t> end, OptionalIndex(bound[2]));
  const std::string& s = self.AsString();
  std::string window = s;
  if (start.has_value() || end.has_value()) {
    const int64_t length = static_cast<int64_t>(CodePointCount(s));
    if (start.value_or(0) > length) return Value::Bool(false);
    int64_t b = 0;
    int64_t e = 0;
    ClampRange(length, start, end, &b, &e);
    if (e < b) return Value::Bool(false);
    window = CharSubstr(s, b, e);
  }
  for (const std::string& a : affixes) {
    const bool match = window.size() >= a.size() &&
                       (prefix ? window.compare(0, a.size(), a) == 0
                               : window.compare(window.size() - a.size(), a.size(), a) == 0);
    if (match) return Value::Bool(true);
  }
  return Value::Bool(false);
}

absl::StatusOr<Value> StrStartsWith(Interpreter&, const Value& self, const CallArgs& args) {
  return AffixImpl(self, args, true);
}
absl::StatusOr<Value> StrEndsWith(Interpreter&, const Value& self, const CallArgs& args) {
  return AffixImpl(self, args, false);
}

template <absl::StatusOr<std::string> (*Fn)(std::string_view)>
absl::StatusOr<Value> CaseMethod(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("method", args, {}, 0));
  (void)bound;
  ASSIGN_OR_RETURN(std::string out, Fn(self.AsString()));
  return Value::String(std::move(out));
}

absl::StatusOr<Value> StrReplace(Interpreter& interp, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("replace", args, {"old", "new", "count"}, 2));
  ASSIGN_OR_RETURN(std::string old_text, RequireString(*bound[0], "replace() argument 1"));
  ASSIGN_OR_RETURN(std::string new_text, RequireString(*bound[1], "replace() argument 2"));
  int64_t count = -1;
  if (bound[2].has_value()) {
    if (!bound[2]->is_integral()) return RuntimeError("count must be an integer");
    count = bound[2]->AsInt();
  }
  std::string out = PyReplace(self.AsString(), old_text, new_text, count);
  RETURN_IF_ERROR(interp.CheckSize(out.size()));
  return Value::String(std::move(out));
}

absl::StatusOr<Value> FindImpl(const Value& self, const CallArgs& args, bool from_right,
                               bool raise) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("find", args, {"sub", "start", "end"}, 1));
  ASSIGN_OR_RETURN(std::string sub, RequireString(*bound[0], "substring"));
  ASSIGN_OR_RETURN(std::optional<int64_t> start, OptionalIndex(bound[1]));
  ASSIGN_OR_RETURN(std::optional<int64_t> end, OptionalIndex(bound[2]));
  const int64_t at = PyFind(self.AsString(), sub, start, end, from_right);
  if (at < 0 && raise) return RuntimeError("substring not found");
  return Value::Int(at);
}

absl::StatusOr<Value> StrFind(Interpreter&, const Value& self, const CallArgs& args) {
  return FindImpl(self, args, false, false);
}
absl::StatusOr<Value> StrRFind(Interpreter&, const Value& self, const CallArgs& args) {
  return FindImpl(self, args, true, false);
}
absl::StatusOr<Value> StrIndex(Interpreter&, const Value& self, const CallArgs& args) {
  return FindImpl(self, args, false, true);
}
absl::StatusOr<Value> StrRIndex(Interpreter&, const Value& self, const CallArgs& args) {
  return FindImpl(self, args, true, true);
}

absl::StatusOr<Value> StrCount(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("count", args, {"sub", "start", "end"}, 1));
  ASSIGN_OR_RETURN(std::string sub, RequireString(*bound[0], "substring"));
  ASSIGN_OR_RETURN(std::optional<int64_t> start, OptionalIndex(bound[1]));
  ASSIGN_OR_RETURN(std::optional<int64_t> end, OptionalIndex(bound[2]));
  return Value::Int(PyCount(self.AsString(), sub, start, end));
}

absl::StatusOr<Value> StrJoin(Interpreter& interp, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("join", args, {"iterable"}, 1));
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(*bound[0]));
  std::string out;
  for (size_t i = 0; i < items->items.size(); ++i) {
    const Value& item = items->items[i];
    if (!item.is_string()) {
      return RuntimeError(
          absl::StrCat("sequence item ", i, ": expected str instance, ", TypeName(item), " found"));
    }
    if (i > 0) out += self.AsString();
    out += item.AsString();
    RETURN_IF_ERROR(interp.CheckSize(out.size()));
  }
  return Value::String(std::move(out));
}

absl::StatusOr<Value> PadImpl(const Value& self, const CallArgs& args, int where) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("center", args, {"width", "fillchar"}, 1));
  if (!bound[0]->is_integral()) return RuntimeError("width must be an integer");
  std::string fill = " ";
  if (bound[1].has_value()) {
    ASSIGN_OR_RETURN(fill, RequireString(*bound[1], "fill character"));
    if (CodePointCount(fill) != 1) {
      return RuntimeError("The fill character must be exactly one character long");
    }
  }
  return Value::String(PyPad(self.AsString(), bound[0]->AsInt(), fill, where));
}

absl::StatusOr<Value> StrCenter(Interpreter&, const Value& self, const CallArgs& args) {
  return PadImpl(self, args, kPadCenter);
}
absl::StatusOr<Value> StrLJust(Interpreter&, const Value& self, const CallArgs& args) {
  return PadImpl(self, args, kPadLeftJustify);
}
absl::StatusOr<Value> StrRJust(Interpreter&, const Value& self, const CallArgs& args) {
  return PadImpl(self, args, kPadRightJustify);
}

absl::StatusOr<Value> RemoveAffix(const Value& self, const CallArgs& args, bool prefix) {
  ASSIGN_OR_RETURN(auto bound,
                   BindArgs(prefix ? "removeprefix" : "removesuffix", args, {"affix"}, 1));
  ASSIGN_OR_RETURN(std::string affix, RequireString(*bound[0], "argument"));
  const std::string& s = self.AsString();
  if (prefix && s.compare(0, affix.size(), affix) == 0)
    return Value::String(s.substr(affix.size()));
  if (!prefix && s.size() >= affix.size() &&
      s.compare(s.size() - affix.size(), affix.size(), affix) == 0) {
    return Value::String(s.substr(0, s.size() - affix.size()));
  }
  return Value::String(s);
}

absl::StatusOr<Value> StrRemovePrefix(Interpreter&, const Value& self, const CallArgs& args) {
  return RemoveAffix(self, args, true);
}
absl::StatusOr<Value> StrRemoveSuffix(Interpreter&, const Value& self, const CallArgs& args) {
  return RemoveAffix(self, args, false);
}

absl::StatusOr<Value> StrIsSpace(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("isspace", args, {}, 0));
  (void)bound;
  const std::string& s = self.AsString();
  if (s.empty()) return Value::Bool(false);
  for (size_t pos = 0; pos < s.size();) {
    if (!IsPySpace(DecodeUtf8(s, &pos))) return Value::Bool(false);
  }
  return Value::Bool(true);
}

// isdigit / isalpha / isalnum / isdecimal on ASCII text; other text refused.
template <int kClass>
absl::StatusOr<Value> StrIsClass(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("is", args, {}, 0));
  (void)bound;
  const std::string& s = self.AsString();
  if (!IsAscii(s)) return UnsupportedError("character class tests of non-ASCII text");
  if (s.empty()) return Value::Bool(false);
  for (char c : s) {
    const bool digit = c >= '0' && c <= '9';
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    const bool ok = kClass == 0 ? digit : kClass == 1 ? alpha : (digit || alpha);
    if (!ok) return Value::Bool(false);
  }
  return Value::Bool(true);
}

template <absl::StatusOr<bool> (*Fn)(std::string_view)>
absl::StatusOr<Value> StrIsCase(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("is", args, {}, 0));
  (void)bound;
  ASSIGN_OR_RETURN(bool result, Fn(self.AsString()));
  return Value::Bool(result);
}

constexpr Method kStrMethods[] = {
    {"strip", StrStrip},
    {"lstrip", StrLStrip},
    {"rstrip", StrRStrip},
    {"split", StrSplit},
    {"rsplit", StrRSplit},
    {"splitlines", StrSplitLines},
    {"startswith", StrStartsWith},
    {"endswith", StrEndsWith},
    {"upper", CaseMethod<PyUpper>},
    {"lower", CaseMethod<PyLower>},
    {"title", CaseMethod<PyTitle>},
    {"capitalize", CaseMethod<PyCapitalize>},
    {"swapcase", CaseMethod<PySwapcase>},
    {"replace", StrReplace},
    {"find", StrFind},
    {"rfind", StrRFind},
    {"index", StrIndex},
    {"rindex", StrRIndex},
    {"count", StrCount},
    {"join", StrJoin},
    {"center", StrCenter},
    {"ljust", StrLJust},
    {"rjust", StrRJust},
    {"removeprefix", StrRemovePrefix},
    {"removesuffix", StrRemoveSuffix},
    {"isspace", StrIsSpace},
    {"isdigit", StrIsClass<0>},
    {"isdecimal", StrIsClass<0>},
    {"isalpha", StrIsClass<1>},
    {"isalnum", StrIsClass<2>},
    {"islower", StrIsCase<PyIsLower>},
    {"isupper", StrIsCase<PyIsUpper>},
};

// Python str methods not implemented here: using one is refused.
constexpr absl::string_view kOtherStrMethods[] = {
    "casefold",  "encode",       "expandtabs", "format",      "format_map",
    "isascii",   "isidentifier", "isnumeric",  "isprintable", "istitle",
    "maketrans", "partition",    "rpartition", "translate",   "zfill",
};

// --------------------------------------------------------- dict / list methods

absl::StatusOr<Value> DictItemsView(const Value& self, SeqKind kind) {
  ValueList items;
  items.reserve(self.AsDict().size());
  for (const auto& [k, v] : self.AsDict().entries()) {
    if (kind == SeqKind::kDictItems) {
      items.push_back(Value::Tuple({k, v}));
    } else {
      items.push_back(kind == SeqKind::kDictKeys ? k : v);
    }
  }
  return Value::Sequence(kind, std::move(items));
}

absl::StatusOr<Value> DictItems(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("items", args, {}, 0));
  (void)bound;
  return DictItemsView(self, SeqKind::kDictItems);
}
absl::StatusOr<Value> DictKeys(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("keys", args, {}, 0));
  (void)bound;
  return DictItemsView(self, SeqKind::kDictKeys);
}
absl::StatusOr<Value> DictValues(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("values", args, {}, 0));
  (void)bound;
  return DictItemsView(self, SeqKind::kDictValues);
}

absl::StatusOr<Value> DictGet(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("get", args, {"key", "default"}, 1));
  const Value& key = *bound[0];
  if ((key.is_sequence() && key.seq_kind() != SeqKind::kTuple) || key.is_dict()) {
    return RuntimeError(absl::StrCat("unhashable type: '", TypeName(key), "'"));
  }
  if (const Value* v = self.AsDict().Find(key)) return *v;
  return bound[1].has_value() ? *bound[1] : Value::None();
}

absl::StatusOr<Value> DictCopy(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("copy", args, {}, 0));
  (void)bound;
  return self;
}

absl::StatusOr<Value> SeqCount(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("count", args, {"value"}, 1));
  int64_t n = 0;
  for (const Value& v : self.AsSeq().items) n += PyEquals(v, *bound[0]) ? 1 : 0;
  return Value::Int(n);
}

absl::StatusOr<Value> SeqIndex(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("index", args, {"value"}, 1));
  const ValueList& items = self.AsSeq().items;
  for (size_t i = 0; i < items.size(); ++i) {
    if (PyEquals(items[i], *bound[0])) return Value::Int(static_cast<int64_t>(i));
  }
  return RuntimeError("value is not in list");
}

absl::StatusOr<Value> ListCopy(Interpreter&, const Value& self, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("copy", args, {}, 0));
  (void)bound;
  return Value::List(self.AsSeq().items);
}

constexpr Method kDictMethods[] = {
    {"items", DictItems}, {"keys", DictKeys}, {"values", DictValues},
    {"get", DictGet},     {"copy", DictCopy},
};
// Mutating dict methods: the immutable sandbox makes them unsafe (Undefined).
constexpr absl::string_view kDictMutators[] = {"pop", "popitem", "setdefault", "update", "clear"};

constexpr Method kListMethods[] = {{"count", SeqCount}, {"index", SeqIndex}, {"copy", ListCopy}};
constexpr Method kTupleMethods[] = {{"count", SeqCount}, {"index", SeqIndex}};
constexpr absl::string_view kListMutators[] = {"append", "extend",  "insert", "pop",
                                               "remove", "reverse", "sort",   "clear"};

// Attributes of Python numbers this engine does not provide.
constexpr absl::string_view kNumberAttributes[] = {
    "real",       "imag",      "conjugate", "numerator",  "denominator",
    "bit_length", "bit_count", "to_bytes",  "from_bytes", "as_integer_ratio",
    "is_integer", "hex",       "fromhex",
};

template <size_t N>
const Method* FindMethod(const Method (&methods)[N], absl::string_view name) {
  for (const Method& m : methods) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

template <typename Range>
bool Contains(const Range& range, absl::string_view s) {
  return std::find(std::begin(range), std::end(range), s) != std::end(range);
}

Value Bind(const Value& self, absl::string_view type, const Method& m) {
  return Value::Function(std::make_shared<BoundMethod>(self, type, m));
}

Value UnsafeAttribute(const Value& obj, absl::string_view name) {
  return Value::Undefined(
      absl::StrCat("access to attribute '", name, "' of '", TypeName(obj), "' object is unsafe."));
}

Value MissingAttribute(const Value& obj, absl::string_view name) {
  if (obj.is_none()) return Value::Undefined(absl::StrCat("'None' has no attribute '", name, "'"));
  return Value::Undefined(
      absl::StrCat("'", TypeName(obj), " object' has no attribute '", name, "'"));
}

// ------------------------------------------------------------------------ loop

class LoopCycle : public Callable {
 public:
  explicit LoopCycle(std::shared_ptr<const LoopData> loop) : loop_(std::move(loop)) {}
  std::string Describe() const override { return "loop.cycle()"; }
  absl::StatusOr<Value> Call(Interpreter&, const CallArgs& args) const override {
    if (!args.keyword.empty()) return RuntimeError("loop.cycle() takes no keyword arguments");
    if (args.positional.empty()) return RuntimeError("no items for cycling given");
    return args.positional[loop_->index0 % args.positional.size()];
  }

 private:
  std::shared_ptr<const LoopData> loop_;
};

class LoopChanged : public Callable {
 public:
  explicit LoopChanged(std::shared_ptr<LoopData> loop) : loop_(std::move(loop)) {}
  std::string Describe() const override { return "loop.changed()"; }
  absl::StatusOr<Value> Call(Interpreter&, const CallArgs& args) const override {
    if (!args.keyword.empty()) return RuntimeError("loop.changed() takes no keyword arguments");
    if (loop_->last_changed.has_value() && loop_->last_changed->size() == args.positional.size() &&
        std::equal(args.positional.begin(), args.positional.end(), loop_->last_changed->begin(),
                   PyEquals)) {
      return Value::Bool(false);
    }
    loop_->last_changed = args.positional;
    return Value::Bool(true);
  }

 private:
  std::shared_ptr<LoopData> loop_;
};

absl::StatusOr<Value> LoopAttribute(const Value& obj, absl::string_view name) {
  LoopData& loop = obj.AsLoop();
  const auto length = static_cast<int64_t>(loop.items->items.size());
  const auto index0 = static_cast<int64_t>(loop.index0);
  if (name == "index") return Value::Int(index0 + 1);
  if (name == "index0") return Value::Int(index0);
  if (name == "revindex") return Value::Int(length - index0);
  if (name == "revindex0") return Value::Int(length - index0 - 1);
  if (name == "first") return Value::Bool(index0 == 0);
  if (name == "last") return Value::Bool(index0 == length - 1);
  if (name == "length") return Value::Int(length);
  if (name == "depth") return Value::Int(1);
  if (name == "depth0") return Value::Int(0);
  if (name == "previtem") {
    if (index0 == 0) return Value::Undefined("there is no previous item");
    return loop.items->items[loop.index0 - 1];
  }
  if (name == "nextitem") {
    if (index0 + 1 >= length) return Value::Undefined("there is no next item");
    return loop.items->items[loop.index0 + 1];
  }
  if (name == "cycle") return Value::Function(std::make_shared<LoopCycle>(obj.shared_loop()));
  if (name == "changed") return Value::Function(std::make_shared<LoopChanged>(obj.shared_loop()));
  return MissingAttribute(obj, name);
}

// Python's slice.indices(length) and the selected positions.
absl::StatusOr<std::vector<int64_t>> SliceIndexes(int64_t length, const Value* start,
                                                  const Value* stop, const Value* step) {
  const auto as_index = [](const Value* v) -> absl::StatusOr<std::optional<int64_t>> {
    if (v == nullptr || v->is_none()) return std::optional<int64_t>();
    if (!v->is_integral()) {
      return RuntimeError("slice indices must be integers or None or have an __index__ method");
    }
    return std::optional<int64_t>(v->AsInt());
  };
  ASSIGN_OR_RETURN(std::optional<int64_t> a, as_index(start));
  ASSIGN_OR_RETURN(std::optional<int64_t> b, as_index(stop));
  ASSIGN_OR_RETURN(std::optional<int64_t> c, as_index(step));
  const int64_t st = c.value_or(1);
  if (st == 0) return RuntimeError("slice step cannot be zero");
  const int64_t lower = st < 0 ? -1 : 0;
  const int64_t upper = st < 0 ? length - 1 : length;
  const auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v.has_value()) return fallback;
    int64_t x = *v;
    if (x < 0) {
      x += length;
      if (x < lower) x = lower;
    } else if (x > upper) {
      x = upper;
    }
    return x;
  };
  const int64_t from = clamp(a, st < 0 ? upper : lower);
  const int64_t to = clamp(b, st < 0 ? lower : upper);
  std::vector<int64_t> indexes;
  for (int64_t i = from; st > 0 ? i < to : i > to; i += st) indexes.push_back(i);
  return indexes;
}

}  // namespace

absl::StatusOr<Value> GetAttr(const Value& obj, absl::string_view name) {
  switch (obj.kind()) {
    case Value::Kind::kUndefined:
      return UndefinedError(obj);
    case Value::Kind::kString:
      if (const Method* m = FindMethod(kStrMethods, name)) return Bind(obj, "str", *m);
      if (Contains(kOtherStrMethods, name)) {
        return UnsupportedError(absl::StrCat("the str method '", name, "'"));
      }
      return MissingAttribute(obj, name);
    case Value::Kind::kDict:
      if (const Method* m = FindMethod(kDictMethods, name)) return Bind(obj, "dict", *m);
      if (Contains(kDictMutators, name)) return UnsafeAttribute(obj, name);
      if (name == "fromkeys") return UnsupportedError("dict.fromkeys");
      if (const Value* v = obj.AsDict().FindString(name)) return *v;
      return MissingAttribute(obj, name);
    case Value::Kind::kSequence:
      switch (obj.seq_kind()) {
        case SeqKind::kList:
          if (const Method* m = FindMethod(kListMethods, name)) return Bind(obj, "list", *m);
          if (Contains(kListMutators, name)) return UnsafeAttribute(obj, name);
          break;
        case SeqKind::kTuple:
        case SeqKind::kRange:
          if (const Method* m = FindMethod(kTupleMethods, name))
            return Bind(obj, TypeName(obj), *m);
          break;
        default:
          break;
      }
      return MissingAttribute(obj, name);
    case Value::Kind::kNamespace:
      if (Value* v = obj.AsNamespace().Find(name)) return *v;
      return MissingAttribute(obj, name);
    case Value::Kind::kLoop:
      return LoopAttribute(obj, name);
    case Value::Kind::kBool:
    case Value::Kind::kInt:
    case Value::Kind::kFloat:
      if (Contains(kNumberAttributes, name)) {
        return UnsupportedError(absl::StrCat("the number attribute '", name, "'"));
      }
      return MissingAttribute(obj, name);
    default:
      return MissingAttribute(obj, name);
  }
}

absl::StatusOr<Value> GetItem(const Value& obj, const Value& key) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (key.is_integral()) {
    const int64_t i = key.AsInt();
    if (obj.is_string()) {
      const std::string& s = obj.AsString();
      const auto length = static_cast<int64_t>(CodePointCount(s));
      const int64_t at = i < 0 ? i + length : i;
      if (at >= 0 && at < length) return Value::String(CharSubstr(s, at, at + 1));
      return Value::Undefined(absl::StrCat("str object has no element ", i));
    }
    if (obj.is_sequence()) {
      const SeqKind kind = obj.seq_kind();
      if (kind == SeqKind::kList || kind == SeqKind::kTuple || kind == SeqKind::kRange) {
        const ValueList& items = obj.AsSeq().items;
        const auto length = static_cast<int64_t>(items.size());
        const int64_t at = i < 0 ? i + length : i;
        if (at >= 0 && at < length) return items[static_cast<size_t>(at)];
        return Value::Undefined(absl::StrCat(TypeName(obj), " object has no element ", i));
      }
    }
  }
  if (obj.is_dict()) {
    if (const Value* v = obj.AsDict().Find(key)) return *v;
  }
  // Not subscriptable with this key: Jinja falls back to the attribute.
  if (key.is_string()) return GetAttr(obj, key.AsString());
  std::string key_repr;
  if (AppendRepr(key, &key_repr).ok()) {
    return Value::Undefined(absl::StrCat(TypeName(obj), " object has no element ", key_repr));
  }
  return Value::Undefined(absl::StrCat(TypeName(obj), " object has no such element"));
}

absl::StatusOr<Value> GetSlice(const Value& obj, const Value* start, const Value* stop,
                               const Value* step) {
  if (obj.is_undefined()) return UndefinedError(obj);
  if (obj.is_string()) {
    const std::string& s = obj.AsString();
    if (IsAscii(s)) {
      ASSIGN_OR_RETURN(std::vector<int64_t> idx,
                       SliceIndexes(static_cast<int64_t>(s.size()), start, stop, step));
      std::string out;
      out.reserve(idx.size());
      for (int64_t i : idx) out.push_back(s[static_cast<size_t>(i)]);
      return Value::String(std::move(out));
    }
    const std::vector<uint32_t> cps = ToCodePoints(s);
    ASSIGN_OR_RETURN(std::vector<int64_t> idx,
                     SliceIndexes(static_cast<int64_t>(cps.size()), start, stop, step));
    std::string out;
    for (int64_t i : idx) AppendUtf8(cps[static_cast<size_t>(i)], &out);
    return Value::String(std::move(out));
  }
  if (obj.is_sequence()) {
    const SeqKind kind = obj.seq_kind();
    if (kind == SeqKind::kList || kind == SeqKind::kTuple || kind == SeqKind::kRange) {
      const ValueList& items = obj.AsSeq().items;
      ASSIGN_OR_RETURN(std::vector<int64_t> idx,
                       SliceIndexes(static_cast<int64_t>(items.size()), start, stop, step));
      ValueList out;
      out.reserve(idx.size());
      for (int64_t i : idx) out.push_back(items[static_cast<size_t>(i)]);
      return Value::Sequence(kind, std::move(out));
    }
  }
  // Jinja compiles slices to a plain Python subscript: no Undefined fallback.
  if (obj.is_dict()) return RuntimeError("unhashable type: 'slice'");
  return RuntimeError(absl::StrCat("'", TypeName(obj), "' object is not subscriptable"));
}

}  // namespace epserve::jinja
