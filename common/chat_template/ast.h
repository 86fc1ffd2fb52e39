// Syntax tree of a parsed template. Plain data, built once by the parser and
// shared read-only by every render; the evaluator walks it.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/chat_template/builtins.h"
#include "common/chat_template/value.h"

namespace epserve::jinja::ast {

// ---------------------------------------------------------------- expressions

struct Expr {
  enum class Kind {
    kLiteral,
    kName,
    kList,  // also tuples
    kDict,
    kGetAttr,
    kGetItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kUnary,
    kBinary,
    kConcat,
    kCompare,
    kCondition,
  };
  Expr(Kind k, int l) : kind(k), line(l) {}
  virtual ~Expr() = default;
  const Kind kind;
  const int line;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Literal : Expr {
  Literal(int line, Value v) : Expr(Kind::kLiteral, line), value(std::move(v)) {}
  Value value;
};

struct Name : Expr {
  Name(int line, std::string n) : Expr(Kind::kName, line), name(std::move(n)) {}
  std::string name;
};

struct ListExpr : Expr {
  ListExpr(int line, bool tuple) : Expr(Kind::kList, line), is_tuple(tuple) {}
  bool is_tuple;
  std::vector<ExprPtr> items;
};

struct DictExpr : Expr {
  explicit DictExpr(int line) : Expr(Kind::kDict, line) {}
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
};

// obj.name
struct GetAttr : Expr {
  GetAttr(int line, ExprPtr o, std::string n)
      : Expr(Kind::kGetAttr, line), object(std::move(o)), name(std::move(n)) {}
  ExprPtr object;
  std::string name;
};

// obj[index]
struct GetItem : Expr {
  GetItem(int line, ExprPtr o, ExprPtr i)
      : Expr(Kind::kGetItem, line), object(std::move(o)), index(std::move(i)) {}
  ExprPtr object;
  ExprPtr index;
};

// obj[start:stop:step]; absent parts are null.
struct Slice : Expr {
  Slice(int line, ExprPtr o) : Expr(Kind::kSlice, line), object(std::move(o)) {}
  ExprPtr object;
  ExprPtr start;
  ExprPtr stop;
  ExprPtr step;
};

struct Arguments {
  std::vector<ExprPtr> positional;
  std::vector<std::pair<std::string, ExprPtr>> keyword;
};

struct Call : Expr {
  Call(int line, ExprPtr c) : Expr(Kind::kCall, line), callee(std::move(c)) {}
  ExprPtr callee;
  Arguments args;
};

// input|name(args). A null input stands for the body of a {% filter %} or
// {% set x | f %} block.
struct Filter : Expr {
  Filter(int line, ExprPtr in, std::string n, FilterFn f)
      : Expr(Kind::kFilter, line), input(std::move(in)), name(std::move(n)), fn(f) {}
  ExprPtr input;
  std::string name;
  FilterFn fn;
  Arguments args;
};

// input is [not] name(args)
struct Test : Expr {
  Test(int line, ExprPtr in, std::string n, TestFn f, bool neg)
      : Expr(Kind::kTest, line), input(std::move(in)), name(std::move(n)), fn(f), negated(neg) {}
  ExprPtr input;
  std::string name;
  TestFn fn;
  bool negated;
  Arguments args;
};

enum class UnaryOp { kNeg, kPos, kNot };
struct Unary : Expr {
  Unary(int line, UnaryOp o, ExprPtr e) : Expr(Kind::kUnary, line), op(o), operand(std::move(e)) {}
  UnaryOp op;
  ExprPtr operand;
};

enum class BinaryOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow, kAnd, kOr };
struct Binary : Expr {
  Binary(int line, BinaryOp o, ExprPtr l, ExprPtr r)
      : Expr(Kind::kBinary, line), op(o), left(std::move(l)), right(std::move(r)) {}
  BinaryOp op;
  ExprPtr left;
  ExprPtr right;
};

// a ~ b ~ c
struct Concat : Expr {
  explicit Concat(int line) : Expr(Kind::kConcat, line) {}
  std::vector<ExprPtr> parts;
};

enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };
// first op1 e1 op2 e2 ... (chained as in Python)
struct Compare : Expr {
  Compare(int line, ExprPtr f) : Expr(Kind::kCompare, line), first(std::move(f)) {}
  ExprPtr first;
  std::vector<std::pair<CompareOp, ExprPtr>> rest;
};

// then_expr if condition else else_expr (null else: Undefined)
struct Condition : Expr {
  Condition(int line, ExprPtr c, ExprPtr t, ExprPtr e)
      : Expr(Kind::kCondition, line),
        condition(std::move(c)),
        then_expr(std::move(t)),
        else_expr(std::move(e)) {}
  ExprPtr condition;
  ExprPtr then_expr;
  ExprPtr else_expr;
};

// ----------------------------------------------------------------- statements

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

// Left side of an assignment or loop variable: `x`, `a, b` or `ns.attr`.
struct Target {
  enum class Kind { kName, kTuple, kNamespaceAttr };
  Kind kind = Kind::kName;
  std::string name;           // variable (kName) or namespace variable (kNamespaceAttr)
  std::string attr;           // kNamespaceAttr
  std::vector<Target> items;  // kTuple
};

struct Param {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Stmt {
  enum class Kind {
    kText,
    kOutput,
    kIf,
    kFor,
    kSet,
    kSetBlock,
    kMacro,
    kCallBlock,
    kFilterBlock,
    kScope,  // {% with %} and {% generation %}
    kBreak,
    kContinue,
  };
  Stmt(Kind k, int l) : kind(k), line(l) {}
  virtual ~Stmt() = default;
  const Kind kind;
  const int line;
};

struct Text : Stmt {
  Text(int line, std::string t) : Stmt(Kind::kText, line), text(std::move(t)) {}
  std::string text;
};

struct Output : Stmt {
  Output(int line, ExprPtr e) : Stmt(Kind::kOutput, line), expr(std::move(e)) {}
  ExprPtr expr;
};

struct If : Stmt {
  explicit If(int line) : Stmt(Kind::kIf, line) {}
  std::vector<std::pair<ExprPtr, Body>> branches;  // if / elif
  Body else_body;
};

struct For : Stmt {
  explicit For(int line) : Stmt(Kind::kFor, line) {}
  Target target;
  ExprPtr iterable;
  ExprPtr filter;  // `for x in y if filter`, may be null
  Body body;
  Body else_body;
};

struct Set : Stmt {
  explicit Set(int line) : Stmt(Kind::kSet, line) {}
  Target target;
  ExprPtr value;
};

// {% set name | filters %}body{% endset %}
struct SetBlock : Stmt {
  explicit SetBlock(int line) : Stmt(Kind::kSetBlock, line) {}
  Target target;
  ExprPtr filter;  // chain of Filter nodes ending in a null input, may be null
  Body body;
};

struct Macro : Stmt {
  explicit Macro(int line) : Stmt(Kind::kMacro, line) {}
  std::string name;
  std::vector<Param> params;
  Body body;
};

// {% call(params) macro(args) %}body{% endcall %}
struct CallBlock : Stmt {
  explicit CallBlock(int line) : Stmt(Kind::kCallBlock, line) {}
  ExprPtr call;  // a Call expression
  std::vector<Param> caller_params;
  Body body;
};

struct FilterBlock : Stmt {
  explicit FilterBlock(int line) : Stmt(Kind::kFilterBlock, line) {}
  ExprPtr filter;  // chain of Filter nodes ending in a null input
  Body body;
};

// A body run in its own scope after optional assignments.
struct Scope : Stmt {
  explicit Scope(int line) : Stmt(Kind::kScope, line) {}
  std::vector<std::pair<Target, ExprPtr>> assignments;
  Body body;
};

struct LoopControl : Stmt {
  LoopControl(int line, bool brk) : Stmt(brk ? Kind::kBreak : Kind::kContinue, line) {}
};

struct Program {
  Body body;
};

}  // namespace epserve::jinja::ast
