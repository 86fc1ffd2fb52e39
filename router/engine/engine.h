// Engine: the router's serving loop. It owns the scheduler and drives the
// workers in lockstep; each request's output (text, stop strings, finish
// reasons, usage) is its frontend::OutputProcessor's, whose messages the
// engine writes to the request's stream.
//
//   Submit ─(admission limits, at once)─► inbox ─┐
//   Abort / Cancel ──────────────────────► inbox ─┤
//                                                 ▼  one thread:
//   loop: apply inbox → one step:
//           Plan          Scheduler::Schedule()
//           BuildPlans    one StepPlan per worker (all of them, empty ones too)
//           SendPlans     StepTransport::SendStep
//           CollectResults  wait for every StepResult (bounded)
//           ReadTokens    worker errors, one sampled token per sequence
//           ApplyTokens   Scheduler::OnStepResult → OutputProcessor per token
//                         → GenerateStream writes
//         → publish stats → end the streams of finished requests → next step
//
// A request's tokens live in the scheduler's Request only (see
// router/scheduler/request.h); the engine holds a shared handle to it.
//
// Failure: a worker lost, a step error or a step that takes longer than
// step_timeout drops the scheduler; it is rebuilt from the next serving
// group (its KV accounting starts empty; the workers are told to drop the
// old requests). With recovery_timeout set, the live requests wait for that
// group (suspended) and are then restored into the new scheduler from their
// token history, recomputed like preempted ones, so their streams continue
// with the tokens an undisturbed run would give (greedy and seeded
// sampling); without it, or when the cluster does not serve again in time,
// they end with a non-OK status naming the cause. Nothing waits without a
// bound.
//
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"
#include "router/engine/serving_metrics.h"
#include "router/frontend/generation_request.h"
#include "router/scheduler/scheduler.h"

#include "epserve/control/v1/control.pb.h"
#include "epserve/v1/epserve.pb.h"

namespace epserve::router {

using EngineClock = frontend::RequestClock;

// The serving collective group as the engine sees it.
struct GroupView {
  uint64_t epoch = 0;
  int block_size = 16;
  std::vector<int> kv_blocks;  // per rank
};

// The engine's link to the workers (the worker registry in the router; a
// fake in tests).
class StepTransport {
 public:
  virtual ~StepTransport() = default;
  // The group to step, or nullopt with *reason set when the cluster is not
  // serving.
  virtual std::optional<GroupView> ServingGroup(std::string* reason) = 0;
  // Sends plans[r] to rank r, every rank. An error (group gone) means no
  // result will come for this step.
  virtual absl::Status SendStep(uint64_t epoch,
                                const std::vector<control::v1::StepPlan>& plans) = 0;
};

// One client stream, as the engine writes to it.
class GenerateStream {
 public:
  virtual ~GenerateStream() = default;
  // Queues a response; never blocks on the network.
  virtual void Write(v1::GenerateResponse response) = 0;
  // Ends the stream after the queued responses (status OK after a complete
  // message; non-OK otherwise).
  virtual void Finish(const absl::Status& status) = 0;
};

struct EngineOptions {
  // block_size comes from the workers; the rest is policy.
  scheduler::SchedulerOptions scheduler;
  // Admission limits: requests queued (not yet on a worker) and their
  // prompt tokens. Beyond either, Submit answers RESOURCE_EXHAUSTED.
  int max_waiting_requests = 1024;
  int64_t max_waiting_tokens = int64_t{1} << 22;
  // A step whose results are not all back after this long fails every live
  // request (a stalled worker; the registry's liveness check then drops it).
  std::chrono::milliseconds step_timeout{30000};
  std::vector<uint32_t> eos_token_ids;
  // When the worker group is lost (a worker died, stalled or failed a step)
  // live requests wait this long for the cluster to serve again, then
  // resume: recomputed from their prompt and the tokens generated so far,
  // their streams continue where they were. 0: they end with UNAVAILABLE at
  // once (fail-stop).
  std::chrono::milliseconds recovery_timeout{0};
  // A request that already lived through this many group losses ends with
  // the next one (a request that keeps failing its worker).
  int max_recoveries = 3;
};

// A request built by a front end (frontend::RequestBuilder) and the stream
// its responses go to.
struct NewRequest : frontend::GenerationRequest {
  std::shared_ptr<GenerateStream> stream;
};

struct WorkerLoad {
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;
  int requests_running = 0;
};

struct EngineStats {
  int running = 0;
  int waiting = 0;  // incl. submitted requests the loop has not taken yet
  bool draining = false;
  std::vector<WorkerLoad> workers;  // empty while no group is served
};

class Engine {
 public:
  // `transport` and `metrics` (may be null) must outlive the engine;
  // `tokenizer` may be null (token-id prompts only, no text in responses).
  Engine(EngineOptions options, StepTransport* transport,
         std::shared_ptr<const tokenizer::Tokenizer> tokenizer, ServingMetrics* metrics);
  ~Engine();  // Stop()

  // Queues a request. At once: UNAVAILABLE when draining, RESOURCE_EXHAUSTED
  // beyond the admission limits, ALREADY_EXISTS for the id of a live request.
  // On OK the stream receives everything from now on (a request taken while
  // the cluster is not serving ends with UNAVAILABLE on its stream).
  absl::Status Submit(NewRequest request);
  // Ends a live request with finish_reason ABORT (a complete message, status
  // OK) before its next step. NOT_FOUND for an id that is not live.
  // Only `caller` == the request's owner may abort it: any other caller is
  // told that no such request runs (ids of others stay hidden).
  absl::Status Abort(const std::string& id, const std::string& caller = "");
  // The client went away (cancelled, deadline): the request is dropped before
  // its next step; its stream gets `status` (usually ignored by gRPC).
  void Cancel(const std::string& id, const absl::Status& status);
  // The cluster's serving state changed (registry listener).
  void OnServingChanged();
  // A worker's answer to a StepPlan.
  void OnStepResult(uint32_t rank, uint64_t epoch, const control::v1::StepResult& result);

  // Refuses new requests from now on and waits until the live ones are done
  // or `timeout` passes; what is left then ends with UNAVAILABLE. Returns the
  // number of requests ended that way.
  int Drain(std::chrono::milliseconds timeout);
  // Ends every live request with UNAVAILABLE and stops the loop. Idempotent.
  void Stop();

  EngineStats Stats() const;
  bool draining() const;
  // A lost group's requests wait for the next one: new requests may be
  // submitted (they wait with them) although the cluster is not serving.
  bool recovering() const { return recovering_.load(); }

 private:
  struct Tracked;
  struct Command {
    enum Kind { kAdd, kAbort, kCancel } kind;
    std::string id;
    std::shared_ptr<Tracked> request;  // kAdd
    absl::Status status;               // kCancel
  };

  void Loop();
  // Applies the inbox: adds, aborts and cancels, in order.
  void ApplyCommands(std::deque<Command> commands);
  // Builds the scheduler for the serving group if there is none yet; stays
  // null (with *reason set) while the cluster is not serving.
  void EnsureScheduler(std::string* reason);
  // Ends every live request with `status` and drops the scheduler (its KV
  // accounting no longer matches the workers); the next step rebuilds it.
  void FailAll(const absl::Status& status);
  // The worker group was lost (`cause`): drops the scheduler like FailAll,
  // but the live requests wait for the next serving group (up to
  // recovery_timeout) instead of ending, except those recovered
  // max_recoveries times already. FailAll when recovery is off.
  void SuspendAll(const absl::Status& cause);
  // Puts the suspended requests into the new scheduler, in arrival order;
  // a request it refuses ends with the reason.
  void RestoreSuspended();
  // Ends the suspended requests once the recovery deadline has passed.
  void ExpireRecovery(EngineClock::time_point now);
  // The requests waiting for a group, and the end of that wait.
  std::vector<std::shared_ptr<Tracked>> Suspended() const;
  void EndRecovery();
  // Adds a new request to the scheduler (ends it when refused).
  void Admit(Tracked& t);
  // Ends one request; it must already be gone from the scheduler.
  void EndRequest(Tracked& t, const absl::Status& status,
                  std::optional<v1::FinishReason> reason);
  void ExpireDeadlines(EngineClock::time_point now);
  // A step on its way to the workers.
  struct PlannedStep {
    uint64_t step_id = 0;
    std::vector<control::v1::StepPlan> plans;  // one per rank
    // Per rank: "prefill", "decode", "mixed", or null for an idle rank.
    std::vector<const char*> phase;
  };
  // What the workers sampled in one step.
  struct StepTokens {
    std::vector<scheduler::WorkerToken> tokens;
    std::unordered_map<std::string, v1::TokenLogprob> logprobs;  // by request id
  };

  // Runs one step, in the parts below. A failure in any part ends every live
  // request (FailAll) and the step there; the parts then return false or
  // nullopt.
  void RunStep();
  // Schedules; releases the KV of preempted requests; publishes the stats.
  // nullopt when the scheduler failed or nothing runs this step.
  std::optional<scheduler::ScheduledBatch> Plan();
  // The StepPlan of every rank (with the releases queued for it).
  PlannedStep BuildPlans(const scheduler::ScheduledBatch& batch);
  bool SendPlans(const PlannedStep& step);
  // Waits (bounded) for every rank's StepResult; nullopt on a missing one.
  std::optional<std::map<uint32_t, control::v1::StepResult>> CollectResults(
      const PlannedStep& step);
  // Step metrics and the sampled tokens; nullopt on a worker's error or a
  // malformed result.
  std::optional<StepTokens> ReadTokens(const PlannedStep& step,
                                       const std::map<uint32_t, control::v1::StepResult>& results);
  // The scheduler appends the tokens; each goes to its request's output.
  void ApplyTokens(uint64_t step_id, const StepTokens& tokens);
  // One token of a live request: timing metrics, the output processor's
  // chunk, and the end of the request when it finished.
  void OutputToken(const scheduler::SequenceUpdate& update, const v1::TokenLogprob* logprob,
                   EngineClock::time_point now);
  void PublishStats();
  // Ends the streams of the requests ended since the last call. The loop
  // calls it after PublishStats, so a client that saw its stream end reads
  // metrics and stats that already count the request as finished.
  void FinishStreams();

  const EngineOptions options_;
  StepTransport* const transport_;
  const std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  ServingMetrics* const metrics_;

  // Shared with the public methods.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Command> inbox_;
  // Submitted, not ended: id -> owner.
  std::unordered_map<std::string, std::string> live_ids_;
  int64_t inbox_tokens_ = 0;                  // prompt tokens of queued kAdd
  bool serving_changed_ = true;
  bool draining_ = false;
  bool stopping_ = false;
  EngineStats stats_;  // published by the loop after every step
  int64_t waiting_tokens_ = 0;
  // Results of the outstanding step, by rank.
  uint64_t pending_step_ = 0;
  uint64_t pending_epoch_ = 0;
  std::map<uint32_t, control::v1::StepResult> results_;

  // Loop thread only.
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  GroupView group_;
  std::unordered_map<std::string, std::shared_ptr<Tracked>> requests_;
  std::vector<std::vector<std::string>> release_;  // per rank, for the next plan
  uint64_t preemptions_seen_ = 0;
  // Set while requests wait for a lost group to be replaced (they end at
  // recovery_started_ + recovery_timeout); recovering_ mirrors it for
  // other threads.
  std::optional<EngineClock::time_point> recovery_started_;
  absl::Status recovery_cause_;
  std::atomic<bool> recovering_{false};
  int kv_ranks_published_ = 0;  // ranks whose KV usage gauge is set
  uint64_t next_step_id_ = 0;
  // Ended requests whose streams FinishStreams has yet to end.
  std::vector<std::pair<std::shared_ptr<GenerateStream>, absl::Status>> finishing_;

  std::thread loop_;
};

}  // namespace epserve::router
