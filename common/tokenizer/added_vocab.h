// Added tokens ("added_tokens" of tokenizer.json): matched in the text before
// the model runs, leftmost-longest, honouring lstrip / rstrip / single_word.
// Tokens with normalized=false are matched on the raw input; the others on
// each normalized segment (their content normalized the same way).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"
#include "common/tokenizer/normalizers.h"

namespace epserve::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A piece of input: either an added token (id >= 0, text empty) or text.
struct Segment {
  int32_t id = -1;
  std::string text;
  bool at_input_start = false;  // text begins at byte 0 of the input
};

class AddedVocab {
 public:
  // Reads the "added_tokens" array; `normalizer` (may be null) normalizes the
  // content of normalized tokens.
  static absl::StatusOr<std::unique_ptr<AddedVocab>> FromJson(const Json& j,
                                                              const Normalizer* normalizer);

  // Splits `text` at the added tokens of one matching set (raw: normalized=false
  // tokens; otherwise normalized=true tokens). With `skip_special`, special
  // tokens are not matched (their text stays plain text). Appends to `out`;
  // text segments inherit `at_input_start` when they start at offset 0.
  void Split(absl::string_view text, bool raw, bool skip_special, bool at_input_start,
             std::vector<Segment>& out) const;

  const AddedToken* FindById(int32_t id) const;
  const AddedToken* FindByContent(absl::string_view content) const;
  int32_t max_id() const { return max_id_; }  // -1 when empty

 private:
  struct MatchSet {
    absl::flat_hash_map<std::string, int32_t> by_text;  // matched text -> index in tokens_
    std::vector<size_t> lengths;                        // distinct lengths, descending
    bool first_byte[256] = {};
  };
  void AddToSet(MatchSet& set, const std::string& text, int32_t index);
  // Longest token of `set` matching at text[pos], or -1.
  int32_t LongestAt(const MatchSet& set, absl::string_view text, size_t pos, bool skip_special,
                    size_t* len) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  MatchSet raw_, normalized_;
  int32_t max_id_ = -1;
};

}  // namespace epserve::tokenizer
