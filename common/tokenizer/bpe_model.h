// The BPE model of tokenizer.json ("model": {"type": "BPE"}): vocabulary,
// ranked merges, optional byte fallback and unknown token.
//
// A word is first cut into characters (each looked up in the vocabulary, or
// as <0xNN> byte tokens with byte_fallback, or the unk token), then adjacent
// symbols are merged lowest-rank-first with a priority queue keyed by
// (rank, position) -- O(n log n) in the word length, the same order as the
// reference. Results for words under kMaxCachedWordBytes are cached.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/tokenizer/json_util.h"

namespace epserve::tokenizer {

class BpeModel {
 public:
  static constexpr size_t kMaxCachedWordBytes = 256;
  static constexpr size_t kCacheCapacity = 1 << 16;

  // Builds the model from the "model" object; errors name the key and, for
  // merges, the entry index and the token missing from the vocabulary.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const Json& j);

  // Appends the ids of `word` (one pre-tokenized split) to `out`.
  void Tokenize(absl::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // Token text of `id`, or nullptr when `id` is not in the vocabulary.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest id of the vocabulary.
  int32_t vocab_end() const { return static_cast<int32_t>(id_to_token_.size()); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  BpeModel() = default;
  void MergeWord(absl::string_view word, std::vector<int32_t>& out) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;  // "" for holes in the id range
  std::vector<bool> has_id_;
  // (left id << 32 | right id) -> (rank, merged id)
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::vector<int32_t> byte_token_ids_;  // <0xNN> ids when byte_fallback, else empty
  // Id of the single-character token for code points < kCharTableSize, -1 if
  // none: skips the hash lookup for the initial symbols of a word.
  static constexpr char32_t kCharTableSize = 0x3400;
  std::vector<int32_t> char_ids_;

  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace epserve::tokenizer
