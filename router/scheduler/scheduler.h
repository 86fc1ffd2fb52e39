// Scheduler: continuous batching over data-parallel workers, with per-worker
// KV block accounting. A plain CPU object: no threads, no clocks, no device,
// no gRPC; deterministic given the sequence of calls. Not thread-safe: the
// router drives it from its step loop.
//
// The step loop (lockstep: one StepResult per Schedule, always):
//
//   Add / Abort / Finish ... ─► Schedule() ─► ScheduledBatch ─► router builds
//   one StepPlan per worker (tokens, start_position, block_table, sample + the
//   request's SamplingParams) ─► workers ─► sampled ids ─► OnStepResult()
//   ─► SequenceUpdates (token appended, maybe finished) ─► next Schedule()
//
// Policy of one Schedule(), per worker w (budget = max_tokens_per_step each):
//  1. Decode pass: running sequences on w with exactly one token left to
//     compute (a decode, or the last token of a prefill), in (priority,
//     arrival) order, one token each. A sequence needing a new block when none
//     is free preempts, by recompute, the running sequence on w not yet
//     scheduled this step with the highest priority value, latest arrival —
//     possibly itself.
//  2. Prefill pass: running sequences on w partway through a (chunked)
//     prefill, same order: chunk = min(tokens left, budget left, what fits in
//     the free blocks); a sequence that cannot get one block preempts as above.
//  3. Admission (all workers; skipped in a step that preempted): waiting and
//     preempted requests in (priority value ascending, arrival ascending)
//     order; strict: admission stops at the first request that fits no worker. A request fits worker w when w runs
//     fewer than max_running_per_worker sequences, has budget left, and the
//     blocks for its first chunk (min(history, budget left)) leave at least
//     watermark * num_blocks blocks free. Among fitting workers: fewest running
//     sequences, then most free blocks, then lowest index.
// Preemption frees the victim's blocks, keeps its generated tokens (its
// history is prompt + generated) and requeues it at its original (priority,
// arrival) place, i.e. ahead of every later arrival of its priority; it is
// then prefilled again over its whole history and resumes sampling where it
// left off, so a deterministic model produces the same continuation.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "router/scheduler/kv_block_allocator.h"
#include "router/scheduler/request.h"

namespace epserve::scheduler {

struct SchedulerOptions {
  // Tokens one worker computes per step (prefill chunks + decodes). >= 1.
  int max_tokens_per_step = 2048;
  // Sequences one worker holds at once (running, incl. partial prefills). >= 1.
  int max_running_per_worker = 256;
  // Tokens per KV block; must match the workers' block size. >= 1.
  int block_size = 16;
  // Fraction of each worker's blocks admission leaves free, so running
  // sequences can grow without preempting at once. In [0, 1).
  double watermark = 0.0;
};

// One sequence's work on its worker this step (maps 1:1 onto SequencePlan).
struct ScheduledSequence {
  std::string request_id;
  std::vector<uint32_t> token_ids;  // history[start_position, +size)
  int64_t start_position = 0;
  std::vector<uint32_t> block_table;  // covers start_position + size tokens
  bool sample = false;                // chunk reaches the end of the history
};

struct WorkerBatch {
  // Decodes first, then prefill chunks, then newly admitted requests.
  std::vector<ScheduledSequence> sequences;
  int num_tokens = 0;  // <= max_tokens_per_step
};

// The router's plan of one lockstep step over every worker: what each worker
// computes (one WorkerBatch per rank) and who lost its KV. Router-side only;
// a worker turns its StepPlan into its own batch (worker/models StepBatch).
struct ScheduledBatch {
  uint64_t step_id = 0;
  std::vector<WorkerBatch> workers;     // one per worker, possibly empty
  std::vector<std::string> preempted;   // requests preempted by this step
  bool empty() const;
};

// One token a worker sampled for a sequence scheduled with sample = true, as
// it came back in the StepResult (the id only; the worker's sampler output is
// worker/sampling SampledToken).
struct WorkerToken {
  std::string request_id;
  uint32_t token_id = 0;
};

// The effect of one sampled token. A finished request is gone from the
// scheduler (its blocks freed) once OnStepResult returns.
struct SequenceUpdate {
  std::string request_id;
  uint32_t token_id = 0;
  std::optional<FinishReason> finish_reason;
};

class Scheduler {
 public:
  // blocks_per_worker[w]: num_blocks reported by worker w (one entry each).
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(
      SchedulerOptions options, std::vector<int> blocks_per_worker);

  // Queues a request. INVALID_ARGUMENT for an empty prompt, max_tokens < 1, a
  // duplicate live id, or a request whose prompt + max_tokens tokens cannot
  // fit any worker's KV even alone (it could never finish).
  absl::Status Add(RequestSpec spec);
  // Queues a request that already generated `generated_ids` under an earlier
  // scheduler (one rebuilt after its worker group was lost): like a
  // preempted request it is prefilled again over prompt + generated and
  // resumes sampling where it left off. Add's checks, and fewer generated
  // ids than max_tokens (else it had finished).
  absl::Status Restore(RequestSpec spec, std::vector<uint32_t> generated_ids);

  // Ends a request at once: frees its blocks, drops it from every queue; it is
  // never scheduled again. A result for it in the outstanding step is ignored.
  // NOT_FOUND when the id is not live. Abort(id) == Finish(id, kAbort).
  absl::Status Abort(const std::string& id);
  // For stop strings (detected by the router's detokenizer), deadlines, etc.
  absl::Status Finish(const std::string& id, FinishReason reason);

  // Plans the next step. FAILED_PRECONDITION while the previous step's result
  // has not been passed to OnStepResult.
  absl::StatusOr<ScheduledBatch> Schedule();

  // The sampled tokens of the outstanding step: exactly one per live sequence
  // scheduled with sample = true (results for requests aborted / finished
  // since are ignored). Validates everything before changing anything.
  absl::StatusOr<std::vector<SequenceUpdate>> OnStepResult(
      const std::vector<WorkerToken>& sampled);

  // nullptr when not live (never added, finished or aborted).
  const Request* Find(const std::string& id) const;
  // The live request's record, shared with the caller: it stays readable after
  // the request leaves the scheduler (finished, aborted, or the scheduler
  // destroyed), its token history then final. nullptr when not live.
  std::shared_ptr<const Request> Share(const std::string& id) const;

  int num_workers() const { return static_cast<int>(allocators_.size()); }
  const KvBlockAllocator& allocator(int worker) const { return allocators_[worker]; }
  const SchedulerOptions& options() const { return options_; }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const;
  int num_running(int worker) const { return static_cast<int>(running_[worker].size()); }
  int num_live() const { return static_cast<int>(requests_.size()); }
  uint64_t num_preemptions() const { return num_preemptions_; }
  bool step_outstanding() const { return step_outstanding_; }

 private:
  struct QueueOrder {
    bool operator()(const Request* a, const Request* b) const;
  };

  Scheduler(SchedulerOptions options, std::vector<int> blocks_per_worker);

  // Makes r's block table cover `num_tokens` tokens, preempting other
  // unscheduled running sequences on its worker if needed. False when r itself
  // was the victim (it is then preempted and must not be scheduled).
  bool EnsureBlocks(Request* r, int64_t num_tokens,
                    const std::unordered_set<const Request*>& scheduled, ScheduledBatch& batch);
  void Preempt(Request* r, ScheduledBatch& batch);
  void Emit(Request* r, int64_t chunk, ScheduledBatch& batch);
  void Release(Request* r);  // frees blocks, leaves running/waiting
  void Admit(ScheduledBatch& batch, std::vector<int>& budget);

  SchedulerOptions options_;
  std::vector<KvBlockAllocator> allocators_;
  std::vector<int> watermark_blocks_;
  std::unordered_map<std::string, std::shared_ptr<Request>> requests_;
  std::set<Request*, QueueOrder> waiting_;
  std::vector<std::vector<Request*>> running_;  // per worker, any order
  std::unordered_set<std::string> pending_sample_;
  bool step_outstanding_ = false;
  uint64_t next_arrival_ = 0;
  uint64_t next_step_id_ = 0;
  uint64_t num_preemptions_ = 0;
};

}  // namespace epserve::scheduler
