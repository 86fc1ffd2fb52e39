#include "worker/models/step_batch.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::models {
namespace {

absl::StatusOr<kernels::Tensor> ToDeviceInt32(kernels::Backend& backend,
                                              const std::vector<int32_t>& values,
                                              std::vector<int64_t> shape) {
  ASSIGN_OR_RETURN(kernels::Tensor t, backend.Empty(DataType::kInt32, std::move(shape)));
  if (!values.empty()) {
    RETURN_IF_ERROR(backend.CopyFromHost(values.data(), values.size() * sizeof(int32_t), &t));
  }
  return t;
}

}  // namespace

absl::StatusOr<StepBatch> BuildStepBatch(kernels::Backend& backend, const StepInput& input,
                                         const StepLimits& limits) {
  const auto bad = [](int64_t s, const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("step: sequence ", s, ": ", what));
  };
  if (input.sequences.empty()) {
    return absl::InvalidArgumentError("step: expected at least one sequence, found none");
  }
  const int64_t num_seqs = static_cast<int64_t>(input.sequences.size());
  int64_t max_blocks = 1;
  std::vector<int32_t> ids, positions, slots, query_start = {0}, context_lens, logit_rows;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const StepSequence& seq = input.sequences[s];
    if (seq.token_ids.empty()) return bad(s, "expected at least one new token, found none");
    if (seq.num_cached < 0) {
      return bad(s, absl::StrCat("num_cached: expected >= 0, found ", seq.num_cached));
    }
    const int64_t context_len = seq.context_len();
    if (limits.max_context > 0 && context_len > limits.max_context) {
      return bad(s, absl::StrCat("context of ", context_len,
                                 " tokens exceeds the supported ", limits.max_context));
    }
    const int64_t needed = (context_len + limits.block_size - 1) / limits.block_size;
    if (static_cast<int64_t>(seq.block_table.size()) < needed) {
      return bad(s, absl::StrCat("block table has ", seq.block_table.size(), " blocks, ", needed,
                                 " needed for ", context_len, " tokens of block size ",
                                 limits.block_size));
    }
    for (int64_t b = 0; b < needed; ++b) {
      const int32_t block = seq.block_table[b];
      if (block < 0 || block >= limits.num_blocks) {
        return bad(s, absl::StrCat("block_table[", b, "] = ", block, " outside [0, ",
                                   limits.num_blocks, ")"));
      }
    }
    max_blocks = std::max(max_blocks, needed);
    const int64_t n = static_cast<int64_t>(seq.token_ids.size());
    for (int64_t i = 0; i < n; ++i) {
      const int32_t id = seq.token_ids[i];
      if (id < 0 || id >= limits.vocab_size) {
        return bad(s, absl::StrCat("token id ", id, " at index ", i, " outside the vocabulary [0, ",
                                   limits.vocab_size, ")"));
      }
      const int64_t pos = seq.num_cached + i;
      const bool wants_logits = seq.logits == LogitsRows::kAll ||
                                (seq.logits == LogitsRows::kLast && i == n - 1);
      if (wants_logits) logit_rows.push_back(static_cast<int32_t>(ids.size()));
      ids.push_back(id);
      positions.push_back(static_cast<int32_t>(pos));
      slots.push_back(static_cast<int32_t>(seq.block_table[pos / limits.block_size] *
                                               limits.block_size +
                                           pos % limits.block_size));
    }
    query_start.push_back(static_cast<int32_t>(ids.size()));
    context_lens.push_back(static_cast<int32_t>(context_len));
  }
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs * max_blocks), 0);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const auto& table = input.sequences[s].block_table;
    const int64_t used = std::min<int64_t>(max_blocks, static_cast<int64_t>(table.size()));
    std::copy(table.begin(), table.begin() + used, tables.begin() + s * max_blocks);
  }

  StepBatch batch;
  batch.num_tokens = static_cast<int64_t>(ids.size());
  batch.num_logit_rows = static_cast<int64_t>(logit_rows.size());
  ASSIGN_OR_RETURN(batch.token_ids, ToDeviceInt32(backend, ids, {batch.num_tokens}));
  ASSIGN_OR_RETURN(batch.positions, ToDeviceInt32(backend, positions, {batch.num_tokens}));
  ASSIGN_OR_RETURN(batch.slot_mapping, ToDeviceInt32(backend, slots, {batch.num_tokens}));
  ASSIGN_OR_RETURN(batch.attention.query_start,
                   ToDeviceInt32(backend, query_start, {num_seqs + 1}));
  ASSIGN_OR_RETURN(batch.attention.context_lens, ToDeviceInt32(backend, context_lens, {num_seqs}));
  ASSIGN_OR_RETURN(batch.attention.block_tables,
                   ToDeviceInt32(backend, tables, {num_seqs, max_blocks}));
  ASSIGN_OR_RETURN(batch.logit_rows, ToDeviceInt32(backend, logit_rows, {batch.num_logit_rows}));
  return batch;
}

}  // namespace epserve::models
