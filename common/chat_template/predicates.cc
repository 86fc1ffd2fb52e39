// Jinja tests (`x is defined`, `n is divisibleby 3`, ...).
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/builtins.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/operators.h"
#include "common/chat_template/py_string.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

absl::Status NoArgs(absl::string_view name, const CallArgs& args) {
  return BindArgs(name, args, {}, 0).status();
}

// Tests of the value's type or state, without arguments.
template <bool (*Pred)(const Value&)>
absl::StatusOr<bool> Simple(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(NoArgs("test", args));
  return Pred(v);
}

bool IsDefined(const Value& v) { return !v.is_undefined(); }
bool IsUndefined(const Value& v) { return v.is_undefined(); }
bool IsNone(const Value& v) { return v.is_none(); }
bool IsBoolean(const Value& v) { return v.is_bool(); }
bool IsTrue(const Value& v) { return v.is_bool() && v.AsBool(); }
bool IsFalse(const Value& v) { return v.is_bool() && !v.AsBool(); }
bool IsInteger(const Value& v) { return v.is_int(); }
bool IsFloat(const Value& v) { return v.is_float(); }
bool IsNumber(const Value& v) { return v.is_number(); }
bool IsString(const Value& v) { return v.is_string(); }
bool IsMapping(const Value& v) { return v.is_dict(); }
bool IsEscaped(const Value& v) { return v.is_markup(); }
// iter(v) works: Undefined iterates as empty.
bool IsIterable(const Value& v) {
  return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict();
}
// len(v) and v.__getitem__ exist (not for dict views and generators).
bool IsSequence(const Value& v) {
  if (v.is_sequence()) {
    const SeqKind k = v.seq_kind();
    return k == SeqKind::kList || k == SeqKind::kTuple || k == SeqKind::kRange;
  }
  return v.is_undefined() || v.is_string() || v.is_dict();
}
// Undefined and the loop object define __call__ in Jinja.
bool IsCallable(const Value& v) { return v.is_callable() || v.is_undefined() || v.is_loop(); }

absl::StatusOr<bool> IsLower(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(NoArgs("lower", args));
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return PyIsLower(s);
}

absl::StatusOr<bool> IsUpper(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(NoArgs("upper", args));
  ASSIGN_OR_RETURN(std::string s, ToStr(v));
  return PyIsUpper(s);
}

absl::StatusOr<bool> ModuloEquals(const Value& v, const Value& divisor, int64_t remainder) {
  ASSIGN_OR_RETURN(Value mod, ApplyArithmetic(ast::BinaryOp::kMod, v, divisor, 0));
  return PyEquals(mod, Value::Int(remainder));
}

absl::StatusOr<bool> IsOdd(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(NoArgs("odd", args));
  return ModuloEquals(v, Value::Int(2), 1);
}

absl::StatusOr<bool> IsEven(Interpreter&, const Value& v, const CallArgs& args) {
  RETURN_IF_ERROR(NoArgs("even", args));
  return ModuloEquals(v, Value::Int(2), 0);
}

absl::StatusOr<bool> IsDivisibleBy(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("divisibleby", args, {"num"}, 1));
  return ModuloEquals(v, *bound[0], 0);
}

template <ast::CompareOp kOp>
absl::StatusOr<bool> Comparison(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("comparison", args, {"other"}, 1));
  return ApplyCompare(kOp, v, *bound[0]);
}

absl::StatusOr<bool> IsIn(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("in", args, {"seq"}, 1));
  return PyContains(*bound[0], v);
}

// `is sameas`: Python identity. Defined here for None, booleans and shared
// containers; identity of numbers and strings depends on CPython's caches.
absl::StatusOr<bool> IsSameAs(Interpreter&, const Value& v, const CallArgs& args) {
  ASSIGN_OR_RETURN(auto bound, BindArgs("sameas", args, {"other"}, 1));
  const Value& other = *bound[0];
  if (v.is_none() || other.is_none()) return v.is_none() && other.is_none();
  if (v.is_bool() || other.is_bool()) {
    return v.is_bool() && other.is_bool() && v.AsBool() == other.AsBool();
  }
  if (v.is_number() || other.is_number() || v.is_string() || other.is_string() ||
      v.is_undefined() || other.is_undefined()) {
    return UnsupportedError("'sameas' of numbers, strings or undefined values");
  }
  return v.identity() == other.identity();
}

const std::unordered_map<std::string_view, TestFn>& Tests() {
  static const auto* tests = new std::unordered_map<std::string_view, TestFn>{
      {"defined", Simple<IsDefined>},
      {"undefined", Simple<IsUndefined>},
      {"none", Simple<IsNone>},
      {"boolean", Simple<IsBoolean>},
      {"true", Simple<IsTrue>},
      {"false", Simple<IsFalse>},
      {"integer", Simple<IsInteger>},
      {"float", Simple<IsFloat>},
      {"number", Simple<IsNumber>},
      {"string", Simple<IsString>},
      {"mapping", Simple<IsMapping>},
      {"iterable", Simple<IsIterable>},
      {"sequence", Simple<IsSequence>},
      {"callable", Simple<IsCallable>},
      {"escaped", Simple<IsEscaped>},
      {"lower", IsLower},
      {"upper", IsUpper},
      {"odd", IsOdd},
      {"even", IsEven},
      {"divisibleby", IsDivisibleBy},
      {"eq", Comparison<ast::CompareOp::kEq>},
      {"equalto", Comparison<ast::CompareOp::kEq>},
      {"==", Comparison<ast::CompareOp::kEq>},
      {"ne", Comparison<ast::CompareOp::kNe>},
      {"!=", Comparison<ast::CompareOp::kNe>},
      {"lt", Comparison<ast::CompareOp::kLt>},
      {"lessthan", Comparison<ast::CompareOp::kLt>},
      {"<", Comparison<ast::CompareOp::kLt>},
      {"le", Comparison<ast::CompareOp::kLe>},
      {"<=", Comparison<ast::CompareOp::kLe>},
      {"gt", Comparison<ast::CompareOp::kGt>},
      {"greaterthan", Comparison<ast::CompareOp::kGt>},
      {">", Comparison<ast::CompareOp::kGt>},
      {"ge", Comparison<ast::CompareOp::kGe>},
      {">=", Comparison<ast::CompareOp::kGe>},
      {"in", IsIn},
      {"sameas", IsSameAs},
  };
  return *tests;
}

}  // namespace

TestFn FindTest(std::string_view name) {
  const auto& tests = Tests();
  auto it = tests.find(name);
  return it == tests.end() ? nullptr : it->second;
}

}  // namespace epserve::jinja
