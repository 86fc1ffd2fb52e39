// Decode steps replayed from graphs (CUDA graphs on a GPU backend).
//
// A decode step — every sequence feeds one token and wants its logits row —
// has the same kernels every time for a given batch size, so it is recorded
// once per batch-size bucket and replayed: one launch instead of ~15 per
// layer. Everything a replay reads lives at fixed device addresses:
//
//   pinned staging ──one copy──► device int32 buffer (views = the StepBatch)
//     [ ids | positions | slots | query_start | context_lens | logit_rows |
//       block_tables (bucket × width) ]
//   graph: DecoderModel::ForwardBatch(views) ─► logits [bucket, V]
//   (sampling, Backend::SampleTokens, runs after the replay: its inputs
//   change every step)
//
// A batch of S sequences runs in the smallest bucket >= S; the extra rows
// are padding (slot -1: nothing is written to the KV cache; block 0,
// context 1: attention reads one valid slot; their outputs are ignored).
// Every row is computed independently, so padding never changes a real
// row. Each bucket is run once eagerly (which also uploads the backend's
// cached tables) and then captured, on first use.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "worker/kv_cache/kv_cache.h"
#include "worker/models/decoder_model.h"
#include "worker/models/step_input.h"

namespace epserve::models {

struct DecodeGraphOptions {
  // Largest decode batch run from a graph; bigger ones run eagerly.
  int64_t max_batch = 256;
  // Block-table width of every graph: the longest context a graph serves is
  // max_blocks_per_seq * block_size (longer: eager). > 0.
  int64_t max_blocks_per_seq = 0;
};

// The bucket sizes up to max_batch: 1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128,
// 160, 192, 224, 256, then steps of 64 (and max_batch itself).
std::vector<int64_t> DecodeGraphBuckets(int64_t max_batch);

class DecodeGraphs {
 public:
  // The model must be capturable() and its backend SupportsGraphs().
  static absl::StatusOr<std::unique_ptr<DecodeGraphs>> Create(DecoderModel& model,
                                                              kv_cache::KvCache& cache,
                                                              const DecodeGraphOptions& options);

  // Whether `input` is a decode step the graphs serve.
  bool Accepts(const StepInput& input) const;

  // Views of the last Run's outputs, valid until the next Run: the S real
  // rows (batch order).
  struct Output {
    kernels::Tensor logits;  // [S, vocab] float32
  };
  // Runs an accepted step (the caller validated ids and block tables, as
  // StepExecutor does). Enqueues the copy and the replay; nothing waits.
  absl::StatusOr<Output> Run(const StepInput& input);

  size_t num_captured() const { return graphs_.size(); }
  const std::vector<int64_t>& buckets() const { return buckets_; }

 private:
  DecodeGraphs(DecoderModel& model, kv_cache::KvCache& cache, const DecodeGraphOptions& options)
      : model_(model), cache_(cache), options_(options) {}

  // Int32 offsets of the staging regions.
  int64_t Offset(int region) const;
  // The StepBatch views for a bucket of `b` rows.
  StepBatch BatchViews(int64_t b) const;
  // Writes `input` (S rows) and padding up to `b` rows into the staging buffer
  // and enqueues its copy.
  absl::Status Stage(const StepInput& input, int64_t b);
  static kernels::Tensor View(const kernels::Tensor& base, int64_t offset_elems,
                              std::vector<int64_t> shape);

  DecoderModel& model_;
  kv_cache::KvCache& cache_;
  DecodeGraphOptions options_;
  std::vector<int64_t> buckets_;
  std::shared_ptr<kernels::Storage> staging_;  // pinned host, int32
  kernels::Tensor device_ints_;               // int32 [staging size]
  kernels::Tensor logits_;                    // [max_batch, vocab]
  std::map<int64_t, std::unique_ptr<kernels::Backend::Graph>> graphs_;
};

}  // namespace epserve::models
