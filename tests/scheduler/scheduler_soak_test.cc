// Randomized soak (fixed seed, bounded): random arrivals, lengths, priorities,
// and aborts over 3 small workers so preemption happens often.
// Invariants are checked every step by the harness; at the end every request
// finished or was aborted, finished outputs equal an uncontended run, and KV
// usage is zero.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <set>

#include "router/scheduler/scheduler.h"
#include "scheduler_harness.h"

namespace epserve::scheduler {
namespace {

using testing::Harness;

TEST(SchedulerSoakTest, RandomTrafficKeepsInvariants) {
  std::mt19937 rng(20240607);
  SchedulerOptions o;
  o.max_tokens_per_step = 48;
  o.max_running_per_worker = 6;
  o.block_size = 4;
  o.watermark = 0.05;
  Harness h(o, {24, 40, 32});
  constexpr int kRequests = 200;
  std::vector<RequestSpec> specs;
  std::set<std::string> aborted;
  int added = 0;
  int steps = 0;
  for (int step = 0; step < 20000; ++step) {
    // Arrivals: 0-2 per step.
    for (int k = std::uniform_int_distribution<int>(0, 2)(rng); k > 0 && added < kRequests; --k) {
      RequestSpec s;
      s.id = "r" + std::to_string(added++);
      const int len = std::uniform_int_distribution<int>(1, 60)(rng);
      for (int i = 0; i < len; ++i) s.prompt_ids.push_back(std::uniform_int_distribution<uint32_t>(0, 4999)(rng));
      s.max_tokens = std::uniform_int_distribution<int>(1, 24)(rng);
      s.priority = std::uniform_int_distribution<int>(0, 2)(rng);
      s.eos_token_ids = {4999};
      specs.push_back(s);
      h.Add(s);
    }
    // Aborts: ~1 in 6 steps, of a random live request (waiting or running).
    if (std::uniform_int_distribution<int>(0, 5)(rng) == 0) {
      std::vector<std::string> live;
      for (const RequestSpec& s : specs) {
        if (h.sched().Find(s.id) != nullptr) live.push_back(s.id);
      }
      if (!live.empty()) {
        const std::string id = live[std::uniform_int_distribution<size_t>(0, live.size() - 1)(rng)];
        ASSERT_TRUE(h.sched().Abort(id).ok());
        aborted.insert(id);
      }
    }
    if (added == kRequests && h.sched().num_live() == 0) break;
    h.Step();
    ++steps;
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_EQ(added, kRequests);
  EXPECT_EQ(h.sched().num_live(), 0) << "requests left after 20000 steps";
  EXPECT_EQ(h.TotalUsedBlocks(), 0);
  EXPECT_GT(h.sched().num_preemptions(), 0u) << "the soak should exercise preemption";
  int finished = 0;
  for (const RequestSpec& s : specs) {
    if (aborted.count(s.id)) continue;
    ASSERT_EQ(h.finished().count(s.id), 1u) << s.id;
    EXPECT_EQ(h.output(s.id), testing::Uncontended(s)) << s.id;
    ++finished;
  }
  EXPECT_GT(finished, kRequests / 2);
  std::printf("soak: %d steps, %d finished, %zu aborted, %llu preemptions\n", steps, finished,
              aborted.size(), static_cast<unsigned long long>(h.sched().num_preemptions()));
}

}  // namespace
}  // namespace epserve::scheduler
