// The GPT-2 byte <-> printable character table used by ByteLevel
// pre-tokenizers and decoders: byte b is represented by one Unicode character.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace epserve::tokenizer {

// UTF-8 text of the character that stands for byte `b` ("Ġ" for ' ').
const std::string& ByteToChar(uint8_t b);

// Appends the byte-level representation of `bytes` to `out`.
void AppendByteLevel(absl::string_view bytes, std::string& out);

// Maps a character back to its byte; returns -1 for characters outside the table.
int CharToByte(char32_t cp);

}  // namespace epserve::tokenizer
