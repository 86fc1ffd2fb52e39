#include "router/engine/engine.h"

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "router/frontend/output_processor.h"

namespace epserve::router {
namespace {

double Seconds(EngineClock::duration d) { return std::chrono::duration<double>(d).count(); }

v1::FinishReason ToProto(scheduler::FinishReason r) {
  switch (r) {
    case scheduler::FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case scheduler::FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case scheduler::FinishReason::kAbort: return v1::FINISH_REASON_ABORT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

const char* MetricReason(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_ABORT: return "abort";
    default: return "error";
  }
}

}  // namespace

struct Engine::Tracked {
  NewRequest req;  // prompt_ids moved into the scheduler at admission
  size_t num_prompt_tokens = 0;
  // The sampling fields the workers use (router-only fields cleared).
  v1::SamplingParams plan_params;
  std::unique_ptr<frontend::OutputProcessor> output;
  // The scheduler's record of the request (its token history) from admission
  // on; it outlives the request's time in the scheduler.
  std::shared_ptr<const scheduler::Request> history;
  bool computed_once = false;
  std::optional<EngineClock::time_point> last_token;
  int worker = -1;  // rank of the group it last ran on
  bool suspended = false;  // waiting for a lost group to be replaced
  int recoveries = 0;      // group losses it lived through

  size_t num_output_tokens() const { return history ? history->generated_ids.size() : 0; }
};

Engine::Engine(EngineOptions options, StepTransport* transport,
               std::shared_ptr<const tokenizer::Tokenizer> tokenizer, ServingMetrics* metrics)
    : options_(std::move(options)),
      transport_(transport),
      tokenizer_(std::move(tokenizer)),
      metrics_(metrics) {
  loop_ = std::thread([this] { Loop(); });
}

Engine::~Engine() { Stop(); }

absl::Status Engine::Submit(NewRequest request) {
  const int64_t prompt_tokens = static_cast<int64_t>(request.prompt_ids.size());
  auto reject = [&](const char* reason, absl::Status status) {
    if (metrics_ != nullptr) metrics_->RequestRejected(reason);
    return status;
  };
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || draining_) {
    return reject("draining", absl::UnavailableError(
                                  "the router is draining (shutting down); not accepting new "
                                  "requests"));
  }
  if (live_ids_.count(request.id) != 0) {
    return reject("invalid", absl::AlreadyExistsError(absl::StrCat(
                                 "request_id: a request with id '", request.id, "' is running")));
  }
  int inbox_adds = 0;
  for (const Command& c : inbox_) inbox_adds += c.kind == Command::kAdd ? 1 : 0;
  const int waiting = stats_.waiting + inbox_adds;
  if (waiting >= options_.max_waiting_requests) {
    return reject("queue_full", absl::ResourceExhaustedError(absl::StrCat(
                                    "queue full: ", waiting, " requests are waiting (limit ",
                                    options_.max_waiting_requests,
                                    ", --max-waiting-requests); retry later")));
  }
  const int64_t tokens = waiting_tokens_ + inbox_tokens_;
  if (waiting > 0 && tokens + prompt_tokens > options_.max_waiting_tokens) {
    return reject("queue_full",
                  absl::ResourceExhaustedError(absl::StrCat(
                      "queue full: ", tokens, " prompt tokens are waiting and this request adds ",
                      prompt_tokens, " (limit ", options_.max_waiting_tokens,
                      ", --max-waiting-tokens); retry later")));
  }
  auto t = std::make_shared<Tracked>();
  t->plan_params = request.sampling;
  t->plan_params.clear_stop();
  t->plan_params.clear_max_tokens();
  t->plan_params.clear_include_stop_str_in_output();
  t->plan_params.clear_skip_special_tokens();
  t->output =
      std::make_unique<frontend::OutputProcessor>(request.id, request.sampling, tokenizer_.get());
  t->num_prompt_tokens = request.prompt_ids.size();
  t->req = std::move(request);
  live_ids_.emplace(t->req.id, t->req.owner);
  inbox_tokens_ += prompt_tokens;
  Command c{Command::kAdd, t->req.id, std::move(t), absl::OkStatus()};
  inbox_.push_back(std::move(c));
  cv_.notify_all();
  return absl::OkStatus();
}

absl::Status Engine::Abort(const std::string& id, const std::string& caller) {
  std::lock_guard<std::mutex> lock(mu_);
  auto live = live_ids_.find(id);
  if (live == live_ids_.end() || live->second != caller) {
    return absl::NotFoundError(absl::StrCat("request_id: no running request '", id, "'"));
  }
  inbox_.push_back(Command{Command::kAbort, id, nullptr, absl::OkStatus()});
  cv_.notify_all();
  return absl::OkStatus();
}

void Engine::Cancel(const std::string& id, const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (live_ids_.count(id) == 0) return;
  inbox_.push_back(Command{Command::kCancel, id, nullptr, status});
  cv_.notify_all();
}

void Engine::OnServingChanged() {
  std::lock_guard<std::mutex> lock(mu_);
  serving_changed_ = true;
  cv_.notify_all();
}

void Engine::OnStepResult(uint32_t rank, uint64_t epoch, const control::v1::StepResult& result) {
  std::lock_guard<std::mutex> lock(mu_);
  if (epoch != pending_epoch_ || result.step_id() != pending_step_) return;  // stale
  results_[rank] = result;
  cv_.notify_all();
}

int Engine::Drain(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  cv_.wait_for(lock, timeout, [this] { return live_ids_.empty() || stopping_; });
  const int left = static_cast<int>(live_ids_.size());
  lock.unlock();
  if (left > 0) {
    LOG_WARN("drain timeout ({} ms) passed with {} request(s) in flight; ending them",
             timeout.count(), left);
  }
  Stop();
  return left;
}

void Engine::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    draining_ = true;
  }
  cv_.notify_all();
  if (loop_.joinable()) loop_.join();
  // The loop is gone: this thread owns its state now.
  std::deque<Command> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    left.swap(inbox_);
  }
  const absl::Status status = absl::UnavailableError("the router is shutting down");
  for (Command& c : left) {
    if (c.kind == Command::kAdd) requests_.emplace(c.id, std::move(c.request));
  }
  FailAll(status);
  PublishStats();
  FinishStreams();
}

bool Engine::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  for (const Command& c : inbox_) s.waiting += c.kind == Command::kAdd ? 1 : 0;
  s.draining = draining_;
  return s;
}

void Engine::Loop() {
  while (true) {
    std::deque<Command> commands;
    bool group_changed = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Requests waiting for a lost group do not spin the loop: it looks
      // for the new group every 50 ms.
      cv_.wait_for(lock, std::chrono::milliseconds(50), [this] {
        return stopping_ || !inbox_.empty() || serving_changed_ ||
               (!requests_.empty() && !recovery_started_);
      });
      if (stopping_) return;
      commands.swap(inbox_);
      inbox_tokens_ = 0;
      group_changed = serving_changed_;
      serving_changed_ = false;
    }
    if (group_changed && scheduler_ != nullptr) {
      std::string reason;
      std::optional<GroupView> g = transport_->ServingGroup(&reason);
      if (!g || g->epoch != group_.epoch) {
        SuspendAll(absl::UnavailableError(absl::StrCat(
            "the cluster stopped serving: ",
            g ? absl::StrCat("collective group re-formed (epoch ", g->epoch, ")") : reason)));
      }
    }
    if (recovery_started_) {
      std::string reason;
      EnsureScheduler(&reason);
      if (scheduler_ != nullptr) {
        RestoreSuspended();
      } else {
        ExpireRecovery(EngineClock::now());
      }
    }
    ApplyCommands(std::move(commands));
    ExpireDeadlines(EngineClock::now());
    if (!finishing_.empty()) {
      // Aborted, cancelled or expired: ended now, not after the next step.
      PublishStats();
      FinishStreams();
    }
    if (!requests_.empty() && scheduler_ != nullptr) RunStep();
    PublishStats();
    FinishStreams();
  }
}

void Engine::FinishStreams() {
  std::vector<std::pair<std::shared_ptr<GenerateStream>, absl::Status>> ending;
  ending.swap(finishing_);
  for (auto& [stream, status] : ending) stream->Finish(status);
}

void Engine::EnsureScheduler(std::string* reason) {
  if (scheduler_ != nullptr) return;
  std::optional<GroupView> g = transport_->ServingGroup(reason);
  if (!g) return;
  scheduler::SchedulerOptions so = options_.scheduler;
  so.block_size = g->block_size;
  absl::StatusOr<std::unique_ptr<scheduler::Scheduler>> s =
      scheduler::Scheduler::Create(so, g->kv_blocks);
  if (!s.ok()) {
    LOG_ERROR("cannot schedule on collective group epoch {}: {}", g->epoch, s.status().ToString());
    *reason = absl::StrCat("cannot schedule on collective group epoch ", g->epoch, ": ",
                           s.status().message());
    return;
  }
  scheduler_ = std::move(*s);
  group_ = *g;
  release_.resize(g->kv_blocks.size());
  LOG_INFO("scheduling on collective group epoch {}: {} worker(s), KV blocks [{}] of {} tokens",
           g->epoch, g->kv_blocks.size(), absl::StrJoin(g->kv_blocks, ", "), g->block_size);
}

void Engine::ApplyCommands(std::deque<Command> commands) {
  for (Command& c : commands) {
    if (c.kind == Command::kAdd) {
      Tracked& t = *c.request;
      std::string reason;
      EnsureScheduler(&reason);
      // A group that has just come back takes the waiting requests first.
      if (scheduler_ != nullptr && recovery_started_) RestoreSuspended();
      requests_.emplace(c.id, c.request);
      if (scheduler_ == nullptr) {
        if (recovery_started_) {
          // The group is being replaced: it waits with the others.
          t.suspended = true;
          continue;
        }
        EndRequest(t, absl::UnavailableError(absl::StrCat("cluster is not serving: ", reason)),
                   std::nullopt);
        continue;
      }
      Admit(t);
      continue;
    }
    auto it = requests_.find(c.id);
    if (it == requests_.end()) continue;  // ended meanwhile
    std::shared_ptr<Tracked> t = it->second;
    if (scheduler_ != nullptr) (void)scheduler_->Abort(c.id);
    if (c.kind == Command::kAbort) {
      EndRequest(*t, absl::OkStatus(), v1::FINISH_REASON_ABORT);
    } else {
      EndRequest(*t, c.status, std::nullopt);
    }
  }
}

void Engine::Admit(Tracked& t) {
  scheduler::RequestSpec spec;
  spec.id = t.req.id;
  spec.prompt_ids = std::move(t.req.prompt_ids);
  spec.max_tokens = static_cast<int>(t.req.max_tokens);
  spec.priority = t.req.priority;
  spec.stop_token_ids.assign(t.req.sampling.stop_token_ids().begin(),
                             t.req.sampling.stop_token_ids().end());
  spec.eos_token_ids = options_.eos_token_ids;
  spec.ignore_eos = t.req.sampling.ignore_eos();
  if (absl::Status s = scheduler_->Add(std::move(spec)); !s.ok()) {
    EndRequest(t, s, std::nullopt);
    return;
  }
  t.history = scheduler_->Share(t.req.id);
  if (metrics_ != nullptr) metrics_->RequestAdmitted(static_cast<int64_t>(t.num_prompt_tokens));
}

void Engine::ExpireDeadlines(EngineClock::time_point now) {
  std::vector<std::shared_ptr<Tracked>> expired;
  for (auto& [id, t] : requests_) {
    if (t->req.deadline && *t->req.deadline <= now) expired.push_back(t);
  }
  for (auto& t : expired) {
    if (scheduler_ != nullptr) (void)scheduler_->Abort(t->req.id);
    EndRequest(*t,
               absl::DeadlineExceededError(absl::StrCat(
                   "deadline passed ", Seconds(now - t->req.arrival), " s after arrival with ",
                   t->num_output_tokens(), " token(s) generated",
                   t->computed_once ? "" : " (the request never ran)")),
               std::nullopt);
  }
}

void Engine::FailAll(const absl::Status& status) {
  std::vector<std::shared_ptr<Tracked>> all;
  all.reserve(requests_.size());
  for (auto& [id, t] : requests_) all.push_back(t);
  for (auto& t : all) {
    if (scheduler_ != nullptr) (void)scheduler_->Abort(t->req.id);
    EndRequest(*t, status, std::nullopt);
  }
  // Its KV accounting is void; the next serving group gets a fresh one.
  scheduler_.reset();
  if (!all.empty()) LOG_WARN("ended {} request(s): {}", all.size(), status.ToString());
}

void Engine::SuspendAll(const absl::Status& cause) {
  if (options_.recovery_timeout.count() <= 0) {
    FailAll(cause);
    return;
  }
  std::vector<std::shared_ptr<Tracked>> all;
  all.reserve(requests_.size());
  for (auto& [id, t] : requests_) all.push_back(t);
  int kept = 0;
  for (auto& t : all) {
    if (scheduler_ != nullptr) (void)scheduler_->Abort(t->req.id);
    if (t->recoveries >= options_.max_recoveries) {
      EndRequest(*t,
                 absl::Status(cause.code(),
                              absl::StrCat(cause.message(), " (the request already lived through ",
                                           t->recoveries, " such failures; not retried again)")),
                 std::nullopt);
      continue;
    }
    // Its KV on the old worker is void: that worker (if it lives on) drops
    // it with the next plan it gets.
    if (t->worker >= 0 && static_cast<size_t>(t->worker) < release_.size()) {
      release_[static_cast<size_t>(t->worker)].push_back(t->req.id);
    }
    t->worker = -1;
    t->suspended = true;
    ++t->recoveries;
    ++kept;
  }
  scheduler_.reset();
  if (kept == 0) return;
  const auto now = EngineClock::now();
  if (!recovery_started_) {
    recovery_started_ = now;
    recovery_cause_ = cause;
    recovering_ = true;
  }
  LOG_WARN("{}: {} request(s) wait up to {} ms for the cluster to serve again", cause.ToString(),
           kept,
           std::chrono::duration_cast<std::chrono::milliseconds>(*recovery_started_ +
                                                                 options_.recovery_timeout - now)
               .count());
}

std::vector<std::shared_ptr<Engine::Tracked>> Engine::Suspended() const {
  std::vector<std::shared_ptr<Tracked>> suspended;
  for (const auto& [id, t] : requests_) {
    if (t->suspended) suspended.push_back(t);
  }
  return suspended;
}

void Engine::EndRecovery() {
  recovery_started_.reset();
  recovering_ = false;
}

void Engine::RestoreSuspended() {
  std::vector<std::shared_ptr<Tracked>> suspended = Suspended();
  // In arrival order: first those that ran before the loss (in their
  // order), then those submitted while waiting.
  std::sort(suspended.begin(), suspended.end(), [](const auto& a, const auto& b) {
    if ((a->history == nullptr) != (b->history == nullptr)) return a->history != nullptr;
    if (a->history == nullptr) return a->req.arrival < b->req.arrival;
    return a->history->arrival < b->history->arrival;
  });
  int resumed = 0;
  for (auto& t : suspended) {
    t->suspended = false;
    if (t->history == nullptr) {
      Admit(*t);  // submitted while the group was being replaced
      continue;
    }
    ++resumed;
    scheduler::RequestSpec spec = t->history->spec;
    std::vector<uint32_t> generated = t->history->generated_ids;
    if (absl::Status s = scheduler_->Restore(std::move(spec), std::move(generated)); !s.ok()) {
      EndRequest(*t,
                 absl::UnavailableError(absl::StrCat(recovery_cause_.message(),
                                                     "; the new group cannot take the "
                                                     "request: ",
                                                     s.message())),
                 std::nullopt);
      continue;
    }
    t->history = scheduler_->Share(t->req.id);
  }
  const double waited = Seconds(EngineClock::now() - *recovery_started_);
  LOG_INFO(
      "the cluster serves again after {:.2f} s: {} request(s) resume, {} submitted "
      "meanwhile start",
      waited, resumed, suspended.size() - static_cast<size_t>(resumed));
  if (metrics_ != nullptr) metrics_->RequestsRecovered(resumed, waited);
  EndRecovery();
}

void Engine::ExpireRecovery(EngineClock::time_point now) {
  if (!recovery_started_ || now < *recovery_started_ + options_.recovery_timeout) return;
  const absl::Status status(
      recovery_cause_.code(),
      absl::StrCat(recovery_cause_.message(), "; the cluster did not serve again within ",
                   options_.recovery_timeout.count(), " ms"));
  for (auto& t : Suspended()) EndRequest(*t, status, std::nullopt);
  EndRecovery();
}

void Engine::EndRequest(Tracked& t, const absl::Status& status,
                        std::optional<v1::FinishReason> reason) {
  const std::string id = t.req.id;
  const auto now = EngineClock::now();
  if (status.ok() && reason) {
    const std::vector<uint32_t> none;
    const std::vector<uint32_t>& output_ids = t.history ? t.history->generated_ids : none;
    for (v1::GenerateResponse& r : t.output->Complete(*reason, t.num_prompt_tokens, output_ids)) {
      t.req.stream->Write(std::move(r));
    }
  }
  {
    // The id is free before the client can see the end of its stream.
    std::lock_guard<std::mutex> lock(mu_);
    live_ids_.erase(id);
  }
  if (metrics_ != nullptr) {
    const char* label = reason ? MetricReason(*reason)
                        : absl::IsCancelled(status) || absl::IsDeadlineExceeded(status)
                            ? "abort"
                            : "error";
    metrics_->RequestFinished(label, Seconds(now - t.req.arrival));
  }
  finishing_.emplace_back(t.req.stream, status);
  if (t.worker >= 0 && static_cast<size_t>(t.worker) < release_.size()) {
    release_[static_cast<size_t>(t.worker)].push_back(id);
  }
  requests_.erase(id);
  cv_.notify_all();
}

void Engine::RunStep() {
  const auto started = EngineClock::now();
  absl::Cleanup observe = [&] {
    if (metrics_ != nullptr) {
      metrics_->RouterStep(std::chrono::duration<double>(EngineClock::now() - started).count());
    }
  };
  std::optional<scheduler::ScheduledBatch> batch = Plan();
  if (!batch) return;
  const PlannedStep step = BuildPlans(*batch);
  if (!SendPlans(step)) return;
  std::optional<std::map<uint32_t, control::v1::StepResult>> results = CollectResults(step);
  if (!results) return;
  std::optional<StepTokens> tokens = ReadTokens(step, *results);
  if (!tokens) return;
  ApplyTokens(step.step_id, *tokens);
}

std::optional<scheduler::ScheduledBatch> Engine::Plan() {
  absl::StatusOr<scheduler::ScheduledBatch> batch = scheduler_->Schedule();
  if (!batch.ok()) {
    FailAll(absl::InternalError(absl::StrCat("scheduler: ", batch.status().message())));
    return std::nullopt;
  }
  for (const std::string& id : batch->preempted) {
    auto it = requests_.find(id);
    if (it == requests_.end()) continue;
    // Its KV is gone; it may be recomputed on another worker.
    if (it->second->worker >= 0) release_[static_cast<size_t>(it->second->worker)].push_back(id);
    it->second->worker = -1;
  }
  // What this step admitted runs; what it left queued counts against the
  // admission limits while the step runs.
  PublishStats();
  if (metrics_ != nullptr && scheduler_->num_preemptions() > preemptions_seen_) {
    metrics_->Preemptions(scheduler_->num_preemptions() - preemptions_seen_);
  }
  preemptions_seen_ = scheduler_->num_preemptions();
  if (batch->empty()) {
    // Nothing fits this step (cannot happen while requests are live: a
    // request that fits no worker alone is refused by Add). Keep the
    // scheduler consistent and do not spin.
    (void)scheduler_->OnStepResult({});
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return std::nullopt;
  }
  return std::move(*batch);
}

Engine::PlannedStep Engine::BuildPlans(const scheduler::ScheduledBatch& batch) {
  const size_t world = batch.workers.size();
  PlannedStep step;
  step.step_id = ++next_step_id_;
  step.plans.resize(world);
  step.phase.assign(world, nullptr);
  const auto now = EngineClock::now();
  for (size_t w = 0; w < world; ++w) {
    control::v1::StepPlan& plan = step.plans[w];
    plan.set_step_id(step.step_id);
    plan.set_epoch(group_.epoch);
    bool prefill = false;
    bool decode = false;
    for (const scheduler::ScheduledSequence& s : batch.workers[w].sequences) {
      Tracked& t = *requests_.at(s.request_id);
      t.worker = static_cast<int>(w);
      if (!t.computed_once) {
        t.computed_once = true;
        if (metrics_ != nullptr) metrics_->QueueTime(Seconds(now - t.req.arrival));
      }
      control::v1::SequencePlan* sp = plan.add_sequences();
      sp->set_request_id(s.request_id);
      *sp->mutable_token_ids() = {s.token_ids.begin(), s.token_ids.end()};
      sp->set_start_position(static_cast<uint32_t>(s.start_position));
      *sp->mutable_block_table() = {s.block_table.begin(), s.block_table.end()};
      *sp->mutable_sampling_params() = t.plan_params;
      sp->set_sample(s.sample);
      sp->set_num_prompt_tokens(static_cast<uint32_t>(t.num_prompt_tokens));
      const bool is_decode = s.token_ids.size() == 1 &&
                             s.start_position >= static_cast<int64_t>(t.num_prompt_tokens);
      (is_decode ? decode : prefill) = true;
    }
    step.phase[w] = prefill && decode ? "mixed"
                    : prefill         ? "prefill"
                    : decode          ? "decode"
                                      : nullptr;
    for (std::string& id : release_[w]) plan.add_release_request_ids(std::move(id));
    release_[w].clear();
  }
  uint32_t most = 0;
  for (const control::v1::StepPlan& plan : step.plans) {
    uint32_t tokens = 0;
    for (const control::v1::SequencePlan& sp : plan.sequences()) {
      tokens += static_cast<uint32_t>(sp.token_ids_size());
    }
    most = std::max(most, tokens);
  }
  for (control::v1::StepPlan& plan : step.plans) plan.set_max_tokens_any_worker(most);
  return step;
}

bool Engine::SendPlans(const PlannedStep& step) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_step_ = step.step_id;
    pending_epoch_ = group_.epoch;
    results_.clear();
  }
  if (absl::Status sent = transport_->SendStep(group_.epoch, step.plans); !sent.ok()) {
    SuspendAll(absl::UnavailableError(
        absl::StrCat("cannot send step ", step.step_id, ": ", sent.message())));
    return false;
  }
  return true;
}

std::optional<std::map<uint32_t, control::v1::StepResult>> Engine::CollectResults(
    const PlannedStep& step) {
  const size_t world = step.plans.size();
  std::map<uint32_t, control::v1::StepResult> results;
  bool group_changed = false;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, options_.step_timeout, [&] {
      return results_.size() == world || serving_changed_ || stopping_;
    });
    results.swap(results_);
    group_changed = serving_changed_;
    pending_step_ = 0;
    if (stopping_) return std::nullopt;  // Stop() ends everything
  }
  if (results.size() == world) return results;
  std::vector<size_t> missing;
  for (size_t w = 0; w < world; ++w) {
    if (results.count(static_cast<uint32_t>(w)) == 0) missing.push_back(w);
  }
  std::string why;
  if (group_changed) {
    std::string reason;
    if (!transport_->ServingGroup(&reason)) {
      why = reason;
    } else {
      why = "the collective group re-formed";
    }
  } else {
    why = absl::StrCat("worker rank ", absl::StrJoin(missing, ", rank "), " did not answer within ",
                       options_.step_timeout.count(), " ms");
  }
  SuspendAll(absl::UnavailableError(absl::StrCat("step ", step.step_id, " failed: ", why)));
  return std::nullopt;
}

std::optional<Engine::StepTokens> Engine::ReadTokens(
    const PlannedStep& step, const std::map<uint32_t, control::v1::StepResult>& results) {
  StepTokens out;
  for (const auto& [rank, r] : results) {
    if (!r.error().empty()) {
      // A worker that failed a step (its device, or a peer that died
      // mid-exchange): the requests resume on the next group like after a
      // lost worker, each at most max_recoveries times.
      SuspendAll(absl::InternalError(
          absl::StrCat("step ", step.step_id, " failed on worker rank ", rank, ": ", r.error())));
      return std::nullopt;
    }
    if (metrics_ != nullptr && step.phase[rank] != nullptr) {
      metrics_->StepDuration(static_cast<int>(rank), step.phase[rank], r.step_seconds());
    }
    for (const control::v1::SequenceResult& s : r.sequences()) {
      if (s.token_ids_size() != 1) {
        FailAll(absl::InternalError(absl::StrCat("step ", step.step_id, ": worker rank ", rank,
                                                 " returned ", s.token_ids_size(),
                                                 " tokens for request '", s.request_id(),
                                                 "' (expected 1)")));
        return std::nullopt;
      }
      out.tokens.push_back({s.request_id(), s.token_ids(0)});
      if (s.logprobs_size() > 0) out.logprobs[s.request_id()] = s.logprobs(0);
    }
  }
  return out;
}

void Engine::ApplyTokens(uint64_t step_id, const StepTokens& tokens) {
  absl::StatusOr<std::vector<scheduler::SequenceUpdate>> updates =
      scheduler_->OnStepResult(tokens.tokens);
  if (!updates.ok()) {
    FailAll(absl::InternalError(absl::StrCat("step ", step_id, ": ", updates.status().message())));
    return;
  }
  const auto done = EngineClock::now();
  if (metrics_ != nullptr) metrics_->GenerationTokens(static_cast<int64_t>(updates->size()));
  for (const scheduler::SequenceUpdate& u : *updates) {
    auto lp = tokens.logprobs.find(u.request_id);
    OutputToken(u, lp == tokens.logprobs.end() ? nullptr : &lp->second, done);
  }
}

void Engine::OutputToken(const scheduler::SequenceUpdate& u, const v1::TokenLogprob* logprob,
                         EngineClock::time_point now) {
  auto it = requests_.find(u.request_id);
  if (it == requests_.end()) return;
  std::shared_ptr<Tracked> keep = it->second;
  Tracked& t = *keep;
  if (metrics_ != nullptr) {
    if (!t.last_token) {
      metrics_->FirstToken(Seconds(now - t.req.arrival));
    } else {
      metrics_->InterToken(Seconds(now - *t.last_token));
    }
  }
  t.last_token = now;
  std::optional<v1::FinishReason> ended;
  if (u.finish_reason) ended = ToProto(*u.finish_reason);
  frontend::TokenOutput out = t.output->OnToken(u.token_id, ended, logprob);
  if (out.stopped_by_string && !u.finish_reason) {
    (void)scheduler_->Finish(t.req.id, scheduler::FinishReason::kStop);
  }
  t.req.stream->Write(std::move(out.response));
  if (out.finish_reason) EndRequest(t, absl::OkStatus(), out.finish_reason);
}

void Engine::PublishStats() {
  EngineStats s;
  int64_t waiting_tokens = 0;
  if (scheduler_ != nullptr) {
    s.running = scheduler_->num_running();
    s.waiting = scheduler_->num_waiting();
    for (int w = 0; w < scheduler_->num_workers(); ++w) {
      const scheduler::KvBlockAllocator& a = scheduler_->allocator(w);
      s.workers.push_back({a.num_blocks(), a.num_used(), scheduler_->num_running(w)});
      if (metrics_ != nullptr) {
        metrics_->SetKvUsage(w, a.num_blocks() == 0 ? 0.0
                                                    : static_cast<double>(a.num_used()) /
                                                          a.num_blocks());
      }
    }
    for (const auto& [id, t] : requests_) {
      const scheduler::Request* r = scheduler_->Find(id);
      if (r != nullptr && r->status != scheduler::RequestStatus::kRunning) {
        waiting_tokens += r->history_size();
      }
    }
    kv_ranks_published_ = std::max(kv_ranks_published_, scheduler_->num_workers());
  } else {
    // No group: requests waiting for one count as waiting; no worker holds
    // KV for them (the gauges follow the membership, not the last group).
    for (const auto& [id, t] : requests_) {
      if (!t->suspended) continue;
      ++s.waiting;
      waiting_tokens += t->history != nullptr ? t->history->history_size()
                                              : static_cast<int64_t>(t->num_prompt_tokens);
    }
    if (metrics_ != nullptr) {
      for (int w = 0; w < kv_ranks_published_; ++w) metrics_->SetKvUsage(w, 0.0);
    }
  }
  if (metrics_ != nullptr) metrics_->SetQueue(s.running, s.waiting);
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = std::move(s);
  waiting_tokens_ = waiting_tokens;
}

}  // namespace epserve::router
