// Runs the router's StepPlans on one worker: the lockstep unit of the cluster
// (DESIGN.md, "The step"). One Execute() per StepPlan:
//
//   StepPlan ─validate (all of it, before the cache is touched)─► StepInput
//            ─DecoderModel::Forward (prefill chunks and decodes in one batch)─►
//            logits [#sampling sequences, vocab] ─Sampler─► StepResult
//
// Contracts:
// * Every SequencePlan feeds token_ids at positions start_position ..
//   start_position + len - 1; positions < start_position must already be in
//   the KV cache at the blocks of block_table (the router's bookkeeping).
//   block_table must cover start_position + len tokens (block_size each).
// * A plan is validated completely first: request_id non-empty and unique in
//   the step, token ids in [0, vocab), block ids in [0, num_blocks) and no
//   block in two sequences' tables (nor twice in one), block capacity >=
//   start_position + len, no gap after the tokens this executor has seen of
//   the request, sampling params valid (sampling::Validate). Failure:
//   INVALID_ARGUMENT "request '<id>': sequences[i].<field> ...", nothing
//   written, no history changed: the executor stays usable.
// * Only sequences with `sample` set get a logits row and a SequenceResult
//   (one token; results in plan order). Non-final prefill chunks get neither.
// * Token history for penalties / min_tokens / the seeded random stream: a
//   per-request cache of the tokens fed (prompt) and sampled (output), fed
//   from the plans only; the source of truth is the router's scheduler
//   Request (router/scheduler/request.h). A decode plan re-feeding the last sampled token, or a
//   recompute after preemption re-feeding prompt + output, overlaps the
//   record and changes nothing. SequencePlan.num_prompt_tokens says where the
//   prompt ends, so a record rebuilt from a recompute on a worker that never
//   saw the request (or released it) splits prompt and output as the first
//   run did. Release(request_id) drops a record (the router
//   calls it when a request ends); at most `max_tracked_requests` records are
//   kept, the least recently stepped one is dropped to make room (a dropped
//   live request then sees only the tokens fed after that).
// * Unseeded requests draw from a process-wide source (sampler.h): ranks of an
//   expert-parallel group agree on tokens only when the router sets a seed.
// * An empty plan (no sequences) is valid: empty result, no forward pass
//   (with collective_moe: only the MoE layers' exchanges, with no tokens).
// * Not thread-safe: one Execute at a time (the step stream is serial).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "epserve/control/v1/control.pb.h"
#include "kernels/ops.h"
#include "worker/kv_cache/kv_cache.h"
#include "worker/models/decode_graphs.h"
#include "worker/models/decoder_model.h"
#include "worker/sampling/sampler.h"
#include "worker/weights/weight_loader.h"

namespace epserve::step {

struct StepExecutorOptions {
  // KV cache: tokens per block, number of blocks (> 0; see
  // KvBlocksForBudget), element type (float32 | bfloat16 | float16).
  int64_t block_size = 16;
  int64_t num_blocks = 0;
  DataType kv_cache_dtype = DataType::kFloat32;
  // Bound on the per-request token-history records (> 0).
  size_t max_tracked_requests = 4096;
  sampling::LogprobsMode logprobs_mode = sampling::LogprobsMode::kRaw;
  int sampler_threads = 1;
  // Expert parallelism: an empty plan still runs DecoderModel::ForwardNoTokens
  // (the other ranks' MoE collectives need this rank).
  bool collective_moe = false;
  // GPU backends: decode steps of up to this many sequences are replayed
  // from graphs (DecodeGraphs); 0 = always eager. Ignored on the CPU and
  // with collective_moe.
  int64_t graph_max_batch = 0;
  // Longest context a graph serves (its block-table width); longer: eager.
  int64_t graph_max_context = 4096;
  // Load() only: the device of the backend it creates.
  kernels::DeviceSpec device;
};

// Bytes one KV block takes summed over every layer's pool (K and V, or latent).
uint64_t KvBlockBytes(const kv_cache::KvCacheShape& shape, int64_t block_size, DataType dtype);

// How many KV blocks fit in `budget_bytes` (floor; 0 when not even one does):
// the count a worker reports to the router at registration. INVALID_ARGUMENT
// for block_size <= 0, an empty shape or a dtype the cache does not support.
absl::StatusOr<int64_t> KvBlocksForBudget(const kv_cache::KvCacheShape& shape,
                                          int64_t block_size, DataType dtype,
                                          uint64_t budget_bytes);

class StepExecutor {
 public:
  // Builds the model (DecoderModel::Create) over `weights` on `backend` and
  // allocates the KV cache. `weights` and `backend` must outlive the
  // executor. `dispatcher` as in DecoderModel::Create (null: all experts local).
  static absl::StatusOr<std::unique_ptr<StepExecutor>> Create(
      const weights::ModelWeights& weights, kernels::Backend& backend,
      const StepExecutorOptions& options,
      std::unique_ptr<moe::TokenDispatcher> dispatcher = nullptr);

  // Convenience for a single-process worker and tests: loads `model_dir`
  // (config + weights with `load` options) on a backend for options.device
  // (dummy weights are made there), all owned by
  // the executor.
  static absl::StatusOr<std::unique_ptr<StepExecutor>> Load(const std::string& model_dir,
                                                            const weights::LoadOptions& load,
                                                            const StepExecutorOptions& options);

  ~StepExecutor();

  // Runs one step (see the contracts above). Errors other than
  // INVALID_ARGUMENT come from the backend or the sampler and name the
  // request where one is to blame; the caller reports them in
  // StepResult.error.
  absl::StatusOr<control::v1::StepResult> Execute(const control::v1::StepPlan& plan);

  // Drops the token history of `request_id`; false when none was kept.
  bool Release(const std::string& request_id);
  // Forgets every request (a new router: the old one's requests are gone).
  void ReleaseAll() { history_.clear(); }
  size_t num_tracked_requests() const { return history_.size(); }

  const ModelDescription& desc() const { return model_->desc(); }
  int64_t num_blocks() const { return cache_->num_blocks(); }
  int64_t block_size() const { return cache_->block_size(); }
  kv_cache::KvCache& cache() { return *cache_; }
  // Decode graphs captured so far (0 without graphs).
  size_t num_graphs() const { return graphs_ ? graphs_->num_captured() : 0; }
  models::DecoderModel& model() { return *model_; }

 private:
  // What device sampling needs of a history for penalties, kept up to date
  // incrementally (built when a request with penalties first samples on a
  // device): every distinct id of prompt and output once, with its count
  // among the outputs.
  struct PenaltyIndex {
    absl::flat_hash_map<int32_t, uint32_t> slot;  // id -> index into ids
    std::vector<int32_t> ids;
    std::vector<uint32_t> output_count;
    size_t prompt_seen = 0;  // prompt / output tokens absorbed so far
    size_t output_seen = 0;
  };
  struct History {
    std::vector<int32_t> prompt;  // tokens fed before the first sample
    std::vector<int32_t> output;  // sampled tokens (and any fed after them)
    uint64_t last_step = 0;       // executor step counter, for eviction
    std::unique_ptr<PenaltyIndex> penalties;  // device sampling with penalties only
    int64_t size() const { return static_cast<int64_t>(prompt.size() + output.size()); }
  };

  StepExecutor(const StepExecutorOptions& options, sampling::Sampler::Options sampler_options);

  // The sampled token of every plan row with `sample` (in `sampled` order;
  // histories[i] is rows[i]'s record). On the CPU the host sampler sees
  // every logits row. On a device, Backend::SampleTokens draws every row
  // there (penalties and min_tokens as sparse edits from the histories) and
  // one copy brings back the ids and the requested logprobs.
  absl::StatusOr<std::vector<absl::StatusOr<sampling::SampledToken>>> Sample(
      const kernels::Tensor& logits, const std::vector<sampling::SamplingRow>& rows,
      const std::vector<History*>& histories);

  absl::Status Validate(const control::v1::StepPlan& plan,
                        std::vector<sampling::SamplingParams>* params) const;
  // Appends the tokens of `seq` beyond what the record holds.
  void Record(const control::v1::SequencePlan& seq, History& h) const;
  History& Track(const std::string& request_id);

  StepExecutorOptions options_;
  // Owned only when built by Load().
  std::unique_ptr<kernels::Backend> owned_backend_;
  std::unique_ptr<weights::ModelWeights> owned_weights_;
  std::unique_ptr<models::DecoderModel> model_;
  std::unique_ptr<kv_cache::KvCache> cache_;
  std::unique_ptr<models::DecodeGraphs> graphs_;  // null: eager only
  sampling::Sampler sampler_;
  std::unordered_map<std::string, History> history_;
  uint64_t steps_ = 0;
};

}  // namespace epserve::step
