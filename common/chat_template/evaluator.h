// Renders a parsed template: walks the syntax tree with Jinja2's scoping
// (a for-loop iteration, macro, call block or {% with %} gets its own scope;
// {% if %} does not), its Undefined rules and Python value semantics.
// One Interpreter serves one Render() call.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/ast.h"
#include "common/chat_template/jinja.h"
#include "common/chat_template/value.h"

namespace epserve::jinja {

// Variables of one scope; lookups fall back to the parent.
struct Scope {
  std::shared_ptr<Scope> parent;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* Find(absl::string_view name) const;
  void Set(absl::string_view name, Value value);
};

class Interpreter {
 public:
  // `context` is the dict of template variables.
  Interpreter(const RenderOptions& options, Value context);
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  absl::StatusOr<std::string> Render(const ast::Program& program);

  const RenderOptions& options() const { return options_; }
  // Fails when a string or list of `bytes` would exceed max_output_bytes.
  absl::Status CheckSize(size_t bytes) const;
  // Counts loop iterations against max_loop_iterations.
  absl::Status CountIterations(size_t n);
  // Tracks a namespace created by namespace() so that reference cycles
  // through it are broken when the render ends.
  absl::Status RegisterNamespace(const std::shared_ptr<NamespaceData>& ns);

  // Calls a macro (`caller` is the {% call %} body or Undefined).
  absl::StatusOr<Value> CallMacro(const ast::Macro& macro, const std::shared_ptr<Scope>& closure,
                                  const CallArgs& args, Value caller);
  // Calls the body of a {% call %} block (caller(...) inside the macro).
  absl::StatusOr<Value> CallCallerBody(const ast::CallBlock& block,
                                       const std::shared_ptr<Scope>& closure, const CallArgs& args);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  static constexpr size_t kMaxNamespaces = 100000;

  absl::Status ExecBody(const ast::Body& body);
  absl::Status Exec(const ast::Stmt& stmt);
  absl::Status ExecFor(const ast::For& node);
  absl::Status ExecCallBlock(const ast::CallBlock& node);
  // Renders `body` in a child scope into a string.
  absl::StatusOr<std::string> Capture(const ast::Body& body);
  absl::Status Assign(const ast::Target& target, const Value& value);
  absl::Status Append(absl::string_view text);

  absl::StatusOr<Value> Eval(const ast::Expr& expr);
  absl::StatusOr<Value> EvalImpl(const ast::Expr& expr);
  absl::StatusOr<CallArgs> EvalArgs(const ast::Arguments& args);
  // Applies a chain of Filter nodes whose innermost input is null to `input`.
  absl::StatusOr<Value> ApplyFilterChain(const ast::Expr& chain, const Value& input);
  absl::StatusOr<Value> EvalFilter(const ast::Filter& node, const Value* block_input);
  Value Lookup(const std::string& name) const;

  // Renders the body of a macro or call block (in the current scope) to text.
  absl::StatusOr<Value> RenderCallableBody(const ast::Body& body);
  // Binds call arguments to `params` in the current scope; missing ones
  // without a default are Undefined, as in Jinja.
  absl::Status BindParams(absl::string_view what, const std::vector<ast::Param>& params,
                          const CallArgs& args);

  const RenderOptions& options_;
  Value context_;
  std::shared_ptr<Scope> scope_;
  std::string* out_ = nullptr;
  Flow flow_ = Flow::kNormal;
  int64_t loop_iterations_ = 0;
  int call_depth_ = 0;
  std::vector<std::weak_ptr<NamespaceData>> namespaces_;
};

}  // namespace epserve::jinja
