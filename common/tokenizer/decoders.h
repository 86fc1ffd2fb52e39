// Decoders of tokenizer.json ("decoder" key): turn token strings back into
// text. They run as a chain over a list of strings, like the reference.
//
// Streaming decodes a window of tokens that may not start at the beginning or
// reach the end of the full sequence; DecodeContext says which, so that
// first-token rules (Metaspace, Strip of leading characters) and end rules
// (Strip of trailing characters) only apply at the real start / end.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace epserve::tokenizer {

struct DecodeContext {
  bool at_start = true;  // tokens[0] is the first token of the sequence
  bool at_end = true;    // no token follows tokens.back()
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites `tokens`. `fused` is true once the list holds the whole window
  // as one string (after Fuse / ByteLevel); per-token decoders then apply
  // their first/last rules only at the real start/end.
  virtual absl::Status DecodeChain(std::vector<std::string>& tokens, const DecodeContext& ctx,
                                   bool& fused) const = 0;
  // Characters that may be removed from the end of the text once the
  // sequence ends (a fused Strip with stop > 0); a streaming decoder holds
  // them back. Empty when none.
  virtual std::string TrailingStripContent() const { return ""; }
};

// Builds the decoder described by `j` (null JSON: none, nullptr).
absl::StatusOr<std::unique_ptr<Decoder>> DecoderFromJson(const Json& j, const std::string& where);

}  // namespace epserve::tokenizer
