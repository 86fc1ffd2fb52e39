// Table-style scenarios: each step's exact batch ("id@start+tokens*[blocks]",
// * = samples) per worker, for a given configuration and call sequence.
#include "router/scheduler/scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "scheduler_harness.h"

namespace epserve::scheduler {
namespace {

using ::testing::HasSubstr;
using testing::Harness;
using testing::Spec;
using testing::Uncontended;

SchedulerOptions Opts(int budget, int block_size, int max_running = 64, double watermark = 0) {
  SchedulerOptions o;
  o.max_tokens_per_step = budget;
  o.block_size = block_size;
  o.max_running_per_worker = max_running;
  o.watermark = watermark;
  return o;
}

void ExpectSteps(Harness& h, const std::vector<std::string>& expected) {
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(h.Step(), expected[i]) << "step " << i;
  }
}

void ExpectDrained(Harness& h) {
  EXPECT_EQ(h.sched().num_live(), 0);
  EXPECT_EQ(h.TotalUsedBlocks(), 0);
}

TEST(SchedulerTest, TokenBudgetSplitsALongPrompt) {
  Harness h(Opts(/*budget=*/8, /*block_size=*/4), {100});
  h.Add(Spec("a", 10, 3));
  h.Add(Spec("b", 3, 2));
  ExpectSteps(h, {
      "w0: a@0+8[0,1]",                       // budget 8 used up: b waits
      "w0: a@8+2*[0,1,2] b@0+3*[3]",          // last chunk of a, then b admitted
      "w0: a@10+1*[0,1,2] b@3+1*[3]",         // decodes; b reaches max_tokens
      "w0: a@11+1*[0,1,2]",
  });
  EXPECT_EQ(h.finished().at("a"), FinishReason::kLength);
  EXPECT_EQ(h.output("a").size(), 3u);
  EXPECT_EQ(h.output("b").size(), 2u);
  ExpectDrained(h);
}

TEST(SchedulerTest, ChunkedPrefillMixesWithDecodes) {
  Harness h(Opts(/*budget=*/4, /*block_size=*/4), {100});
  h.Add(Spec("a", 2, 4));
  EXPECT_EQ(h.Step(), "w0: a@0+2*[0]");
  h.Add(Spec("b", 9, 1));
  ExpectSteps(h, {
      "w0: a@2+1*[0] b@0+3[1]",
      "w0: a@3+1*[0] b@3+3[1,2]",
      "w0: a@4+1*[0,3] b@6+3*[1,2,4]",
  });
  EXPECT_EQ(h.output("a"), Uncontended(Spec("a", 2, 4)));
  EXPECT_EQ(h.output("b"), Uncontended(Spec("b", 9, 1)));
  ExpectDrained(h);
}

TEST(SchedulerTest, DecodesComeBeforePrefillsWhenTheBudgetIsTight) {
  Harness h(Opts(/*budget=*/2, /*block_size=*/4), {100});
  h.Add(Spec("a", 1, 3));
  h.Add(Spec("b", 1, 3));
  EXPECT_EQ(h.Step(), "w0: a@0+1*[0] b@0+1*[1]");
  h.Add(Spec("c", 4, 1));
  ExpectSteps(h, {
      "w0: a@1+1*[0] b@1+1*[1]",  // c waits: decodes took the budget
      "w0: a@2+1*[0] b@2+1*[1]",
      "w0: c@0+2[0]",
      "w0: c@2+2*[0]",
  });
  ExpectDrained(h);
}

TEST(SchedulerTest, PriorityOrderThenFcfsWithinAPriority) {
  Harness h(Opts(/*budget=*/16, /*block_size=*/4, /*max_running=*/1), {100});
  h.Add(Spec("x", 1, 1, /*priority=*/1));
  h.Add(Spec("y", 1, 1, /*priority=*/0));
  h.Add(Spec("z", 1, 1, /*priority=*/1));
  h.Add(Spec("w", 1, 1, /*priority=*/0));
  ExpectSteps(h, {"w0: y@0+1*[0]", "w0: w@0+1*[0]", "w0: x@0+1*[0]", "w0: z@0+1*[0]"});
  ExpectDrained(h);
}

TEST(SchedulerTest, WorkerChosenByLoadThenFreeBlocks) {
  Harness h(Opts(/*budget=*/64, /*block_size=*/4), {8, 16, 12});
  h.Add(Spec("a", 4, 2));
  EXPECT_EQ(h.Step(), "w0: - | w1: a@0+4*[0] | w2: -");  // all idle: most free blocks
  h.Add(Spec("b", 4, 2));
  h.Add(Spec("c", 4, 2));
  h.Add(Spec("d", 4, 2));
  ExpectSteps(h, {
      // b: w0 and w2 idle, w2 has more free; c: w0 the only idle one;
      // d: all run one, w1 has most free (14).
      "w0: c@0+4*[0] | w1: a@4+1*[0,1] d@0+4*[2] | w2: b@0+4*[0]",
      "w0: c@4+1*[0,1] | w1: d@4+1*[2,0] | w2: b@4+1*[0,1]",  // a done: block 0 reused
  });
  ExpectDrained(h);
}

TEST(SchedulerTest, AdmissionWaitsForFreeBlocks) {
  Harness h(Opts(/*budget=*/64, /*block_size=*/4), {4});
  h.Add(Spec("a", 8, 4));
  h.Add(Spec("b", 9, 1));  // needs 3 blocks
  ExpectSteps(h, {
      "w0: a@0+8*[0,1]",
      "w0: a@8+1*[0,1,2]",
      "w0: a@9+1*[0,1,2]",
  });
  EXPECT_EQ(h.sched().Find("b")->status, RequestStatus::kWaiting);
  ExpectSteps(h, {"w0: a@10+1*[0,1,2]", "w0: b@0+9*[0,1,2]"});
  ExpectDrained(h);
}

TEST(SchedulerTest, WatermarkKeepsBlocksForRunningSequences) {
  Harness h(Opts(/*budget=*/64, /*block_size=*/4, /*max_running=*/64, /*watermark=*/0.25), {8});
  h.Add(Spec("a", 8, 2));  // 2 blocks
  h.Add(Spec("b", 16, 2));  // 4 blocks: 8 - 2 - 4 = 2 free = watermark: fits
  h.Add(Spec("c", 1, 1));   // 1 more would go below the watermark
  ExpectSteps(h, {
      "w0: a@0+8*[0,1] b@0+16*[2,3,4,5]",
      "w0: a@8+1*[0,1,6] b@16+1*[2,3,4,5,7]",  // the kept blocks let a and b grow
      "w0: c@0+1*[0]",
  });
  ExpectDrained(h);
}

TEST(SchedulerTest, PreemptionByRecomputeKeepsTheTokenHistory) {
  Harness h(Opts(/*budget=*/64, /*block_size=*/2), {4});
  h.Add(Spec("a", 3, 4));
  h.Add(Spec("b", 3, 4));
  ExpectSteps(h, {
      "w0: a@0+3*[0,1] b@0+3*[2,3]",
      "w0: a@3+1*[0,1] b@3+1*[2,3]",
      "w0: a@4+1*[0,1,2] preempt(b)",  // a needs a 3rd block: b (latest) goes
      "w0: a@5+1*[0,1,2]",             // b's 5 tokens need 3 blocks, 1 free
      "w0: b@0+5*[0,1,2]",             // prompt + 2 generated, recomputed
      "w0: b@5+1*[0,1,2]",
  });
  EXPECT_EQ(h.sched().num_preemptions(), 1u);
  EXPECT_EQ(h.output("a"), Uncontended(Spec("a", 3, 4)));
  EXPECT_EQ(h.output("b"), Uncontended(Spec("b", 3, 4)));
  ExpectDrained(h);
}

// A request restored into a new scheduler (its worker group was lost) is
// recomputed over prompt + generated and ends with the uncontended output.
TEST(SchedulerTest, RestoredRequestIsRecomputedAndEndsAsIfUndisturbed) {
  Harness before(Opts(/*budget=*/64, /*block_size=*/2), {8});
  before.Add(Spec("a", 3, 5));
  ExpectSteps(before, {"w0: a@0+3*[0,1]", "w0: a@3+1*[0,1]"});
  const std::vector<uint32_t> generated = before.sched().Find("a")->generated_ids;
  ASSERT_EQ(generated.size(), 2u);

  Harness after(Opts(/*budget=*/64, /*block_size=*/2), {8});
  after.Restore(Spec("a", 3, 5), generated);
  ASSERT_NE(after.sched().Find("a"), nullptr);
  EXPECT_EQ(after.sched().Find("a")->status, RequestStatus::kPreempted);
  ExpectSteps(after, {
                         "w0: a@0+5*[0,1,2]",  // prompt + 2 generated, recomputed
                         "w0: a@5+1*[0,1,2]",
                         "w0: a@6+1*[0,1,2,3]",
                     });
  EXPECT_EQ(after.output("a"), Uncontended(Spec("a", 3, 5)));
  EXPECT_EQ(after.finished().at("a"), FinishReason::kLength);
  ExpectDrained(after);

  // Nothing left to generate: refused, nothing queued.
  EXPECT_EQ(after.sched().Restore(Spec("b", 3, 2), {1, 2}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(after.sched().num_live(), 0);
}

TEST(SchedulerTest, PreemptionPicksTheLowestPriorityVictim) {
  Harness h(Opts(/*budget=*/64, /*block_size=*/2), {6});
  h.Add(Spec("lo", 3, 4, /*priority=*/5));
  h.Add(Spec("hi", 3, 4, /*priority=*/0));
  h.Add(Spec("mid", 3, 4, /*priority=*/1));
  ExpectSteps(h, {
      "w0: hi@0+3*[0,1] mid@0+3*[2,3] lo@0+3*[4,5]",
      "w0: hi@3+1*[0,1] mid@3+1*[2,3] lo@3+1*[4,5]",
      "w0: hi@4+1*[0,1,4] mid@4+1*[2,3,5] preempt(lo)",
  });
  for (int i = 0; i < 20 && h.sched().num_live() > 0; ++i) h.Step();
  for (const char* id : {"lo", "hi", "mid"}) {
    EXPECT_EQ(h.output(id), Uncontended(Spec(id, 3, 4))) << id;
  }
  ExpectDrained(h);
}

TEST(SchedulerTest, AbortFreesBlocksAndIsNeverScheduledAgain) {
  Harness h(Opts(/*budget=*/64, /*block_size=*/4), {10});
  h.Add(Spec("a", 5, 10));
  h.Add(Spec("b", 5, 10));
  EXPECT_EQ(h.Step(), "w0: a@0+5*[0,1] b@0+5*[2,3]");
  ASSERT_TRUE(h.sched().Abort("a").ok());
  EXPECT_EQ(h.sched().allocator(0).num_free(), 8);
  EXPECT_EQ(h.sched().Find("a"), nullptr);
  EXPECT_EQ(h.Step(), "w0: b@5+1*[2,3]");
  // Aborted while its step is outstanding: the worker's token is ignored.
  auto batch = h.sched().Schedule();
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(testing::Describe(*batch), "w0: b@6+1*[2,3]");
  ASSERT_TRUE(h.sched().Abort("b").ok());
  auto updates = h.sched().OnStepResult(h.RunModel(*batch));
  ASSERT_TRUE(updates.ok()) << updates.status();
  EXPECT_TRUE(updates->empty());
  EXPECT_EQ(h.sched().Abort("b").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(h.Step(), "w0: -");
  ExpectDrained(h);
}

TEST(SchedulerTest, StopConditions) {
  Harness h(Opts(/*budget=*/64, /*block_size=*/4), {10});
  auto spec = [](std::string id) {
    RequestSpec s = Spec(std::move(id), 2, 10);
    s.eos_token_ids = {7};
    s.stop_token_ids = {9};
    return s;
  };
  RequestSpec ignore = spec("ignore");
  ignore.ignore_eos = true;
  h.Add(spec("eos"));
  h.Add(ignore);
  h.Add(spec("stop"));
  h.Add(spec("str"));
  auto batch = h.sched().Schedule();
  ASSERT_TRUE(batch.ok());
  auto updates = h.sched().OnStepResult(
      {{"eos", 7}, {"ignore", 7}, {"stop", 9}, {"str", 1}});
  ASSERT_TRUE(updates.ok()) << updates.status();
  ASSERT_EQ(updates->size(), 4u);
  EXPECT_EQ((*updates)[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ((*updates)[1].finish_reason, std::nullopt);  // ignore_eos
  EXPECT_EQ((*updates)[2].finish_reason, FinishReason::kStop);
  EXPECT_EQ((*updates)[3].finish_reason, std::nullopt);
  // A stop string is the router's detokenizer's call.
  ASSERT_TRUE(h.sched().Finish("str", FinishReason::kStop).ok());
  EXPECT_EQ(h.Step(), "w0: ignore@2+1*[1]");
  ASSERT_TRUE(h.sched().Abort("ignore").ok());
  ExpectDrained(h);
}

TEST(SchedulerTest, CallOrderAndInputErrors) {
  Harness h(Opts(/*budget=*/64, /*block_size=*/4), {4, 2});
  EXPECT_THAT(h.sched().Add(Spec("long", 14, 3)).message(),
              HasSubstr("needs 5 KV blocks; the largest worker has 4 usable"));
  EXPECT_THAT(h.sched().Add(Spec("e", 0, 3)).message(), HasSubstr("empty prompt"));
  EXPECT_THAT(h.sched().Add(Spec("m", 1, 0)).message(), HasSubstr("max_tokens"));
  h.Add(Spec("a", 2, 3));
  EXPECT_THAT(h.sched().Add(Spec("a", 2, 3)).message(), HasSubstr("duplicate id"));
  EXPECT_EQ(h.sched().OnStepResult({}).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(h.sched().Schedule().ok());
  EXPECT_EQ(h.sched().Schedule().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(h.sched().OnStepResult({}).status().message(), HasSubstr("no sampled token for request a"));
  EXPECT_THAT(h.sched().OnStepResult({{"a", 1}, {"a", 2}}).status().message(),
              HasSubstr("two tokens"));
  ASSERT_TRUE(h.sched().OnStepResult({{"a", 1}}).ok());
  EXPECT_FALSE(Scheduler::Create(Opts(0, 4), {4}).ok());
  EXPECT_FALSE(Scheduler::Create(Opts(4, 4, 1, 1.0), {4}).ok());
  EXPECT_FALSE(Scheduler::Create(Opts(4, 4), {}).ok());
}

}  // namespace
}  // namespace epserve::scheduler
