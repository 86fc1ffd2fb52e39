#include "common/chat_template/lexer.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace epserve::jinja {
namespace {

absl::Status SyntaxError(absl::string_view message, int line) {
  return absl::InvalidArgumentError(
      absl::StrCat("template syntax error: ", message, " (line ", line, ")"));
}

// \r\n and \r become \n; one trailing \n is dropped (keep_trailing_newline=False).
std::string NormalizeNewlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Length of the Python whitespace character at `pos`, or 0.
size_t SpaceAt(std::string_view s, size_t pos) {
  if (pos >= s.size()) return 0;
  const uint8_t b = static_cast<uint8_t>(s[pos]);
  if (b < 0x80) return IsPySpace(b) ? 1 : 0;
  size_t next = pos;
  const uint32_t cp = DecodeUtf8(s, &next);
  return IsPySpace(cp) ? next - pos : 0;
}

size_t SkipSpaces(std::string_view s, size_t pos) {
  while (size_t n = SpaceAt(s, pos)) pos += n;
  return pos;
}

bool AllSpaces(std::string_view s) { return SkipSpaces(s, 0) == s.size(); }

std::string_view RStripSpaces(std::string_view s) {
  // Whitespace characters are ASCII or multi-byte sequences; scan forward to
  // find the start of the trailing run.
  size_t keep = 0;
  for (size_t pos = 0; pos < s.size();) {
    if (size_t n = SpaceAt(s, pos)) {
      pos += n;
    } else {
      DecodeUtf8(s, &pos);
      keep = pos;
    }
  }
  return s.substr(0, keep);
}

bool IsNameStart(char c) { return absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes the body of a string literal the way Jinja does:
// value.encode("ascii", "backslashreplace").decode("unicode-escape").
absl::StatusOr<std::string> DecodeStringLiteral(std::string_view body, int line) {
  std::string out;
  for (size_t i = 0; i < body.size();) {
    const char c = body[i];
    if (c != '\\') {
      out.push_back(c);
      ++i;
      continue;
    }
    if (i + 1 >= body.size()) return SyntaxError("string literal ends with a backslash", line);
    const char e = body[i + 1];
    i += 2;
    switch (e) {
      case '\n':
        break;  // line continuation
      case '\\':
        out.push_back('\\');
        break;
      case '\'':
        out.push_back('\'');
        break;
      case '"':
        out.push_back('"');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x':
      case 'u':
      case 'U': {
        const size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (size_t k = 0; k < digits; ++k) {
          const int h = i + k < body.size() ? HexValue(body[i + k]) : -1;
          if (h < 0)
            return SyntaxError(absl::StrCat("truncated \\", std::string(1, e), " escape"), line);
          cp = cp * 16 + static_cast<uint32_t>(h);
        }
        i += digits;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
          return SyntaxError("string escape is not a valid Unicode character", line);
        }
        AppendUtf8(cp, &out);
        break;
      }
      case 'N':
        return SyntaxError("\\N{...} escapes are not supported", line);
      default:
        if (e >= '0' && e <= '7') {
          uint32_t cp = static_cast<uint32_t>(e - '0');
          for (int k = 0; k < 2 && i < body.size() && body[i] >= '0' && body[i] <= '7'; ++k) {
            cp = cp * 8 + static_cast<uint32_t>(body[i++] - '0');
          }
          AppendUtf8(cp, &out);
        } else if (static_cast<uint8_t>(e) >= 0x80) {
          // backslashreplace turned the character into an escape first, so
          // the backslash escapes that escape's own backslash.
          size_t pos = i - 1;
          const uint32_t cp = DecodeUtf8(body, &pos);
          i = pos;
          out.push_back('\\');
          if (cp <= 0xFF) {
            absl::StrAppend(&out, "x", absl::Hex(cp, absl::kZeroPad2));
          } else if (cp <= 0xFFFF) {
            absl::StrAppend(&out, "u", absl::Hex(cp, absl::kZeroPad4));
          } else {
            absl::StrAppend(&out, "U", absl::Hex(cp, absl::kZeroPad8));
          }
        } else {
          out.push_back('\\');  // unknown escapes stay as written
          out.push_back(e);
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(NormalizeNewlines(source)) {}

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < src_.size()) {
      const size_t tag = FindTagStart(pos_);
      if (tag == std::string_view::npos) {
        EmitText(src_.substr(pos_), line_);
        Advance(src_.size());
        break;
      }
      const char kind = src_[tag + 1];
      size_t p = tag + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      const size_t raw_end = kind == '%' ? MatchRawBegin(p) : 0;
      EmitText(StripBeforeTag(src_.substr(pos_, tag - pos_), sign, kind != '{'), line_);
      Advance(tag);
      if (raw_end != 0) {
        RETURN_IF_ERROR(LexRaw(raw_end));
      } else if (kind == '#') {
        RETURN_IF_ERROR(LexComment(p));
      } else {
        RETURN_IF_ERROR(LexTag(kind, p));
      }
    }
    Token eof;
    eof.type = TokenType::kEof;
    eof.line = line_;
    tokens_.push_back(std::move(eof));
    return std::move(tokens_);
  }

 private:
  // Position of the next "{{", "{%" or "{#" at or after `from`.
  size_t FindTagStart(size_t from) const {
    for (size_t i = src_.find('{', from); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  // Moves to `to`, counting lines.
  void Advance(size_t to) {
    line_ += static_cast<int>(std::count(src_.begin() + pos_, src_.begin() + to, '\n'));
    pos_ = to;
  }

  // The text before a tag after `-` (rstrip) or lstrip_blocks.
  std::string_view StripBeforeTag(std::string_view text, char sign, bool lstrip_applies) const {
    if (sign == '-') return RStripSpaces(text);
    if (sign == '+' || !lstrip_applies) return text;
    const size_t newline = text.rfind('\n');
    const size_t line_start = newline == std::string_view::npos ? 0 : newline + 1;
    if ((line_start > 0 || line_starting_) && line_start < text.size() &&
        AllSpaces(text.substr(line_start))) {
      return text.substr(0, line_start);
    }
    return text;
  }

  void EmitText(std::string_view text, int line) {
    if (text.empty()) return;
    Token t;
    t.type = TokenType::kText;
    t.value = std::string(text);
    t.line = line;
    tokens_.push_back(std::move(t));
  }

  void Emit(TokenType type, std::string value, int line) {
    Token t;
    t.type = type;
    t.value = std::move(value);
    t.line = line;
    tokens_.push_back(std::move(t));
  }

  // After "{%[-+]" at `p`: if this is `raw %}` / `raw -%}`, the position after
  // the tag (and after the whitespace `-%}` strips); otherwise 0.
  size_t MatchRawBegin(size_t p) const {
    p = SkipSpaces(src_, p);
    if (src_.compare(p, 3, "raw") != 0) return 0;
    p = SkipSpaces(src_, p + 3);
    if (src_.compare(p, 3, "-%}") == 0) return SkipSpaces(src_, p + 3);
    if (src_.compare(p, 2, "%}") == 0) return p + 2;
    return 0;
  }

  // Sets line_starting_ from the last character a tag consumed.
  void EndTag(size_t end) {
    line_starting_ = end > 0 && src_[end - 1] == '\n';
    Advance(end);
  }

  // Position after a closing "%}" / "#}" at `close` preceded by `sign`:
  // `-` strips all whitespace, `+` nothing, otherwise one newline (trim_blocks).
  size_t AfterBlockClose(size_t close, char sign) const {
    const size_t after = close + 2;
    if (sign == '-') return SkipSpaces(src_, after);
    if (sign == '+') return after;
    return after < src_.size() && src_[after] == '\n' ? after + 1 : after;
  }

  absl::Status LexRaw(size_t body_start) {
    const int begin_line = line_;
    line_starting_ = body_start > 0 && src_[body_start - 1] == '\n';
    for (size_t i = src_.find("{%", body_start); i != std::string::npos;
         i = src_.find("{%", i + 1)) {
      size_t p = i + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      p = SkipSpaces(src_, p);
      if (src_.compare(p, 6, "endraw") != 0) continue;
      p = SkipSpaces(src_, p + 6);
      char close_sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) close_sign = src_[p++];
      if (src_.compare(p, 2, "%}") != 0) continue;
      Advance(body_start);
      EmitText(StripBeforeTag(source().substr(body_start, i - body_start), sign, true), line_);
      EndTag(AfterBlockClose(p, close_sign));
      return absl::OkStatus();
    }
    return SyntaxError("missing {% endraw %} for {% raw %}", begin_line);
  }

  absl::Status LexComment(size_t p) {
    const size_t close = src_.find("#}", p);
    if (close == std::string::npos) return SyntaxError("unterminated comment {# ... #}", line_);
    const char sign =
        close > p && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : 0;
    EndTag(AfterBlockClose(close, sign));
    return absl::OkStatus();
  }

  // Lexes the expression tokens of a {{ }} or {% %} tag starting at `p`.
  absl::Status LexTag(char kind, size_t p) {
    const int begin_line = line_;
    Emit(kind == '{' ? TokenType::kVariableBegin : TokenType::kBlockBegin, "", line_);
    Advance(p);
    std::vector<char> brackets;
    while (true) {
      Advance(SkipSpaces(src_, pos_));
      if (pos_ >= src_.size()) {
        return SyntaxError(kind == '{' ? "unexpected end of template, expected '}}'"
                                       : "unexpected end of template, expected '%}'",
                           begin_line);
      }
      if (brackets.empty()) {
        if (kind == '{') {
          if (src_.compare(pos_, 3, "-}}") == 0 || src_.compare(pos_, 2, "}}") == 0) {
            Emit(TokenType::kVariableEnd, "", line_);
            const bool strip = src_[pos_] == '-';
            const size_t after = pos_ + (strip ? 3 : 2);
            EndTag(strip ? SkipSpaces(src_, after) : after);
            return absl::OkStatus();
          }
        } else {
          const char sign = src_[pos_] == '-' || src_[pos_] == '+' ? src_[pos_] : 0;
          const size_t close = pos_ + (sign != 0 ? 1 : 0);
          if (src_.compare(close, 2, "%}") == 0) {
            Emit(TokenType::kBlockEnd, "", line_);
            EndTag(AfterBlockClose(close, sign));
            return absl::OkStatus();
          }
        }
      }
      RETURN_IF_ERROR(LexExpressionToken(&brackets));
    }
  }

  absl::Status LexExpressionToken(std::vector<char>* brackets) {
    const char c = src_[pos_];
    if (IsDigit(c)) return LexNumber();
    if (IsNameStart(c)) {
      size_t end = pos_ + 1;
      while (end < src_.size() && IsNameChar(src_[end])) ++end;
      Emit(TokenType::kName, src_.substr(pos_, end - pos_), line_);
      Advance(end);
      return absl::OkStatus();
    }
    if (c == '\'' || c == '"') return LexString(c);
    static constexpr std::string_view kTwoCharOps[] = {"**", "//", "==", "!=", ">=", "<="};
    for (std::string_view op : kTwoCharOps) {
      if (src_.compare(pos_, 2, op) == 0) {
        Emit(TokenType::kOperator, std::string(op), line_);
        Advance(pos_ + 2);
        return absl::OkStatus();
      }
    }
    static constexpr std::string_view kOneCharOps = "+-/*%~[](){}><=.:|,;";
    if (kOneCharOps.find(c) == std::string_view::npos) {
      return SyntaxError(absl::StrCat("unexpected character '", std::string(1, c), "'"), line_);
    }
    if (c == '(' || c == '[' || c == '{') {
      brackets->push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
    } else if (c == ')' || c == ']' || c == '}') {
      if (brackets->empty()) {
        return SyntaxError(absl::StrCat("unexpected '", std::string(1, c), "'"), line_);
      }
      if (brackets->back() != c) {
        return SyntaxError(absl::StrCat("unexpected '", std::string(1, c), "', expected '",
                                        std::string(1, brackets->back()), "'"),
                           line_);
      }
      brackets->pop_back();
    }
    Emit(TokenType::kOperator, std::string(1, c), line_);
    Advance(pos_ + 1);
    return absl::OkStatus();
  }

  // Integers (decimal, 0b, 0o, 0x, with `_` separators) and floats
  // (digits '.' digits, optional exponent; or digits with an exponent).
  absl::Status LexNumber() {
    const size_t start = pos_;
    std::string digits;
    size_t p = pos_;
    const auto take_digits = [&](auto is_digit) {
      const size_t begin = p;
      while (p < src_.size() &&
             (is_digit(src_[p]) ||
              (src_[p] == '_' && p > begin && p + 1 < src_.size() && is_digit(src_[p + 1])))) {
        if (src_[p] != '_') digits.push_back(src_[p]);
        ++p;
      }
      return p > begin;
    };
    if (src_[p] == '0' && p + 1 < src_.size() &&
        (src_[p + 1] == 'x' || src_[p + 1] == 'X' || src_[p + 1] == 'o' || src_[p + 1] == 'O' ||
         src_[p + 1] == 'b' || src_[p + 1] == 'B')) {
      const char base_char =
          static_cast<char>(absl::ascii_tolower(static_cast<unsigned char>(src_[p + 1])));
      const int base = base_char == 'x' ? 16 : base_char == 'o' ? 8 : 2;
      p += 2;
      if (p < src_.size() && src_[p] == '_') ++p;
      const bool ok = take_digits([base](char ch) {
        const int h = HexValue(ch);
        return h >= 0 && h < base;
      });
      if (!ok) return SyntaxError("invalid integer literal", line_);
      return EmitInteger(digits, base, p);
    }
    take_digits(IsDigit);
    bool is_float = false;
    // As Jinja's float pattern (?<!\.): after a '.', `x.0.1` is x[0][1].
    const bool float_allowed = start == 0 || src_[start - 1] != '.';
    if (float_allowed && p + 1 < src_.size() && src_[p] == '.' && IsDigit(src_[p + 1])) {
      is_float = true;
      digits.push_back('.');
      ++p;
      take_digits(IsDigit);
    }
    if (float_allowed && p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && IsDigit(src_[q])) {
        is_float = true;
        digits.push_back('e');
        if (src_[p + 1] == '-') digits.push_back('-');
        p = q;
        take_digits(IsDigit);
      }
    }
    if (!is_float) return EmitInteger(digits, 10, p);
    Token t;
    t.type = TokenType::kFloat;
    t.value = src_.substr(start, p - start);
    t.line = line_;
    t.float_value = std::strtod(digits.c_str(), nullptr);
    tokens_.push_back(std::move(t));
    Advance(p);
    return absl::OkStatus();
  }

  absl::Status EmitInteger(const std::string& digits, int base, size_t end) {
    errno = 0;
    char* parse_end = nullptr;
    const long long value = std::strtoll(digits.c_str(), &parse_end, base);
    if (errno == ERANGE) return SyntaxError("integer literal out of 64-bit range", line_);
    Token t;
    t.type = TokenType::kInteger;
    t.value = src_.substr(pos_, end - pos_);
    t.line = line_;
    t.int_value = value;
    tokens_.push_back(std::move(t));
    Advance(end);
    return absl::OkStatus();
  }

  absl::Status LexString(char quote) {
    size_t p = pos_ + 1;
    while (p < src_.size() && src_[p] != quote) {
      p += src_[p] == '\\' ? 2 : 1;
    }
    if (p >= src_.size()) return SyntaxError("unterminated string literal", line_);
    absl::StatusOr<std::string> value =
        DecodeStringLiteral(source().substr(pos_ + 1, p - pos_ - 1), line_);
    if (!value.ok()) return value.status();
    Emit(TokenType::kString, std::move(*value), line_);
    Advance(p + 1);
    return absl::OkStatus();
  }

  std::string_view source() const { return src_; }

  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source) { return Lexer(source).Run(); }

}  // namespace epserve::jinja
