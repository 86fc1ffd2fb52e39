#include "common/chat_template/operators.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/errors.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

absl::string_view OpSymbol(ast::BinaryOp op) {
  switch (op) {
    case ast::BinaryOp::kAdd:
      return "+";
    case ast::BinaryOp::kSub:
      return "-";
    case ast::BinaryOp::kMul:
      return "*";
    case ast::BinaryOp::kDiv:
      return "/";
    case ast::BinaryOp::kFloorDiv:
      return "//";
    case ast::BinaryOp::kMod:
      return "%";
    case ast::BinaryOp::kPow:
      return "**";
    default:
      return "?";
  }
}

absl::Status OperandError(ast::BinaryOp op, const Value& a, const Value& b) {
  return RuntimeError(absl::StrCat("unsupported operand type(s) for ", OpSymbol(op), ": '",
                                   TypeName(a), "' and '", TypeName(b), "'"));
}

absl::Status Overflow() { return UnsupportedError("integer result outside the 64-bit range"); }

absl::Status SizeError(size_t max_bytes) {
  return LimitError(absl::StrCat("string or list larger than ", max_bytes, " bytes"));
}

absl::StatusOr<Value> IntArithmetic(ast::BinaryOp op, int64_t x, int64_t y) {
  int64_t r = 0;
  switch (op) {
    case ast::BinaryOp::kAdd:
      if (__builtin_add_overflow(x, y, &r)) return Overflow();
      return Value::Int(r);
    case ast::BinaryOp::kSub:
      if (__builtin_sub_overflow(x, y, &r)) return Overflow();
      return Value::Int(r);
    case ast::BinaryOp::kMul:
      if (__builtin_mul_overflow(x, y, &r)) return Overflow();
      return Value::Int(r);
    case ast::BinaryOp::kDiv:
      if (y == 0) return RuntimeError("division by zero");
      return Value::Float(static_cast<double>(x) / static_cast<double>(y));
    case ast::BinaryOp::kFloorDiv:
    case ast::BinaryOp::kMod: {
      if (y == 0) return RuntimeError("integer division or modulo by zero");
      if (x == std::numeric_limits<int64_t>::min() && y == -1) return Overflow();
      int64_t q = x / y;
      int64_t m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) {
        m += y;
        q -= 1;
      }
      return Value::Int(op == ast::BinaryOp::kFloorDiv ? q : m);
    }
    case ast::BinaryOp::kPow: {
      if (y < 0) {
        if (x == 0) return RuntimeError("0.0 cannot be raised to a negative power");
        return Value::Float(std::pow(static_cast<double>(x), static_cast<double>(y)));
      }
      int64_t result = 1;
      int64_t base = x;
      for (int64_t e = y; e > 0; e >>= 1) {
        if (e & 1) {
          if (__builtin_mul_overflow(result, base, &result)) return Overflow();
        }
        if (e > 1 && __builtin_mul_overflow(base, base, &base)) return Overflow();
      }
      return Value::Int(result);
    }
    default:
      return RuntimeError("bad arithmetic operator");
  }
}

// Python's float // and % (Objects/floatobject.c float_divmod).
void FloatDivMod(double x, double y, double* floordiv, double* mod) {
  double m = std::fmod(x, y);
  double div = (x - m) / y;
  if (m != 0) {
    if ((y < 0) != (m < 0)) {
      m += y;
      div -= 1.0;
    }
  } else {
    m = std::copysign(0.0, y);
  }
  double fd;
  if (div != 0) {
    fd = std::floor(div);
    if (div - fd > 0.5) fd += 1.0;
  } else {
    fd = std::copysign(0.0, x / y);
  }
  *floordiv = fd;
  *mod = m;
}

absl::StatusOr<Value> FloatArithmetic(ast::BinaryOp op, double x, double y) {
  switch (op) {
    case ast::BinaryOp::kAdd:
      return Value::Float(x + y);
    case ast::BinaryOp::kSub:
      return Value::Float(x - y);
    case ast::BinaryOp::kMul:
      return Value::Float(x * y);
    case ast::BinaryOp::kDiv:
      if (y == 0) return RuntimeError("float division by zero");
      return Value::Float(x / y);
    case ast::BinaryOp::kFloorDiv:
    case ast::BinaryOp::kMod: {
      if (y == 0) return RuntimeError("float floor division or modulo by zero");
      double fd = 0;
      double m = 0;
      FloatDivMod(x, y, &fd, &m);
      return Value::Float(op == ast::BinaryOp::kFloorDiv ? fd : m);
    }
    case ast::BinaryOp::kPow: {
      if (x == 0 && y < 0) return RuntimeError("0.0 cannot be raised to a negative power");
      if (x < 0 && y != std::floor(y)) {
        return UnsupportedError("a negative number raised to a fractional power (complex result)");
      }
      const double r = std::pow(x, y);
      if (std::isinf(r) && std::isfinite(x) && std::isfinite(y)) {
        return RuntimeError("(34, 'Numerical result out of range')");
      }
      return Value::Float(r);
    }
    default:
      return RuntimeError("bad arithmetic operator");
  }
}

absl::StatusOr<Value> Repeat(const Value& seq, int64_t times, size_t max_bytes) {
  if (times < 0) times = 0;
  if (seq.is_string()) {
    const std::string& s = seq.AsString();
    if (!s.empty() && static_cast<uint64_t>(times) > max_bytes / s.size())
      return SizeError(max_bytes);
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(times));
    for (int64_t i = 0; i < times; ++i) out += s;
    return seq.is_markup() ? Value::Markup(std::move(out)) : Value::String(std::move(out));
  }
  const ValueList& items = seq.AsSeq().items;
  // Estimate a list element as 16 bytes for the size limit.
  if (!items.empty() && static_cast<uint64_t>(times) > max_bytes / (16 * items.size())) {
    return SizeError(max_bytes);
  }
  ValueList out;
  out.reserve(items.size() * static_cast<size_t>(times));
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return Value::Sequence(seq.seq_kind(), std::move(out));
}

bool IsConcatSeq(const Value& v) {
  return v.is_sequence() && (v.seq_kind() == SeqKind::kList || v.seq_kind() == SeqKind::kTuple);
}

}  // namespace

std::string HtmlEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<Value> ApplyArithmetic(ast::BinaryOp op, const Value& a, const Value& b,
                                      size_t max_bytes) {
  if (a.is_undefined()) return UndefinedError(a);
  if (b.is_undefined()) return UndefinedError(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return IntArithmetic(op, a.AsInt(), b.AsInt());
    return FloatArithmetic(op, a.AsDouble(), b.AsDouble());
  }
  switch (op) {
    case ast::BinaryOp::kAdd:
      if (a.is_string() && b.is_string()) {
        if (a.AsString().size() + b.AsString().size() > max_bytes) return SizeError(max_bytes);
        // Markup + str escapes the str (and str + Markup likewise).
        if (a.is_markup() || b.is_markup()) {
          return Value::Markup(
              absl::StrCat(a.is_markup() ? a.AsString() : HtmlEscape(a.AsString()),
                           b.is_markup() ? b.AsString() : HtmlEscape(b.AsString())));
        }
        return Value::String(absl::StrCat(a.AsString(), b.AsString()));
      }
      if (IsConcatSeq(a) && IsConcatSeq(b) && a.seq_kind() == b.seq_kind()) {
        ValueList items = a.AsSeq().items;
        items.insert(items.end(), b.AsSeq().items.begin(), b.AsSeq().items.end());
        if (items.size() * 16 > max_bytes) return SizeError(max_bytes);
        return Value::Sequence(a.seq_kind(), std::move(items));
      }
      if (a.is_string() && !a.is_markup()) {
        return RuntimeError(
            absl::StrCat("can only concatenate str (not \"", TypeName(b), "\") to str"));
      }
      if (IsConcatSeq(a)) {
        return RuntimeError(absl::StrCat("can only concatenate ", TypeName(a), " (not \"",
                                         TypeName(b), "\") to ", TypeName(a)));
      }
      return OperandError(op, a, b);
    case ast::BinaryOp::kMul:
      if ((a.is_string() || IsConcatSeq(a)) && b.is_integral())
        return Repeat(a, b.AsInt(), max_bytes);
      if (a.is_integral() && (b.is_string() || IsConcatSeq(b)))
        return Repeat(b, a.AsInt(), max_bytes);
      if (a.is_string() || b.is_string() || IsConcatSeq(a) || IsConcatSeq(b)) {
        return RuntimeError(absl::StrCat("can't multiply sequence by non-int of type '",
                                         TypeName(a.is_string() || IsConcatSeq(a) ? b : a), "'"));
      }
      return OperandError(op, a, b);
    case ast::BinaryOp::kMod:
      if (a.is_string()) return UnsupportedError("printf-style string formatting with '%'");
      return OperandError(op, a, b);
    default:
      return OperandError(op, a, b);
  }
}

absl::StatusOr<Value> ApplyNegate(const Value& v, bool negate) {
  if (v.is_undefined()) return UndefinedError(v);
  if (v.is_integral()) {
    if (!negate) return Value::Int(v.AsInt());
    if (v.AsInt() == std::numeric_limits<int64_t>::min()) return Overflow();
    return Value::Int(-v.AsInt());
  }
  if (v.is_float()) return Value::Float(negate ? -v.AsDouble() : v.AsDouble());
  return RuntimeError(
      absl::StrCat("bad operand type for unary ", negate ? "-" : "+", ": '", TypeName(v), "'"));
}

absl::StatusOr<bool> ApplyCompare(ast::CompareOp op, const Value& a, const Value& b) {
  switch (op) {
    case ast::CompareOp::kEq:
      return PyEquals(a, b);
    case ast::CompareOp::kNe:
      return !PyEquals(a, b);
    case ast::CompareOp::kLt:
      return PyLess(a, b);
    case ast::CompareOp::kGt:
      return PyLess(b, a);
    case ast::CompareOp::kLe: {
      ASSIGN_OR_RETURN(bool greater, PyLess(b, a));
      if (greater) return false;
      // NaN and unordered values: a <= b only when a < b or a == b.
      if (PyEquals(a, b)) return true;
      return PyLess(a, b);
    }
    case ast::CompareOp::kGe: {
      ASSIGN_OR_RETURN(bool less, PyLess(a, b));
      if (less) return false;
      if (PyEquals(a, b)) return true;
      return PyLess(b, a);
    }
    case ast::CompareOp::kIn:
      return PyContains(b, a);
    case ast::CompareOp::kNotIn: {
      ASSIGN_OR_RETURN(bool in, PyContains(b, a));
      return !in;
    }
  }
  return false;
}

absl::StatusOr<bool> PyContains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        return RuntimeError(
            absl::StrCat("'in <string>' requires string as left operand, not ", TypeName(item)));
      }
      return container.AsString().find(item.AsString()) != std::string::npos;
    case Value::Kind::kSequence: {
      ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> seq, Iterate(container));
      for (const Value& v : seq->items) {
        if (PyEquals(v, item)) return true;
      }
      return false;
    }
    case Value::Kind::kDict:
      if (item.is_sequence() && item.seq_kind() != SeqKind::kTuple) {
        return RuntimeError(absl::StrCat("unhashable type: '", TypeName(item), "'"));
      }
      if (item.is_dict()) return RuntimeError("unhashable type: 'dict'");
      return container.AsDict().Find(item) != nullptr;
    default:
      return RuntimeError(
          absl::StrCat("argument of type '", TypeName(container), "' is not iterable"));
  }
}

}  // namespace epserve::jinja
