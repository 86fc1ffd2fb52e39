// Global functions of the chat-template environment and argument binding.
#include <ctime>
#include <memory>
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/builtins.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/evaluator.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

// The sandbox refuses ranges longer than this (jinja2.sandbox.MAX_RANGE).
constexpr int64_t kMaxRange = 100000;

using GlobalFn = absl::StatusOr<Value> (*)(Interpreter& interp, const CallArgs& args);

class GlobalFunction : public Callable {
 public:
  GlobalFunction(std::string name, GlobalFn fn) : name_(std::move(name)), fn_(fn) {}
  std::string Describe() const override { return absl::StrCat(name_, "()"); }
  absl::StatusOr<Value> Call(Interpreter& interp, const CallArgs& args) const override {
    absl::StatusOr<Value> result = fn_(interp, args);
    if (!result.ok() && !result.status().GetPayload(kRaisedPayload).has_value()) {
      return absl::Status(result.status().code(),
                          absl::StrCat(name_, "(): ", result.status().message()));
    }
    return result;
  }

 private:
  std::string name_;
  GlobalFn fn_;
};

absl::StatusOr<Value> Range(Interpreter&, const CallArgs& args) {
  if (!args.keyword.empty()) return RuntimeError("range() takes no keyword arguments");
  const size_t n = args.positional.size();
  if (n < 1 || n > 3) return RuntimeError(absl::StrCat("range expected 1 to 3 arguments, got ", n));
  int64_t bounds[3] = {0, 0, 1};
  for (size_t i = 0; i < n; ++i) {
    const Value& v = args.positional[i];
    if (!v.is_integral()) {
      return RuntimeError(
          absl::StrCat("'", TypeName(v), "' object cannot be interpreted as an integer"));
    }
    bounds[n == 1 ? 1 : i] = v.AsInt();
  }
  const int64_t start = bounds[0];
  const int64_t stop = bounds[1];
  const int64_t step = bounds[2];
  if (step == 0) return RuntimeError("range() arg 3 must not be zero");
  // Length without overflow: bounds may be anywhere in int64.
  uint64_t length = 0;
  if (step > 0 && stop > start) {
    length = (static_cast<uint64_t>(stop) - static_cast<uint64_t>(start) - 1) /
                 static_cast<uint64_t>(step) +
             1;
  } else if (step < 0 && stop < start) {
    length = (static_cast<uint64_t>(start) - static_cast<uint64_t>(stop) - 1) /
                 (static_cast<uint64_t>(-(step + 1)) + 1) +
             1;
  }
  if (length > static_cast<uint64_t>(kMaxRange)) {
    return RuntimeError(absl::StrCat(
        "Range too big. The sandbox blocks ranges larger than MAX_RANGE (", kMaxRange, ")."));
  }
  ValueList items;
  items.reserve(static_cast<size_t>(length));
  for (int64_t i = 0; i < static_cast<int64_t>(length); ++i)
    items.push_back(Value::Int(start + i * step));
  return Value::Sequence(SeqKind::kRange, std::move(items));
}

// dict(mapping_or_pairs, **kwargs) and namespace(...) take the same arguments.
absl::StatusOr<std::shared_ptr<DictData>> DictFromArgs(const CallArgs& args, absl::string_view fn) {
  auto dict = std::make_shared<DictData>();
  if (args.positional.size() > 1) {
    return RuntimeError(
        absl::StrCat(fn, " expected at most 1 positional argument, got ", args.positional.size()));
  }
  if (!args.positional.empty()) {
    const Value& source = args.positional[0];
    if (source.is_dict()) {
      for (const auto& [k, v] : source.AsDict().entries()) RETURN_IF_ERROR(dict->Set(k, v));
    } else {
      ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> pairs, Iterate(source));
      for (const Value& pair : pairs->items) {
        ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> kv, Iterate(pair));
        if (kv->items.size() != 2) {
          return RuntimeError(
              "dictionary update sequence element has the wrong length; 2 is required");
        }
        RETURN_IF_ERROR(dict->Set(kv->items[0], kv->items[1]));
      }
    }
  }
  for (const auto& [k, v] : args.keyword) RETURN_IF_ERROR(dict->Set(Value::String(k), v));
  return dict;
}

absl::StatusOr<Value> Dict(Interpreter&, const CallArgs& args) {
  ASSIGN_OR_RETURN(std::shared_ptr<DictData> dict, DictFromArgs(args, "dict"));
  return Value::Dict(std::move(dict));
}

absl::StatusOr<Value> Namespace(Interpreter& interp, const CallArgs& args) {
  ASSIGN_OR_RETURN(std::shared_ptr<DictData> dict, DictFromArgs(args, "namespace"));
  auto ns = std::make_shared<NamespaceData>();
  for (const auto& [k, v] : dict->entries()) {
    if (!k.is_string()) return RuntimeError("namespace attribute names must be strings");
    ns->Set(k.AsString(), v);
  }
  RETURN_IF_ERROR(interp.RegisterNamespace(ns));
  return Value::Namespace(std::move(ns));
}

absl::StatusOr<Value> RaiseException(Interpreter&, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("raise_exception", args, {"message"}, 1));
  ASSIGN_OR_RETURN(std::string message, ToStr(*bound[0]));
  return RaisedError(message);
}

// datetime.now().strftime(format): local time.
absl::StatusOr<Value> StrftimeNow(Interpreter&, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("strftime_now", args, {"format"}, 1));
  if (!bound[0]->is_string()) {
    return RuntimeError(
        absl::StrCat("strftime() argument 1 must be str, not ", TypeName(*bound[0])));
  }
  const std::string& format = bound[0]->AsString();
  if (format.empty()) return Value::String("");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  // strftime returns 0 both on overflow and for an empty result; a format
  // of a few characters yields at most a few hundred bytes.
  std::string out(format.size() * 64 + 64, '\0');
  const size_t n = std::strftime(out.data(), out.size(), format.c_str(), &local);
  out.resize(n);
  return Value::String(std::move(out));
}

template <const char* kName>
absl::StatusOr<Value> Refused(Interpreter&, const CallArgs&) {
  return UnsupportedError(absl::StrCat("the global function '", kName, "'"));
}
constexpr char kLipsum[] = "lipsum";
constexpr char kCycler[] = "cycler";
constexpr char kJoiner[] = "joiner";

const std::unordered_map<std::string_view, Value>& Globals() {
  static const auto* globals = [] {
    auto* m = new std::unordered_map<std::string_view, Value>();
    const auto add = [m](std::string_view name, GlobalFn fn) {
      (*m)[name] = Value::Function(std::make_shared<GlobalFunction>(std::string(name), fn));
    };
    add("range", Range);
    add("dict", Dict);
    add("namespace", Namespace);
    add("raise_exception", RaiseException);
    add("strftime_now", StrftimeNow);
    add(kLipsum, Refused<kLipsum>);
    add(kCycler, Refused<kCycler>);
    add(kJoiner, Refused<kJoiner>);
    return m;
  }();
  return *globals;
}

}  // namespace

const Value* FindGlobal(std::string_view name) {
  const auto& globals = Globals();
  auto it = globals.find(name);
  return it == globals.end() ? nullptr : &it->second;
}

absl::StatusOr<std::vector<std::optional<Value>>> BindArgs(
    absl::string_view function, const CallArgs& args,
    std::initializer_list<absl::string_view> names, size_t num_required) {
  std::vector<std::optional<Value>> bound(names.size());
  if (args.positional.size() > names.size()) {
    return RuntimeError(absl::StrCat(function, "() takes at most ", names.size(), " argument(s) (",
                                     args.positional.size(), " given)"));
  }
  for (size_t i = 0; i < args.positional.size(); ++i) bound[i] = args.positional[i];
  for (const auto& [key, value] : args.keyword) {
    size_t i = 0;
    for (absl::string_view name : names) {
      if (name == key) break;
      ++i;
    }
    if (i == names.size()) {
      return RuntimeError(
          absl::StrCat(function, "() got an unexpected keyword argument '", key, "'"));
    }
    if (bound[i].has_value()) {
      return RuntimeError(
          absl::StrCat(function, "() got multiple values for argument '", key, "'"));
    }
    bound[i] = value;
  }
  size_t i = 0;
  for (absl::string_view name : names) {
    if (i < num_required && !bound[i].has_value()) {
      return RuntimeError(absl::StrCat(function, "() missing required argument '", name, "'"));
    }
    ++i;
  }
  return bound;
}

}  // namespace epserve::jinja
