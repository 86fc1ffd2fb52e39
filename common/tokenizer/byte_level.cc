#include "common/tokenizer/byte_level.h"

#include "common/tokenizer/unicode.h"

namespace epserve::tokenizer {
namespace {

struct Tables {
  std::array<std::string, 256> byte_to_char;
  std::array<int, 512> char_to_byte;  // every mapped code point is < 512
  Tables() {
    char_to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      AppendUtf8(cp, byte_to_char[b]);
      char_to_byte[cp] = b;
    }
  }
};

const Tables& GetTables() {
  static const Tables* tables = new Tables();
  return *tables;
}

}  // namespace

const std::string& ByteToChar(uint8_t b) { return GetTables().byte_to_char[b]; }

void AppendByteLevel(absl::string_view bytes, std::string& out) {
  const Tables& t = GetTables();
  for (char c : bytes) out += t.byte_to_char[static_cast<uint8_t>(c)];
}

int CharToByte(char32_t cp) { return cp < 512 ? GetTables().char_to_byte[cp] : -1; }

}  // namespace epserve::tokenizer
