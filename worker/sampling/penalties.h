// Logit processors that run on the raw (pre-temperature) logits of one row,
// in vLLM's order: min_tokens masking, then repetition, frequency and
// presence penalties (vllm/v1/sample/sampler.py; the mask sets -inf, which no
// penalty changes, so the relative order of the two is immaterial).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/sampling/sampling_params.h"

namespace epserve::sampling {

// Reusable per-thread buffers; sized to the vocabulary on first use and left
// zeroed between calls (only touched entries are reset).
struct PenaltyScratch {
  std::vector<uint32_t> output_count;  // [vocab]
  std::vector<uint8_t> seen;           // [vocab]
};

// Checks that every id in `prompt_ids` and `output_ids` is in [0, vocab);
// INVALID_ARGUMENT naming the list, index and value otherwise.
absl::Status CheckTokenIds(absl::Span<const int32_t> prompt_ids,
                           absl::Span<const int32_t> output_ids, int64_t vocab);

// Applies the penalties of `params` to `logits` ([vocab], in place):
//   1. repetition (tokens in prompt_ids or output_ids, each once):
//        x > 0 ? x / repetition_penalty : x * repetition_penalty
//   2. x -= frequency_penalty * count_in_output(token)
//   3. x -= presence_penalty   (if count_in_output(token) > 0)
// in float32, as vLLM's apply_penalties. Ids must have passed CheckTokenIds.
// `scratch` may be null (then a local one is used).
void ApplyPenalties(absl::Span<float> logits, const SamplingParams& params,
                    absl::Span<const int32_t> prompt_ids, absl::Span<const int32_t> output_ids,
                    PenaltyScratch* scratch = nullptr);

// While num_generated < params.min_tokens, sets the logits of
// params.stop_token_ids and (unless params.ignore_eos) of `eos_token_ids` to
// -inf. Ids outside [0, vocab) are ignored (Validate rejects them for stop ids).
void ApplyMinTokensMask(absl::Span<float> logits, const SamplingParams& params,
                        size_t num_generated, absl::Span<const int32_t> eos_token_ids);

}  // namespace epserve::sampling
