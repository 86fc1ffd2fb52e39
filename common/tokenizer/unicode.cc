#include "common/tokenizer/unicode.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include "absl/strings/str_cat.h"

namespace epserve::tokenizer {
namespace {

// Length of the well-formed UTF-8 sequence at text[pos], or 0 when ill-formed
// (Unicode Table 3-7). `max_prefix` receives the length of the longest valid
// prefix of an ill-formed sequence (at least 1), for lossy conversion.
size_t WellFormedLen(absl::string_view text, size_t pos, size_t* max_prefix) {
  const auto at = [&](size_t i) -> int {
    return pos + i < text.size() ? static_cast<unsigned char>(text[pos + i]) : -1;
  };
  const int b0 = at(0);
  *max_prefix = 1;
  if (b0 < 0x80) return 1;
  int len = 0, lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int i = 1; i < len; ++i) {
    const int b = at(i);
    const int l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) return 0;
    *max_prefix = i + 1;
  }
  return len;
}

}  // namespace

absl::Status ValidateUtf8(absl::string_view text) {
  size_t pos = 0, prefix = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = WellFormedLen(text, pos, &prefix);
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input is not valid UTF-8: ill-formed byte 0x",
          absl::Hex(static_cast<unsigned char>(text[pos]), absl::kZeroPad2),
          " at byte offset ", pos));
    }
    pos += n;
  }
  return absl::OkStatus();
}

char32_t DecodeUtf8(absl::string_view text, size_t& pos) {
  const unsigned char b0 = static_cast<unsigned char>(text[pos]);
  const size_t n = Utf8CharLen(b0);
  if (n == 1 || pos + n > text.size()) {
    ++pos;
    return b0;
  }
  char32_t cp = b0 & (0x7F >> n);
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (static_cast<unsigned char>(text[pos + i]) & 0x3F);
  pos += n;
  return cp;
}

void AppendUtf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0, prefix = 0;
  while (pos < bytes.size()) {
    const size_t n = WellFormedLen(bytes, pos, &prefix);
    if (n == 0) {
      AppendUtf8(kReplacementChar, out);
      pos += prefix;
    } else {
      out.append(bytes.data() + pos, n);
      pos += n;
    }
  }
  return out;
}

bool IsWhitespace(char32_t cp) { return u_hasBinaryProperty(cp, UCHAR_WHITE_SPACE); }

bool IsNumeric(char32_t cp) {
  const int8_t type = u_charType(cp);
  return type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER;
}

bool IsAlphanumeric(char32_t cp) {
  return u_hasBinaryProperty(cp, UCHAR_ALPHABETIC) || IsNumeric(cp);
}

absl::Status Normalize(NormalForm form, std::string& text) {
  bool ascii = true;
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return absl::OkStatus();  // ASCII is invariant under every form.
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormalForm::kNfc: n = icu::Normalizer2::getNFCInstance(err); break;
    case NormalForm::kNfd: n = icu::Normalizer2::getNFDInstance(err); break;
    case NormalForm::kNfkc: n = icu::Normalizer2::getNFKCInstance(err); break;
    case NormalForm::kNfkd: n = icu::Normalizer2::getNFKDInstance(err); break;
  }
  if (U_FAILURE(err)) {
    return absl::InternalError(absl::StrCat("ICU normalizer unavailable: ", u_errorName(err)));
  }
  if (n->isNormalizedUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), err) &&
      U_SUCCESS(err)) {
    return absl::OkStatus();
  }
  err = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  n->normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), sink,
                   nullptr, err);
  if (U_FAILURE(err)) {
    return absl::InternalError(absl::StrCat("ICU normalization failed: ", u_errorName(err)));
  }
  text = std::move(out);
  return absl::OkStatus();
}

absl::Status ToLower(std::string& text) {
  UErrorCode err = U_ZERO_ERROR;
  std::string out;
  icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text.size()));
  icu::CaseMap::utf8ToLower("", 0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())),
                            sink, nullptr, err);
  if (U_FAILURE(err)) {
    return absl::InternalError(absl::StrCat("ICU lower-casing failed: ", u_errorName(err)));
  }
  text = std::move(out);
  return absl::OkStatus();
}

}  // namespace epserve::tokenizer
