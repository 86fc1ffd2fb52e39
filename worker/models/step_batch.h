// StepInput flattened into the device tensors one forward step needs:
// token ids, positions, KV slots, paged attention metadata and the rows that
// get logits. Built on the host, validated against the cache, copied once.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/models/step_input.h"

namespace epserve::models {

struct StepBatch {
  int64_t num_tokens = 0;       // T: new tokens of all sequences
  int64_t num_logit_rows = 0;   // R
  kernels::Tensor token_ids;    // [T] int32
  kernels::Tensor positions;    // [T] int32
  kernels::Tensor slot_mapping;  // [T] int32: block * block_size + offset
  kernels::AttentionMetadata attention;  // query_start [S+1], context_lens [S], block_tables [S, B]
  kernels::Tensor logit_rows;   // [R] int32: indices into the T token rows
};

struct StepLimits {
  int64_t vocab_size = 0;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t max_context = 0;  // longest context a sequence may have; 0 = unlimited
};

// Errors (INVALID_ARGUMENT) name the sequence and what is wrong: no
// sequences, no new tokens, a token id outside [0, vocab), a block table too
// short for the context or holding a block outside [0, num_blocks).
absl::StatusOr<StepBatch> BuildStepBatch(kernels::Backend& backend, const StepInput& input,
                                         const StepLimits& limits);

}  // namespace epserve::models
