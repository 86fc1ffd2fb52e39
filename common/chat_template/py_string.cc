#include "common/chat_template/py_string.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "common/chat_template/errors.h"
#include "common/chat_template/unicode.h"

namespace epserve::jinja {
namespace {

absl::Status CheckAsciiCase(std::string_view s, std::string_view op) {
  if (HasOnlyAsciiCase(s)) return absl::OkStatus();
  return UnsupportedError(std::string(op) + " of text with non-ASCII letters");
}

bool IsUpperAscii(char c) { return c >= 'A' && c <= 'Z'; }
bool IsLowerAscii(char c) { return c >= 'a' && c <= 'z'; }
bool IsCasedAscii(char c) { return IsUpperAscii(c) || IsLowerAscii(c); }
char ToUpperAscii(char c) { return IsLowerAscii(c) ? static_cast<char>(c - 'a' + 'A') : c; }
char ToLowerAscii(char c) { return IsUpperAscii(c) ? static_cast<char>(c - 'A' + 'a') : c; }

bool IsJinjaWordBreak(uint32_t cp) {
  return cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || IsPySpace(cp);
}

// Python's line boundaries for str.splitlines().
bool IsLineBreak(uint32_t cp) {
  return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D ||
         cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

}  // namespace

absl::StatusOr<std::string> PyUpper(std::string_view s) {
  if (absl::Status st = CheckAsciiCase(s, "upper()"); !st.ok()) return st;
  std::string out(s);
  for (char& c : out) c = ToUpperAscii(c);
  return out;
}

absl::StatusOr<std::string> PyLower(std::string_view s) {
  if (absl::Status st = CheckAsciiCase(s, "lower()"); !st.ok()) return st;
  std::string out(s);
  for (char& c : out) c = ToLowerAscii(c);
  return out;
}

absl::StatusOr<std::string> PySwapcase(std::string_view s) {
  if (absl::Status st = CheckAsciiCase(s, "swapcase()"); !st.ok()) return st;
  std::string out(s);
  for (char& c : out) c = IsUpperAscii(c) ? ToLowerAscii(c) : ToUpperAscii(c);
  return out;
}

absl::StatusOr<std::string> PyCapitalize(std::string_view s) {
  if (absl::Status st = CheckAsciiCase(s, "capitalize()"); !st.ok()) return st;
  std::string out(s);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = i == 0 ? ToUpperAscii(out[i]) : ToLowerAscii(out[i]);
  return out;
}

absl::StatusOr<std::string> PyTitle(std::string_view s) {
  if (absl::Status st = CheckAsciiCase(s, "title()"); !st.ok()) return st;
  std::string out(s);
  bool previous_cased = false;
  for (char& c : out) {
    if (IsCasedAscii(c)) {
      c = previous_cased ? ToLowerAscii(c) : ToUpperAscii(c);
      previous_cased = true;
    } else {
      previous_cased = false;
    }
  }
  return out;
}

absl::StatusOr<std::string> JinjaTitle(std::string_view s) {
  if (absl::Status st = CheckAsciiCase(s, "title"); !st.ok()) return st;
  std::string out;
  out.reserve(s.size());
  bool word_start = true;
  bool in_break = false;
  for (size_t pos = 0; pos < s.size();) {
    const size_t begin = pos;
    const uint32_t cp = DecodeUtf8(s, &pos);
    const bool is_break = IsJinjaWordBreak(cp);
    if (begin == 0 || is_break != in_break) word_start = true;
    in_break = is_break;
    if (cp < 0x80) {
      const char c = static_cast<char>(cp);
      out.push_back(word_start ? ToUpperAscii(c) : ToLowerAscii(c));
    } else {
      out.append(s.substr(begin, pos - begin));
    }
    word_start = false;
  }
  return out;
}

absl::StatusOr<bool> PyIsLower(std::string_view s) {
  if (absl::Status st = CheckAsciiCase(s, "islower()"); !st.ok()) return st;
  bool cased = false;
  for (char c : s) {
    if (IsUpperAscii(c)) return false;
    cased |= IsLowerAscii(c);
  }
  return cased;
}

absl::StatusOr<bool> PyIsUpper(std::string_view s) {
  if (absl::Status st = CheckAsciiCase(s, "isupper()"); !st.ok()) return st;
  bool cased = false;
  for (char c : s) {
    if (IsLowerAscii(c)) return false;
    cased |= IsUpperAscii(c);
  }
  return cased;
}

std::vector<std::string> PySplit(std::string_view s, const std::string* sep, int64_t maxsplit,
                                 bool from_right) {
  std::vector<std::string> parts;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (sep != nullptr) {
    if (!from_right) {
      size_t start = 0;
      while (maxsplit-- > 0) {
        const size_t hit = s.find(*sep, start);
        if (hit == std::string_view::npos) break;
        parts.emplace_back(s.substr(start, hit - start));
        start = hit + sep->size();
      }
      parts.emplace_back(s.substr(start));
    } else {
      size_t end = s.size();
      while (maxsplit-- > 0 && end >= sep->size()) {
        const size_t hit = s.rfind(*sep, end - sep->size());
        if (hit == std::string_view::npos) break;
        parts.emplace_back(s.substr(hit + sep->size(), end - hit - sep->size()));
        end = hit;
      }
      parts.emplace_back(s.substr(0, end));
      std::reverse(parts.begin(), parts.end());
    }
    return parts;
  }
  // Whitespace split on characters.
  const std::vector<uint32_t> cps = ToCodePoints(s);
  const size_t n = cps.size();
  if (!from_right) {
    size_t i = 0;
    while (i < n) {
      while (i < n && IsPySpace(cps[i])) ++i;
      if (i == n) break;
      if (maxsplit-- <= 0) {  // the rest, trailing whitespace included
        parts.push_back(FromCodePoints(cps, i, n));
        break;
      }
      const size_t start = i;
      while (i < n && !IsPySpace(cps[i])) ++i;
      parts.push_back(FromCodePoints(cps, start, i));
    }
  } else {
    size_t i = n;
    while (i > 0) {
      while (i > 0 && IsPySpace(cps[i - 1])) --i;
      if (i == 0) break;
      if (maxsplit-- <= 0) {  // the rest, leading whitespace included
        parts.push_back(FromCodePoints(cps, 0, i));
        break;
      }
      const size_t end = i;
      while (i > 0 && !IsPySpace(cps[i - 1])) --i;
      parts.push_back(FromCodePoints(cps, i, end));
    }
    std::reverse(parts.begin(), parts.end());
  }
  return parts;
}

std::vector<std::string> PySplitLines(std::string_view s, bool keepends) {
  std::vector<std::string> lines;
  const std::vector<uint32_t> cps = ToCodePoints(s);
  size_t start = 0;
  size_t i = 0;
  while (i < cps.size()) {
    if (!IsLineBreak(cps[i])) {
      ++i;
      continue;
    }
    size_t eol = i + 1;
    if (cps[i] == '\r' && eol < cps.size() && cps[eol] == '\n') ++eol;
    lines.push_back(FromCodePoints(cps, start, keepends ? eol : i));
    start = i = eol;
  }
  if (start < cps.size()) lines.push_back(FromCodePoints(cps, start, cps.size()));
  return lines;
}

std::string PyReplace(std::string_view s, std::string_view old_text, std::string_view new_text,
                      int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (old_text.empty()) {
    // Inserts `new_text` before every character and at the end.
    size_t pos = 0;
    while (count > 0 && pos <= s.size()) {
      out.append(new_text);
      --count;
      if (pos == s.size()) {
        pos = s.size() + 1;
        break;
      }
      const size_t begin = pos;
      DecodeUtf8(s, &pos);
      out.append(s.substr(begin, pos - begin));
    }
    if (pos <= s.size()) out.append(s.substr(pos));
    return out;
  }
  size_t start = 0;
  while (count-- > 0) {
    const size_t hit = s.find(old_text, start);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(start, hit - start));
    out.append(new_text);
    start = hit + old_text.size();
  }
  out.append(s.substr(start));
  return out;
}

void ClampRange(int64_t length, std::optional<int64_t> start, std::optional<int64_t> end,
                int64_t* begin_out, int64_t* end_out) {
  int64_t b = start.value_or(0);
  int64_t e = end.value_or(length);
  if (b < 0) b = std::max<int64_t>(0, b + length);
  if (e < 0) e = std::max<int64_t>(0, e + length);
  *begin_out = std::min(b, length);
  *end_out = std::min(e, length);
}

std::string CharSubstr(std::string_view s, int64_t begin, int64_t end) {
  if (end <= begin) return "";
  const size_t b = ByteOffsetOfCodePoint(s, static_cast<size_t>(begin));
  const size_t e = ByteOffsetOfCodePoint(s, static_cast<size_t>(end));
  return std::string(s.substr(b, e - b));
}

int64_t PyFind(std::string_view s, std::string_view sub, std::optional<int64_t> start,
               std::optional<int64_t> end, bool from_right) {
  const int64_t length = static_cast<int64_t>(CodePointCount(s));
  int64_t b = 0;
  int64_t e = 0;
  ClampRange(length, start, end, &b, &e);
  if (start.value_or(0) > length) return -1;
  if (e - b < static_cast<int64_t>(CodePointCount(sub))) return -1;
  const size_t byte_begin = ByteOffsetOfCodePoint(s, static_cast<size_t>(b));
  const size_t byte_end = ByteOffsetOfCodePoint(s, static_cast<size_t>(e));
  const std::string_view window = s.substr(byte_begin, byte_end - byte_begin);
  const size_t hit = from_right ? window.rfind(sub) : window.find(sub);
  if (hit == std::string_view::npos) return -1;
  return b + static_cast<int64_t>(CodePointIndexOfByte(window, hit));
}

int64_t PyCount(std::string_view s, std::string_view sub, std::optional<int64_t> start,
                std::optional<int64_t> end) {
  const int64_t length = static_cast<int64_t>(CodePointCount(s));
  int64_t b = 0;
  int64_t e = 0;
  ClampRange(length, start, end, &b, &e);
  if (start.value_or(0) > length || e < b) return 0;
  if (sub.empty()) return e - b + 1;
  const std::string window = CharSubstr(s, b, e);
  int64_t n = 0;
  for (size_t pos = window.find(sub); pos != std::string::npos;
       pos = window.find(sub, pos + sub.size())) {
    ++n;
  }
  return n;
}

std::string PyPad(std::string_view s, int64_t width, std::string_view fill, int where) {
  const int64_t length = static_cast<int64_t>(CodePointCount(s));
  if (width <= length) return std::string(s);
  const int64_t pad = width - length;
  int64_t left = 0;
  if (where == kPadCenter) {
    left = pad / 2 + (pad & width & 1);
  } else if (where == kPadRightJustify) {
    left = pad;
  }
  std::string out;
  for (int64_t i = 0; i < left; ++i) out.append(fill);
  out.append(s);
  for (int64_t i = 0; i < pad - left; ++i) out.append(fill);
  return out;
}

}  // namespace epserve::jinja
