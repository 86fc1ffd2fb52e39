// Jinja lexer: splits a template into text and tag tokens, applying the
// whitespace rules of the Hugging Face chat-template environment
// (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
//
//   * newlines (\r\n, \r, \n) are normalized to \n, one trailing \n dropped;
//   * `{%-`, `{{-`, `{#-` strip all whitespace before the tag, `-%}`, `-}}`,
//     `-#}` all whitespace after it;
//   * lstrip_blocks: spaces and tabs (any Python whitespace but \n) between
//     the start of a line and a `{%` or `{#` tag are removed (`{%+` keeps them);
//   * trim_blocks: the first \n after a `%}` or `#}` is removed (`+%}` keeps it);
//   * neither applies to `{{ }}`; `{% raw %}...{% endraw %}` is text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace epserve::jinja {

enum class TokenType {
  kText,
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,  // value: the decoded literal
  kInteger,
  kFloat,
  kOperator,  // value: "+", "//", "==", "(", ...
  kEof,
};

struct Token {
  TokenType type = TokenType::kEof;
  std::string value;
  int line = 1;
  int64_t int_value = 0;
  double float_value = 0;
};

// Fails on lexical errors (unterminated string, comment or raw block,
// unbalanced brackets, a character that starts no token), naming the line.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source);

}  // namespace epserve::jinja
