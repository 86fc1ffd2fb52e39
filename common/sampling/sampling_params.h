// Per-request sampling parameters (the sampler's view of
// epserve.v1.SamplingParams) and their validation.
//
// Only the fields that change which token is drawn live here. max_tokens,
// stop strings, include_stop_str_in_output and skip_special_tokens belong to
// the router's stop checker / detokenizer and are validated there.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"

namespace epserve::sampling {

// Limits shared by Validate() and the documentation of each field.
inline constexpr float kMaxAbsAdditivePenalty = 2.0f;  // presence / frequency
inline constexpr uint32_t kMaxTopLogprobs = 20;
// Temperatures in (0, kMinTemperature) are raised to kMinTemperature, as vLLM
// does (SamplingParams.__post_init__, _MAX_TEMP = 1e-2): smaller values only
// overflow the scaled logits.
inline constexpr float kMinTemperature = 0.01f;

struct SamplingParams {
  // >= 0 and finite. 0 means greedy (argmax, ties to the lowest token id).
  float temperature = 1.0f;
  // In (0, 1]. 1 disables nucleus filtering.
  float top_p = 1.0f;
  // 0 or -1: disabled; k >= 1 keeps the k most likely tokens (and every token
  // tied with the k-th). k >= vocabulary size is the same as disabled.
  int32_t top_k = 0;
  // In [0, 1]. Keeps tokens with p >= min_p * p_max. 0 disables.
  float min_p = 0.0f;
  // Seed of the per-request generator. Unset: a seed is drawn from a
  // process-wide source on every call (no reproducibility).
  std::optional<uint64_t> seed;
  // EOS (unless ignore_eos) and stop_token_ids are masked while fewer than
  // min_tokens tokens have been generated.
  uint32_t min_tokens = 0;
  // Token ids that end the request; each in [0, vocab_size).
  std::vector<int32_t> stop_token_ids;
  // EOS is an ordinary token: not masked by min_tokens.
  bool ignore_eos = false;
  // OpenAI-style additive penalties over the *generated* tokens, in [-2, 2]:
  //   logit -= frequency_penalty * count(token) + presence_penalty * (count > 0)
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // CTRL-style multiplicative penalty over prompt + generated tokens, > 0 and
  // finite: a positive logit is divided by it, a non-positive one multiplied.
  // 1 disables.
  float repetition_penalty = 1.0f;
  // Return the log-probability of the sampled token.
  bool logprobs = false;
  // Also return this many most likely tokens, in [0, 20]; requires logprobs.
  uint32_t top_logprobs = 0;
};

// INVALID_ARGUMENT naming the first offending field, the allowed range and the
// value found; OK otherwise. `vocab_size` (> 0) bounds stop_token_ids.
absl::Status Validate(const SamplingParams& params, int64_t vocab_size);

// True when `params` selects greedy decoding (temperature == 0).
inline bool IsGreedy(const SamplingParams& params) { return params.temperature == 0.0f; }

}  // namespace epserve::sampling
