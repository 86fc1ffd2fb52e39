// Jinja parser: tokens to syntax tree, with Jinja2's grammar and operator
// precedence. Unsupported constructs are refused here, naming the line.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/chat_template/ast.h"

namespace epserve::jinja {

// Deepest nesting of blocks and expressions the parser accepts.
inline constexpr int kMaxParseDepth = 128;

absl::StatusOr<std::unique_ptr<ast::Program>> ParseTemplate(std::string_view source);

}  // namespace epserve::jinja
