// Request: the scheduler's state of one generation request.
//
// Token history = prompt_ids + generated_ids. `num_computed_tokens` counts the
// history tokens whose KV is in the request's blocks (prefill progress). Each
// step computes the next chunk history[num_computed, num_computed + n); when
// the chunk reaches the end of the history the worker samples one token, which
// OnStepResult appends to generated_ids. So a decode is simply a chunk of the
// one token left (the last sampled one), and a recompute after preemption is
// a prefill of the whole history (prompt + everything generated so far).
//
// One token history per request: this Request is the router's only record of
// a request's tokens, and the source of truth. The engine moves the prompt in
// at Add and keeps a shared handle (Scheduler::Share) to read the output ids
// from when the request ends (the output processor's usage and output_ids);
// neither the engine nor the output processor keeps a copy. It lives here
// because scheduling needs it all: chunks are cut from it, and a preempted
// request is recomputed from it on any worker.
// The worker's record (worker/step StepExecutor) is a cache of the same
// tokens for penalties, min_tokens and the seeded random stream, fed only
// from the plans: SequencePlan.num_prompt_tokens (= spec.prompt_ids.size())
// tells it where the prompt ends, and a recompute re-feeds the whole history,
// so a worker that lost or never had the record rebuilds it exactly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace epserve::scheduler {

enum class RequestStatus {
  kWaiting,    // queued, never run (no worker, no blocks)
  kRunning,    // on a worker, holds blocks
  kPreempted,  // blocks freed; queued again to recompute its history
  kFinished,   // done (see FinishReason); holds nothing. Set as the
               // scheduler drops it: Scheduler::Find never returns one.
};

// Mirrors epserve.v1.FinishReason (STOP, LENGTH, ABORT) without the proto.
enum class FinishReason {
  kStop,    // EOS or a stop token id (or a stop string, via Scheduler::Finish)
  kLength,  // max_tokens generated
  kAbort,   // Abort / client cancellation / deadline
};

const char* RequestStatusName(RequestStatus s);
const char* FinishReasonName(FinishReason r);

// What the router hands to Scheduler::Add. Sampling parameters themselves
// (temperature, top_p...) stay with the router, which puts them in the
// SequencePlan; the scheduler only needs the stop conditions.
struct RequestSpec {
  std::string id;                    // unique among live requests
  std::vector<uint32_t> prompt_ids;  // non-empty
  int max_tokens = 16;               // >= 1
  int priority = 0;                  // lower value runs first
  std::vector<uint32_t> stop_token_ids;
  std::vector<uint32_t> eos_token_ids;  // from generation_config
  bool ignore_eos = false;
};

struct Request {
  RequestSpec spec;
  uint64_t arrival = 0;  // order of Add; FCFS key within a priority
  std::vector<uint32_t> generated_ids;
  int64_t num_computed_tokens = 0;
  std::vector<uint32_t> block_table;  // blocks on `worker`, in order
  int worker = -1;                    // -1 while not running
  RequestStatus status = RequestStatus::kWaiting;
  std::optional<FinishReason> finish_reason;
  int num_preemptions = 0;

  int64_t history_size() const {
    return static_cast<int64_t>(spec.prompt_ids.size() + generated_ids.size());
  }
  uint32_t history_at(int64_t i) const {
    const int64_t p = static_cast<int64_t>(spec.prompt_ids.size());
    return i < p ? spec.prompt_ids[i] : generated_ids[i - p];
  }
  int64_t num_uncomputed() const { return history_size() - num_computed_tokens; }
};

}  // namespace epserve::scheduler
