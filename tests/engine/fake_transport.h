// FakeTransport: a StepTransport that plays every rank of a serving group in
// process, with a deterministic "model", plan invariant checks and fault
// controls. No gRPC, no processes.
//
//   Engine ──SendStep(epoch, plans)──► FakeTransport
//                                        │ record the plans, check invariants,
//                                        │ per rank: feed each SequencePlan into
//                                        │ the rank's token history; for
//                                        │ sample = true, token = model(history)
//                                        ▼
//                     answer thread ──(after delay)──► Engine::OnStepResult
//
// Each rank keeps what a worker keeps: per request, the tokens fed so far and
// the block table. Across ranks the transport keeps each request's known
// history (prompt + every token sampled for it), so a recompute that re-feeds
// a wrong token is a violation, and the model's output changes with it.
//
// Invariants checked on every SendStep (violations() lists what failed):
//  * one plan per rank of the group; equal step ids, increasing from step to
//    step; plan epoch == the epoch argument;
//  * a request in at most one sequence of a step (over all ranks);
//  * num_prompt_tokens set (> 0) and constant for a request;
//  * start_position is 0 or the number of tokens this rank was fed for the
//    request (a decode continues where the last chunk ended);
//  * fed tokens equal the request's known history; a generated position is
//    only fed after it was sampled; a sampled position is the end of history;
//  * the block table covers start_position + tokens, holds ids below the
//    rank's kv_blocks, no id twice, and extends the table the rank holds;
//  * no block shared by two requests the rank holds (a request is held from
//    its first sequence until a plan names it in release_request_ids);
//  * release_request_ids name no request the same plan continues (the
//    worker drops them before the step; starting over at 0 is allowed).
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "epserve/control/v1/control.pb.h"
#include "router/engine/engine.h"

namespace epserve::router::testing {

// The next token after `history` (the request's prompt + generated tokens, as
// fed to the rank).
using Model = std::function<uint32_t(const std::vector<uint32_t>& history)>;

// (last token + 1) % vocab: predictable outputs (prompt {5} → 6, 7, 8, ...).
Model NextTokenModel(uint32_t vocab);
// A hash of every (position, token) % vocab: any fed token changes the rest.
Model HistoryHashModel(uint32_t vocab);

// What `model` generates for `prompt` alone: up to `max_tokens` tokens,
// ending after the first token in `stop_ids`.
std::vector<uint32_t> Generate(const Model& model, std::vector<uint32_t> prompt, int max_tokens,
                               const std::vector<uint32_t>& stop_ids = {});

// How one rank answers a step.
enum class RankMode {
  kAnswer,        // the model's tokens
  kStall,         // never answers
  kError,         // a StepResult with `error` set
  kDropSequence,  // omits the first sampled sequence's token
  kStaleOnly,     // only results with a wrong epoch / a wrong step id
  kStaleFirst,    // those stale results first, the real one 20 ms later
};

struct RecordedStep {
  uint64_t epoch = 0;
  std::vector<control::v1::StepPlan> plans;  // [rank]
};

class FakeTransport : public StepTransport {
 public:
  FakeTransport(GroupView group, Model model);
  ~FakeTransport() override;

  // Results go to `engine` from the answer thread.
  void Attach(Engine* engine);
  // Stops and joins the answer thread; nothing reaches the engine afterwards.
  void Detach();

  std::optional<GroupView> ServingGroup(std::string* reason) override;
  // UNAVAILABLE (nothing recorded) when `epoch` is not the serving group's.
  absl::Status SendStep(uint64_t epoch, const std::vector<control::v1::StepPlan>& plans) override;

  // Controls. After a serving change the test calls Engine::OnServingChanged.
  void SetGroup(GroupView group);
  void StopServing(std::string reason);
  void SetRankMode(int rank, RankMode mode, std::string error = "");
  // Non-empty: SendStep fails with UNAVAILABLE(error).
  void SetSendError(std::string error);
  // Every result reaches the engine this long after SendStep.
  void SetDelay(std::chrono::milliseconds delay);
  // Attach one TokenLogprob {token, -0.5} to every sampled token.
  void SetLogprobs(bool on);
  // While held, results are kept until DeliverHeld (manual lockstep).
  // SetHold(false) delivers what is held.
  void SetHold(bool hold);
  // True once a step was sent (and held) since the last DeliverHeld/DropHeld.
  bool WaitForHeldStep(std::chrono::milliseconds timeout);
  void DeliverHeld();
  void DropHeld();

  // Observations.
  std::vector<RecordedStep> steps() const;
  size_t num_steps() const;
  bool WaitForSteps(size_t n, std::chrono::milliseconds timeout);
  // Requests re-fed from position 0 after a token had been sampled for them.
  std::set<std::string> recomputed() const;
  std::vector<std::string> violations() const;

 private:
  struct RankSequence {
    std::vector<uint32_t> fed;  // tokens fed so far, from position 0
    std::vector<uint32_t> blocks;
  };
  struct Known {
    std::vector<uint32_t> history;  // prompt (as fed so far) + sampled tokens
    uint32_t num_prompt_tokens = 0;
    bool sampled = false;
  };
  struct Delivery {
    EngineClock::time_point due;
    uint32_t rank = 0;
    uint64_t epoch = 0;
    control::v1::StepResult result;
  };

  // Both under mu_.
  void Violation(std::string what);
  // Feeds one rank's plan; returns the tokens sampled, by request id.
  std::vector<std::pair<std::string, uint32_t>> FeedRank(uint32_t rank,
                                                         const control::v1::StepPlan& plan);
  void Enqueue(Delivery d);
  void AnswerLoop();

  const Model model_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Engine* engine_ = nullptr;
  std::optional<GroupView> group_;
  std::string not_serving_reason_;
  std::map<int, std::pair<RankMode, std::string>> modes_;
  std::string send_error_;
  std::chrono::milliseconds delay_{0};
  bool logprobs_ = false;
  bool hold_ = false;
  int held_steps_ = 0;
  std::vector<Delivery> held_;
  std::deque<Delivery> queue_;
  bool stop_ = false;
  uint64_t last_step_id_ = 0;
  std::vector<RecordedStep> steps_;
  std::map<uint32_t, std::map<std::string, RankSequence>> ranks_;
  std::map<std::string, Known> known_;
  std::set<std::string> recomputed_;
  std::vector<std::string> violations_;
  std::thread answer_thread_;
};

}  // namespace epserve::router::testing
