// Shutdown: Drain lets running requests finish (bounded) and refuses new
// ones; Stop ends whatever is left with UNAVAILABLE.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine_harness.h"

namespace epserve::router::testing {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kVocab = 1000;

using EngineDrainTest = EngineTest;

TEST_F(EngineDrainTest, DrainWaitsForRunningRequestsThenRefusesNewOnes) {
  Start(DefaultOptions(), Group(2, 64), NextTokenModel(kVocab));
  transport().SetDelay(std::chrono::milliseconds(1));
  std::vector<std::shared_ptr<FakeStream>> streams;
  for (int i = 0; i < 4; ++i) {
    streams.push_back(Submit("d" + std::to_string(i), {static_cast<uint32_t>(i + 1)}, 20));
  }
  ASSERT_TRUE(transport().WaitForSteps(1, kWait));
  EXPECT_EQ(engine().Drain(std::chrono::milliseconds(10000)), 0);
  for (const auto& s : streams) {
    ASSERT_TRUE(s->finished());  // before Drain returned
    EXPECT_TRUE(s->status().ok()) << s->status();
    ASSERT_TRUE(s->complete().has_value());
    EXPECT_EQ(s->complete()->finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(s->chunks().size(), 20u);
  }
  EXPECT_TRUE(engine().draining());
  EXPECT_TRUE(engine().Stats().draining);
  const absl::Status s = TrySubmit(MakeRequest("late", {1}, 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("draining"));
}

TEST_F(EngineDrainTest, DrainTimeoutEndsTheRestUnavailable) {
  EngineOptions o = DefaultOptions();
  o.step_timeout = std::chrono::milliseconds(10000);
  Start(o, Group(2, 64), NextTokenModel(kVocab));
  transport().SetRankMode(0, RankMode::kStall);
  std::vector<std::shared_ptr<FakeStream>> streams;
  for (int i = 0; i < 3; ++i) {
    streams.push_back(Submit("d" + std::to_string(i), {static_cast<uint32_t>(i + 1)}, 20));
  }
  ASSERT_TRUE(transport().WaitForSteps(1, kWait));
  const auto t0 = EngineClock::now();
  EXPECT_EQ(engine().Drain(std::chrono::milliseconds(100)), 3);
  const auto took = EngineClock::now() - t0;
  EXPECT_GE(took, std::chrono::milliseconds(100));
  EXPECT_LT(took, std::chrono::milliseconds(2000));  // not the step timeout
  for (const auto& s : streams) {
    ASSERT_TRUE(s->finished());
    EXPECT_EQ(s->status().code(), absl::StatusCode::kUnavailable) << s->status();
    EXPECT_THAT(std::string(s->status().message()), HasSubstr("shutting down"));
  }
}

TEST_F(EngineDrainTest, DrainWithNothingRunningReturnsAtOnce) {
  Start(DefaultOptions(), Group(1, 64), NextTokenModel(kVocab));
  const auto t0 = EngineClock::now();
  EXPECT_EQ(engine().Drain(std::chrono::milliseconds(10000)), 0);
  EXPECT_LT(EngineClock::now() - t0, std::chrono::milliseconds(1000));
}

TEST_F(EngineDrainTest, StopEndsRunningAndQueuedRequests) {
  Start(DefaultOptions(), Group(1, 64), NextTokenModel(kVocab));
  transport().SetHold(true);
  auto running = Submit("running", {1}, 50);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  auto queued = Submit("queued", {2}, 50);  // still in the inbox
  engine().Stop();
  for (const auto& s : {running, queued}) {
    ASSERT_TRUE(s->finished());
    EXPECT_EQ(s->status().code(), absl::StatusCode::kUnavailable) << s->status();
    EXPECT_THAT(std::string(s->status().message()), HasSubstr("shutting down"));
  }
  engine().Stop();  // idempotent
  const absl::Status s = TrySubmit(MakeRequest("late", {1}, 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(StepsScheduling(transport().steps(), "queued"), ::testing::IsEmpty());
}

}  // namespace
}  // namespace epserve::router::testing
