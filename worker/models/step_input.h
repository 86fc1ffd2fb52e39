// What one forward step runs: a batch of sequences, each with the tokens new
// in this step (a whole prompt, a prefill chunk, or one decode token).
//
//   sequence s:  [ cached tokens (num_cached) | new tokens (token_ids) ]
//                  0 ............ num_cached-1  num_cached ... context_len-1
//
// The new tokens' positions are num_cached .. context_len-1 (positions are
// implied: the paged attention contract has every query be one of the last
// tokens of its sequence's context). The block table must cover context_len
// tokens; blocks are the caller's (router / BlockAllocator).
#pragma once

#include <cstdint>
#include <vector>

namespace epserve::models {

// Which of a sequence's new tokens get a logits row.
enum class LogitsRows {
  kLast,  // the last new token (prefill's last chunk, decode)
  kAll,   // every new token (parity tests, epserve-run logits)
  kNone,  // none (a prefill chunk that is not the last)
};

struct StepSequence {
  std::vector<int32_t> token_ids;    // new tokens, >= 1
  int64_t num_cached = 0;            // tokens of this sequence already in the KV cache
  std::vector<int32_t> block_table;  // KV cache blocks of the sequence, in token order
  LogitsRows logits = LogitsRows::kLast;

  int64_t context_len() const { return num_cached + static_cast<int64_t>(token_ids.size()); }
};

struct StepInput {
  // Sequences in batch order; their new tokens are concatenated in this
  // order, and so are the logits rows Forward returns.
  std::vector<StepSequence> sequences;
};

}  // namespace epserve::models
