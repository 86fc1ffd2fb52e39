// UTF-8 and Unicode helpers for the tokenizer (Unicode data from ICU).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace epserve::tokenizer {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Returns OK when `text` is well-formed UTF-8, else INVALID_ARGUMENT naming the
// byte offset of the first ill-formed sequence.
absl::Status ValidateUtf8(absl::string_view text);

// Byte length of the UTF-8 character starting with lead byte `b` (1 for
// continuation / invalid bytes, so scanning always advances).
inline size_t Utf8CharLen(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b >> 5) == 0x6) return 2;
  if ((b >> 4) == 0xE) return 3;
  if ((b >> 3) == 0x1E) return 4;
  return 1;
}

// Decodes the character at `text[pos]` (text must be valid UTF-8) and advances
// `pos` past it.
char32_t DecodeUtf8(absl::string_view text, size_t& pos);

// Appends the UTF-8 encoding of `cp` to `out`.
void AppendUtf8(char32_t cp, std::string& out);

// Converts arbitrary bytes to valid UTF-8, replacing each maximal ill-formed
// subpart with U+FFFD (the WHATWG / Rust `String::from_utf8_lossy` rule).
std::string Utf8Lossy(absl::string_view bytes);

// Character classes with the semantics of Rust's `char` methods, which the
// reference (Hugging Face tokenizers) uses.
bool IsWhitespace(char32_t cp);    // White_Space property
bool IsNumeric(char32_t cp);       // general category Nd | Nl | No
bool IsAlphanumeric(char32_t cp);  // Alphabetic property or IsNumeric

// Unicode normalization forms and lower-casing of UTF-8 text (valid input).
enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
absl::Status Normalize(NormalForm form, std::string& text);
absl::Status ToLower(std::string& text);

}  // namespace epserve::tokenizer
