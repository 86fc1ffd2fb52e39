// Python semantics of Jinja's operators on values: arithmetic (int vs float
// as Python: 1/2 == 0.5, 7//2 == 3, -7//2 == -4), string and list
// concatenation and repetition, comparisons and `in`.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/ast.h"
#include "common/chat_template/value.h"

namespace epserve::jinja {

// An arithmetic operator (not `and` / `or`). Strings or lists longer than
// `max_bytes` (estimated for lists) are refused.
absl::StatusOr<Value> ApplyArithmetic(ast::BinaryOp op, const Value& a, const Value& b,
                                      size_t max_bytes);
absl::StatusOr<Value> ApplyNegate(const Value& v, bool negate);
absl::StatusOr<bool> ApplyCompare(ast::CompareOp op, const Value& a, const Value& b);
// Python `item in container`.
absl::StatusOr<bool> PyContains(const Value& container, const Value& item);
// markupsafe.escape of a string's text.
std::string HtmlEscape(absl::string_view s);

}  // namespace epserve::jinja
