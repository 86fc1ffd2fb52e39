// The Jinja engine's runtime values, modelled on the Python objects that
// Jinja2 templates see: Undefined, None, bool, int, float, str (and Markup),
// list / tuple / range / dict views / one-shot iterators, dict (insertion
// ordered), namespace, the loop object and callables.
//
// Values are cheap to copy: strings and containers are shared, immutable
// (Hugging Face renders in an ImmutableSandboxedEnvironment, so templates
// cannot mutate lists or dicts). Only namespaces and loop objects change, and
// they live for one render.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve::jinja {

class Value;
using ValueList = std::vector<Value>;
class DictData;
struct NamespaceData;
struct LoopData;
class Callable;

// Which Python sequence type a sequence value stands for. They iterate alike
// but print, compare and index differently.
enum class SeqKind {
  kList,
  kTuple,
  kRange,
  kDictKeys,
  kDictValues,
  kDictItems,
  kIterator,  // a generator: iterable once, no len(), always truthy
};

struct SeqData {
  SeqKind kind = SeqKind::kList;
  ValueList items;
  // Iterators are consumed by their first use; a second use is refused.
  mutable bool consumed = false;
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kSequence,
    kDict,
    kNamespace,
    kLoop,
    kCallable,
  };

  Value() = default;  // Undefined
  static Value Undefined(std::string hint);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value String(std::string s);
  // A markupsafe.Markup string (the result of |safe or |escape).
  static Value Markup(std::string s);
  static Value Sequence(SeqKind kind, ValueList items);
  static Value List(ValueList items) { return Sequence(SeqKind::kList, std::move(items)); }
  static Value Tuple(ValueList items) { return Sequence(SeqKind::kTuple, std::move(items)); }
  static Value Dict(std::shared_ptr<const DictData> dict);
  static Value Namespace(std::shared_ptr<NamespaceData> ns);
  static Value Loop(std::shared_ptr<LoopData> loop);
  static Value Function(std::shared_ptr<const Callable> fn);

  Kind kind() const { return static_cast<Kind>(rep_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  // Python numbers: bool, int and float.
  bool is_number() const { return is_bool() || is_int() || is_float(); }
  // bool or int (Python int, of which bool is a subclass).
  bool is_integral() const { return is_bool() || is_int(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_markup() const { return is_string() && std::get<StringRep>(rep_).markup; }
  bool is_sequence() const { return kind() == Kind::kSequence; }
  bool is_dict() const { return kind() == Kind::kDict; }
  bool is_namespace() const { return kind() == Kind::kNamespace; }
  bool is_loop() const { return kind() == Kind::kLoop; }
  bool is_callable() const { return kind() == Kind::kCallable; }

  bool AsBool() const { return std::get<bool>(rep_); }
  // bool or int as an integer.
  int64_t AsInt() const;
  // bool, int or float as a double.
  double AsDouble() const;
  const std::string& AsString() const { return *std::get<StringRep>(rep_).text; }
  const SeqData& AsSeq() const { return *std::get<SeqPtr>(rep_); }
  SeqKind seq_kind() const { return AsSeq().kind; }
  const std::shared_ptr<const SeqData>& shared_seq() const { return std::get<SeqPtr>(rep_); }
  const DictData& AsDict() const { return *std::get<DictPtr>(rep_); }
  NamespaceData& AsNamespace() const { return *std::get<NamespacePtr>(rep_); }
  LoopData& AsLoop() const { return *std::get<LoopPtr>(rep_); }
  const std::shared_ptr<LoopData>& shared_loop() const { return std::get<LoopPtr>(rep_); }
  const Callable& AsCallable() const { return *std::get<CallablePtr>(rep_); }
  // Identity of a shared object (Python `is` for containers), or null.
  const void* identity() const;
  // Why a value is undefined ("'x' is undefined"), for error messages.
  std::string UndefinedMessage() const;

 private:
  struct UndefinedRep {
    std::shared_ptr<const std::string> hint;
  };
  struct NoneRep {};
  struct StringRep {
    std::shared_ptr<const std::string> text;
    bool markup = false;
  };
  using SeqPtr = std::shared_ptr<const SeqData>;
  using DictPtr = std::shared_ptr<const DictData>;
  using NamespacePtr = std::shared_ptr<NamespaceData>;
  using LoopPtr = std::shared_ptr<LoopData>;
  using CallablePtr = std::shared_ptr<const Callable>;
  // Alternative order matches Kind.
  std::variant<UndefinedRep, NoneRep, bool, int64_t, double, StringRep, SeqPtr, DictPtr,
               NamespacePtr, LoopPtr, CallablePtr>
      rep_;
};

// An insertion-ordered dict with Python key equality (1 == 1.0 == True).
class DictData {
 public:
  // Inserts or, when the key exists, replaces the value in place.
  // Fails for unhashable keys (lists, dicts).
  absl::Status Set(Value key, Value value);
  // Null when absent or when `key` is unhashable.
  const Value* Find(const Value& key) const;
  const Value* FindString(absl::string_view key) const;
  const std::vector<std::pair<Value, Value>>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }

 private:
  std::vector<std::pair<Value, Value>> entries_;
  std::unordered_map<std::string, size_t> string_index_;
};

struct NamespaceData {
  std::vector<std::pair<std::string, Value>> attrs;
  Value* Find(absl::string_view name);
  void Set(absl::string_view name, Value value);
};

// State behind `loop` inside a for loop.
struct LoopData {
  std::shared_ptr<const SeqData> items;
  size_t index0 = 0;
  // Last values passed to loop.changed(...).
  std::optional<ValueList> last_changed;
};

// Positional and keyword arguments of a call.
struct CallArgs {
  ValueList positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

class Interpreter;

// Anything a template can call: globals, bound methods, macros, loop.cycle.
class Callable {
 public:
  virtual ~Callable() = default;
  // "range", "str.split", "macro 'render_tool'": for messages.
  virtual std::string Describe() const = 0;
  virtual absl::StatusOr<Value> Call(Interpreter& interp, const CallArgs& args) const = 0;
};

// Python truthiness.
bool Truthy(const Value& v);
// Python type name ("str", "int", "NoneType", "dict", ...).
std::string TypeName(const Value& v);
// Python ==.
bool PyEquals(const Value& a, const Value& b);
// Python <: a TypeError for unordered types, an UndefinedError for Undefined.
absl::StatusOr<bool> PyLess(const Value& a, const Value& b);

// Appends Python str(v) (Jinja's output conversion; Undefined is "").
// Objects whose str() shows a memory address or an internal type (macros,
// generators, loop objects, namespaces, ranges) are refused.
absl::Status AppendStr(const Value& v, std::string* out);
absl::StatusOr<std::string> ToStr(const Value& v);
// Appends Python repr(v).
absl::Status AppendRepr(const Value& v, std::string* out);
// Python repr() of a float ("1.0", "0.1", "1e+16", "inf").
std::string FloatRepr(double d);
// Python repr() of a str ('it''s' → "it's", escapes for non-printables).
void AppendStringRepr(absl::string_view s, std::string* out);

// The items a for loop or list() would produce: sequences as they are, dict
// keys, the characters of a string, nothing for Undefined. Consumes iterators.
absl::StatusOr<std::shared_ptr<const SeqData>> Iterate(const Value& v);
// Python len(): fails for numbers, None and iterators; Undefined is 0.
absl::StatusOr<int64_t> PyLen(const Value& v);

}  // namespace epserve::jinja
