// Test harness: drives a Scheduler with a deterministic fake model over a
// simulated paged KV cache, and checks invariants after every step.
//
// The fake model computes the next token from the sequence's history as read
// back from the KV blocks the StepPlan named (not from the scheduler's own
// state), so a wrong block table, a block shared by two sequences, or a lost
// token after preemption changes the output.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "router/scheduler/scheduler.h"

namespace epserve::scheduler::testing {

constexpr uint32_t kUnwritten = 0xFFFFFFFFu;

// next token = f(history): a hash of every (position, token), kept below 5000.
inline uint32_t FakeModel(const std::vector<uint32_t>& history) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < history.size(); ++i) {
    h ^= history[i] + 0x9E3779B97F4A7C15ull * (i + 1);
    h *= 1099511628211ull;
  }
  return static_cast<uint32_t>(h % 5000);
}

// "a@3+1*[0,1]": request a, start position 3, 1 token, samples, blocks 0 and 1.
inline std::string Describe(const ScheduledSequence& s) {
  return absl::StrCat(s.request_id, "@", s.start_position, "+", s.token_ids.size(),
                      s.sample ? "*" : "", "[", absl::StrJoin(s.block_table, ","), "]");
}

// "w0: a@0+4*[0] | w1: -" ; preemptions appended as " preempt(b)".
inline std::string Describe(const ScheduledBatch& b) {
  std::vector<std::string> ws;
  for (size_t w = 0; w < b.workers.size(); ++w) {
    std::vector<std::string> seqs;
    for (const auto& s : b.workers[w].sequences) seqs.push_back(Describe(s));
    ws.push_back(absl::StrCat("w", w, ": ", seqs.empty() ? "-" : absl::StrJoin(seqs, " ")));
  }
  std::string out = absl::StrJoin(ws, " | ");
  if (!b.preempted.empty()) absl::StrAppend(&out, " preempt(", absl::StrJoin(b.preempted, ","), ")");
  return out;
}

class Harness {
 public:
  Harness(SchedulerOptions options, std::vector<int> blocks_per_worker) {
    auto s = Scheduler::Create(options, blocks_per_worker);
    EXPECT_TRUE(s.ok()) << s.status();
    sched_ = std::move(*s);
    for (int n : blocks_per_worker) {
      kv_.emplace_back(static_cast<size_t>(n) * options.block_size, kUnwritten);
    }
  }

  Scheduler& sched() { return *sched_; }

  void Add(RequestSpec spec) {
    prompts_[spec.id] = spec.prompt_ids;
    absl::Status s = sched_->Add(std::move(spec));
    ASSERT_TRUE(s.ok()) << s;
  }

  // A request that generated `generated` under another scheduler.
  void Restore(RequestSpec spec, std::vector<uint32_t> generated) {
    prompts_[spec.id] = spec.prompt_ids;
    outputs_[spec.id] = generated;
    absl::Status s = sched_->Restore(std::move(spec), std::move(generated));
    ASSERT_TRUE(s.ok()) << s;
  }

  // Schedule + fake model + OnStepResult; returns Describe(batch).
  std::string Step() {
    auto batch = sched_->Schedule();
    EXPECT_TRUE(batch.ok()) << batch.status();
    if (!batch.ok()) return "error";
    CheckInvariants(*batch);
    auto updates = sched_->OnStepResult(RunModel(*batch));
    EXPECT_TRUE(updates.ok()) << updates.status();
    if (updates.ok()) Record(*updates);
    return Describe(*batch);
  }

  // The simulated workers: write each chunk's tokens into its blocks, then
  // sample from the history read back through the block table.
  std::vector<WorkerToken> RunModel(const ScheduledBatch& batch) {
    std::vector<WorkerToken> out;
    const int bs = sched_->options().block_size;
    for (size_t w = 0; w < batch.workers.size(); ++w) {
      for (const ScheduledSequence& s : batch.workers[w].sequences) {
        auto slot = [&](int64_t pos) -> uint32_t& {
          return kv_[w][static_cast<size_t>(s.block_table.at(pos / bs)) * bs + pos % bs];
        };
        for (size_t i = 0; i < s.token_ids.size(); ++i) slot(s.start_position + i) = s.token_ids[i];
        if (!s.sample) continue;
        std::vector<uint32_t> history;
        const int64_t end = s.start_position + static_cast<int64_t>(s.token_ids.size());
        for (int64_t p = 0; p < end; ++p) history.push_back(slot(p));
        out.push_back({s.request_id, FakeModel(history)});
      }
    }
    return out;
  }

  void Record(const std::vector<SequenceUpdate>& updates) {
    for (const SequenceUpdate& u : updates) {
      outputs_[u.request_id].push_back(u.token_id);
      if (u.finish_reason) finished_[u.request_id] = *u.finish_reason;
    }
  }

  // Every step: budget and running caps respected, no block owned twice, the
  // allocators' used counts equal the block tables' sizes, tables cover the
  // scheduled tokens.
  void CheckInvariants(const ScheduledBatch& batch) {
    const SchedulerOptions& o = sched_->options();
    for (size_t w = 0; w < batch.workers.size(); ++w) {
      int tokens = 0;
      for (const auto& s : batch.workers[w].sequences) {
        tokens += static_cast<int>(s.token_ids.size());
        const int64_t end = s.start_position + static_cast<int64_t>(s.token_ids.size());
        EXPECT_EQ(static_cast<int64_t>(s.block_table.size()),
                  sched_->allocator(w).BlocksForTokens(end)) << Describe(s);
      }
      EXPECT_EQ(tokens, batch.workers[w].num_tokens);
      EXPECT_LE(tokens, o.max_tokens_per_step) << "worker " << w;
      EXPECT_LE(sched_->num_running(w), o.max_running_per_worker);
    }
    std::vector<std::set<uint32_t>> owned(sched_->num_workers());
    std::vector<int> used(sched_->num_workers(), 0);
    for (const auto& [id, unused] : prompts_) {
      const Request* r = sched_->Find(id);
      if (r == nullptr || r->worker < 0) continue;
      for (uint32_t b : r->block_table) {
        EXPECT_TRUE(owned[r->worker].insert(b).second) << "block " << b << " owned twice";
      }
      used[r->worker] += static_cast<int>(r->block_table.size());
    }
    for (int w = 0; w < sched_->num_workers(); ++w) {
      EXPECT_EQ(used[w], sched_->allocator(w).num_used()) << "worker " << w;
    }
  }

  int TotalUsedBlocks() const {
    int n = 0;
    for (int w = 0; w < sched_->num_workers(); ++w) n += sched_->allocator(w).num_used();
    return n;
  }

  const std::vector<uint32_t>& output(const std::string& id) { return outputs_[id]; }
  const std::map<std::string, FinishReason>& finished() const { return finished_; }

 private:
  std::unique_ptr<Scheduler> sched_;
  std::vector<std::vector<uint32_t>> kv_;  // per worker [num_blocks * block_size]
  std::map<std::string, std::vector<uint32_t>> prompts_;
  std::map<std::string, std::vector<uint32_t>> outputs_;
  std::map<std::string, FinishReason> finished_;
};

inline std::vector<uint32_t> Prompt(int n, uint32_t base = 100) {
  std::vector<uint32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(base + i);
  return p;
}

inline RequestSpec Spec(std::string id, int prompt_len, int max_tokens, int priority = 0) {
  RequestSpec s;
  s.prompt_ids = Prompt(prompt_len, 100 + 17 * static_cast<uint32_t>(id.size() + id[0]));
  s.id = std::move(id);
  s.max_tokens = max_tokens;
  s.priority = priority;
  return s;
}

// The output of `spec` run alone on a roomy scheduler.
inline std::vector<uint32_t> Uncontended(const RequestSpec& spec) {
  SchedulerOptions o;
  o.block_size = 4;
  Harness h(o, {4096});
  h.Add(spec);
  for (int i = 0; i < 100000 && h.sched().num_live() > 0; ++i) h.Step();
  return h.output(spec.id);
}

}  // namespace epserve::scheduler::testing
