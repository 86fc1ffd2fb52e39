// OutputProcessor: one request's output. Turns the tokens the workers sample
// for it into the client's epserve.v1.GenerateResponse messages: the
// streaming detokenizer (text released when stable), stop strings, logprobs,
// the finish reason and what caused it, usage. No scheduling, no clocks, no
// RPC: the engine calls it from its step loop, one object per live request.
//
//   sampled token (+ the scheduler's verdict: EOS / stop id → STOP,
//   max_tokens → LENGTH) ─► OnToken ─► chunk {token id, logprob, text}
//                                      + finish reason (a stop string → STOP)
//   request ends (finished, aborted) ─► Complete ─► [held-back text chunk]
//                                                   + GenerateComplete
//
// Stop conditions on token ids are the scheduler's (router/scheduler
// OnStepResult: EOS unless ignore_eos, stop_token_ids, max_tokens); this class
// adds stop strings, which only text can show. min_tokens is not checked
// here: the worker's sampler masks EOS and stop ids until min_tokens tokens
// exist, so a token that ends a request never arrives earlier.
//
// Tokens: the processor keeps no token history. The request's tokens are the
// scheduler's Request (router/scheduler/request.h, the source of truth);
// Complete reads the output ids from there.
//
// Not thread-safe (one request, one thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/tokenizer.h"

#include "epserve/v1/epserve.pb.h"

namespace epserve::frontend {

// What one sampled token produces.
struct TokenOutput {
  // A chunk: the token id, its logprob when the worker sent one, the text the
  // token released (empty without a tokenizer or while held back; at the end
  // of the request also the held-back rest, unless a stop string cut it).
  v1::GenerateResponse response;
  // Set when the request ends with this token (the scheduler's reason, or
  // STOP for a stop string, which takes precedence).
  std::optional<v1::FinishReason> finish_reason;
  // A stop string matched: the scheduler does not know it yet unless it ended
  // the request for another reason on the same token.
  bool stopped_by_string = false;
};

class OutputProcessor {
 public:
  // `sampling`: the request's validated parameters; stop,
  // include_stop_str_in_output and skip_special_tokens (unset means true) are
  // read. `tokenizer` may be null (token ids only, no text, no stop strings)
  // and must outlive this object.
  OutputProcessor(std::string request_id, const v1::SamplingParams& sampling,
                  const tokenizer::Tokenizer* tokenizer);

  // One sampled token. `scheduler_finish`: the scheduler ended the request
  // with this token (STOP or LENGTH); `logprob` may be null. After a token
  // with a finish reason only Complete may follow.
  TokenOutput OnToken(uint32_t token_id, std::optional<v1::FinishReason> scheduler_finish,
                      const v1::TokenLogprob* logprob);

  // The last messages of a request that ends normally (status OK) with
  // `reason`: a chunk with the text the detokenizer still held (only when
  // non-empty; none after a stop string or a finishing OnToken), then the
  // GenerateComplete: reason, stop_str or stop_token_id (for STOP), usage
  // {num_prompt_tokens, output_ids.size()} and the output ids.
  // `output_ids`: every token generated for the request, in order.
  std::vector<v1::GenerateResponse> Complete(v1::FinishReason reason, size_t num_prompt_tokens,
                                             absl::Span<const uint32_t> output_ids);

  const std::string& request_id() const { return request_id_; }

 private:
  const std::string request_id_;
  std::vector<std::string> stop_strings_;
  std::unique_ptr<tokenizer::StreamingDetokenizer> detok_;  // null without a tokenizer
  // What ended the request with STOP, for the complete message.
  std::optional<std::string> matched_stop_str_;
  std::optional<uint32_t> matched_stop_token_;
};

}  // namespace epserve::frontend
