// Continuous batching over several ranks and preemption by recompute, end to
// end through the engine: outputs equal the fake model run alone, the plans
// keep their invariants (checked by FakeTransport), KV accounting returns to
// zero.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "engine_harness.h"

namespace epserve::router::testing {
namespace {

using ::testing::ElementsAreArray;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr uint32_t kVocab = 5000;

struct Spec {
  std::string id;
  std::vector<uint32_t> prompt;
  uint32_t max_tokens;
};

// Prompt of `len` tokens derived from `seed`.
std::vector<uint32_t> Prompt(int seed, int len) {
  std::vector<uint32_t> p;
  for (int i = 0; i < len; ++i) p.push_back(static_cast<uint32_t>((seed * 131 + i * 17) % 997));
  return p;
}

class EngineBatchingTest : public EngineTest {
 protected:
  // Submits every spec at once, waits for all and checks each completes with
  // LENGTH and the fake model's continuation. Returns the outputs by id.
  std::map<std::string, std::vector<uint32_t>> RunAll(const std::vector<Spec>& specs) {
    std::map<std::string, std::shared_ptr<FakeStream>> streams;
    for (const Spec& s : specs) streams[s.id] = Submit(s.id, s.prompt, s.max_tokens);
    std::map<std::string, std::vector<uint32_t>> outputs;
    const Model model = HistoryHashModel(kVocab);
    for (const Spec& s : specs) {
      const FakeStream& stream = *streams[s.id];
      EXPECT_TRUE(stream.WaitFinished(kWait)) << s.id;
      EXPECT_TRUE(stream.status().ok()) << s.id << ": " << stream.status();
      const auto c = stream.complete();
      if (!c) {
        ADD_FAILURE() << s.id << ": no complete message";
        continue;
      }
      EXPECT_EQ(c->finish_reason(), v1::FINISH_REASON_LENGTH) << s.id;
      EXPECT_THAT(c->output_ids(), ElementsAreArray(stream.chunk_token_ids())) << s.id;
      outputs[s.id].assign(c->output_ids().begin(), c->output_ids().end());
      EXPECT_EQ(outputs[s.id], Generate(model, s.prompt, static_cast<int>(s.max_tokens))) << s.id;
    }
    return outputs;
  }
};

TEST_F(EngineBatchingTest, TwentyRequestsOverTwoRanks) {
  EngineOptions o = DefaultOptions();
  o.scheduler.max_tokens_per_step = 16;  // prompts up to 23 tokens: chunked prefill
  o.scheduler.max_running_per_worker = 6;
  Start(o, Group(/*num_ranks=*/2, /*kv_blocks=*/256), HistoryHashModel(kVocab));
  std::vector<Spec> specs;
  for (int i = 0; i < 20; ++i) {
    specs.push_back({"req-" + std::to_string(i), Prompt(i, 1 + (i * 7) % 23),
                     static_cast<uint32_t>(i == 19 ? 40 : 3 + i % 5)});
  }
  RunAll(specs);

  const std::vector<RecordedStep> steps = transport().steps();
  ASSERT_FALSE(steps.empty());
  std::vector<int> sequences_per_rank(2, 0);
  bool one_rank_idle = false;
  bool chunked_prefill = false;
  for (const RecordedStep& step : steps) {
    EXPECT_EQ(step.epoch, 1u);
    ASSERT_EQ(step.plans.size(), 2u);  // every rank, every step
    int tokens[2] = {0, 0};
    for (int r = 0; r < 2; ++r) {
      sequences_per_rank[r] += step.plans[r].sequences_size();
      for (const control::v1::SequencePlan& s : step.plans[r].sequences()) {
        tokens[r] += s.token_ids_size();
        chunked_prefill |= !s.sample();
      }
      EXPECT_LE(tokens[r], 16) << "step " << step.plans[r].step_id() << " rank " << r;
    }
    one_rank_idle |= (tokens[0] == 0) != (tokens[1] == 0);
  }
  EXPECT_GT(sequences_per_rank[0], 0);
  EXPECT_GT(sequences_per_rank[1], 0);
  EXPECT_TRUE(one_rank_idle) << "req-19 runs alone at the end: the other rank gets empty plans";
  EXPECT_TRUE(chunked_prefill);

  const EngineStats stats = IdleStats();
  ASSERT_EQ(stats.workers.size(), 2u);
  for (const WorkerLoad& w : stats.workers) {
    EXPECT_EQ(w.kv_blocks_total, 256);
    EXPECT_EQ(w.kv_blocks_used, 0);
  }
}

TEST_F(EngineBatchingTest, StatsShowRunningRequestsAndTheirBlocks) {
  Start(DefaultOptions(), Group(/*num_ranks=*/2, /*kv_blocks=*/64), HistoryHashModel(kVocab));
  transport().SetHold(true);
  auto a = Submit("a", Prompt(1, 9), 50);  // 3 blocks of 4
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  auto b = Submit("b", Prompt(2, 4), 50);  // 1 block
  transport().DeliverHeld();
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));  // b's prefill
  transport().DeliverHeld();
  // The next step (both decode) is scheduled and held: the stats show the
  // blocks it holds.
  ASSERT_TRUE(transport().WaitForHeldStep(kWait));
  const EngineStats s = engine().Stats();
  EXPECT_EQ(s.running, 2);
  EXPECT_EQ(s.waiting, 0);
  ASSERT_EQ(s.workers.size(), 2u);
  EXPECT_EQ(s.workers[0].requests_running + s.workers[1].requests_running, 2);
  // a: 9 prompt tokens + its first decode at position 9 = 3 blocks of 4;
  // b: 4 prompt tokens + its first decode at position 4 = 2 blocks.
  EXPECT_EQ(s.workers[0].kv_blocks_used + s.workers[1].kv_blocks_used, 3 + 2);
  EXPECT_EQ(engine().Abort("a"), absl::OkStatus());
  EXPECT_EQ(engine().Abort("b"), absl::OkStatus());
  transport().SetHold(false);
  ASSERT_TRUE(a->WaitFinished(kWait));
  ASSERT_TRUE(b->WaitFinished(kWait));
  IdleStats();
}

TEST_F(EngineBatchingTest, PreemptionRecomputesToTheSameOutputs) {
  std::vector<Spec> specs;
  for (int i = 0; i < 8; ++i) specs.push_back({"p" + std::to_string(i), Prompt(i, 6), 10});

  // 8 blocks of 4 tokens: each request needs 4 blocks by its end, so at most
  // two finish side by side; admission fills the cache with four.
  EngineOptions o = DefaultOptions();
  Start(o, Group(/*num_ranks=*/1, /*kv_blocks=*/8), HistoryHashModel(kVocab));
  const auto outputs = RunAll(specs);  // checks against the model run alone
  EXPECT_EQ(outputs.size(), specs.size());

  const std::vector<RecordedStep> steps = transport().steps();
  // A recompute in the plans: a sequence fed from position 0 after a token
  // was sampled for it, and released before that.
  std::set<std::string> sampled, released, recomputed;
  bool released_before_recompute = true;
  for (const RecordedStep& step : steps) {
    for (const std::string& id : step.plans[0].release_request_ids()) released.insert(id);
    for (const control::v1::SequencePlan& s : step.plans[0].sequences()) {
      if (s.start_position() == 0 && sampled.count(s.request_id()) != 0) {
        recomputed.insert(s.request_id());
        released_before_recompute &= released.erase(s.request_id()) == 1;
        EXPECT_GT(s.token_ids_size(), 6) << "a recompute re-feeds prompt + generated tokens";
      }
      if (s.sample()) sampled.insert(s.request_id());
    }
  }
  EXPECT_THAT(recomputed, Not(IsEmpty()));
  EXPECT_TRUE(released_before_recompute);
  EXPECT_EQ(recomputed, transport().recomputed());

  const EngineStats stats = IdleStats();
  ASSERT_EQ(stats.workers.size(), 1u);
  EXPECT_EQ(stats.workers[0].kv_blocks_used, 0);
}

TEST_F(EngineBatchingTest, PreemptionOverTwoRanksMatchesAnUncontendedRun) {
  std::vector<Spec> specs;
  for (int i = 0; i < 12; ++i) {
    specs.push_back(
        {"q" + std::to_string(i), Prompt(100 + i, 3 + i % 5), static_cast<uint32_t>(6 + i % 7)});
  }
  EngineOptions o = DefaultOptions();
  o.scheduler.max_tokens_per_step = 8;
  Start(o, Group(/*num_ranks=*/2, /*kv_blocks=*/5), HistoryHashModel(kVocab));
  RunAll(specs);
  EXPECT_THAT(transport().recomputed(), Not(IsEmpty()));
  IdleStats();
}

}  // namespace
}  // namespace epserve::router::testing
