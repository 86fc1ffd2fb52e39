// A Hugging Face tokenizer.json tokenizer: ids equal to those of the
// reference (`tokenizers` 0.23) for the components it supports; anything else
// in the file is rejected at load time with an error naming the component.
//
//   ASSIGN_OR_RETURN(auto tok, Tokenizer::FromDirectory("/models/Qwen3-8B"));
//   ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->Encode("Hello", {}));
//   ASSIGN_OR_RETURN(std::string text, tok->Decode(ids, {}));
//
// Encode pipeline: validate UTF-8 -> split at added tokens (raw) -> per text
// segment: normalizer -> split at normalized added tokens -> pre-tokenizer ->
// BPE -> post-processor (add_special_tokens only).
//
// Thread-safe: all methods are const; the BPE word cache is locked inside.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/tokenizer/added_vocab.h"
#include "common/tokenizer/bpe_model.h"
#include "common/tokenizer/decoders.h"
#include "common/tokenizer/normalizers.h"
#include "common/tokenizer/post_processors.h"
#include "common/tokenizer/pre_tokenizers.h"

namespace epserve::tokenizer {

struct TokenizerOptions {
  // tokenizer_config.json's add_bos_token rule as applied by `transformers`'
  // Llama tokenizers: when true and the config says add_bos_token, Encode with
  // add_special_tokens prepends bos unless the post-processor already put it
  // first. Off by default: `tokenizers` itself follows tokenizer.json only.
  bool add_bos_from_config = false;
};

struct EncodeOptions {
  // Apply the post-processor (BOS/EOS templates).
  bool add_special_tokens = true;
  // false: text of special added tokens in the input is tokenized as plain
  // text (for untrusted user input); non-special added tokens still match.
  bool parse_special_tokens = true;
};

struct DecodeOptions {
  bool skip_special_tokens = false;
};

// Special tokens named by tokenizer_config.json (ids resolved in the vocab).
struct SpecialTokenConfig {
  std::optional<int32_t> bos_id, eos_id, pad_id, unk_id;
  std::string bos, eos, pad, unk;
  bool add_bos_token = false;
  bool add_eos_token = false;
};

class Tokenizer {
 public:
  // `tokenizer_json`: the text of tokenizer.json; `config_json`: the text of
  // tokenizer_config.json or empty. Errors name the key path in the file.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view tokenizer_json,
                                                             absl::string_view config_json,
                                                             TokenizerOptions options = {});
  // Reads `dir`/tokenizer.json and, when present, `dir`/tokenizer_config.json.
  // `path` may also name a tokenizer.json file directly.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromPath(const std::string& path,
                                                             TokenizerOptions options = {});

  // INVALID_ARGUMENT for ill-formed UTF-8 (naming the byte offset); the input
  // is never repaired.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              const EncodeOptions& options) const;
  // INVALID_ARGUMENT for an id outside the vocabulary (naming id and position).
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     const DecodeOptions& options) const;

  // Decodes a window of a longer sequence (see DecodeContext); used by the
  // streaming detokenizer. Skips special tokens when `skip_special_tokens`.
  absl::StatusOr<std::string> DecodeWindow(absl::Span<const int32_t> ids, const DecodeContext& ctx,
                                           bool skip_special_tokens) const;

  // One past the largest id (model vocabulary and added tokens).
  int32_t vocab_size() const { return vocab_size_; }
  // The token's text (added token content or vocabulary entry), or nullptr.
  const std::string* IdToToken(int32_t id) const;
  std::optional<int32_t> TokenToId(absl::string_view token) const;
  bool IsSpecial(int32_t id) const;
  // True for "<0xNN>" tokens of a byte_fallback model.
  bool IsByteToken(int32_t id) const;
  const SpecialTokenConfig& special_tokens() const { return special_; }
  // Text the decoder may strip from the very end of a sequence (see Decoder).
  const std::string& trailing_strip_content() const { return trailing_strip_; }

 private:
  Tokenizer() = default;
  absl::Status LoadConfig(absl::string_view config_json);
  absl::Status EncodeSegment(std::string text, bool at_input_start, bool parse_special,
                             std::vector<int32_t>& ids) const;

  TokenizerOptions options_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<AddedVocab> added_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  SpecialTokenConfig special_;
  std::string trailing_strip_;
  int32_t vocab_size_ = 0;
};

}  // namespace epserve::tokenizer
