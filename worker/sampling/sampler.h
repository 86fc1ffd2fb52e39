// CPU reference sampler: one token per row of a [num_rows, vocab] float32
// logits matrix, each row with its own SamplingParams, token history and
// counter-based random stream. Pure host code; the CUDA sampler is tested
// against it.
//
// Per row, in vLLM's (v1 sampler) order:
//
//   raw logits ──► min_tokens mask ──► repetition ─► frequency ─► presence
//        │                                                     │
//        │ (logprobs, kRaw)                      sanitise (NaN, ±inf; see logprobs.h)
//        ▼                                                     │
//   log-softmax                     greedy (temperature 0): argmax, ties → lowest id
//                                   otherwise: ÷ temperature ─► min_p ─► top_k ─► top_p
//                                              ─► inverse-CDF draw, u = Philox(seed, step)
//
// * min_p keeps p >= min_p * p_max; top_k keeps every token whose logit is
//   >= the k-th largest (ties at the boundary kept); top_p then keeps, in
//   (logit desc, id asc) order, every token whose preceding mass (after the
//   min_p / top_k cuts, renormalised) is < top_p: the smallest prefix with
//   mass >= top_p, never empty. These are vLLM's comparisons
//   (apply_top_k_top_p: ascending cumsum <= 1 - p is removed).
// * The draw: u in [0, 1) from Philox4x32(seed, step); the token is the first
//   kept id in ascending id order whose cumulative probability (double) exceeds
//   u. So the token depends only on the row's logits, params, history, seed
//   and step: never on the batch.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/sampling/logprobs.h"
#include "common/sampling/sampling_params.h"

namespace epserve::sampling {

// Which distribution the returned logprobs describe.
enum class LogprobsMode {
  // log-softmax of the model's logits before any processing (vLLM v1's
  // default, logprobs_mode = "raw_logprobs"). NaN -> -inf, +inf as in
  // SanitizeLogits.
  kRaw,
  // log-softmax of the distribution the token was drawn from: after
  // penalties and min_tokens masking, and for non-greedy rows after
  // temperature and the min_p / top_k / top_p cuts (cut tokens: -inf), like
  // vLLM's "processed_logprobs".
  kProcessed,
};

// One row of a batch. Spans are not owned and must outlive the call.
struct SamplingRow {
  const SamplingParams* params = nullptr;  // required; should have passed Validate()
  absl::Span<const int32_t> prompt_ids;    // for repetition_penalty
  absl::Span<const int32_t> output_ids;    // generated so far: penalties, min_tokens
  // Index of the token being drawn; keys the random stream together with the
  // seed. Normally output_ids.size().
  uint64_t step = 0;
};

struct SampledToken {
  int32_t token_id = 0;
  // Present when params.logprobs.
  std::optional<float> logprob;
  // params.top_logprobs entries (fewer only if the vocabulary is smaller),
  // logprob descending, ties by id ascending. May include token_id.
  std::vector<TokenLogprob> top_logprobs;
};

class Sampler {
 public:
  struct Options {
    // The model's EOS id(s) (config / generation_config), masked by min_tokens
    // unless a request sets ignore_eos.
    std::vector<int32_t> eos_token_ids;
    LogprobsMode logprobs_mode = LogprobsMode::kRaw;
    // Rows are spread over this many threads (1: the calling thread only).
    int num_threads = 1;
  };

  explicit Sampler(Options options);

  // logits: [rows.size(), vocab_size] row-major float32.
  // Batch-level errors (shape mismatch, missing params) fail the whole call;
  // a row that cannot be sampled (invalid params, history ids outside the
  // vocabulary, no token with a finite logit after masking) gets its own
  // INVALID_ARGUMENT naming the row, and the other rows are still sampled.
  absl::StatusOr<std::vector<absl::StatusOr<SampledToken>>> SampleBatch(
      absl::Span<const float> logits, int64_t vocab_size,
      absl::Span<const SamplingRow> rows) const;

  const Options& options() const { return options_; }

 private:
  Options options_;
};

}  // namespace epserve::sampling
