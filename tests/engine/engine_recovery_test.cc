// Recovery (EngineOptions::recovery_timeout): when the worker group is lost
// mid-generation the live requests wait for the next serving group and then
// resume, recomputed from their token history, so each stream carries exactly
// the tokens of an undisturbed run; without a new group in time they end with
// the cause; a request that keeps losing its group ends after max_recoveries.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "engine_harness.h"

namespace epserve::router::testing {
namespace {

using ::testing::ElementsAreArray;

constexpr uint32_t kVocab = 1000;
constexpr uint32_t kMaxTokens = 24;

class EngineRecoveryTest : public EngineTest {
 protected:
  static EngineOptions Options(std::chrono::milliseconds recovery, int max_recoveries = 3) {
    EngineOptions o = DefaultOptions();
    o.recovery_timeout = recovery;
    o.max_recoveries = max_recoveries;
    return o;
  }

  // Submits `n` requests and lets `steps` held steps run; the transport
  // stays in hold mode with the next step held.
  std::vector<std::shared_ptr<FakeStream>> RunSomeSteps(int n, int steps) {
    transport().SetHold(true);
    std::vector<std::shared_ptr<FakeStream>> out;
    out.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      out.push_back(Submit("r" + std::to_string(i), Prompt(i), kMaxTokens));
    }
    for (int s = 0; s < steps; ++s) {
      EXPECT_TRUE(transport().WaitForHeldStep(kWait));
      transport().DeliverHeld();
    }
    EXPECT_TRUE(transport().WaitForHeldStep(kWait));
    return out;
  }

  static std::vector<uint32_t> Prompt(int i) {
    return {static_cast<uint32_t>(7 * i + 3), static_cast<uint32_t>(7 * i + 5)};
  }

  // The group dies with a step in flight.
  void LoseTheGroup() {
    transport().StopServing("worker rank 1 missed 3 heartbeats");
    engine().OnServingChanged();
    transport().DropHeld();
    transport().SetHold(false);
  }
};

TEST_F(EngineRecoveryTest, RequestsResumeOnTheNextGroupWithTheTokensOfAnUndisturbedRun) {
  const Model model = HistoryHashModel(kVocab);  // any wrong token changes the rest
  Start(Options(std::chrono::seconds(10)), Group(2, 64), model);
  auto streams = RunSomeSteps(3, 6);
  for (const auto& s : streams) ASSERT_FALSE(s->finished());
  LoseTheGroup();

  // They wait (counted as waiting, no worker holds their KV) instead of ending.
  ASSERT_TRUE(WaitForStats([](const EngineStats& s) { return s.waiting == 3 && s.running == 0; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  for (const auto& s : streams) EXPECT_FALSE(s->finished());
  EXPECT_EQ(Metric("epserve_kv_cache_usage_ratio", {{"worker", "0"}}), 0.0);

  // A new group (epoch 2, smaller caches): every request resumes and ends
  // with exactly the tokens the model gives its prompt.
  transport().SetGroup(Group(2, /*kv_blocks=*/32, /*block_size=*/4, /*epoch=*/2));
  engine().OnServingChanged();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(streams[i]->WaitFinished(kWait)) << i;
    EXPECT_TRUE(streams[i]->status().ok()) << i << ": " << streams[i]->status();
    EXPECT_THAT(streams[i]->chunk_token_ids(),
                ElementsAreArray(Generate(model, Prompt(i), kMaxTokens)))
        << i;
    ASSERT_TRUE(streams[i]->complete().has_value());
    EXPECT_EQ(streams[i]->complete()->usage().prompt_tokens(), 2u);
    EXPECT_EQ(streams[i]->complete()->usage().completion_tokens(), kMaxTokens);
  }
  // Recomputed from position 0 on the new group, once each.
  EXPECT_EQ(transport().recomputed().size(), 3u);
  EXPECT_EQ(Metric("epserve_requests_recovered_total"), 3.0);
  EXPECT_EQ(Metric("epserve_recovery_seconds"), 1.0);  // one recovery observed
  IdleStats();
}

TEST_F(EngineRecoveryTest, WithoutANewGroupInTimeTheyEndWithTheCause) {
  Start(Options(std::chrono::milliseconds(300)), Group(2, 64), NextTokenModel(kVocab));
  auto streams = RunSomeSteps(2, 3);
  const auto t0 = std::chrono::steady_clock::now();
  LoseTheGroup();
  for (const auto& s : streams) {
    ExpectFinishedWith(*s, absl::StatusCode::kUnavailable,
                       "worker rank 1 missed 3 heartbeats; the cluster did not serve again "
                       "within 300 ms");
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(took, 0.25);
  EXPECT_LT(took, 3.0);
  EXPECT_EQ(Metric("epserve_requests_recovered_total"), 0.0);
}

TEST_F(EngineRecoveryTest, ARequestThatKeepsLosingItsGroupEndsAfterMaxRecoveries) {
  Start(Options(std::chrono::seconds(10), /*max_recoveries=*/1), Group(1, 64),
        NextTokenModel(kVocab));
  auto streams = RunSomeSteps(1, 2);
  LoseTheGroup();
  transport().SetHold(true);
  transport().SetGroup(Group(1, 64, 4, /*epoch=*/2));
  engine().OnServingChanged();
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));  // resumed on epoch 2
  EXPECT_FALSE(streams[0]->finished());
  LoseTheGroup();
  ExpectFinishedWith(*streams[0], absl::StatusCode::kUnavailable,
                     "already lived through 1 such failures");
}

TEST_F(EngineRecoveryTest, AbortWhileWaitingForAGroupEndsTheRequest) {
  Start(Options(std::chrono::seconds(10)), Group(1, 64), NextTokenModel(kVocab));
  auto streams = RunSomeSteps(2, 2);
  LoseTheGroup();
  ASSERT_TRUE(WaitForStats([](const EngineStats& s) { return s.waiting == 2; }));
  EXPECT_EQ(engine().Abort("r0"), absl::OkStatus());
  ASSERT_TRUE(streams[0]->WaitFinished(kWait));
  ASSERT_TRUE(streams[0]->complete().has_value());
  EXPECT_EQ(streams[0]->complete()->finish_reason(), v1::FINISH_REASON_ABORT);
  transport().SetGroup(Group(1, 64, 4, /*epoch=*/2));
  engine().OnServingChanged();
  ASSERT_TRUE(streams[1]->WaitFinished(kWait));
  EXPECT_TRUE(streams[1]->status().ok()) << streams[1]->status();
  EXPECT_THAT(streams[1]->chunk_token_ids(),
              ElementsAreArray(Generate(NextTokenModel(kVocab), Prompt(1), kMaxTokens)));
}

// A request submitted while the group is being replaced waits with the
// others and starts on the new group (after them), instead of being refused.
TEST_F(EngineRecoveryTest, RequestSubmittedWhileWaitingStartsOnTheNewGroup) {
  const Model model = NextTokenModel(kVocab);
  Start(Options(std::chrono::seconds(10)), Group(1, 64), model);
  auto streams = RunSomeSteps(1, 2);
  LoseTheGroup();
  ASSERT_TRUE(WaitForStats([](const EngineStats& s) { return s.waiting == 1; }));
  EXPECT_TRUE(engine().recovering());
  auto late = Submit("late", {40, 41}, 5);
  ASSERT_TRUE(WaitForStats([](const EngineStats& s) { return s.waiting == 2; }));
  EXPECT_FALSE(late->finished());
  transport().SetGroup(Group(1, 64, 4, /*epoch=*/2));
  engine().OnServingChanged();
  ASSERT_TRUE(late->WaitFinished(kWait));
  EXPECT_TRUE(late->status().ok()) << late->status();
  EXPECT_THAT(late->chunk_token_ids(), ElementsAreArray(Generate(model, {40, 41}, 5)));
  ASSERT_TRUE(streams[0]->WaitFinished(kWait));
  EXPECT_TRUE(streams[0]->status().ok()) << streams[0]->status();
  EXPECT_FALSE(engine().recovering());
  EXPECT_EQ(Metric("epserve_requests_recovered_total"), 1.0);  // the late one did not resume
}

// Recovery off (the default): the requests end at once, as before.
TEST_F(EngineRecoveryTest, RecoveryOffEndsAtOnce) {
  Start(Options(std::chrono::milliseconds(0)), Group(2, 64), NextTokenModel(kVocab));
  auto streams = RunSomeSteps(2, 2);
  LoseTheGroup();
  for (const auto& s : streams) {
    ExpectFinishedWith(*s, absl::StatusCode::kUnavailable, "worker rank 1 missed 3 heartbeats");
  }
}

}  // namespace
}  // namespace epserve::router::testing
