// Python `str` operations on UTF-8 text, indexed by character as Python is.
// Case mappings cover ASCII letters; text with cased non-ASCII letters
// (é, Σ, ...) is refused rather than mapped differently from Python.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace epserve::jinja {

absl::StatusOr<std::string> PyUpper(std::string_view s);
absl::StatusOr<std::string> PyLower(std::string_view s);
absl::StatusOr<std::string> PySwapcase(std::string_view s);
// str.capitalize(): first character upper case, the rest lower case.
absl::StatusOr<std::string> PyCapitalize(std::string_view s);
// str.title(): upper case after an uncased character, lower case otherwise.
absl::StatusOr<std::string> PyTitle(std::string_view s);
// Jinja's |title: capitalizes the words between runs of whitespace, '-',
// '(', '{', '[' and '<'.
absl::StatusOr<std::string> JinjaTitle(std::string_view s);
absl::StatusOr<bool> PyIsLower(std::string_view s);
absl::StatusOr<bool> PyIsUpper(std::string_view s);

// str.split(sep, maxsplit) / str.rsplit: a null `sep` splits on runs of
// whitespace. `sep` must not be empty.
std::vector<std::string> PySplit(std::string_view s, const std::string* sep, int64_t maxsplit,
                                 bool from_right);
// str.splitlines(keepends).
std::vector<std::string> PySplitLines(std::string_view s, bool keepends);
// str.replace(old, new, count); count < 0 replaces all.
std::string PyReplace(std::string_view s, std::string_view old_text, std::string_view new_text,
                      int64_t count);
// Resolves Python's optional start / end arguments against a string of
// `length` characters (negative values count from the end).
void ClampRange(int64_t length, std::optional<int64_t> start, std::optional<int64_t> end,
                int64_t* begin_out, int64_t* end_out);
// Substring by character positions [begin, end).
std::string CharSubstr(std::string_view s, int64_t begin, int64_t end);
// str.find / str.rfind within [start, end): character index or -1.
int64_t PyFind(std::string_view s, std::string_view sub, std::optional<int64_t> start,
               std::optional<int64_t> end, bool from_right);
// str.count(sub, start, end).
int64_t PyCount(std::string_view s, std::string_view sub, std::optional<int64_t> start,
                std::optional<int64_t> end);
// str.center / ljust / rjust with a one-character fill.
std::string PyPad(std::string_view s, int64_t width, std::string_view fill, int where);
inline constexpr int kPadCenter = 0;
inline constexpr int kPadLeftJustify = 1;
inline constexpr int kPadRightJustify = 2;

}  // namespace epserve::jinja
