#include "fake_transport.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace epserve::router::testing {

Model NextTokenModel(uint32_t vocab) {
  return [vocab](const std::vector<uint32_t>& history) { return (history.back() + 1) % vocab; };
}

Model HistoryHashModel(uint32_t vocab) {
  return [vocab](const std::vector<uint32_t>& history) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < history.size(); ++i) {
      h ^= history[i] + 0x9E3779B97F4A7C15ull * (i + 1);
      h *= 1099511628211ull;
    }
    return static_cast<uint32_t>(h % vocab);
  };
}

std::vector<uint32_t> Generate(const Model& model, std::vector<uint32_t> prompt, int max_tokens,
                               const std::vector<uint32_t>& stop_ids) {
  std::vector<uint32_t> out;
  while (static_cast<int>(out.size()) < max_tokens) {
    const uint32_t t = model(prompt);
    out.push_back(t);
    prompt.push_back(t);
    if (std::find(stop_ids.begin(), stop_ids.end(), t) != stop_ids.end()) break;
  }
  return out;
}

FakeTransport::FakeTransport(GroupView group, Model model)
    : model_(std::move(model)), group_(std::move(group)) {
  answer_thread_ = std::thread([this] { AnswerLoop(); });
}

FakeTransport::~FakeTransport() { Detach(); }

void FakeTransport::Attach(Engine* engine) {
  std::lock_guard<std::mutex> lock(mu_);
  engine_ = engine;
}

void FakeTransport::Detach() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (answer_thread_.joinable()) answer_thread_.join();
}

std::optional<GroupView> FakeTransport::ServingGroup(std::string* reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!group_) *reason = not_serving_reason_;
  return group_;
}

void FakeTransport::SetGroup(GroupView group) {
  std::lock_guard<std::mutex> lock(mu_);
  group_ = std::move(group);
}

void FakeTransport::StopServing(std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  group_.reset();
  not_serving_reason_ = std::move(reason);
}

void FakeTransport::SetRankMode(int rank, RankMode mode, std::string error) {
  std::lock_guard<std::mutex> lock(mu_);
  modes_[rank] = {mode, std::move(error)};
}

void FakeTransport::SetSendError(std::string error) {
  std::lock_guard<std::mutex> lock(mu_);
  send_error_ = std::move(error);
}

void FakeTransport::SetDelay(std::chrono::milliseconds delay) {
  std::lock_guard<std::mutex> lock(mu_);
  delay_ = delay;
}

void FakeTransport::SetLogprobs(bool on) {
  std::lock_guard<std::mutex> lock(mu_);
  logprobs_ = on;
}

void FakeTransport::SetHold(bool hold) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = hold;
  }
  if (!hold) DeliverHeld();
}

bool FakeTransport::WaitForHeldStep(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [this] { return held_steps_ > 0; });
}

void FakeTransport::DeliverHeld() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = EngineClock::now();
  for (Delivery& d : held_) {
    d.due = now;
    queue_.push_back(std::move(d));
  }
  held_.clear();
  held_steps_ = 0;
  cv_.notify_all();
}

void FakeTransport::DropHeld() {
  std::lock_guard<std::mutex> lock(mu_);
  held_.clear();
  held_steps_ = 0;
}

std::vector<RecordedStep> FakeTransport::steps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return steps_;
}

size_t FakeTransport::num_steps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return steps_.size();
}

bool FakeTransport::WaitForSteps(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return steps_.size() >= n; });
}

std::set<std::string> FakeTransport::recomputed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return recomputed_;
}

std::vector<std::string> FakeTransport::violations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return violations_;
}

void FakeTransport::Violation(std::string what) { violations_.push_back(std::move(what)); }

absl::Status FakeTransport::SendStep(uint64_t epoch,
                                     const std::vector<control::v1::StepPlan>& plans) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!group_ || group_->epoch != epoch) {
    return absl::UnavailableError(absl::StrCat("collective group epoch ", epoch, " is gone"));
  }
  if (!send_error_.empty()) return absl::UnavailableError(send_error_);
  steps_.push_back({epoch, plans});
  cv_.notify_all();

  const uint64_t step_id = plans.empty() ? 0 : plans[0].step_id();
  const std::string where = absl::StrCat("step ", step_id, ": ");
  if (plans.size() != group_->kv_blocks.size()) {
    Violation(absl::StrCat(where, plans.size(), " plans for ", group_->kv_blocks.size(), " ranks"));
  }
  if (step_id <= last_step_id_) {
    Violation(absl::StrCat(where, "step id not above the previous one (", last_step_id_, ")"));
  }
  last_step_id_ = std::max(last_step_id_, step_id);
  std::set<std::string> in_step;
  for (size_t r = 0; r < plans.size(); ++r) {
    if (plans[r].step_id() != step_id) {
      Violation(absl::StrCat(where, "rank ", r, " has step id ", plans[r].step_id()));
    }
    if (plans[r].epoch() != epoch) {
      Violation(absl::StrCat(where, "rank ", r, " has epoch ", plans[r].epoch(),
                             ", sent with epoch ", epoch));
    }
    for (const control::v1::SequencePlan& s : plans[r].sequences()) {
      if (!in_step.insert(s.request_id()).second) {
        Violation(absl::StrCat(where, "request '", s.request_id(), "' scheduled twice"));
      }
    }
  }

  const auto due = EngineClock::now() + delay_;
  const bool held = hold_;
  for (size_t r = 0; r < plans.size() && r < group_->kv_blocks.size(); ++r) {
    const uint32_t rank = static_cast<uint32_t>(r);
    std::vector<std::pair<std::string, uint32_t>> sampled = FeedRank(rank, plans[r]);
    auto mode_it = modes_.find(static_cast<int>(r));
    const RankMode mode = mode_it == modes_.end() ? RankMode::kAnswer : mode_it->second.first;
    if (mode == RankMode::kStall) continue;

    control::v1::StepResult result;
    result.set_step_id(step_id);
    result.set_step_seconds(0.001);
    if (mode == RankMode::kError) {
      result.set_error(mode_it->second.second);
    } else {
      for (size_t i = 0; i < sampled.size(); ++i) {
        if (mode == RankMode::kDropSequence && i == 0) continue;
        control::v1::SequenceResult* sr = result.add_sequences();
        sr->set_request_id(sampled[i].first);
        sr->add_token_ids(sampled[i].second);
        if (logprobs_) {
          v1::TokenLogprob* lp = sr->add_logprobs();
          lp->set_token_id(sampled[i].second);
          lp->set_logprob(-0.5f);
        }
      }
    }
    std::vector<Delivery> out;
    if (mode == RankMode::kStaleOnly || mode == RankMode::kStaleFirst) {
      // The same answer with other tokens, once from another epoch and once
      // for another step.
      control::v1::StepResult stale = result;
      for (control::v1::SequenceResult& s : *stale.mutable_sequences()) {
        s.set_token_ids(0, s.token_ids(0) + 1);
      }
      out.push_back({due, rank, epoch + 1, stale});
      stale.set_step_id(step_id - 1);
      out.push_back({due, rank, epoch, stale});
    }
    if (mode != RankMode::kStaleOnly) {
      const auto at = mode == RankMode::kStaleFirst ? due + std::chrono::milliseconds(20) : due;
      out.push_back({at, rank, epoch, std::move(result)});
    }
    for (Delivery& d : out) {
      if (held) {
        held_.push_back(std::move(d));
      } else {
        queue_.push_back(std::move(d));
      }
    }
  }
  if (held) ++held_steps_;
  cv_.notify_all();
  return absl::OkStatus();
}

std::vector<std::pair<std::string, uint32_t>> FakeTransport::FeedRank(
    uint32_t rank, const control::v1::StepPlan& plan) {
  const std::string where = absl::StrCat("step ", plan.step_id(), " rank ", rank, ": ");
  const int block_size = group_->block_size;
  const uint32_t num_blocks = static_cast<uint32_t>(group_->kv_blocks[rank]);
  std::map<std::string, RankSequence>& held = ranks_[rank];

  // The worker drops released state before it runs the plan's sequences, so
  // a released id may start over (position 0) in the same plan.
  std::set<std::string> continued;
  for (const control::v1::SequencePlan& s : plan.sequences()) {
    if (s.start_position() != 0) continued.insert(s.request_id());
  }
  for (const std::string& id : plan.release_request_ids()) {
    if (continued.count(id) != 0) {
      Violation(absl::StrCat(where, "releases '", id, "' and continues it in the same plan"));
    }
    held.erase(id);
  }

  std::vector<std::pair<std::string, uint32_t>> sampled;
  for (const control::v1::SequencePlan& s : plan.sequences()) {
    const std::string& id = s.request_id();
    const std::string at = absl::StrCat(where, "'", id, "'@", s.start_position(), ": ");
    const uint64_t start = s.start_position();
    const uint64_t end = start + static_cast<uint64_t>(s.token_ids_size());
    if (s.token_ids_size() == 0) Violation(absl::StrCat(at, "no tokens"));
    if (s.num_prompt_tokens() == 0) Violation(absl::StrCat(at, "num_prompt_tokens not set"));

    // Rank-local continuity.
    auto it = held.find(id);
    if (start == 0) {
      if (it != held.end()) {
        Violation(absl::StrCat(at, "re-fed from 0 while the rank still holds it (no release)"));
      }
      held[id] = RankSequence{};
      it = held.find(id);
    } else if (it == held.end() || it->second.fed.size() != start) {
      Violation(absl::StrCat(at, "the rank was fed ", it == held.end() ? 0 : it->second.fed.size(),
                             " tokens"));
      if (it == held.end()) it = held.emplace(id, RankSequence{}).first;
      it->second.fed.resize(start, 0);
    }
    RankSequence& rs = it->second;

    // Block table.
    const std::vector<uint32_t> table(s.block_table().begin(), s.block_table().end());
    if (static_cast<uint64_t>(table.size()) * static_cast<uint64_t>(block_size) < end) {
      Violation(absl::StrCat(at, table.size(), " blocks of ", block_size, " do not cover ", end,
                             " tokens"));
    }
    std::set<uint32_t> unique(table.begin(), table.end());
    if (unique.size() != table.size()) Violation(absl::StrCat(at, "a block twice in its table"));
    if (!unique.empty() && *unique.rbegin() >= num_blocks) {
      Violation(absl::StrCat(at, "block ", *unique.rbegin(), " beyond ", num_blocks));
    }
    if (start > 0 && (table.size() < rs.blocks.size() ||
                      !std::equal(rs.blocks.begin(), rs.blocks.end(), table.begin()))) {
      Violation(absl::StrCat(at, "block table [", absl::StrJoin(table, ","), "] does not extend [",
                             absl::StrJoin(rs.blocks, ","), "]"));
    }
    rs.blocks = table;

    // Known history across ranks.
    Known& k = known_[id];
    if (start == 0 && k.num_prompt_tokens != 0 && k.num_prompt_tokens != s.num_prompt_tokens()) {
      // The id was reused by a new request with another prompt.
      k = Known{};
    }
    if (start == 0 && k.sampled) recomputed_.insert(id);
    if (k.num_prompt_tokens == 0) k.num_prompt_tokens = s.num_prompt_tokens();
    if (k.num_prompt_tokens != s.num_prompt_tokens()) {
      Violation(absl::StrCat(at, "num_prompt_tokens ", s.num_prompt_tokens(), ", earlier ",
                             k.num_prompt_tokens));
    }
    for (int i = 0; i < s.token_ids_size(); ++i) {
      const uint64_t pos = start + static_cast<uint64_t>(i);
      const uint32_t tok = s.token_ids(i);
      if (pos < k.history.size()) {
        if (k.history[pos] != tok) {
          Violation(absl::StrCat(at, "fed ", tok, " at position ", pos, ", history has ",
                                 k.history[pos]));
        }
      } else if (pos == k.history.size() && pos < k.num_prompt_tokens) {
        k.history.push_back(tok);
      } else {
        Violation(absl::StrCat(at, "fed position ", pos, " before it was known (history has ",
                               k.history.size(), " tokens, prompt ", k.num_prompt_tokens, ")"));
        k.history.resize(pos);
        k.history.push_back(tok);
      }
      rs.fed.push_back(tok);
    }

    if (s.sample()) {
      if (end < k.num_prompt_tokens) {
        Violation(absl::StrCat(at, "samples inside the prompt (", k.num_prompt_tokens, ")"));
      }
      const uint32_t tok = model_(rs.fed);
      if (end < k.history.size()) {
        // Sampling a position again (a recompute may only resume at the end).
        if (k.history[end] != tok) {
          Violation(absl::StrCat(at, "sampled position ", end, " again"));
        }
      } else {
        k.history.push_back(tok);
      }
      k.sampled = true;
      sampled.emplace_back(id, tok);
    } else if (end >= std::max<uint64_t>(k.history.size(), k.num_prompt_tokens)) {
      Violation(absl::StrCat(at, "reaches the end of its history without sampling"));
    }
  }

  // No block held by two requests on this rank.
  std::map<uint32_t, std::string> owner;
  for (const auto& [id, rs] : held) {
    for (uint32_t b : rs.blocks) {
      auto [o, inserted] = owner.emplace(b, id);
      if (!inserted) {
        Violation(absl::StrCat(where, "block ", b, " held by '", o->second, "' and '", id, "'"));
      }
    }
  }
  return sampled;
}

void FakeTransport::AnswerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    const auto due = queue_.front().due;
    if (EngineClock::now() < due) {
      cv_.wait_until(lock, due, [this] { return stop_; });
      continue;
    }
    Delivery d = std::move(queue_.front());
    queue_.pop_front();
    Engine* engine = engine_;
    lock.unlock();
    if (engine != nullptr) engine->OnStepResult(d.rank, d.epoch, d.result);
    lock.lock();
  }
}

}  // namespace epserve::router::testing
