// UTF-8 and Python `str` character classes used by the Jinja engine.
//
// Strings are byte strings holding UTF-8. A byte that does not start a valid
// UTF-8 sequence is treated as one character of its own (decoded to
// 0xDC00 + byte, as Python's "surrogateescape" does) and encoded back to the
// same byte, so invalid UTF-8 passes through every string operation unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace epserve::jinja {

// Decodes the character at `*pos` and advances `*pos` past it.
uint32_t DecodeUtf8(std::string_view s, size_t* pos);
// Appends the UTF-8 encoding of `cp` (an escaped invalid byte becomes that byte).
void AppendUtf8(uint32_t cp, std::string* out);
std::vector<uint32_t> ToCodePoints(std::string_view s);
std::string FromCodePoints(const std::vector<uint32_t>& cps, size_t begin, size_t end);

bool IsAscii(std::string_view s);
// Number of characters (Python len()).
size_t CodePointCount(std::string_view s);
// Byte offset of character `index` (index <= CodePointCount(s)).
size_t ByteOffsetOfCodePoint(std::string_view s, size_t index);
// Character index of byte offset `offset` (offset on a character boundary).
size_t CodePointIndexOfByte(std::string_view s, size_t offset);

// Python str.isspace() of one character.
bool IsPySpace(uint32_t cp);
// Python str.isprintable() of one character (Unicode 14.0, Python 3.11).
bool IsPyPrintable(uint32_t cp);
// True for characters outside ASCII that Python's case mappings or cased
// tests touch. The engine maps case in ASCII only and refuses text with these.
bool IsCasedNonAscii(uint32_t cp);
// True when `s` holds no character for which IsCasedNonAscii is true.
bool HasOnlyAsciiCase(std::string_view s);

// Python str.strip / lstrip / rstrip: `chars` null means whitespace.
std::string PyStrip(std::string_view s, const std::string* chars, bool left, bool right);

}  // namespace epserve::jinja
