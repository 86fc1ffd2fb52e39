#include "common/chat_template/evaluator.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/builtins.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/operators.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

// A macro defined by {% macro %}. It looks variables up in the scope it was
// defined in when it runs (late binding, as Jinja). That scope holds the
// macro, so the macro holds it weakly; a macro called after its defining
// block ended (stored away in a namespace) is refused.
class MacroFunction : public Callable {
 public:
  MacroFunction(const ast::Macro& def, const std::shared_ptr<Scope>& closure)
      : def_(def), closure_(closure) {}
  std::string Describe() const override { return absl::StrCat("macro '", def_.name, "'"); }
  absl::StatusOr<Value> Call(Interpreter& interp, const CallArgs& args) const override {
    return CallWithCaller(interp, args, Value::Undefined("'caller' is undefined"));
  }
  absl::StatusOr<Value> CallWithCaller(Interpreter& interp, const CallArgs& args,
                                       Value caller) const {
    std::shared_ptr<Scope> closure = closure_.lock();
    if (closure == nullptr) {
      return UnsupportedError(
          absl::StrCat("calling ", Describe(), " after the block that defined it ended"));
    }
    return interp.CallMacro(def_, closure, args, std::move(caller));
  }

 private:
  const ast::Macro& def_;
  std::weak_ptr<Scope> closure_;
};

// `caller` inside a macro invoked by {% call %}: renders the call body.
class CallerFunction : public Callable {
 public:
  CallerFunction(const ast::CallBlock& block, const std::shared_ptr<Scope>& closure)
      : block_(block), closure_(closure) {}
  std::string Describe() const override { return "caller"; }
  absl::StatusOr<Value> Call(Interpreter& interp, const CallArgs& args) const override {
    std::shared_ptr<Scope> closure = closure_.lock();
    if (closure == nullptr) return UnsupportedError("calling caller() after its {% call %} ended");
    return interp.CallCallerBody(block_, closure, args);
  }

 private:
  const ast::CallBlock& block_;
  std::weak_ptr<Scope> closure_;
};

}  // namespace

const Value* Scope::Find(absl::string_view name) const {
  for (const Scope* s = this; s != nullptr; s = s->parent.get()) {
    for (const auto& [k, v] : s->vars) {
      if (k == name) return &v;
    }
  }
  return nullptr;
}

void Scope::Set(absl::string_view name, Value value) {
  for (auto& [k, v] : vars) {
    if (k == name) {
      v = std::move(value);
      return;
    }
  }
  vars.emplace_back(std::string(name.data(), name.size()), std::move(value));
}

Interpreter::Interpreter(const RenderOptions& options, Value context)
    : options_(options), context_(std::move(context)), scope_(std::make_shared<Scope>()) {}

Interpreter::~Interpreter() {
  // Namespaces are the only mutable containers: a namespace that (through
  // lists, dicts or other namespaces) holds itself would keep itself alive.
  for (const std::weak_ptr<NamespaceData>& weak : namespaces_) {
    if (std::shared_ptr<NamespaceData> ns = weak.lock()) ns->attrs.clear();
  }
}

absl::Status Interpreter::RegisterNamespace(const std::shared_ptr<NamespaceData>& ns) {
  if (namespaces_.size() >= kMaxNamespaces) {
    return LimitError(absl::StrCat("more than ", kMaxNamespaces, " namespaces in one render"));
  }
  namespaces_.push_back(ns);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Interpreter::Render(const ast::Program& program) {
  std::string out;
  out_ = &out;
  RETURN_IF_ERROR(ExecBody(program.body));
  return out;
}

absl::Status Interpreter::CheckSize(size_t bytes) const {
  if (bytes > options_.max_output_bytes) {
    return LimitError(
        absl::StrCat("template output or value larger than ", options_.max_output_bytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status Interpreter::CountIterations(size_t n) {
  loop_iterations_ += static_cast<int64_t>(n);
  if (loop_iterations_ > options_.max_loop_iterations) {
    return LimitError(
        absl::StrCat("more than ", options_.max_loop_iterations, " loop iterations in one render"));
  }
  return absl::OkStatus();
}

absl::Status Interpreter::Append(absl::string_view text) {
  RETURN_IF_ERROR(CheckSize(out_->size() + text.size()));
  out_->append(text.data(), text.size());
  return absl::OkStatus();
}

Value Interpreter::Lookup(const std::string& name) const {
  if (const Value* v = scope_->Find(name)) return *v;
  if (context_.is_dict()) {
    if (const Value* v = context_.AsDict().FindString(name)) return *v;
  }
  if (const Value* v = FindGlobal(name)) return *v;
  return Value::Undefined(absl::StrCat("'", name, "' is undefined"));
}

// ------------------------------------------------------------------ statements

absl::Status Interpreter::ExecBody(const ast::Body& body) {
  for (const ast::StmtPtr& stmt : body) {
    absl::Status status = Exec(*stmt);
    if (!status.ok()) return WithLine(std::move(status), stmt->line);
    if (flow_ != Flow::kNormal) break;
  }
  return absl::OkStatus();
}

absl::Status Interpreter::Exec(const ast::Stmt& stmt) {
  using Kind = ast::Stmt::Kind;
  switch (stmt.kind) {
    case Kind::kText:
      return Append(static_cast<const ast::Text&>(stmt).text);
    case Kind::kOutput: {
      ASSIGN_OR_RETURN(Value v, Eval(*static_cast<const ast::Output&>(stmt).expr));
      if (v.is_string()) return Append(v.AsString());
      std::string text;
      RETURN_IF_ERROR(AppendStr(v, &text));
      return Append(text);
    }
    case Kind::kIf: {
      const auto& node = static_cast<const ast::If&>(stmt);
      for (const auto& [condition, body] : node.branches) {
        ASSIGN_OR_RETURN(Value v, Eval(*condition));
        if (Truthy(v)) return ExecBody(body);
      }
      return ExecBody(node.else_body);
    }
    case Kind::kFor:
      return ExecFor(static_cast<const ast::For&>(stmt));
    case Kind::kSet: {
      const auto& node = static_cast<const ast::Set&>(stmt);
      ASSIGN_OR_RETURN(Value v, Eval(*node.value));
      return Assign(node.target, v);
    }
    case Kind::kSetBlock: {
      const auto& node = static_cast<const ast::SetBlock&>(stmt);
      ASSIGN_OR_RETURN(std::string text, Capture(node.body));
      Value v = Value::String(std::move(text));
      if (node.filter != nullptr) {
        ASSIGN_OR_RETURN(v, ApplyFilterChain(*node.filter, v));
      }
      return Assign(node.target, v);
    }
    case Kind::kMacro: {
      const auto& node = static_cast<const ast::Macro&>(stmt);
      scope_->Set(node.name, Value::Function(std::make_shared<MacroFunction>(node, scope_)));
      return absl::OkStatus();
    }
    case Kind::kCallBlock:
      return ExecCallBlock(static_cast<const ast::CallBlock&>(stmt));
    case Kind::kFilterBlock: {
      const auto& node = static_cast<const ast::FilterBlock&>(stmt);
      ASSIGN_OR_RETURN(std::string text, Capture(node.body));
      ASSIGN_OR_RETURN(Value v, ApplyFilterChain(*node.filter, Value::String(std::move(text))));
      std::string rendered;
      RETURN_IF_ERROR(AppendStr(v, &rendered));
      return Append(rendered);
    }
    case Kind::kScope: {
      const auto& node = static_cast<const ast::Scope&>(stmt);
      // {% with a=x, b=y %}: the values are evaluated in the outer scope.
      std::vector<Value> values;
      for (const auto& [target, expr] : node.assignments) {
        ASSIGN_OR_RETURN(Value v, Eval(*expr));
        values.push_back(std::move(v));
      }
      auto inner = std::make_shared<Scope>();
      inner->parent = scope_;
      std::shared_ptr<Scope> saved = std::exchange(scope_, inner);
      absl::Status status;
      for (size_t i = 0; i < values.size() && status.ok(); ++i) {
        status = Assign(node.assignments[i].first, values[i]);
      }
      if (status.ok()) status = ExecBody(node.body);
      scope_ = std::move(saved);
      return status;
    }
    case Kind::kBreak:
      flow_ = Flow::kBreak;
      return absl::OkStatus();
    case Kind::kContinue:
      flow_ = Flow::kContinue;
      return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Interpreter::ExecFor(const ast::For& node) {
  ASSIGN_OR_RETURN(Value iterable, Eval(*node.iterable));
  ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(iterable));
  if (node.filter != nullptr) {
    // `for x in seq if cond`: cond sees the loop variables but not `loop`.
    auto kept = std::make_shared<SeqData>();
    auto filter_scope = std::make_shared<Scope>();
    filter_scope->parent = scope_;
    std::shared_ptr<Scope> saved = std::exchange(scope_, filter_scope);
    absl::Status status = CountIterations(items->items.size());
    for (size_t i = 0; i < items->items.size() && status.ok(); ++i) {
      filter_scope->vars.clear();
      status = Assign(node.target, items->items[i]);
      if (!status.ok()) break;
      absl::StatusOr<Value> keep = Eval(*node.filter);
      if (!keep.ok()) {
        status = keep.status();
      } else if (Truthy(*keep)) {
        kept->items.push_back(items->items[i]);
      }
    }
    scope_ = std::move(saved);
    RETURN_IF_ERROR(status);
    items = std::move(kept);
  }

  if (items->items.empty()) {
    auto inner = std::make_shared<Scope>();
    inner->parent = scope_;
    std::shared_ptr<Scope> saved = std::exchange(scope_, inner);
    absl::Status status = ExecBody(node.else_body);
    scope_ = std::move(saved);
    return status;
  }

  auto loop = std::make_shared<LoopData>();
  loop->items = items;
  const Value loop_value = Value::Loop(loop);
  std::shared_ptr<Scope> saved = scope_;
  absl::Status status;
  for (size_t i = 0; i < items->items.size(); ++i) {
    status = CountIterations(1);
    if (!status.ok()) break;
    // Each iteration has a fresh scope: a {% set %} in the body does not
    // survive into the next iteration or after the loop.
    auto iteration = std::make_shared<Scope>();
    iteration->parent = saved;
    scope_ = iteration;
    loop->index0 = i;
    iteration->Set("loop", loop_value);
    status = Assign(node.target, items->items[i]);
    if (status.ok()) status = ExecBody(node.body);
    if (!status.ok()) break;
    if (flow_ == Flow::kBreak) {
      flow_ = Flow::kNormal;
      break;
    }
    flow_ = Flow::kNormal;
  }
  scope_ = std::move(saved);
  loop->last_changed.reset();  // may hold the loop itself
  return status;
}

absl::Status Interpreter::ExecCallBlock(const ast::CallBlock& node) {
  const auto& call = static_cast<const ast::Call&>(*node.call);
  ASSIGN_OR_RETURN(Value callee, Eval(*call.callee));
  const MacroFunction* macro =
      callee.is_callable() ? dynamic_cast<const MacroFunction*>(&callee.AsCallable()) : nullptr;
  if (macro == nullptr) {
    if (callee.is_undefined()) return UndefinedError(callee);
    return UnsupportedError("{% call %} of something other than a macro");
  }
  ASSIGN_OR_RETURN(CallArgs args, EvalArgs(call.args));
  Value caller = Value::Function(std::make_shared<CallerFunction>(node, scope_));
  ASSIGN_OR_RETURN(Value result, macro->CallWithCaller(*this, args, std::move(caller)));
  return Append(result.AsString());
}

absl::StatusOr<std::string> Interpreter::Capture(const ast::Body& body) {
  std::string text;
  std::string* saved_out = std::exchange(out_, &text);
  auto inner = std::make_shared<Scope>();
  inner->parent = scope_;
  std::shared_ptr<Scope> saved_scope = std::exchange(scope_, inner);
  absl::Status status = ExecBody(body);
  scope_ = std::move(saved_scope);
  out_ = saved_out;
  RETURN_IF_ERROR(status);
  return text;
}

absl::Status Interpreter::Assign(const ast::Target& target, const Value& value) {
  switch (target.kind) {
    case ast::Target::Kind::kName:
      scope_->Set(target.name, value);
      return absl::OkStatus();
    case ast::Target::Kind::kNamespaceAttr: {
      Value ns = Lookup(target.name);
      if (!ns.is_namespace())
        return RuntimeError("cannot assign attribute on non-namespace object");
      ns.AsNamespace().Set(target.attr, value);
      return absl::OkStatus();
    }
    case ast::Target::Kind::kTuple: {
      if (value.is_undefined()) return UndefinedError(value);
      ASSIGN_OR_RETURN(std::shared_ptr<const SeqData> items, Iterate(value));
      const size_t want = target.items.size();
      if (items->items.size() < want) {
        return RuntimeError(absl::StrCat("not enough values to unpack (expected ", want, ", got ",
                                         items->items.size(), ")"));
      }
      if (items->items.size() > want) {
        return RuntimeError(absl::StrCat("too many values to unpack (expected ", want, ")"));
      }
      for (size_t i = 0; i < want; ++i) RETURN_IF_ERROR(Assign(target.items[i], items->items[i]));
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------------- callables

absl::Status Interpreter::BindParams(absl::string_view what, const std::vector<ast::Param>& params,
                                     const CallArgs& args) {
  if (args.positional.size() > params.size()) {
    return RuntimeError(absl::StrCat(what, " takes not more than ", params.size(), " argument(s)"));
  }
  std::vector<std::optional<Value>> bound(params.size());
  for (size_t i = 0; i < args.positional.size(); ++i) bound[i] = args.positional[i];
  for (const auto& [key, value] : args.keyword) {
    size_t i = 0;
    while (i < params.size() && params[i].name != key) ++i;
    if (i == params.size()) {
      return RuntimeError(absl::StrCat(what, " takes no keyword argument '", key, "'"));
    }
    if (bound[i].has_value()) {
      return RuntimeError(absl::StrCat(what, " got multiple values for argument '", key, "'"));
    }
    bound[i] = value;
  }
  // Defaults are evaluated at call time, in the macro's scope, so that they
  // can refer to earlier parameters.
  for (size_t i = 0; i < params.size(); ++i) {
    if (!bound[i].has_value()) {
      if (params[i].default_value != nullptr) {
        ASSIGN_OR_RETURN(bound[i], Eval(*params[i].default_value));
      } else {
        bound[i] =
            Value::Undefined(absl::StrCat("parameter '", params[i].name, "' was not provided"));
      }
    }
    scope_->Set(params[i].name, *bound[i]);
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Interpreter::RenderCallableBody(const ast::Body& body) {
  std::string text;
  std::string* saved_out = std::exchange(out_, &text);
  absl::Status status = ExecBody(body);
  out_ = saved_out;
  flow_ = Flow::kNormal;
  RETURN_IF_ERROR(status);
  return Value::String(std::move(text));
}

absl::StatusOr<Value> Interpreter::CallMacro(const ast::Macro& macro,
                                             const std::shared_ptr<Scope>& closure,
                                             const CallArgs& args, Value caller) {
  if (call_depth_ >= options_.max_call_depth) {
    return LimitError(absl::StrCat("macro calls nested deeper than ", options_.max_call_depth));
  }
  auto scope = std::make_shared<Scope>();
  scope->parent = closure;
  std::shared_ptr<Scope> saved = std::exchange(scope_, scope);
  ++call_depth_;
  absl::StatusOr<Value> result = Value();
  if (absl::Status bound = BindParams(absl::StrCat("macro '", macro.name, "'"), macro.params, args);
      !bound.ok()) {
    result = bound;
  } else {
    scope_->Set("caller", std::move(caller));
    result = RenderCallableBody(macro.body);
  }
  --call_depth_;
  scope_ = std::move(saved);
  return result;
}

absl::StatusOr<Value> Interpreter::CallCallerBody(const ast::CallBlock& block,
                                                  const std::shared_ptr<Scope>& closure,
                                                  const CallArgs& args) {
  if (call_depth_ >= options_.max_call_depth) {
    return LimitError(absl::StrCat("macro calls nested deeper than ", options_.max_call_depth));
  }
  auto scope = std::make_shared<Scope>();
  scope->parent = closure;
  std::shared_ptr<Scope> saved = std::exchange(scope_, scope);
  ++call_depth_;
  absl::StatusOr<Value> result = Value();
  if (absl::Status bound = BindParams("caller", block.caller_params, args); !bound.ok()) {
    result = bound;
  } else {
    result = RenderCallableBody(block.body);
  }
  --call_depth_;
  scope_ = std::move(saved);
  return result;
}

// ----------------------------------------------------------------- expressions

absl::StatusOr<Value> Interpreter::Eval(const ast::Expr& expr) {
  absl::StatusOr<Value> result = EvalImpl(expr);
  if (!result.ok()) return WithLine(result.status(), expr.line);
  return result;
}

absl::StatusOr<CallArgs> Interpreter::EvalArgs(const ast::Arguments& args) {
  CallArgs out;
  out.positional.reserve(args.positional.size());
  for (const ast::ExprPtr& e : args.positional) {
    ASSIGN_OR_RETURN(Value v, Eval(*e));
    out.positional.push_back(std::move(v));
  }
  for (const auto& [key, e] : args.keyword) {
    ASSIGN_OR_RETURN(Value v, Eval(*e));
    out.keyword.emplace_back(key, std::move(v));
  }
  return out;
}

absl::StatusOr<Value> Interpreter::EvalFilter(const ast::Filter& node, const Value* block_input) {
  Value input;
  if (node.input != nullptr) {
    if (node.input->kind == ast::Expr::Kind::kFilter && block_input != nullptr) {
      ASSIGN_OR_RETURN(input,
                       EvalFilter(static_cast<const ast::Filter&>(*node.input), block_input));
    } else {
      ASSIGN_OR_RETURN(input, Eval(*node.input));
    }
  } else if (block_input != nullptr) {
    input = *block_input;
  }
  ASSIGN_OR_RETURN(CallArgs args, EvalArgs(node.args));
  absl::StatusOr<Value> result = node.fn(*this, input, args);
  if (!result.ok()) {
    return WithLine(absl::Status(result.status().code(),
                                 absl::StrCat(node.name, ": ", result.status().message())),
                    node.line);
  }
  return result;
}

absl::StatusOr<Value> Interpreter::ApplyFilterChain(const ast::Expr& chain, const Value& input) {
  return EvalFilter(static_cast<const ast::Filter&>(chain), &input);
}

absl::StatusOr<Value> Interpreter::EvalImpl(const ast::Expr& expr) {
  using Kind = ast::Expr::Kind;
  switch (expr.kind) {
    case Kind::kLiteral:
      return static_cast<const ast::Literal&>(expr).value;
    case Kind::kName:
      return Lookup(static_cast<const ast::Name&>(expr).name);
    case Kind::kList: {
      const auto& node = static_cast<const ast::ListExpr&>(expr);
      ValueList items;
      items.reserve(node.items.size());
      for (const ast::ExprPtr& e : node.items) {
        ASSIGN_OR_RETURN(Value v, Eval(*e));
        items.push_back(std::move(v));
      }
      return node.is_tuple ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
    }
    case Kind::kDict: {
      const auto& node = static_cast<const ast::DictExpr&>(expr);
      auto dict = std::make_shared<DictData>();
      for (const auto& [ke, ve] : node.items) {
        ASSIGN_OR_RETURN(Value k, Eval(*ke));
        ASSIGN_OR_RETURN(Value v, Eval(*ve));
        RETURN_IF_ERROR(dict->Set(std::move(k), std::move(v)));
      }
      return Value::Dict(std::move(dict));
    }
    case Kind::kGetAttr: {
      const auto& node = static_cast<const ast::GetAttr&>(expr);
      ASSIGN_OR_RETURN(Value obj, Eval(*node.object));
      return GetAttr(obj, node.name);
    }
    case Kind::kGetItem: {
      const auto& node = static_cast<const ast::GetItem&>(expr);
      ASSIGN_OR_RETURN(Value obj, Eval(*node.object));
      ASSIGN_OR_RETURN(Value key, Eval(*node.index));
      return GetItem(obj, key);
    }
    case Kind::kSlice: {
      const auto& node = static_cast<const ast::Slice&>(expr);
      ASSIGN_OR_RETURN(Value obj, Eval(*node.object));
      Value parts[3];
      const ast::Expr* exprs[3] = {node.start.get(), node.stop.get(), node.step.get()};
      for (int i = 0; i < 3; ++i) {
        if (exprs[i] != nullptr) {
          ASSIGN_OR_RETURN(parts[i], Eval(*exprs[i]));
        }
      }
      return GetSlice(obj, exprs[0] ? &parts[0] : nullptr, exprs[1] ? &parts[1] : nullptr,
                      exprs[2] ? &parts[2] : nullptr);
    }
    case Kind::kCall: {
      const auto& node = static_cast<const ast::Call&>(expr);
      ASSIGN_OR_RETURN(Value callee, Eval(*node.callee));
      if (callee.is_undefined()) return UndefinedError(callee);
      if (!callee.is_callable()) {
        return RuntimeError(absl::StrCat("'", TypeName(callee), "' object is not callable"));
      }
      ASSIGN_OR_RETURN(CallArgs args, EvalArgs(node.args));
      return callee.AsCallable().Call(*this, args);
    }
    case Kind::kFilter:
      return EvalFilter(static_cast<const ast::Filter&>(expr), nullptr);
    case Kind::kTest: {
      const auto& node = static_cast<const ast::Test&>(expr);
      ASSIGN_OR_RETURN(Value input, Eval(*node.input));
      ASSIGN_OR_RETURN(CallArgs args, EvalArgs(node.args));
      absl::StatusOr<bool> result = node.fn(*this, input, args);
      if (!result.ok()) {
        return absl::Status(result.status().code(),
                            absl::StrCat("test '", node.name, "': ", result.status().message()));
      }
      return Value::Bool(*result != node.negated);
    }
    case Kind::kUnary: {
      const auto& node = static_cast<const ast::Unary&>(expr);
      ASSIGN_OR_RETURN(Value v, Eval(*node.operand));
      if (node.op == ast::UnaryOp::kNot) return Value::Bool(!Truthy(v));
      return ApplyNegate(v, node.op == ast::UnaryOp::kNeg);
    }
    case Kind::kBinary: {
      const auto& node = static_cast<const ast::Binary&>(expr);
      ASSIGN_OR_RETURN(Value left, Eval(*node.left));
      if (node.op == ast::BinaryOp::kAnd) {
        if (!Truthy(left)) return left;
        return Eval(*node.right);
      }
      if (node.op == ast::BinaryOp::kOr) {
        if (Truthy(left)) return left;
        return Eval(*node.right);
      }
      ASSIGN_OR_RETURN(Value right, Eval(*node.right));
      return ApplyArithmetic(node.op, left, right, options_.max_output_bytes);
    }
    case Kind::kConcat: {
      const auto& node = static_cast<const ast::Concat&>(expr);
      std::string text;
      for (const ast::ExprPtr& part : node.parts) {
        ASSIGN_OR_RETURN(Value v, Eval(*part));
        RETURN_IF_ERROR(AppendStr(v, &text));
        RETURN_IF_ERROR(CheckSize(text.size()));
      }
      return Value::String(std::move(text));
    }
    case Kind::kCompare: {
      const auto& node = static_cast<const ast::Compare&>(expr);
      ASSIGN_OR_RETURN(Value left, Eval(*node.first));
      for (const auto& [op, operand] : node.rest) {
        ASSIGN_OR_RETURN(Value right, Eval(*operand));
        ASSIGN_OR_RETURN(bool holds, ApplyCompare(op, left, right));
        if (!holds) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case Kind::kCondition: {
      const auto& node = static_cast<const ast::Condition&>(expr);
      ASSIGN_OR_RETURN(Value condition, Eval(*node.condition));
      if (Truthy(condition)) return Eval(*node.then_expr);
      if (node.else_expr == nullptr) {
        return Value::Undefined(
            "the inline if-expression evaluated to false and no else section was defined");
      }
      return Eval(*node.else_expr);
    }
  }
  return RuntimeError("unknown expression");
}

}  // namespace epserve::jinja
