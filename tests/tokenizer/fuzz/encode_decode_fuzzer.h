// The encode/decode fuzz property, shared by the libFuzzer target (clang) and
// the seed-corpus replay test (every compiler).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace epserve::tokenizer::fuzz {

// Runs one input through three built-in tokenizers (byte-level BPE with NFC
// and added tokens; Llama-2 style Prepend/Replace + byte fallback; Mistral
// style Metaspace pre-tokenizer and decoder):
//   * ill-formed UTF-8 input -> Encode fails with INVALID_ARGUMENT, no crash;
//   * well-formed input -> decode(encode(x)) == NFC(x) (byte-level) and == x
//     (Metaspace, when x has no U+2581 and, for the Metaspace pre-tokenizer,
//     no leading space), special-token text parsed as text;
//   * the input bytes read as ids -> Decode fails only for out-of-range ids,
//     and streaming that sequence equals the full decode.
// Returns "" when every property holds, else a description of the failure.
std::string EncodeDecodeFuzzOne(const uint8_t* data, size_t size);

}  // namespace epserve::tokenizer::fuzz
