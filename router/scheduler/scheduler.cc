#include "router/scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::scheduler {
namespace {

bool Contains(const std::vector<uint32_t>& v, uint32_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

bool QueueLess(const Request* a, const Request* b) {
  return std::tie(a->spec.priority, a->arrival) < std::tie(b->spec.priority, b->arrival);
}

}  // namespace

bool ScheduledBatch::empty() const {
  for (const WorkerBatch& w : workers) {
    if (!w.sequences.empty()) return false;
  }
  return true;
}

bool Scheduler::QueueOrder::operator()(const Request* a, const Request* b) const {
  return QueueLess(a, b);
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(
    SchedulerOptions options, std::vector<int> blocks_per_worker) {
  if (options.max_tokens_per_step < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens_per_step must be >= 1, got ", options.max_tokens_per_step));
  }
  if (options.max_running_per_worker < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_running_per_worker must be >= 1, got ", options.max_running_per_worker));
  }
  if (options.block_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size must be >= 1, got ", options.block_size));
  }
  if (!(options.watermark >= 0.0 && options.watermark < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("watermark must be in [0, 1), got ", options.watermark));
  }
  if (blocks_per_worker.empty()) {
    return absl::InvalidArgumentError("blocks_per_worker: at least one worker expected");
  }
  for (size_t w = 0; w < blocks_per_worker.size(); ++w) {
    if (blocks_per_worker[w] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "blocks_per_worker[", w, "] must be >= 0, got ", blocks_per_worker[w]));
    }
  }
  return std::unique_ptr<Scheduler>(new Scheduler(options, std::move(blocks_per_worker)));
}

Scheduler::Scheduler(SchedulerOptions options, std::vector<int> blocks_per_worker)
    : options_(options), running_(blocks_per_worker.size()) {
  for (int n : blocks_per_worker) {
    allocators_.emplace_back(n, options_.block_size);
    watermark_blocks_.push_back(static_cast<int>(std::floor(options_.watermark * n)));
  }
}

int Scheduler::num_running() const {
  int n = 0;
  for (const auto& r : running_) n += static_cast<int>(r.size());
  return n;
}

const Request* Scheduler::Find(const std::string& id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second.get();
}

std::shared_ptr<const Request> Scheduler::Share(const std::string& id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second;
}

absl::Status Scheduler::Add(RequestSpec spec) {
  if (spec.prompt_ids.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("request ", spec.id, ": empty prompt"));
  }
  if (spec.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("request ", spec.id, ": max_tokens must be >= 1, got ", spec.max_tokens));
  }
  if (requests_.count(spec.id) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("request ", spec.id, ": duplicate id"));
  }
  // The KV of a finished request holds at most prompt + max_tokens - 1 tokens;
  // prompt + max_tokens keeps one token of slack. Alone on a worker (after the
  // watermark), that must fit, or the request could never finish.
  const int64_t total = static_cast<int64_t>(spec.prompt_ids.size()) + spec.max_tokens;
  int best = 0;
  bool fits = false;
  for (int w = 0; w < num_workers(); ++w) {
    const int usable = allocators_[w].num_blocks() - watermark_blocks_[w];
    best = std::max(best, usable);
    if (allocators_[w].BlocksForTokens(total) <= usable) fits = true;
  }
  if (!fits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request ", spec.id, ": prompt (", spec.prompt_ids.size(), " tokens) + max_tokens (",
        spec.max_tokens, ") needs ", allocators_[0].BlocksForTokens(total),
        " KV blocks; the largest worker has ", best, " usable"));
  }
  auto r = std::make_shared<Request>();
  r->spec = std::move(spec);
  r->arrival = next_arrival_++;
  Request* raw = r.get();
  requests_.emplace(raw->spec.id, std::move(r));
  waiting_.insert(raw);
  return absl::OkStatus();
}

absl::Status Scheduler::Restore(RequestSpec spec, std::vector<uint32_t> generated_ids) {
  if (static_cast<int64_t>(generated_ids.size()) >= spec.max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("request ", spec.id, ": ", generated_ids.size(),
                                                   " generated tokens, max_tokens ",
                                                   spec.max_tokens, ": nothing left to restore"));
  }
  const std::string id = spec.id;
  RETURN_IF_ERROR(Add(std::move(spec)));
  Request* r = requests_.at(id).get();
  // Still in waiting_ (ordered by priority and arrival, neither changes).
  r->generated_ids = std::move(generated_ids);
  if (!r->generated_ids.empty()) r->status = RequestStatus::kPreempted;
  return absl::OkStatus();
}

absl::Status Scheduler::Abort(const std::string& id) { return Finish(id, FinishReason::kAbort); }

absl::Status Scheduler::Finish(const std::string& id, FinishReason reason) {
  auto it = requests_.find(id);
  if (it == requests_.end()) {
    return absl::NotFoundError(absl::StrCat("request ", id, ": not live"));
  }
  Request* r = it->second.get();
  Release(r);
  waiting_.erase(r);
  pending_sample_.erase(id);
  r->status = RequestStatus::kFinished;
  r->finish_reason = reason;
  requests_.erase(it);
  return absl::OkStatus();
}

void Scheduler::Release(Request* r) {
  if (r->worker >= 0) {
    // Blocks come from our own allocator and are owned once: Free cannot fail.
    absl::Status s = allocators_[r->worker].Free(r->block_table);
    (void)s;
    auto& run = running_[r->worker];
    run.erase(std::find(run.begin(), run.end(), r));
  }
  r->block_table.clear();
  r->worker = -1;
}

void Scheduler::Preempt(Request* r, ScheduledBatch& batch) {
  Release(r);
  r->num_computed_tokens = 0;
  r->status = RequestStatus::kPreempted;
  ++r->num_preemptions;
  ++num_preemptions_;
  waiting_.insert(r);
  batch.preempted.push_back(r->spec.id);
}

bool Scheduler::EnsureBlocks(Request* r, int64_t num_tokens,
                             const std::unordered_set<const Request*>& scheduled,
                             ScheduledBatch& batch) {
  KvBlockAllocator& alloc = allocators_[r->worker];
  const int need = alloc.BlocksForTokens(num_tokens) - static_cast<int>(r->block_table.size());
  if (need <= 0) return true;
  while (alloc.num_free() < need) {
    // Victim: the unscheduled running sequence on this worker that comes last
    // in (priority, arrival) order. r itself is unscheduled, so one exists.
    Request* victim = nullptr;
    for (Request* c : running_[r->worker]) {
      if (scheduled.count(c) != 0) continue;
      if (victim == nullptr || QueueLess(victim, c)) victim = c;
    }
    Preempt(victim, batch);
    if (victim == r) return false;
  }
  auto blocks = alloc.Allocate(need);
  r->block_table.insert(r->block_table.end(), blocks->begin(), blocks->end());
  return true;
}

void Scheduler::Emit(Request* r, int64_t chunk, ScheduledBatch& batch) {
  ScheduledSequence s;
  s.request_id = r->spec.id;
  s.start_position = r->num_computed_tokens;
  s.token_ids.reserve(chunk);
  for (int64_t i = 0; i < chunk; ++i) s.token_ids.push_back(r->history_at(s.start_position + i));
  r->num_computed_tokens += chunk;
  s.block_table = r->block_table;
  s.sample = r->num_computed_tokens == r->history_size();
  if (s.sample) pending_sample_.insert(r->spec.id);
  WorkerBatch& wb = batch.workers[r->worker];
  wb.num_tokens += static_cast<int>(chunk);
  wb.sequences.push_back(std::move(s));
}

absl::StatusOr<ScheduledBatch> Scheduler::Schedule() {
  if (step_outstanding_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Schedule: step ", next_step_id_ - 1, " has no result yet (call OnStepResult first)"));
  }
  ScheduledBatch batch;
  batch.step_id = next_step_id_++;
  batch.workers.resize(num_workers());
  std::vector<int> budget(num_workers(), options_.max_tokens_per_step);
  std::unordered_set<const Request*> scheduled;

  for (int w = 0; w < num_workers(); ++w) {
    std::vector<Request*> order = running_[w];
    std::sort(order.begin(), order.end(), QueueLess);
    auto alive = [&](Request* r) { return r->worker == w && scheduled.count(r) == 0; };
    // 1. Decodes (one token left).
    for (Request* r : order) {
      if (budget[w] < 1) break;
      if (!alive(r) || r->num_uncomputed() != 1) continue;
      if (!EnsureBlocks(r, r->num_computed_tokens + 1, scheduled, batch)) continue;
      scheduled.insert(r);
      Emit(r, 1, batch);
      budget[w] -= 1;
    }
    // 2. Partial prefills.
    for (Request* r : order) {
      if (budget[w] < 1) break;
      if (!alive(r) || r->num_uncomputed() <= 1) continue;
      if (!EnsureBlocks(r, r->num_computed_tokens + 1, scheduled, batch)) continue;
      const KvBlockAllocator& alloc = allocators_[w];
      const int64_t room =
          static_cast<int64_t>(r->block_table.size() + alloc.num_free()) * alloc.block_size() -
          r->num_computed_tokens;
      const int64_t chunk = std::min({r->num_uncomputed(), static_cast<int64_t>(budget[w]), room});
      EnsureBlocks(r, r->num_computed_tokens + chunk, scheduled, batch);  // fits: no preemption
      scheduled.insert(r);
      Emit(r, chunk, batch);
      budget[w] -= static_cast<int>(chunk);
    }
  }
  // 3. Admission, unless this step preempted (a request that just lost its
  // blocks would otherwise race new ones for them; vLLM does the same).
  if (batch.preempted.empty()) Admit(batch, budget);
  step_outstanding_ = true;
  return batch;
}

void Scheduler::Admit(ScheduledBatch& batch, std::vector<int>& budget) {
  while (!waiting_.empty()) {
    Request* r = *waiting_.begin();
    int best = -1;
    int64_t best_chunk = 0;
    for (int w = 0; w < num_workers(); ++w) {
      if (num_running(w) >= options_.max_running_per_worker || budget[w] < 1) continue;
      const int64_t chunk = std::min(r->num_uncomputed(), static_cast<int64_t>(budget[w]));
      const KvBlockAllocator& a = allocators_[w];
      if (a.num_free() - a.BlocksForTokens(chunk) < watermark_blocks_[w]) continue;
      if (best < 0 ||
          std::make_pair(num_running(w), -a.num_free()) <
              std::make_pair(num_running(best), -allocators_[best].num_free())) {
        best = w;
        best_chunk = chunk;
      }
    }
    if (best < 0) return;  // strict FCFS: nobody overtakes the head
    waiting_.erase(waiting_.begin());
    r->worker = best;
    r->status = RequestStatus::kRunning;
    running_[best].push_back(r);
    auto blocks = allocators_[best].Allocate(allocators_[best].BlocksForTokens(best_chunk));
    r->block_table = std::move(*blocks);
    Emit(r, best_chunk, batch);
    budget[best] -= static_cast<int>(best_chunk);
  }
}

absl::StatusOr<std::vector<SequenceUpdate>> Scheduler::OnStepResult(
    const std::vector<WorkerToken>& sampled) {
  if (!step_outstanding_) {
    return absl::FailedPreconditionError("OnStepResult: no step outstanding");
  }
  // Validate first: nothing changes on error.
  std::unordered_set<std::string> seen;
  for (const WorkerToken& t : sampled) {
    if (!seen.insert(t.request_id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("OnStepResult: two tokens for request ", t.request_id));
    }
    if (requests_.count(t.request_id) == 0) continue;  // aborted/finished since: ignored
    if (pending_sample_.count(t.request_id) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "OnStepResult: request ", t.request_id, " was not sampled in step ", next_step_id_ - 1));
    }
  }
  for (const std::string& id : pending_sample_) {
    if (seen.count(id) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("OnStepResult: no sampled token for request ", id));
    }
  }
  std::vector<SequenceUpdate> updates;
  for (const WorkerToken& t : sampled) {
    auto it = requests_.find(t.request_id);
    if (it == requests_.end()) continue;
    Request* r = it->second.get();
    r->generated_ids.push_back(t.token_id);
    SequenceUpdate u{t.request_id, t.token_id, std::nullopt};
    if ((!r->spec.ignore_eos && Contains(r->spec.eos_token_ids, t.token_id)) ||
        Contains(r->spec.stop_token_ids, t.token_id)) {
      u.finish_reason = FinishReason::kStop;
    } else if (static_cast<int>(r->generated_ids.size()) >= r->spec.max_tokens) {
      u.finish_reason = FinishReason::kLength;
    }
    if (u.finish_reason) {
      r->status = RequestStatus::kFinished;
      r->finish_reason = u.finish_reason;
      Release(r);
      requests_.erase(it);
    }
    updates.push_back(std::move(u));
  }
  pending_sample_.clear();
  step_outstanding_ = false;
  return updates;
}

}  // namespace epserve::scheduler
