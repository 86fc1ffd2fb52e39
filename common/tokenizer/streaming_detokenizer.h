// Per-request incremental detokenization with stop strings.
//
//   StreamingDetokenizer detok(tokenizer, {.stop_strings = {"\n\n"}});
//   for each sampled id:
//     ASSIGN_OR_RETURN(Delta d, detok.Append(id));
//     send(d.text);                 // may be empty
//     if (d.matched_stop) break;    // request is finished
//   ASSIGN_OR_RETURN(Delta last, detok.Finish());  // on EOS / length limit
//
// Contract: the concatenation of all Delta texts equals
// tokenizer.Decode(ids, skip_special_tokens), cut at the first stop string
// (kept or removed per include_stop_str_in_output). Text is emitted only when
// it is stable: an incomplete UTF-8 character (split across byte-level or
// byte-fallback tokens) or a suffix that may still begin a stop string is
// held back until later tokens settle it or Finish() flushes it. Text after
// a stop string is never emitted.
//
// Cost per Append is O(window): the decoder re-runs only over the tokens
// since the last clean boundary (usually one token).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"

namespace epserve::tokenizer {

struct StreamingOptions {
  bool skip_special_tokens = true;
  std::vector<std::string> stop_strings;  // empty strings are ignored
  bool include_stop_str_in_output = false;
};

struct Delta {
  std::string text;          // new text, possibly empty
  bool matched_stop = false;
  int stop_index = -1;       // index into stop_strings when matched_stop
};

class StreamingDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  StreamingDetokenizer(const Tokenizer& tokenizer, StreamingOptions options);

  // Feeds one generated id. INVALID_ARGUMENT for an id outside the vocabulary
  // (the id is not consumed); FAILED_PRECONDITION after a stop or Finish().
  absl::StatusOr<Delta> Append(int32_t id);
  // Flushes everything held back (the sequence ended). Idempotent after a stop.
  absl::StatusOr<Delta> Finish();

  bool finished() const { return finished_; }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  // Moves `stable` text into the stop matcher and returns what may be emitted.
  Delta Release(const std::string& stable, bool final);

  const Tokenizer& tokenizer_;
  StreamingOptions options_;
  std::vector<int32_t> window_;    // ids since the last clean boundary
  bool window_at_start_ = true;    // no decoded token precedes the window
  size_t window_released_ = 0;     // bytes of the window's text already released
  std::string pending_;            // released text held for stop matching
  int64_t num_tokens_ = 0;
  bool finished_ = false;
};

}  // namespace epserve::tokenizer
