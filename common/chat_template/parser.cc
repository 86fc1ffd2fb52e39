#include "common/chat_template/parser.h"

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/chat_template/lexer.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

using ast::Body;
using ast::ExprPtr;
using ast::StmtPtr;

// Tags of Jinja2 that the chat-template engine refuses.
constexpr std::string_view kUnsupportedTags[] = {
    "include", "extends", "block",     "import",        "from",     "autoescape", "trans",
    "do",      "debug",   "pluralize", "endautoescape", "endblock", "endtrans",
};

// Tags that only close or continue a block.
constexpr std::string_view kInnerTags[] = {
    "endfor",  "endif",     "elif",    "else",   "endset",        "endmacro",
    "endcall", "endfilter", "endwith", "endraw", "endgeneration",
};

template <typename Range>
bool Contains(const Range& range, std::string_view s) {
  return std::find(std::begin(range), std::end(range), s) != std::end(range);
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  absl::StatusOr<std::unique_ptr<ast::Program>> Run() {
    auto program = std::make_unique<ast::Program>();
    ASSIGN_OR_RETURN(std::string end, ParseBody(&program->body, {}));
    (void)end;
    return program;
  }

 private:
  // ------------------------------------------------------------- utilities

  const Token& cur() const { return tokens_[pos_]; }
  const Token& peek() const { return tokens_[std::min(pos_ + 1, tokens_.size() - 1)]; }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(absl::string_view op) const {
    return cur().type == TokenType::kOperator && cur().value == op;
  }
  bool IsName(std::string_view name) const {
    return cur().type == TokenType::kName && cur().value == name;
  }
  bool SkipOp(absl::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }

  static std::string Describe(const Token& t) {
    switch (t.type) {
      case TokenType::kText:
        return "template text";
      case TokenType::kVariableBegin:
        return "'{{'";
      case TokenType::kVariableEnd:
        return "'}}'";
      case TokenType::kBlockBegin:
        return "'{%'";
      case TokenType::kBlockEnd:
        return "'%}'";
      case TokenType::kEof:
        return "end of template";
      case TokenType::kString:
        return "string literal";
      default:
        return absl::StrCat("'", t.value, "'");
    }
  }

  absl::Status Error(absl::string_view message) const { return ErrorAt(message, cur().line); }
  static absl::Status ErrorAt(absl::string_view message, int line) {
    return absl::InvalidArgumentError(
        absl::StrCat("template syntax error: ", message, " (line ", line, ")"));
  }
  static absl::Status Unsupported(absl::string_view feature, int line) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported Jinja feature '", feature, "' (line ", line, ")"));
  }
  absl::Status Unexpected(absl::string_view expected) const {
    return Error(absl::StrCat("expected ", expected, ", got ", Describe(cur())));
  }

  absl::Status ExpectOp(absl::string_view op) {
    if (!SkipOp(op)) return Unexpected(absl::StrCat("'", op, "'"));
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (cur().type != TokenType::kBlockEnd) return Unexpected("end of statement '%}'");
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (cur().type != TokenType::kName) return Unexpected("a name");
    std::string name = cur().value;
    Next();
    return name;
  }

  // Guards the C++ stack against deeply nested templates.
  class DepthGuard {
   public:
    explicit DepthGuard(Parser* p) : p_(p) { ++p_->depth_; }
    ~DepthGuard() { --p_->depth_; }
    absl::Status Check() const {
      if (p_->depth_ > kMaxParseDepth) {
        return p_->Error(absl::StrCat("nesting deeper than ", kMaxParseDepth, " levels"));
      }
      return absl::OkStatus();
    }

   private:
    Parser* p_;
  };

  // ------------------------------------------------------------- statements

  // Parses statements into `body` until a `{% tag %}` with tag in `end_tags`;
  // consumes `{%` and the tag name and returns the name ("" at the end of the
  // template when `end_tags` is empty).
  absl::StatusOr<std::string> ParseBody(Body* body,
                                        std::initializer_list<std::string_view> end_tags) {
    while (true) {
      const Token& t = cur();
      switch (t.type) {
        case TokenType::kText:
          body->push_back(std::make_unique<ast::Text>(t.line, t.value));
          Next();
          break;
        case TokenType::kVariableBegin: {
          const int line = t.line;
          Next();
          ASSIGN_OR_RETURN(ExprPtr expr, ParseTuple(/*with_condexpr=*/true, {}));
          if (cur().type != TokenType::kVariableEnd)
            return Unexpected("end of print statement '}}'");
          Next();
          body->push_back(std::make_unique<ast::Output>(line, std::move(expr)));
          break;
        }
        case TokenType::kBlockBegin: {
          const Token& name = peek();
          if (name.type == TokenType::kName && Contains(end_tags, name.value)) {
            Next();
            Next();
            return name.value;
          }
          Next();
          ASSIGN_OR_RETURN(StmtPtr stmt, ParseStatement());
          if (stmt != nullptr) body->push_back(std::move(stmt));
          break;
        }
        case TokenType::kEof:
          if (end_tags.size() != 0) {
            const OpenBlock& block = open_blocks_.back();
            return ErrorAt(absl::StrCat("unexpected end of template: {% ", block.tag,
                                        " %} is never closed with {% end", block.tag, " %}"),
                           block.line);
          }
          return std::string();
        default:
          return Unexpected("template text or a tag");
      }
    }
  }

  // After `{%`: one statement, up to and including its closing tag.
  absl::StatusOr<StmtPtr> ParseStatement() {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    if (cur().type != TokenType::kName) return Unexpected("a statement name");
    const std::string tag = cur().value;
    const int line = cur().line;
    if (Contains(kUnsupportedTags, tag)) return Unsupported(tag, line);
    if (Contains(kInnerTags, tag)) return ErrorAt(absl::StrCat("unexpected '", tag, "'"), line);
    Next();
    open_blocks_.push_back({tag, line});
    absl::StatusOr<StmtPtr> stmt = ParseTag(tag, line);
    open_blocks_.pop_back();
    return stmt;
  }

  absl::StatusOr<StmtPtr> ParseTag(const std::string& tag, int line) {
    if (tag == "for") return ParseFor(line);
    if (tag == "if") return ParseIf(line);
    if (tag == "set") return ParseSet(line);
    if (tag == "macro") return ParseMacro(line);
    if (tag == "call") return ParseCallBlock(line);
    if (tag == "filter") return ParseFilterBlock(line);
    if (tag == "with") return ParseWith(line);
    if (tag == "generation") return ParseGeneration(line);
    if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) return ErrorAt(absl::StrCat("'", tag, "' outside a for loop"), line);
      RETURN_IF_ERROR(ExpectBlockEnd());
      return StmtPtr(std::make_unique<ast::LoopControl>(line, tag == "break"));
    }
    return Unsupported(absl::StrCat("unknown tag ", tag), line);
  }

  absl::Status ExpectEnd(const std::string& found, absl::string_view expected) {
    if (found != expected) return Error(absl::StrCat("expected '", expected, "'"));
    return ExpectBlockEnd();
  }

  absl::StatusOr<StmtPtr> ParseFor(int line) {
    auto node = std::make_unique<ast::For>(line);
    ASSIGN_OR_RETURN(node->target, ParseAssignTarget(/*with_namespace=*/false, {"in"}));
    if (!SkipName("in")) return Unexpected("'in'");
    ASSIGN_OR_RETURN(node->iterable, ParseTuple(/*with_condexpr=*/false, {"recursive"}));
    if (SkipName("if")) {
      ASSIGN_OR_RETURN(node->filter, ParseExpression(/*with_condexpr=*/true));
    }
    if (IsName("recursive")) return Unsupported("recursive for loop", line);
    RETURN_IF_ERROR(ExpectBlockEnd());
    ++loop_depth_;
    absl::StatusOr<std::string> end = ParseBody(&node->body, {"endfor", "else"});
    --loop_depth_;
    if (!end.ok()) return end.status();
    if (*end == "else") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      ASSIGN_OR_RETURN(end, ParseBody(&node->else_body, {"endfor"}));
    }
    RETURN_IF_ERROR(ExpectEnd(*end, "endfor"));
    return StmtPtr(std::move(node));
  }

  absl::StatusOr<StmtPtr> ParseIf(int line) {
    auto node = std::make_unique<ast::If>(line);
    std::string end = "if";
    while (end == "if" || end == "elif") {
      ASSIGN_OR_RETURN(ExprPtr condition, ParseTuple(/*with_condexpr=*/false, {}));
      RETURN_IF_ERROR(ExpectBlockEnd());
      Body body;
      ASSIGN_OR_RETURN(end, ParseBody(&body, {"elif", "else", "endif"}));
      node->branches.emplace_back(std::move(condition), std::move(body));
    }
    if (end == "else") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      ASSIGN_OR_RETURN(end, ParseBody(&node->else_body, {"endif"}));
    }
    RETURN_IF_ERROR(ExpectEnd(end, "endif"));
    return StmtPtr(std::move(node));
  }

  absl::StatusOr<StmtPtr> ParseSet(int line) {
    ASSIGN_OR_RETURN(ast::Target target, ParseAssignTarget(/*with_namespace=*/true, {}));
    if (SkipOp("=")) {
      auto node = std::make_unique<ast::Set>(line);
      node->target = std::move(target);
      ASSIGN_OR_RETURN(node->value, ParseTuple(/*with_condexpr=*/true, {}));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return StmtPtr(std::move(node));
    }
    if (target.kind == ast::Target::Kind::kTuple) return Unexpected("'='");
    auto node = std::make_unique<ast::SetBlock>(line);
    node->target = std::move(target);
    if (IsOp("|")) {
      ASSIGN_OR_RETURN(node->filter, ParseFilterChain(nullptr, /*start_inline=*/false));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    ASSIGN_OR_RETURN(std::string end, ParseBody(&node->body, {"endset"}));
    RETURN_IF_ERROR(ExpectEnd(end, "endset"));
    return StmtPtr(std::move(node));
  }

  // `(a, b=default, ...)` of a macro or a call block.
  absl::StatusOr<std::vector<ast::Param>> ParseSignature() {
    std::vector<ast::Param> params;
    RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (!params.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp(")")) break;
      ast::Param param;
      ASSIGN_OR_RETURN(param.name, ExpectName());
      if (SkipOp("=")) {
        ASSIGN_OR_RETURN(param.default_value, ParseExpression(/*with_condexpr=*/true));
      } else if (!params.empty() && params.back().default_value != nullptr) {
        return Error("non-default argument follows default argument");
      }
      params.push_back(std::move(param));
    }
    Next();
    return params;
  }

  // Parses a macro or call-block body: loops outside do not count for break.
  absl::StatusOr<std::string> ParseCallableBody(Body* body, std::string_view end_tag) {
    const int saved_loop_depth = loop_depth_;
    const bool saved_in_macro = in_macro_;
    loop_depth_ = 0;
    in_macro_ = true;
    absl::StatusOr<std::string> end = ParseBody(body, {end_tag});
    loop_depth_ = saved_loop_depth;
    in_macro_ = saved_in_macro;
    return end;
  }

  absl::StatusOr<StmtPtr> ParseMacro(int line) {
    auto node = std::make_unique<ast::Macro>(line);
    ASSIGN_OR_RETURN(node->name, ExpectName());
    ASSIGN_OR_RETURN(node->params, ParseSignature());
    RETURN_IF_ERROR(ExpectBlockEnd());
    ASSIGN_OR_RETURN(std::string end, ParseCallableBody(&node->body, "endmacro"));
    RETURN_IF_ERROR(ExpectEnd(end, "endmacro"));
    return StmtPtr(std::move(node));
  }

  absl::StatusOr<StmtPtr> ParseCallBlock(int line) {
    auto node = std::make_unique<ast::CallBlock>(line);
    if (IsOp("(")) {
      ASSIGN_OR_RETURN(node->caller_params, ParseSignature());
    }
    ASSIGN_OR_RETURN(node->call, ParseExpression(/*with_condexpr=*/true));
    if (node->call->kind != ast::Expr::Kind::kCall)
      return ErrorAt("expected a call in {% call %}", line);
    RETURN_IF_ERROR(ExpectBlockEnd());
    ASSIGN_OR_RETURN(std::string end, ParseCallableBody(&node->body, "endcall"));
    RETURN_IF_ERROR(ExpectEnd(end, "endcall"));
    return StmtPtr(std::move(node));
  }

  absl::StatusOr<StmtPtr> ParseFilterBlock(int line) {
    auto node = std::make_unique<ast::FilterBlock>(line);
    ASSIGN_OR_RETURN(node->filter, ParseFilterChain(nullptr, /*start_inline=*/true));
    RETURN_IF_ERROR(ExpectBlockEnd());
    ASSIGN_OR_RETURN(std::string end, ParseBody(&node->body, {"endfilter"}));
    RETURN_IF_ERROR(ExpectEnd(end, "endfilter"));
    return StmtPtr(std::move(node));
  }

  absl::StatusOr<StmtPtr> ParseWith(int line) {
    auto node = std::make_unique<ast::Scope>(line);
    while (cur().type != TokenType::kBlockEnd) {
      if (!node->assignments.empty()) RETURN_IF_ERROR(ExpectOp(","));
      ASSIGN_OR_RETURN(ast::Target target, ParseAssignTarget(/*with_namespace=*/false, {}));
      RETURN_IF_ERROR(ExpectOp("="));
      ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(/*with_condexpr=*/true));
      node->assignments.emplace_back(std::move(target), std::move(value));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    ASSIGN_OR_RETURN(std::string end, ParseBody(&node->body, {"endwith"}));
    RETURN_IF_ERROR(ExpectEnd(end, "endwith"));
    return StmtPtr(std::move(node));
  }

  // {% generation %}...{% endgeneration %} (transformers' AssistantTracker):
  // renders its body unchanged, in its own scope.
  absl::StatusOr<StmtPtr> ParseGeneration(int line) {
    auto node = std::make_unique<ast::Scope>(line);
    RETURN_IF_ERROR(ExpectBlockEnd());
    ASSIGN_OR_RETURN(std::string end, ParseBody(&node->body, {"endgeneration"}));
    RETURN_IF_ERROR(ExpectEnd(end, "endgeneration"));
    return StmtPtr(std::move(node));
  }

  // `x`, `a, b`, `(a, b)` or, with_namespace, `ns.attr`.
  absl::StatusOr<ast::Target> ParseAssignTarget(bool with_namespace,
                                                std::initializer_list<std::string_view> end_names) {
    if (with_namespace && cur().type == TokenType::kName && peek().type == TokenType::kOperator &&
        peek().value == ".") {
      ast::Target target;
      target.kind = ast::Target::Kind::kNamespaceAttr;
      target.name = cur().value;
      Next();
      Next();
      ASSIGN_OR_RETURN(target.attr, ExpectName());
      return target;
    }
    std::vector<ast::Target> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty() && !SkipOp(",")) break;
      if (IsTupleEnd(end_names) || IsOp("=")) break;
      ASSIGN_OR_RETURN(ast::Target item, ParseTargetPrimary());
      items.push_back(std::move(item));
      if (IsOp(",")) is_tuple = true;
    }
    if (items.empty()) return Unexpected("an assignment target");
    if (!is_tuple) return std::move(items.front());
    ast::Target target;
    target.kind = ast::Target::Kind::kTuple;
    target.items = std::move(items);
    return target;
  }

  absl::StatusOr<ast::Target> ParseTargetPrimary() {
    if (SkipOp("(")) {
      ASSIGN_OR_RETURN(ast::Target inner, ParseAssignTarget(/*with_namespace=*/false, {}));
      RETURN_IF_ERROR(ExpectOp(")"));
      return inner;
    }
    if (cur().type != TokenType::kName) return Unexpected("a variable name to assign to");
    static constexpr std::string_view kConstants[] = {"true", "false", "none",
                                                      "True", "False", "None"};
    if (Contains(kConstants, cur().value))
      return Error(absl::StrCat("can't assign to '", cur().value, "'"));
    ast::Target target;
    target.name = cur().value;
    Next();
    return target;
  }

  // ------------------------------------------------------------ expressions

  bool IsTupleEnd(std::initializer_list<std::string_view> end_names) const {
    const TokenType type = cur().type;
    if (type == TokenType::kVariableEnd || type == TokenType::kBlockEnd || IsOp(")")) return true;
    return type == TokenType::kName && Contains(end_names, cur().value);
  }

  // Comma-separated expressions: one expression, or a tuple when a comma is
  // present. explicit_parens allows `()`.
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condexpr,
                                     std::initializer_list<std::string_view> end_names,
                                     bool explicit_parens = false) {
    const int line = cur().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty() && !SkipOp(",")) break;
      if (IsTupleEnd(end_names)) break;
      ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(with_condexpr));
      items.push_back(std::move(item));
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items.front());
      if (!explicit_parens) return Unexpected("an expression");
    }
    auto tuple = std::make_unique<ast::ListExpr>(line, /*tuple=*/true);
    tuple->items = std::move(items);
    return ExprPtr(std::move(tuple));
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condexpr) {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    if (!with_condexpr) return ParseOr();
    ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (IsName("if")) {
      const int line = cur().line;
      Next();
      ASSIGN_OR_RETURN(ExprPtr condition, ParseOr());
      ExprPtr otherwise;
      if (SkipName("else")) {
        ASSIGN_OR_RETURN(otherwise, ParseExpression(/*with_condexpr=*/true));
      }
      expr = std::make_unique<ast::Condition>(line, std::move(condition), std::move(expr),
                                              std::move(otherwise));
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      const int line = cur().line;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      left = std::make_unique<ast::Binary>(line, ast::BinaryOp::kOr, std::move(left),
                                           std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      const int line = cur().line;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      left = std::make_unique<ast::Binary>(line, ast::BinaryOp::kAnd, std::move(left),
                                           std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      RETURN_IF_ERROR(guard.Check());
      const int line = cur().line;
      Next();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      return ExprPtr(std::make_unique<ast::Unary>(line, ast::UnaryOp::kNot, std::move(operand)));
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    const int line = cur().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    std::unique_ptr<ast::Compare> compare;
    while (true) {
      ast::CompareOp op;
      if (IsOp("==")) {
        op = ast::CompareOp::kEq;
      } else if (IsOp("!=")) {
        op = ast::CompareOp::kNe;
      } else if (IsOp("<")) {
        op = ast::CompareOp::kLt;
      } else if (IsOp("<=")) {
        op = ast::CompareOp::kLe;
      } else if (IsOp(">")) {
        op = ast::CompareOp::kGt;
      } else if (IsOp(">=")) {
        op = ast::CompareOp::kGe;
      } else if (IsName("in")) {
        op = ast::CompareOp::kIn;
      } else if (IsName("not") && peek().type == TokenType::kName && peek().value == "in") {
        op = ast::CompareOp::kNotIn;
        Next();
      } else {
        break;
      }
      Next();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
      if (compare == nullptr) compare = std::make_unique<ast::Compare>(line, std::move(first));
      compare->rest.emplace_back(op, std::move(operand));
    }
    if (compare == nullptr) return first;
    return ExprPtr(std::move(compare));
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const int line = cur().line;
      const auto op = IsOp("+") ? ast::BinaryOp::kAdd : ast::BinaryOp::kSub;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      left = std::make_unique<ast::Binary>(line, op, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    const int line = cur().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath2());
    if (!IsOp("~")) return first;
    auto concat = std::make_unique<ast::Concat>(line);
    concat->parts.push_back(std::move(first));
    while (SkipOp("~")) {
      ASSIGN_OR_RETURN(ExprPtr part, ParseMath2());
      concat->parts.push_back(std::move(part));
    }
    return ExprPtr(std::move(concat));
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (true) {
      ast::BinaryOp op;
      if (IsOp("*")) {
        op = ast::BinaryOp::kMul;
      } else if (IsOp("/")) {
        op = ast::BinaryOp::kDiv;
      } else if (IsOp("//")) {
        op = ast::BinaryOp::kFloorDiv;
      } else if (IsOp("%")) {
        op = ast::BinaryOp::kMod;
      } else {
        break;
      }
      const int line = cur().line;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      left = std::make_unique<ast::Binary>(line, op, std::move(left), std::move(right));
    }
    return left;
  }

  // Jinja's ** is left-associative and binds looser than unary minus.
  absl::StatusOr<ExprPtr> ParsePow() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(/*with_filter=*/true));
    while (IsOp("**")) {
      const int line = cur().line;
      Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(/*with_filter=*/true));
      left = std::make_unique<ast::Binary>(line, ast::BinaryOp::kPow, std::move(left),
                                           std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    RETURN_IF_ERROR(guard.Check());
    const int line = cur().line;
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const auto op = IsOp("-") ? ast::UnaryOp::kNeg : ast::UnaryOp::kPos;
      Next();
      ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(/*with_filter=*/false));
      node = std::make_unique<ast::Unary>(line, op, std::move(operand));
    } else {
      ASSIGN_OR_RETURN(node, ParsePrimary());
    }
    ASSIGN_OR_RETURN(node, ParsePostfix(std::move(node)));
    if (with_filter) {
      ASSIGN_OR_RETURN(node, ParseFilterExpr(std::move(node)));
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = cur();
    const int line = t.line;
    switch (t.type) {
      case TokenType::kName: {
        std::string name = t.value;
        Next();
        if (name == "true" || name == "True") return Literal(line, Value::Bool(true));
        if (name == "false" || name == "False") return Literal(line, Value::Bool(false));
        if (name == "none" || name == "None") return Literal(line, Value::None());
        if (in_macro_ && (name == "varargs" || name == "kwargs")) {
          return Unsupported(absl::StrCat("macro ", name), line);
        }
        return ExprPtr(std::make_unique<ast::Name>(line, std::move(name)));
      }
      case TokenType::kString: {
        std::string text = t.value;
        Next();
        while (cur().type == TokenType::kString) {  // adjacent literals concatenate
          text += cur().value;
          Next();
        }
        return Literal(line, Value::String(std::move(text)));
      }
      case TokenType::kInteger: {
        const int64_t v = t.int_value;
        Next();
        return Literal(line, Value::Int(v));
      }
      case TokenType::kFloat: {
        const double v = t.float_value;
        Next();
        return Literal(line, Value::Float(v));
      }
      case TokenType::kOperator:
        if (t.value == "(") {
          Next();
          ASSIGN_OR_RETURN(ExprPtr inner,
                           ParseTuple(/*with_condexpr=*/true, {}, /*explicit_parens=*/true));
          RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (t.value == "[") return ParseList();
        if (t.value == "{") return ParseDict();
        break;
      default:
        break;
    }
    return Error(absl::StrCat("unexpected ", Describe(t)));
  }

  static absl::StatusOr<ExprPtr> Literal(int line, Value v) {
    return ExprPtr(std::make_unique<ast::Literal>(line, std::move(v)));
  }

  absl::StatusOr<ExprPtr> ParseList() {
    auto list = std::make_unique<ast::ListExpr>(cur().line, /*tuple=*/false);
    Next();
    while (!IsOp("]")) {
      if (!list->items.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp("]")) break;
      ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(/*with_condexpr=*/true));
      list->items.push_back(std::move(item));
    }
    Next();
    return ExprPtr(std::move(list));
  }

  absl::StatusOr<ExprPtr> ParseDict() {
    auto dict = std::make_unique<ast::DictExpr>(cur().line);
    Next();
    while (!IsOp("}")) {
      if (!dict->items.empty()) RETURN_IF_ERROR(ExpectOp(","));
      if (IsOp("}")) break;
      ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(/*with_condexpr=*/true));
      RETURN_IF_ERROR(ExpectOp(":"));
      ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(/*with_condexpr=*/true));
      dict->items.emplace_back(std::move(key), std::move(value));
    }
    Next();
    return ExprPtr(std::move(dict));
  }

  // .attr, [index], [slice] and calls.
  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      const int line = cur().line;
      if (SkipOp(".")) {
        if (cur().type == TokenType::kName) {
          node = std::make_unique<ast::GetAttr>(line, std::move(node), cur().value);
        } else if (cur().type == TokenType::kInteger) {
          node = std::make_unique<ast::GetItem>(
              line, std::move(node),
              std::make_unique<ast::Literal>(line, Value::Int(cur().int_value)));
        } else {
          return Unexpected("an attribute name or number after '.'");
        }
        Next();
      } else if (IsOp("[")) {
        Next();
        ASSIGN_OR_RETURN(node, ParseSubscript(line, std::move(node)));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  // After `[`: an index, a tuple of indexes, or a slice.
  absl::StatusOr<ExprPtr> ParseSubscript(int line, ExprPtr object) {
    if (IsOp(":")) return ParseSlice(line, std::move(object), nullptr);
    ASSIGN_OR_RETURN(ExprPtr index, ParseExpression(/*with_condexpr=*/true));
    if (IsOp(":")) return ParseSlice(line, std::move(object), std::move(index));
    if (IsOp(",")) {
      auto tuple = std::make_unique<ast::ListExpr>(line, /*tuple=*/true);
      tuple->items.push_back(std::move(index));
      while (SkipOp(",")) {
        if (IsOp("]")) break;
        ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(/*with_condexpr=*/true));
        tuple->items.push_back(std::move(item));
      }
      index = std::move(tuple);
    }
    RETURN_IF_ERROR(ExpectOp("]"));
    return ExprPtr(std::make_unique<ast::GetItem>(line, std::move(object), std::move(index)));
  }

  // At the first `:` of a slice whose start (possibly null) was parsed.
  absl::StatusOr<ExprPtr> ParseSlice(int line, ExprPtr object, ExprPtr start) {
    auto slice = std::make_unique<ast::Slice>(line, std::move(object));
    slice->start = std::move(start);
    Next();  // ':'
    if (!IsOp("]") && !IsOp(":")) {
      ASSIGN_OR_RETURN(slice->stop, ParseExpression(/*with_condexpr=*/true));
    }
    if (SkipOp(":") && !IsOp("]")) {
      ASSIGN_OR_RETURN(slice->step, ParseExpression(/*with_condexpr=*/true));
    }
    RETURN_IF_ERROR(ExpectOp("]"));
    return ExprPtr(std::move(slice));
  }

  absl::StatusOr<ast::Arguments> ParseCallArgs() {
    ast::Arguments args;
    RETURN_IF_ERROR(ExpectOp("("));
    bool first = true;
    while (!IsOp(")")) {
      if (!first) {
        RETURN_IF_ERROR(ExpectOp(","));
        if (IsOp(")")) break;
      }
      first = false;
      if (IsOp("*") || IsOp("**")) return Unsupported("*args / **kwargs in a call", cur().line);
      if (cur().type == TokenType::kName && peek().type == TokenType::kOperator &&
          peek().value == "=") {
        std::string key = cur().value;
        Next();
        Next();
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(/*with_condexpr=*/true));
        args.keyword.emplace_back(std::move(key), std::move(value));
      } else {
        if (!args.keyword.empty()) return Error("positional argument follows keyword argument");
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(/*with_condexpr=*/true));
        args.positional.push_back(std::move(value));
      }
    }
    Next();
    return args;
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    auto call = std::make_unique<ast::Call>(cur().line, std::move(callee));
    ASSIGN_OR_RETURN(call->args, ParseCallArgs());
    return ExprPtr(std::move(call));
  }

  // Filters, tests and calls after a unary expression.
  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      if (IsOp("|")) {
        ASSIGN_OR_RETURN(node, ParseFilterChain(std::move(node), /*start_inline=*/false));
      } else if (IsName("is")) {
        ASSIGN_OR_RETURN(node, ParseTest(std::move(node)));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(node, ParseCall(std::move(node)));
      } else {
        return node;
      }
    }
  }

  // `|f(args)|g ...`; with start_inline the first filter has no leading `|`.
  absl::StatusOr<ExprPtr> ParseFilterChain(ExprPtr node, bool start_inline) {
    while (IsOp("|") || start_inline) {
      if (!start_inline) Next();
      start_inline = false;
      const int line = cur().line;
      ASSIGN_OR_RETURN(std::string name, ExpectName());
      if (IsOp(".")) return Unsupported(absl::StrCat("dotted filter name ", name, "..."), line);
      FilterFn fn = FindFilter(name);
      if (fn == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("unsupported Jinja feature 'filter ", name, "' (line ", line, ")"));
      }
      auto filter = std::make_unique<ast::Filter>(line, std::move(node), name, fn);
      if (IsOp("(")) {
        ASSIGN_OR_RETURN(filter->args, ParseCallArgs());
      }
      node = std::move(filter);
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseTest(ExprPtr node) {
    const int line = cur().line;
    Next();  // is
    const bool negated = SkipName("not");
    ASSIGN_OR_RETURN(std::string name, ExpectName());
    if (IsOp(".")) return Unsupported(absl::StrCat("dotted test name ", name, "..."), line);
    TestFn fn = FindTest(name);
    if (fn == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported Jinja feature 'test ", name, "' (line ", line, ")"));
    }
    auto test = std::make_unique<ast::Test>(line, std::move(node), name, fn, negated);
    if (IsOp("(")) {
      ASSIGN_OR_RETURN(test->args, ParseCallArgs());
    } else {
      // One argument without parentheses: `is divisibleby 3`, `is sameas none`.
      const TokenType type = cur().type;
      const bool starts_arg = type == TokenType::kName || type == TokenType::kString ||
                              type == TokenType::kInteger || type == TokenType::kFloat ||
                              IsOp("(") || IsOp("[") || IsOp("{");
      if (starts_arg && !IsName("else") && !IsName("or") && !IsName("and")) {
        if (IsName("is")) return Error("you cannot chain multiple tests with is");
        ASSIGN_OR_RETURN(ExprPtr arg, ParsePrimary());
        ASSIGN_OR_RETURN(arg, ParsePostfix(std::move(arg)));
        test->args.positional.push_back(std::move(arg));
      }
    }
    return ExprPtr(std::move(test));
  }

  // Blocks being parsed, innermost last, for "never closed" errors.
  struct OpenBlock {
    std::string tag;
    int line;
  };
  std::vector<OpenBlock> open_blocks_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  bool in_macro_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ast::Program>> ParseTemplate(std::string_view source) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source));
  return Parser(std::move(tokens)).Run();
}

}  // namespace epserve::jinja
