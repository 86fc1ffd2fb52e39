#include "common/chat_template/unicode.h"

#include <algorithm>
#include <cstddef>

namespace epserve::jinja {
namespace {

struct Range {
  uint32_t first;
  uint32_t last;
};

#include "common/chat_template/unicode_tables.inc"

bool InRanges(const Range* ranges, size_t count, uint32_t cp) {
  const Range* end = ranges + count;
  const Range* it =
      std::upper_bound(ranges, end, cp, [](uint32_t v, const Range& r) { return v < r.first; });
  if (it == ranges) return false;
  --it;
  return cp <= it->last;
}

constexpr uint32_t kEscapedByteBase = 0xDC00;

}  // namespace

uint32_t DecodeUtf8(std::string_view s, size_t* pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const size_t i = *pos;
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) {
    *pos = i + 1;
    return b0;
  }
  size_t len = 0;
  uint32_t cp = 0;
  uint32_t min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, cp = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, cp = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  }
  bool valid = len != 0 && i + len <= s.size();
  for (size_t k = 1; valid && k < len; ++k) {
    const uint8_t b = byte(i + k);
    if ((b & 0xC0) != 0x80) valid = false;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (valid && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) valid = false;
  if (!valid) {
    *pos = i + 1;
    return kEscapedByteBase + b0;
  }
  *pos = i + len;
  return cp;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp >= kEscapedByteBase + 0x80 && cp <= kEscapedByteBase + 0xFF) {
    out->push_back(static_cast<char>(cp - kEscapedByteBase));
  } else if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::vector<uint32_t> ToCodePoints(std::string_view s) {
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) cps.push_back(DecodeUtf8(s, &pos));
  return cps;
}

std::string FromCodePoints(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  out.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) AppendUtf8(cps[i], &out);
  return out;
}

bool IsAscii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; });
}

size_t CodePointCount(std::string_view s) {
  if (IsAscii(s)) return s.size();
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); ++n) DecodeUtf8(s, &pos);
  return n;
}

size_t ByteOffsetOfCodePoint(std::string_view s, size_t index) {
  size_t pos = 0;
  for (size_t n = 0; n < index && pos < s.size(); ++n) DecodeUtf8(s, &pos);
  return pos;
}

size_t CodePointIndexOfByte(std::string_view s, size_t offset) {
  size_t n = 0;
  for (size_t pos = 0; pos < offset && pos < s.size(); ++n) DecodeUtf8(s, &pos);
  return n;
}

bool IsPySpace(uint32_t cp) {
  if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool IsPyPrintable(uint32_t cp) {
  if (cp >= kEscapedByteBase + 0x80 && cp <= kEscapedByteBase + 0xFF) return false;
  return !InRanges(kNonPrintable, std::size(kNonPrintable), cp);
}

bool IsCasedNonAscii(uint32_t cp) {
  if (cp < 0x80) return false;
  return InRanges(kCasedNonAscii, std::size(kCasedNonAscii), cp);
}

bool HasOnlyAsciiCase(std::string_view s) {
  if (IsAscii(s)) return true;
  for (size_t pos = 0; pos < s.size();) {
    if (IsCasedNonAscii(DecodeUtf8(s, &pos))) return false;
  }
  return true;
}

std::string PyStrip(std::string_view s, const std::string* chars, bool left, bool right) {
  std::vector<uint32_t> strip_set;
  if (chars != nullptr) strip_set = ToCodePoints(*chars);
  const auto strips = [&](uint32_t cp) {
    if (chars == nullptr) return IsPySpace(cp);
    return std::find(strip_set.begin(), strip_set.end(), cp) != strip_set.end();
  };
  size_t begin = 0;
  size_t end = s.size();
  if (left) {
    while (begin < end) {
      size_t next = begin;
      if (!strips(DecodeUtf8(s, &next))) break;
      begin = next;
    }
  }
  if (right) {
    while (end > begin) {
      // Step back to the start of the last character: a lead byte at most
      // three continuation bytes back whose sequence ends exactly at `end`;
      // otherwise the last byte stands alone (invalid UTF-8).
      size_t start = end - 1;
      for (size_t k = 1; k <= 3 && start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80;
           ++k) {
        --start;
      }
      size_t next = start;
      uint32_t cp = DecodeUtf8(s, &next);
      if (next != end) {
        start = end - 1;
        next = start;
        cp = DecodeUtf8(s, &next);
      }
      if (!strips(cp)) break;
      end = start;
    }
  }
  return std::string(s.substr(begin, end - begin));
}

}  // namespace epserve::jinja
