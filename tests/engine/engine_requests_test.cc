// The life of one request apart from generation: Abort, Cancel, deadlines,
// admission limits and duplicate ids. Steps are held by the FakeTransport
// where a test needs the loop parked inside a step (manual lockstep).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine_harness.h"

namespace epserve::router::testing {
namespace {

using ::testing::Contains;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr uint32_t kVocab = 1000;

class EngineRequestTest : public EngineTest {
 protected:
  void StartOneRank(EngineOptions options = DefaultOptions()) {
    Start(std::move(options), Group(/*num_ranks=*/1, /*kv_blocks=*/512), NextTokenModel(kVocab));
  }
};

// ---- Abort and Cancel ----

TEST_F(EngineRequestTest, AbortBeforeRunningCompletesWithAbortAndNoTokens) {
  StartOneRank();
  transport().SetHold(true);
  auto a = Submit("a", {1, 2}, 100);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));  // the loop is inside a step
  auto b = Submit("b", {3, 4}, 100);
  EXPECT_EQ(engine().Abort("b"), absl::OkStatus());
  transport().DeliverHeld();

  ASSERT_TRUE(b->WaitFinished(kWait));
  EXPECT_TRUE(b->status().ok()) << b->status();
  const auto c = b->complete();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_EQ(c->usage().prompt_tokens(), 2u);
  EXPECT_EQ(c->usage().completion_tokens(), 0u);
  EXPECT_EQ(c->output_ids_size(), 0);
  EXPECT_TRUE(b->chunks().empty());

  EXPECT_EQ(engine().Abort("a"), absl::OkStatus());
  transport().SetHold(false);
  ASSERT_TRUE(a->WaitFinished(kWait));
  EXPECT_THAT(StepsScheduling(transport().steps(), "b"), IsEmpty());
  IdleStats();
}

TEST_F(EngineRequestTest, AbortWhileRunningKeepsTheTokensSoFar) {
  StartOneRank();
  transport().SetHold(true);
  auto a = Submit("a", {1, 2}, 100);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(transport().WaitForHeldStep(kWait));
    transport().DeliverHeld();
  }
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));  // step 4 is out
  const size_t steps_at_abort = transport().num_steps();
  EXPECT_EQ(engine().Abort("a"), absl::OkStatus());
  transport().SetHold(false);

  ASSERT_TRUE(a->WaitFinished(kWait));
  EXPECT_TRUE(a->status().ok()) << a->status();
  const auto c = a->complete();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->finish_reason(), v1::FINISH_REASON_ABORT);
  // Step 4's token arrives before the abort is applied.
  EXPECT_THAT(c->output_ids(), ElementsAreArray({3u, 4u, 5u, 6u}));
  EXPECT_THAT(c->output_ids(), ElementsAreArray(a->chunk_token_ids()));
  EXPECT_EQ(c->usage().completion_tokens(), 4u);
  EXPECT_EQ(transport().num_steps(), steps_at_abort);  // never scheduled again
  IdleStats();
}

// Only the caller that submitted a request may abort it; another caller is
// told what it would hear for an unknown id, and the request runs on.
TEST_F(EngineRequestTest, AbortByAnotherCallerIsNotFoundAndTheRequestRunsOn) {
  StartOneRank();
  transport().SetHold(true);
  NewRequest request = MakeRequest("a", {1, 2}, 3);
  request.owner = "key:0";
  auto a = Submit(std::move(request));
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  absl::Status other = engine().Abort("a", "key:1");
  EXPECT_EQ(other.code(), absl::StatusCode::kNotFound) << other;
  EXPECT_EQ(other.message(), "request_id: no running request 'a'");
  EXPECT_EQ(engine().Abort("a").code(), absl::StatusCode::kNotFound);  // anonymous caller
  transport().SetHold(false);
  ASSERT_TRUE(a->WaitFinished(kWait));
  ASSERT_TRUE(a->complete().has_value());
  EXPECT_EQ(a->complete()->finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(a->complete()->usage().completion_tokens(), 3u);
}

TEST_F(EngineRequestTest, OwnerAbortsItsOwnRequest) {
  StartOneRank();
  transport().SetHold(true);
  NewRequest request = MakeRequest("a", {1, 2}, 100);
  request.owner = "key:0";
  auto a = Submit(std::move(request));
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  EXPECT_EQ(engine().Abort("a", "key:0"), absl::OkStatus());
  transport().SetHold(false);
  ASSERT_TRUE(a->WaitFinished(kWait));
  ASSERT_TRUE(a->complete().has_value());
  EXPECT_EQ(a->complete()->finish_reason(), v1::FINISH_REASON_ABORT);
}

TEST_F(EngineRequestTest, AbortOfAnUnknownOrEndedIdIsNotFound) {
  StartOneRank();
  EXPECT_EQ(engine().Abort("nope").code(), absl::StatusCode::kNotFound);
  auto a = Submit("a", {1}, 2);
  ASSERT_TRUE(a->WaitFinished(kWait));
  // Shortly after its stream finished (see the disabled test below).
  absl::Status s;
  const auto end = EngineClock::now() + kWait;
  do {
    s = engine().Abort("a");
  } while (s.ok() && EngineClock::now() < end);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("'a'"));
}

// A client that has its final status may reuse the id at once: the id is no
// longer live (Submit OK, Abort NOT_FOUND). The FakeStream hook runs inside
// Finish, the earliest point a client can act.
TEST_F(EngineRequestTest, IdIsFreeOnceItsStreamFinished) {
  StartOneRank();
  NewRequest first = MakeRequest("a", {1, 2}, 2);
  auto first_stream = StreamOf(first);
  absl::Status abort_status;
  absl::Status resubmit_status;
  std::shared_ptr<FakeStream> again;
  first_stream->SetOnFinish([&](const absl::Status&) {
    abort_status = engine().Abort("a");
    NewRequest next = MakeRequest("a", {1, 2}, 2);
    again = StreamOf(next);
    resubmit_status = TrySubmit(std::move(next));
  });
  Submit(std::move(first));
  ASSERT_TRUE(first_stream->WaitFinished(kWait));
  EXPECT_EQ(abort_status.code(), absl::StatusCode::kNotFound) << abort_status;
  EXPECT_TRUE(resubmit_status.ok()) << resubmit_status;
  if (resubmit_status.ok()) {
    ASSERT_TRUE(again->WaitFinished(kWait));
    EXPECT_TRUE(again->status().ok()) << again->status();
  }
}

// What a client reads once its stream ended (Stats, /metrics) already counts
// the request as ended: a request that finished by length, and one aborted
// while queued behind a running step. Read inside Finish, the earliest point
// a client can act.
TEST_F(EngineRequestTest, StatsAndMetricsCountARequestEndedBeforeItsStreamEnds) {
  StartOneRank();
  struct Seen {
    EngineStats stats;
    double e2e_count = -1;
    double finished = -1;
    double running = -1;
    double waiting = -1;
    double kv_usage = -1;
    double generated = -1;
  };
  auto observe = [this](Seen* seen, const std::string& reason) {
    seen->stats = engine().Stats();
    seen->e2e_count = Metric("epserve_e2e_request_latency_seconds");
    seen->finished = Metric("epserve_requests_total", {{"finish_reason", reason}});
    seen->running = Metric("epserve_requests_running");
    seen->waiting = Metric("epserve_requests_waiting");
    seen->kv_usage = Metric("epserve_kv_cache_usage_ratio", {{"worker", "0"}});
    seen->generated = Metric("epserve_generation_tokens_total");
  };

  Seen done;
  NewRequest a = MakeRequest("a", {1, 2}, 3);
  StreamOf(a)->SetOnFinish([&](const absl::Status&) { observe(&done, "length"); });
  auto a_stream = Submit(std::move(a));
  ASSERT_TRUE(a_stream->WaitFinished(kWait));
  EXPECT_EQ(done.stats.running, 0);
  EXPECT_EQ(done.stats.waiting, 0);
  ASSERT_EQ(done.stats.workers.size(), 1u);
  EXPECT_EQ(done.stats.workers[0].kv_blocks_used, 0);
  EXPECT_EQ(done.e2e_count, 1);
  EXPECT_EQ(done.finished, 1);
  EXPECT_EQ(done.running, 0);
  EXPECT_EQ(done.waiting, 0);
  EXPECT_EQ(done.kv_usage, 0);
  EXPECT_EQ(done.generated, 3);

  transport().SetHold(true);
  auto c = Submit("c", {5, 6}, 100);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  Seen aborted;
  NewRequest b = MakeRequest("b", {3, 4}, 100);
  StreamOf(b)->SetOnFinish([&](const absl::Status&) { observe(&aborted, "abort"); });
  auto b_stream = Submit(std::move(b));
  EXPECT_EQ(engine().Abort("b"), absl::OkStatus());
  transport().DeliverHeld();
  ASSERT_TRUE(b_stream->WaitFinished(kWait));
  EXPECT_EQ(aborted.stats.running, 1);  // c
  EXPECT_EQ(aborted.stats.waiting, 0);
  EXPECT_EQ(aborted.e2e_count, 2);
  EXPECT_EQ(aborted.finished, 1);
  EXPECT_EQ(aborted.running, 1);
  EXPECT_EQ(aborted.waiting, 0);

  EXPECT_EQ(engine().Abort("c"), absl::OkStatus());
  transport().SetHold(false);
  ASSERT_TRUE(c->WaitFinished(kWait));
  IdleStats();
}

TEST_F(EngineRequestTest, CancelEndsTheStreamAndReleasesTheRequest) {
  StartOneRank();
  transport().SetHold(true);
  auto a = Submit("a", {1, 2}, 100);
  auto b = Submit("b", {7, 8}, 100);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  transport().DeliverHeld();
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  const size_t cancelled_after = transport().num_steps();  // a is in these steps
  engine().Cancel("a", absl::CancelledError("the client went away"));
  engine().Cancel("unknown", absl::CancelledError("ignored"));
  transport().DeliverHeld();

  ExpectFinishedWith(*a, absl::StatusCode::kCancelled, "the client went away");
  EXPECT_FALSE(a->complete().has_value());
  ASSERT_TRUE(transport().WaitForSteps(cancelled_after + 1, kWait));
  const std::vector<RecordedStep> steps = transport().steps();
  const std::vector<size_t> with_a = StepsScheduling(steps, "a");
  ASSERT_FALSE(with_a.empty());
  EXPECT_LT(with_a.back(), cancelled_after);
  // The next plan tells the rank to drop it.
  EXPECT_THAT(steps[cancelled_after].plans[0].release_request_ids(), Contains("a"));
  EXPECT_EQ(RankScheduling(steps[cancelled_after], "b"), 0);

  EXPECT_EQ(engine().Abort("b"), absl::OkStatus());
  transport().SetHold(false);
  ASSERT_TRUE(b->WaitFinished(kWait));
  IdleStats();
}

// ---- Deadlines ----

TEST_F(EngineRequestTest, DeadlineInThePastIsNeverScheduled) {
  StartOneRank();
  NewRequest req = MakeRequest("late", {1, 2, 3}, 5);
  req.deadline = EngineClock::now() - std::chrono::seconds(1);
  auto s = Submit(std::move(req));
  ExpectFinishedWith(*s, absl::StatusCode::kDeadlineExceeded, "never ran");
  EXPECT_FALSE(s->complete().has_value());
  EXPECT_EQ(transport().num_steps(), 0u);
}

TEST_F(EngineRequestTest, ShortDeadlineOnAQueuedRequest) {
  EngineOptions o = DefaultOptions();
  o.scheduler.max_running_per_worker = 1;  // b queues behind a
  StartOneRank(o);
  transport().SetDelay(std::chrono::milliseconds(2));
  auto a = Submit("a", {1}, 1000);
  ASSERT_TRUE(transport().WaitForSteps(1, kWait));
  const auto t0 = EngineClock::now();
  NewRequest req = MakeRequest("b", {2}, 5);
  req.deadline = t0 + std::chrono::milliseconds(50);
  auto b = Submit(std::move(req));

  ExpectFinishedWith(*b, absl::StatusCode::kDeadlineExceeded, "never ran");
  const auto waited = EngineClock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(50));
  EXPECT_LT(waited, std::chrono::milliseconds(1000));
  EXPECT_FALSE(a->finished());
  EXPECT_EQ(engine().Abort("a"), absl::OkStatus());
  ASSERT_TRUE(a->WaitFinished(kWait));
  EXPECT_THAT(StepsScheduling(transport().steps(), "b"), IsEmpty());
  IdleStats();
}

TEST_F(EngineRequestTest, DeadlineWhileRunningEndsWithDeadlineExceeded) {
  StartOneRank();
  transport().SetDelay(std::chrono::milliseconds(2));
  NewRequest req = MakeRequest("a", {1}, 1000);
  req.deadline = EngineClock::now() + std::chrono::milliseconds(60);
  auto a = Submit(std::move(req));
  ExpectFinishedWith(*a, absl::StatusCode::kDeadlineExceeded, "token(s) generated");
  EXPECT_THAT(a->chunks(), Not(IsEmpty()));
  IdleStats();
}

// ---- Admission ----

TEST_F(EngineRequestTest, MaxWaitingRequestsRefusesAtOnce) {
  EngineOptions o = DefaultOptions();
  o.max_waiting_requests = 2;
  o.scheduler.max_running_per_worker = 1;
  StartOneRank(o);
  transport().SetHold(true);
  auto a = Submit("a", {1}, 3);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));  // a runs; the loop waits
  auto b = Submit("b", {2}, 2);
  auto c = Submit("c", {3}, 2);
  NewRequest d = MakeRequest("d", {4}, 2);
  auto d_stream = StreamOf(d);
  absl::Status s = TrySubmit(std::move(d));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("queue full"));

  // Two more steps: b and c now wait in the scheduler, and the stats of the
  // step that queued them are out.
  for (int i = 0; i < 2; ++i) {
    transport().DeliverHeld();
    ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  }
  EXPECT_EQ(engine().Stats().waiting, 2);
  s = TrySubmit(MakeRequest("e", {5}, 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("queue full: 2 requests are waiting"));

  transport().SetHold(false);
  for (const auto& st : {a, b, c}) {
    ASSERT_TRUE(st->WaitFinished(kWait));
    EXPECT_TRUE(st->status().ok()) << st->status();
  }
  EXPECT_FALSE(d_stream->finished());  // never reached the engine
  // Room again.
  auto f = Submit("f", {6}, 2);
  ASSERT_TRUE(f->WaitFinished(kWait));
  EXPECT_TRUE(f->status().ok());
}

// Requests the loop took from the inbox and queued in the scheduler count
// against max_waiting_requests while the step that queued them runs.
TEST_F(EngineRequestTest, MaxWaitingRequestsHoldsWhileTheQueuingStepRuns) {
  EngineOptions o = DefaultOptions();
  o.max_waiting_requests = 2;
  o.scheduler.max_running_per_worker = 1;
  StartOneRank(o);
  transport().SetHold(true);
  auto a = Submit("a", {1}, 3);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  auto b = Submit("b", {2}, 2);
  auto c = Submit("c", {3}, 2);
  transport().DeliverHeld();
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));  // b and c queued in the scheduler
  EXPECT_EQ(engine().Stats().waiting, 2);
  const absl::Status s = TrySubmit(MakeRequest("e", {5}, 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  transport().SetHold(false);
}

TEST_F(EngineRequestTest, MaxWaitingTokensRefusesAtOnce) {
  EngineOptions o = DefaultOptions();
  o.max_waiting_tokens = 10;
  StartOneRank(o);
  transport().SetHold(true);
  auto a = Submit("a", {1, 2, 3, 4}, 2);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  // Nothing waits: a request above the token limit alone is accepted.
  auto b = Submit("b", std::vector<uint32_t>(12, 7), 2);
  NewRequest c = MakeRequest("c", {1}, 2);
  absl::Status s = TrySubmit(std::move(c));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("queue full: 12 prompt tokens are waiting and this request adds 1"));
  transport().SetHold(false);
  ASSERT_TRUE(b->WaitFinished(kWait));
  ASSERT_TRUE(a->WaitFinished(kWait));
  IdleStats();

  // At the limit exactly, not beyond.
  transport().SetHold(true);
  auto d = Submit("d", {1}, 2);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  auto e = Submit("e", std::vector<uint32_t>(6, 7), 2);
  auto f = Submit("f", std::vector<uint32_t>(4, 7), 2);  // 6 + 4 = 10
  s = TrySubmit(MakeRequest("g", {1}, 2));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  transport().SetHold(false);
  for (const auto& st : {d, e, f}) {
    ASSERT_TRUE(st->WaitFinished(kWait));
    EXPECT_TRUE(st->status().ok()) << st->status();
  }
}

TEST_F(EngineRequestTest, DuplicateLiveIdIsRefusedUntilItEnds) {
  StartOneRank();
  transport().SetHold(true);
  auto a = Submit("a", {1, 2}, 3);
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  NewRequest dup = MakeRequest("a", {1, 2}, 3);
  auto dup_stream = StreamOf(dup);
  const absl::Status s = TrySubmit(std::move(dup));
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("'a'"));
  transport().SetHold(false);
  ASSERT_TRUE(a->WaitFinished(kWait));
  EXPECT_TRUE(a->status().ok());
  EXPECT_FALSE(dup_stream->finished());
  EXPECT_EQ(a->chunks().size(), 3u);  // nothing from the refused duplicate

  // Free again once it ended (see IdIsFreeOnceItsStreamFinished).
  std::shared_ptr<FakeStream> again;
  absl::Status s2;
  const auto end = EngineClock::now() + kWait;
  do {
    NewRequest next = MakeRequest("a", {1, 2}, 3);
    again = StreamOf(next);
    s2 = TrySubmit(std::move(next));
  } while (absl::IsAlreadyExists(s2) && EngineClock::now() < end);
  ASSERT_TRUE(s2.ok()) << s2;
  ASSERT_TRUE(again->WaitFinished(kWait));
  EXPECT_TRUE(again->status().ok()) << again->status();
  EXPECT_THAT(again->chunk_token_ids(), ElementsAreArray({3u, 4u, 5u}));
}

}  // namespace
}  // namespace epserve::router::testing
