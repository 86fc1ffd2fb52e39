#include "worker/models/decode_graphs.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::models {
namespace {

// Staging regions, in order.
enum Region { kIds, kPositions, kSlots, kQueryStart, kContextLens, kLogitRows, kTables };

}  // namespace

std::vector<int64_t> DecodeGraphBuckets(int64_t max_batch) {
  std::vector<int64_t> out;
  for (int64_t b : {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256}) {
    if (b <= max_batch) out.push_back(b);
  }
  for (int64_t b = 320; b < max_batch; b += 64) out.push_back(b);
  if (max_batch > 0 && (out.empty() || out.back() != max_batch)) out.push_back(max_batch);
  return out;
}

absl::StatusOr<std::unique_ptr<DecodeGraphs>> DecodeGraphs::Create(
    DecoderModel& model, kv_cache::KvCache& cache, const DecodeGraphOptions& options) {
  kernels::Backend& b = model.backend();
  if (!b.SupportsGraphs()) {
    return absl::FailedPreconditionError(
        absl::StrCat("decode graphs: the ", b.device().ToString(), " backend has no graphs"));
  }
  if (!model.capturable()) {
    return absl::FailedPreconditionError(
        "decode graphs: this model's expert-parallel MoE exchange cannot be captured");
  }
  if (options.max_batch <= 0 || options.max_blocks_per_seq <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode graphs: max_batch and max_blocks_per_seq must be > 0, got ", options.max_batch,
        " and ", options.max_blocks_per_seq));
  }
  std::unique_ptr<DecodeGraphs> g(new DecodeGraphs(model, cache, options));
  g->buckets_ = DecodeGraphBuckets(options.max_batch);
  const int64_t total = g->Offset(kTables) + options.max_batch * options.max_blocks_per_seq;
  ASSIGN_OR_RETURN(g->staging_, b.AllocateStagingHost(static_cast<size_t>(total) * 4));
  ASSIGN_OR_RETURN(g->device_ints_, b.Empty(DataType::kInt32, {total}));
  const int64_t vocab = model.desc().vocab_size;
  ASSIGN_OR_RETURN(g->logits_, b.Empty(DataType::kFloat32, {options.max_batch, vocab}));
  return g;
}

int64_t DecodeGraphs::Offset(int region) const {
  const int64_t m = options_.max_batch;
  switch (region) {
    case kIds: return 0;
    case kPositions: return m;
    case kSlots: return 2 * m;
    case kQueryStart: return 3 * m;
    case kContextLens: return 4 * m + 1;
    case kLogitRows: return 5 * m + 1;
    default: return 6 * m + 1;
  }
}

kernels::Tensor DecodeGraphs::View(const kernels::Tensor& base, int64_t offset_elems,
                                   std::vector<int64_t> shape) {
  kernels::Tensor t;
  t.dtype = base.dtype;
  t.shape = std::move(shape);
  t.storage = base.storage;
  t.byte_offset = base.byte_offset + static_cast<size_t>(offset_elems) * DataTypeSize(base.dtype);
  return t;
}

StepBatch DecodeGraphs::BatchViews(int64_t b) const {
  StepBatch batch;
  batch.num_tokens = b;
  batch.num_logit_rows = b;
  batch.token_ids = View(device_ints_, Offset(kIds), {b});
  batch.positions = View(device_ints_, Offset(kPositions), {b});
  batch.slot_mapping = View(device_ints_, Offset(kSlots), {b});
  batch.attention.query_start = View(device_ints_, Offset(kQueryStart), {b + 1});
  batch.attention.context_lens = View(device_ints_, Offset(kContextLens), {b});
  batch.attention.block_tables =
      View(device_ints_, Offset(kTables), {b, options_.max_blocks_per_seq});
  batch.logit_rows = View(device_ints_, Offset(kLogitRows), {b});
  return batch;
}

bool DecodeGraphs::Accepts(const StepInput& input) const {
  const int64_t s = static_cast<int64_t>(input.sequences.size());
  if (s == 0 || s > options_.max_batch) return false;
  const int64_t capacity = options_.max_blocks_per_seq * cache_.block_size();
  const auto& window = model_.desc().sliding_window;
  for (const StepSequence& seq : input.sequences) {
    if (seq.token_ids.size() != 1 || seq.logits == LogitsRows::kNone) return false;
    if (seq.context_len() > capacity) return false;
    if (window.has_value() && seq.context_len() > *window) return false;
  }
  return true;
}

absl::Status DecodeGraphs::Stage(const StepInput& input, int64_t b) {
  int32_t* p = static_cast<int32_t*>(staging_->mutable_data());
  const int64_t width = options_.max_blocks_per_seq;
  const int64_t block_size = cache_.block_size();
  const int64_t s = static_cast<int64_t>(input.sequences.size());
  int32_t* tables = p + Offset(kTables);
  p[Offset(kQueryStart)] = 0;
  for (int64_t i = 0; i < b; ++i) {
    int32_t* table = tables + i * width;
    if (i < s) {
      const StepSequence& seq = input.sequences[i];
      const int64_t pos = seq.num_cached;
      p[Offset(kIds) + i] = seq.token_ids[0];
      p[Offset(kPositions) + i] = static_cast<int32_t>(pos);
      p[Offset(kSlots) + i] =
          static_cast<int32_t>(seq.block_table[pos / block_size] * block_size + pos % block_size);
      p[Offset(kContextLens) + i] = static_cast<int32_t>(seq.context_len());
      const int64_t used = std::min<int64_t>(width, static_cast<int64_t>(seq.block_table.size()));
      std::memcpy(table, seq.block_table.data(), static_cast<size_t>(used) * 4);
      std::fill(table + used, table + width, 0);
    } else {  // padding
      p[Offset(kIds) + i] = 0;
      p[Offset(kPositions) + i] = 0;
      p[Offset(kSlots) + i] = -1;
      p[Offset(kContextLens) + i] = 1;
      std::fill(table, table + width, 0);
    }
    p[Offset(kQueryStart) + i + 1] = static_cast<int32_t>(i + 1);
    p[Offset(kLogitRows) + i] = static_cast<int32_t>(i);
  }
  // One copy: the small regions whole, the tables up to row b.
  const size_t bytes = static_cast<size_t>(Offset(kTables) + b * width) * 4;
  kernels::Tensor dst = View(device_ints_, 0, {static_cast<int64_t>(bytes / 4)});
  return model_.backend().CopyFromHost(p, bytes, &dst);
}

absl::StatusOr<DecodeGraphs::Output> DecodeGraphs::Run(const StepInput& input) {
  if (!Accepts(input)) {
    return absl::InvalidArgumentError("decode graphs: not a decode step these graphs serve");
  }
  const int64_t s = static_cast<int64_t>(input.sequences.size());
  const int64_t b = *std::lower_bound(buckets_.begin(), buckets_.end(), s);
  kernels::Backend& backend = model_.backend();
  RETURN_IF_ERROR(Stage(input, b));
  const StepBatch batch = BatchViews(b);
  kernels::Tensor logits = View(logits_, 0, {b, model_.desc().vocab_size});
  auto body = [&]() -> absl::Status { return model_.ForwardBatch(batch, cache_, &logits); };
  auto it = graphs_.find(b);
  if (it == graphs_.end()) {
    // First use of the bucket: run eagerly (this step's result), then record.
    RETURN_IF_ERROR(body());
    ASSIGN_OR_RETURN(std::unique_ptr<kernels::Backend::Graph> graph, backend.Capture(body));
    graphs_.emplace(b, std::move(graph));
  } else {
    RETURN_IF_ERROR(it->second->Replay());
  }
  Output out;
  out.logits = View(logits_, 0, {s, model_.desc().vocab_size});
  return out;
}

}  // namespace epserve::models
