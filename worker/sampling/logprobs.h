// Log-softmax helpers over one row of float32 logits, and the row
// sanitisation that defines how non-finite logits are treated.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace epserve::sampling {

struct TokenLogprob {
  int32_t token_id = 0;
  float logprob = 0.0f;
};

// Makes a row safe for softmax, in place, and returns how many tokens keep a
// finite logit (0: the row has no probability mass at all).
//  * NaN            -> -inf (the token can never be chosen).
//  * +inf (any)     -> the limit of softmax: the mass is shared equally by the
//                      +inf tokens, so they become 0 and every other token -inf.
//  * -inf / finite  -> unchanged.
int64_t SanitizeLogits(absl::Span<float> logits);

// log(sum(exp(x))) over a sanitised row, accumulated in double; -inf when
// every entry is -inf.
double LogSumExp(absl::Span<const float> logits);

// The `n` largest entries of a sanitised row as log-probabilities
// (x - log_sum_exp), sorted by logprob descending, ties by token id
// ascending; min(n, row size) entries.
std::vector<TokenLogprob> TopLogprobs(absl::Span<const float> logits, double log_sum_exp,
                                      size_t n);

}  // namespace epserve::sampling
