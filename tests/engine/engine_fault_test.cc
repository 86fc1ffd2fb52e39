// Worker faults as the engine sees them: a rank that stalls, answers with an
// error or without a sampled token, a send that fails, the serving group lost
// or re-formed mid-step, and stale results. Every live request ends with a
// status naming the cause; the scheduler is rebuilt and later requests run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <set>

#include "engine_harness.h"

namespace epserve::router::testing {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

constexpr uint32_t kVocab = 1000;
using Streams = std::vector<std::shared_ptr<FakeStream>>;

class EngineFaultTest : public EngineTest {
 protected:
  EngineOptions Options(int step_timeout_ms = 5000) {
    EngineOptions o = DefaultOptions();
    o.step_timeout = std::chrono::milliseconds(step_timeout_ms);
    return o;
  }

  // n requests "<prefix>0".. with prompt {10 * i + 1}.
  Streams SubmitN(const std::string& prefix, int n, uint32_t max_tokens) {
    Streams out;
    for (int i = 0; i < n; ++i) {
      out.push_back(
          Submit(prefix + std::to_string(i), {static_cast<uint32_t>(10 * i + 1)}, max_tokens));
    }
    return out;
  }

  // Submits n requests and returns once one held step schedules them all
  // (the first runs alone in a step while the others queue); `before` runs
  // just before that step is sent. The transport stays in hold mode.
  Streams SubmitIntoOneHeldStep(const std::string& prefix, int n,
                                const std::function<void()>& before = {}) {
    transport().SetHold(true);
    Streams out;
    out.push_back(Submit(prefix + "0", {1}, 50));
    EXPECT_TRUE(transport().WaitForHeldStep(kWait));
    for (int i = 1; i < n; ++i) {
      out.push_back(Submit(prefix + std::to_string(i), {static_cast<uint32_t>(10 * i + 1)}, 50));
    }
    if (before) before();
    transport().DeliverHeld();
    EXPECT_TRUE(transport().WaitForSteps(2, kWait));
    const std::vector<RecordedStep> steps = transport().steps();
    if (steps.size() == 2) {
      for (int i = 0; i < n; ++i) {
        EXPECT_GE(RankScheduling(steps[1], prefix + std::to_string(i)), 0) << i;
      }
    }
    return out;
  }

  // A request submitted now completes with the model's tokens.
  void ExpectServes(const std::string& id) {
    auto s = Submit(id, {100}, 3);
    ASSERT_TRUE(s->WaitFinished(kWait)) << id;
    EXPECT_TRUE(s->status().ok()) << id << ": " << s->status();
    EXPECT_THAT(s->chunk_token_ids(), ElementsAreArray({101u, 102u, 103u})) << id;
  }

  // Per rank, the ids `step` scheduled there.
  static std::map<int, std::set<std::string>> ScheduledByRank(const RecordedStep& step) {
    std::map<int, std::set<std::string>> out;
    for (size_t r = 0; r < step.plans.size(); ++r) {
      for (const control::v1::SequencePlan& s : step.plans[r].sequences()) {
        out[static_cast<int>(r)].insert(s.request_id());
      }
    }
    return out;
  }

  // The plans of `next` release exactly what `failed` had scheduled, per rank.
  static void ExpectReleases(const RecordedStep& failed, const RecordedStep& next) {
    std::map<int, std::set<std::string>> expected = ScheduledByRank(failed);
    ASSERT_EQ(next.plans.size(), failed.plans.size());
    for (size_t r = 0; r < next.plans.size(); ++r) {
      const std::set<std::string>& want = expected[static_cast<int>(r)];
      EXPECT_THAT(next.plans[r].release_request_ids(), UnorderedElementsAreArray(want))
          << "rank " << r;
    }
  }
};

TEST_F(EngineFaultTest, StalledRankEndsEveryRequestWithinTheStepTimeout) {
  Start(Options(/*step_timeout_ms=*/200), Group(2, 64), NextTokenModel(kVocab));
  EngineClock::time_point t0;
  Streams streams = SubmitIntoOneHeldStep("s", 6, [&] {
    transport().SetRankMode(1, RankMode::kStall);
    transport().SetHold(false);  // rank 0 answers the next step
    t0 = EngineClock::now();
  });
  for (const auto& s : streams) {
    ExpectFinishedWith(*s, absl::StatusCode::kUnavailable,
                       "worker rank 1 did not answer within 200 ms");
  }
  const auto took = EngineClock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(190));
  EXPECT_LT(took, std::chrono::milliseconds(2000));
  ASSERT_EQ(transport().num_steps(), 2u);

  // The scheduler is rebuilt on the same group; the first plans tell each
  // rank to drop the requests that failed there.
  transport().SetRankMode(1, RankMode::kAnswer);
  ExpectServes("after");
  const std::vector<RecordedStep> steps = transport().steps();
  ASSERT_GE(steps.size(), 3u);
  ExpectReleases(steps[1], steps[2]);
  IdleStats();
}

TEST_F(EngineFaultTest, RankErrorEndsEveryRequestWithInternal) {
  Start(Options(), Group(2, 64), NextTokenModel(kVocab));
  transport().SetRankMode(0, RankMode::kError, "CUDA error: out of memory");
  Streams streams = SubmitN("e", 4, 50);
  for (const auto& s : streams) {
    ExpectFinishedWith(*s, absl::StatusCode::kInternal,
                       "failed on worker rank 0: CUDA error: out of memory");
  }
  transport().SetRankMode(0, RankMode::kAnswer);
  ExpectServes("after");
  IdleStats();
}

TEST_F(EngineFaultTest, ResultWithoutASampledTokenEndsWithInternal) {
  Start(Options(), Group(1, 64), NextTokenModel(kVocab));
  transport().SetRankMode(0, RankMode::kDropSequence);
  Streams streams = SubmitN("d", 2, 50);
  for (const auto& s : streams) {
    ExpectFinishedWith(*s, absl::StatusCode::kInternal, "no sampled token for request");
  }
  transport().SetRankMode(0, RankMode::kAnswer);
  ExpectServes("after");
}

TEST_F(EngineFaultTest, SendErrorEndsEveryRequestUnavailable) {
  Start(Options(), Group(2, 64), NextTokenModel(kVocab));
  transport().SetSendError("stream to rank 1 closed");
  Streams streams = SubmitN("x", 3, 50);
  for (const auto& s : streams) {
    ExpectFinishedWith(*s, absl::StatusCode::kUnavailable, "stream to rank 1 closed");
  }
  EXPECT_EQ(transport().num_steps(), 0u);
  transport().SetSendError("");
  ExpectServes("after");
}

TEST_F(EngineFaultTest, ServingLostMidStepThenANewEpochServes) {
  Start(Options(), Group(2, 64), NextTokenModel(kVocab));
  Streams streams = SubmitIntoOneHeldStep("l", 3);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  transport().StopServing("worker rank 1 missed 3 heartbeats");
  engine().OnServingChanged();
  for (const auto& s : streams) {
    ExpectFinishedWith(*s, absl::StatusCode::kUnavailable,
                       "failed: worker rank 1 missed 3 heartbeats");
  }
  transport().DropHeld();
  transport().SetHold(false);

  // Not serving: refused with the reason.
  auto refused = Submit("while-down", {1}, 3);
  ExpectFinishedWith(*refused, absl::StatusCode::kUnavailable,
                     "cluster is not serving: worker rank 1 missed 3 heartbeats");

  // A new group (epoch 2, other KV sizes): a new scheduler.
  transport().SetGroup(Group(2, /*kv_blocks=*/32, /*block_size=*/4, /*epoch=*/2));
  engine().OnServingChanged();
  ExpectServes("after");
  const std::vector<RecordedStep> steps = transport().steps();
  ASSERT_GE(steps.size(), 3u);
  EXPECT_EQ(steps[1].epoch, 1u);
  for (size_t i = 2; i < steps.size(); ++i) {
    EXPECT_EQ(steps[i].epoch, 2u);
    for (const control::v1::StepPlan& p : steps[i].plans) EXPECT_EQ(p.epoch(), 2u);
  }
  ExpectReleases(steps[1], steps[2]);
  const EngineStats stats = IdleStats();
  ASSERT_EQ(stats.workers.size(), 2u);
  EXPECT_EQ(stats.workers[0].kv_blocks_total, 32);
}

TEST_F(EngineFaultTest, GroupReformedMidStepAndItsLateResultsAreIgnored) {
  Start(Options(), Group(2, 64), NextTokenModel(kVocab));
  Streams streams = SubmitIntoOneHeldStep("g", 2);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  transport().SetGroup(Group(2, 64, 4, /*epoch=*/7));
  engine().OnServingChanged();
  for (const auto& s : streams) {
    ExpectFinishedWith(*s, absl::StatusCode::kUnavailable, "re-formed");
  }
  // The old group's answers arrive late (epoch 1, the failed step).
  transport().SetHold(false);
  ExpectServes("after");
  const std::vector<RecordedStep> steps = transport().steps();
  ASSERT_GE(steps.size(), 3u);
  EXPECT_EQ(steps[2].epoch, 7u);
  ExpectReleases(steps[1], steps[2]);
}

TEST_F(EngineFaultTest, StaleResultsAloneDoNotCompleteAStep) {
  Start(Options(/*step_timeout_ms=*/200), Group(2, 64), NextTokenModel(kVocab));
  transport().SetRankMode(0, RankMode::kStaleOnly);
  auto s = Submit("a", {1}, 5);
  auto t = Submit("b", {2}, 5);
  ExpectFinishedWith(*s, absl::StatusCode::kUnavailable, "worker rank 0 did not answer");
  ExpectFinishedWith(*t, absl::StatusCode::kUnavailable, "worker rank 0 did not answer");
  EXPECT_TRUE(s->chunks().empty());
}

TEST_F(EngineFaultTest, StaleResultsBeforeTheRealOnesAreIgnored) {
  Start(Options(), Group(2, 64), NextTokenModel(kVocab));
  transport().SetRankMode(0, RankMode::kStaleFirst);
  transport().SetRankMode(1, RankMode::kStaleFirst);
  auto a = Submit("a", {10}, 4);
  auto b = Submit("b", {20}, 4);
  ASSERT_TRUE(a->WaitFinished(kWait));
  ASSERT_TRUE(b->WaitFinished(kWait));
  EXPECT_TRUE(a->status().ok()) << a->status();
  EXPECT_TRUE(b->status().ok()) << b->status();
  // A stale result carries token + 1.
  EXPECT_THAT(a->chunk_token_ids(), ElementsAreArray({11u, 12u, 13u, 14u}));
  EXPECT_THAT(b->chunk_token_ids(), ElementsAreArray({21u, 22u, 23u, 24u}));
}

TEST_F(EngineFaultTest, LateResultOfATimedOutStepIsIgnored) {
  Start(Options(/*step_timeout_ms=*/200), Group(1, 64), NextTokenModel(kVocab));
  transport().SetHold(true);
  auto a = Submit("a", {1}, 5);
  ExpectFinishedWith(*a, absl::StatusCode::kUnavailable, "did not answer");
  auto b = Submit("b", {50}, 3);
  ASSERT_TRUE(transport().WaitForSteps(2, kWait));
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  transport().SetHold(false);  // step 1's answer, then step 2's
  ASSERT_TRUE(b->WaitFinished(kWait));
  EXPECT_TRUE(b->status().ok()) << b->status();
  EXPECT_THAT(b->chunk_token_ids(), ElementsAreArray({51u, 52u, 53u}));
}

}  // namespace
}  // namespace epserve::router::testing
