// StepExecutor driven by StepPlans the way the router drives a worker:
// greedy parity with the transformers fixtures (docs/fixtures.md), chunked
// prefill and batch-composition invariance, seeded sampling, the validation
// of bad plans (the executor stays usable), empty plans, token-history
// bookkeeping and KV block sizing.
#include "worker/step/step_executor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "kernels/device.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/models/fixture_reference.h"

namespace epserve::step {
namespace {

using models::testing::FixtureModelDir;
using models::testing::FixtureReference;
using models::testing::FixtureReferenceDir;
using models::testing::LoadFixtureReference;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int64_t kBlockSize = 4;  // several blocks per prompt
constexpr int64_t kNumBlocks = 256;

// EPSERVE_TEST_DEVICE=cuda:K runs the suite on a GPU (ctest's
// step_executor_gpu_* tests, label gpu): device sampling and, with
// EPSERVE_TEST_GRAPHS=1, decode graphs. Without a usable GPU every test
// skips with the reason.
kernels::DeviceSpec TestDevice() { return kernels::testing::TestDeviceFromEnv(); }
const auto* const kGpuEnvironment =
    ::testing::AddGlobalTestEnvironment(new kernels::testing::GpuTestEnvironment);

std::unique_ptr<StepExecutor> LoadExecutor(const std::string& fixture,
                                           StepExecutorOptions options = {}) {
  options.device = TestDevice();
  const char* graphs = std::getenv("EPSERVE_TEST_GRAPHS");
  if (graphs != nullptr && std::string(graphs) == "1") options.graph_max_batch = 8;
  options.block_size = kBlockSize;
  if (options.num_blocks == 0) options.num_blocks = kNumBlocks;
  auto e = StepExecutor::Load(FixtureModelDir(fixture), weights::LoadOptions{}, options);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

epserve::v1::SamplingParams Greedy() {
  epserve::v1::SamplingParams p;
  p.set_temperature(0.0f);
  return p;
}

// One request as the router tracks it: blocks for prompt + max_new tokens,
// the prompt fed in chunks of `chunk` (0: whole), then one decode per step.
struct Request {
  std::string id;
  std::vector<int32_t> prompt;
  epserve::v1::SamplingParams params = Greedy();
  int64_t chunk = 0;
  size_t max_new = 16;
  std::vector<uint32_t> blocks;
  int64_t fed = 0;
  std::vector<int32_t> out;
  std::vector<epserve::v1::TokenLogprob> logprobs;

  bool done() const { return out.size() >= max_new; }
};

// Hands out disjoint blocks, like the router's per-worker allocator.
class Blocks {
 public:
  void Assign(Request& r) {
    const int64_t n = kv_cache::BlocksForTokens(
        static_cast<int64_t>(r.prompt.size() + r.max_new), kBlockSize);
    r.blocks.clear();
    for (int64_t i = 0; i < n; ++i) r.blocks.push_back(static_cast<uint32_t>(next_++ % kNumBlocks));
  }
  void Reset() { next_ = 0; }

 private:
  int64_t next_ = 0;
};

control::v1::SequencePlan PlanFor(const Request& r) {
  control::v1::SequencePlan s;
  s.set_request_id(r.id);
  s.set_start_position(static_cast<uint32_t>(r.fed));
  for (uint32_t b : r.blocks) s.add_block_table(b);
  *s.mutable_sampling_params() = r.params;
  const int64_t prompt_len = static_cast<int64_t>(r.prompt.size());
  if (r.fed < prompt_len) {
    const int64_t n = r.chunk > 0 ? std::min(r.chunk, prompt_len - r.fed) : prompt_len - r.fed;
    for (int64_t i = 0; i < n; ++i) s.add_token_ids(static_cast<uint32_t>(r.prompt[r.fed + i]));
    s.set_sample(r.fed + n == prompt_len);
  } else {
    s.add_token_ids(static_cast<uint32_t>(r.out.back()));
    s.set_sample(true);
  }
  return s;
}

// Runs every request to max_new tokens, all unfinished ones in each plan.
void RunTogether(StepExecutor& e, std::vector<Request>& reqs) {
  static uint64_t step_id = 0;
  while (std::any_of(reqs.begin(), reqs.end(), [](const Request& r) { return !r.done(); })) {
    control::v1::StepPlan plan;
    plan.set_step_id(++step_id);
    for (const Request& r : reqs) {
      if (!r.done()) *plan.add_sequences() = PlanFor(r);
    }
    auto result = e.Execute(plan);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->step_id(), step_id);
    EXPECT_GE(result->step_seconds(), 0.0);
    std::map<std::string, const control::v1::SequenceResult*> by_id;
    for (const auto& s : result->sequences()) by_id[s.request_id()] = &s;
    int expected_results = 0;
    for (const auto& s : plan.sequences()) expected_results += s.sample() ? 1 : 0;
    ASSERT_EQ(result->sequences_size(), expected_results);
    for (int i = 0; i < plan.sequences_size(); ++i) {
      const auto& s = plan.sequences(i);
      Request& r = *std::find_if(reqs.begin(), reqs.end(),
                                 [&](const Request& x) { return x.id == s.request_id(); });
      r.fed += s.token_ids_size();
      if (!s.sample()) {
        ASSERT_EQ(by_id.count(r.id), 0u);
        continue;
      }
      ASSERT_EQ(by_id.count(r.id), 1u) << r.id;
      ASSERT_EQ(by_id[r.id]->token_ids_size(), 1);
      r.out.push_back(static_cast<int32_t>(by_id[r.id]->token_ids(0)));
      for (const auto& lp : by_id[r.id]->logprobs()) r.logprobs.push_back(lp);
    }
  }
  for (const Request& r : reqs) e.Release(r.id);
}

std::vector<int32_t> RunAlone(StepExecutor& e, Blocks& blocks, Request r) {
  blocks.Assign(r);
  std::vector<Request> one{std::move(r)};
  RunTogether(e, one);
  return one[0].out;
}

// (1) Greedy decode through plans equals transformers' greedy continuation.
class StepGreedyParity : public ::testing::TestWithParam<std::string> {};

TEST_P(StepGreedyParity, PrefillThenDecodePlansMatchFixture) {
  auto ref = LoadFixtureReference(FixtureReferenceDir(GetParam()));
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto e = LoadExecutor(GetParam());
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(e->desc().vocab_size, ref->vocab_size);
  Blocks blocks;
  for (const auto& p : ref->prompts) {
    Request r{.id = p.name, .prompt = p.ids};
    ASSERT_EQ(p.greedy_new_tokens.size(), 16u) << p.name;
    r.max_new = p.greedy_new_tokens.size();
    EXPECT_EQ(RunAlone(*e, blocks, r), p.greedy_new_tokens) << GetParam() << " / " << p.name;
  }
  // With EPSERVE_TEST_GRAPHS the decode steps above replayed graphs.
  const char* graphs = std::getenv("EPSERVE_TEST_GRAPHS");
  if (graphs != nullptr && std::string(graphs) == "1") {
    EXPECT_GT(e->num_graphs(), 0u);
  }
  EXPECT_EQ(e->num_tracked_requests(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StepGreedyParity,
                         ::testing::Values("llama", "qwen3", "qwen3_moe", "tiny-qwen3-moe"),
                         [](const auto& param_info) {
                           return absl::StrReplaceAll(param_info.param, {{"-", "_"}});
                         });

class StepExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ref = LoadFixtureReference(FixtureReferenceDir("qwen3_moe"));
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = std::move(*ref);
    e_ = LoadExecutor("qwen3_moe");
    ASSERT_NE(e_, nullptr);
  }

  FixtureReference ref_;
  std::unique_ptr<StepExecutor> e_;
  Blocks blocks_;
};

// (2) Chunked prefill over several plans equals one prefill.
TEST_F(StepExecutorTest, ChunkedPrefillEqualsOnePrefill) {
  for (const auto& p : ref_.prompts) {
    for (int64_t chunk : {1, 3, 7}) {
      Request r{.id = p.name, .prompt = p.ids, .chunk = chunk};
      EXPECT_EQ(RunAlone(*e_, blocks_, r), p.greedy_new_tokens) << p.name << " chunk " << chunk;
    }
  }
}

// (3) Four requests of different lengths sharing plans (prefill chunks mixed
// with decodes) give the tokens each gives alone.
TEST_F(StepExecutorTest, BatchOfFourEqualsEachAlone) {
  ASSERT_GE(ref_.prompts.size(), 4u);
  std::vector<Request> reqs;
  for (size_t i = 0; i < 4; ++i) {
    Request r{.id = absl::StrCat("req-", i), .prompt = ref_.prompts[i].ids};
    r.chunk = static_cast<int64_t>(i) * 4;  // 0 (whole), 4, 8, 12
    r.max_new = 10 + i;
    reqs.push_back(r);
  }
  std::vector<std::vector<int32_t>> alone;
  for (const Request& r : reqs) alone.push_back(RunAlone(*e_, blocks_, r));
  blocks_.Reset();
  for (Request& r : reqs) blocks_.Assign(r);
  RunTogether(*e_, reqs);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(reqs[i].out, alone[i]) << reqs[i].id;
    const auto& want = ref_.prompts[i].greedy_new_tokens;
    EXPECT_EQ(reqs[i].out, std::vector<int32_t>(want.begin(), want.begin() + reqs[i].out.size()));
  }
}

epserve::v1::SamplingParams Seeded(uint64_t seed) {
  epserve::v1::SamplingParams p;
  p.set_temperature(1.5f);
  p.set_top_p(0.95f);
  p.set_seed(seed);
  p.set_frequency_penalty(0.5f);
  p.set_repetition_penalty(1.2f);
  p.set_logprobs(true);
  p.set_top_logprobs(3);
  return p;
}

// (4) Seeded sampling is reproducible and independent of batch composition.
TEST_F(StepExecutorTest, SeededSamplingIsReproducibleAndBatchIndependent) {
  Request a{.id = "a", .prompt = ref_.prompts[2].ids, .params = Seeded(7)};
  const std::vector<int32_t> first = RunAlone(*e_, blocks_, a);
  EXPECT_EQ(RunAlone(*e_, blocks_, a), first);

  std::vector<Request> batch = {
      a,
      Request{.id = "b", .prompt = ref_.prompts[3].ids, .params = Seeded(8), .chunk = 5},
      Request{.id = "c", .prompt = ref_.prompts[1].ids},
  };
  for (Request& r : batch) blocks_.Assign(r);
  RunTogether(*e_, batch);
  EXPECT_EQ(batch[0].out, first);
  // A different seed draws a different continuation (16 tokens at T = 1.5).
  EXPECT_NE(batch[1].out, RunAlone(*e_, blocks_, Request{.id = "b2", .prompt = ref_.prompts[3].ids,
                                                         .params = Seeded(9)}));
  // Logprobs: one entry per sampled token, for that token, with 3 alternatives.
  ASSERT_EQ(batch[0].logprobs.size(), batch[0].out.size());
  for (size_t i = 0; i < batch[0].out.size(); ++i) {
    EXPECT_EQ(batch[0].logprobs[i].token_id(), static_cast<uint32_t>(batch[0].out[i]));
    EXPECT_LE(batch[0].logprobs[i].logprob(), 0.0f);
    EXPECT_EQ(batch[0].logprobs[i].top_logprobs_size(), 3);
  }
  EXPECT_TRUE(batch[2].logprobs.empty());
}

// (4b) On a GPU every row is drawn by the device sampler, which draws what
// the host sampler draws from the same logits: a GPU executor's seeded,
// penalised, min_tokens-masked continuations and logprobs equal the CPU
// executor's, in both logprobs modes. The fixture's weights are float32 (GPU
// logits within ~1e-6 of the CPU's), so a draw could differ only where u
// lies within ~1e-6 of a boundary; these seeds are fixed.
TEST_F(StepExecutorTest, DeviceSamplingDrawsWhatTheHostSamplerDraws) {
  if (TestDevice().type == kernels::DeviceType::kCpu) {
    GTEST_SKIP() << "compares a GPU executor with the CPU one (EPSERVE_TEST_DEVICE=cuda)";
  }
  for (sampling::LogprobsMode mode :
       {sampling::LogprobsMode::kRaw, sampling::LogprobsMode::kProcessed}) {
    StepExecutorOptions options;
    options.logprobs_mode = mode;
    options.block_size = kBlockSize;
    options.num_blocks = kNumBlocks;
    auto cpu = StepExecutor::Load(FixtureModelDir("qwen3_moe"), weights::LoadOptions{}, options);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    std::unique_ptr<StepExecutor> gpu = LoadExecutor("qwen3_moe", options);
    ASSERT_NE(gpu, nullptr);

    std::vector<Request> reqs;
    auto add = [&](const std::string& id, size_t prompt, epserve::v1::SamplingParams p) {
      reqs.push_back(Request{.id = id, .prompt = ref_.prompts[prompt].ids, .params = p});
    };
    add("seeded", 2, Seeded(7));
    epserve::v1::SamplingParams cuts;
    cuts.set_temperature(0.8f);
    cuts.set_top_k(5);
    cuts.set_min_p(0.1f);
    cuts.set_presence_penalty(0.4f);
    cuts.set_seed(3);
    cuts.set_logprobs(true);
    cuts.set_top_logprobs(2);
    add("cuts", 1, cuts);
    epserve::v1::SamplingParams greedy = Greedy();
    greedy.set_repetition_penalty(1.3f);
    greedy.set_logprobs(true);
    greedy.set_top_logprobs(4);
    add("greedy penalised", 0, greedy);
    epserve::v1::SamplingParams masked;
    masked.set_temperature(1.0f);
    masked.set_seed(11);
    masked.set_min_tokens(16);
    masked.set_frequency_penalty(0.3f);
    masked.add_stop_token_ids(static_cast<uint32_t>(ref_.prompts[3].greedy_new_tokens[0]));
    masked.add_stop_token_ids(static_cast<uint32_t>(ref_.prompts[3].greedy_new_tokens[1]));
    add("min_tokens", 3, masked);
    epserve::v1::SamplingParams plain;
    plain.set_temperature(0.6f);
    plain.set_top_p(0.5f);
    plain.set_seed(5);
    add("top_p", 1, plain);
    for (Request& r : reqs) blocks_.Assign(r);
    std::vector<Request> on_gpu = reqs;
    RunTogether(**cpu, reqs);
    RunTogether(*gpu, on_gpu);
    for (size_t i = 0; i < reqs.size(); ++i) {
      const std::string where =
          absl::StrCat(reqs[i].id, mode == sampling::LogprobsMode::kRaw ? " raw" : " processed");
      EXPECT_EQ(on_gpu[i].out, reqs[i].out) << where;
      ASSERT_EQ(on_gpu[i].logprobs.size(), reqs[i].logprobs.size()) << where;
      for (size_t t = 0; t < reqs[i].logprobs.size(); ++t) {
        const auto& want = reqs[i].logprobs[t];
        const auto& got = on_gpu[i].logprobs[t];
        EXPECT_EQ(got.token_id(), want.token_id()) << where << " token " << t;
        auto near = [](float a, float b) { return a == b || std::abs(a - b) <= 1e-4f; };
        EXPECT_PRED2(near, got.logprob(), want.logprob()) << where << " token " << t;
        ASSERT_EQ(got.top_logprobs_size(), want.top_logprobs_size()) << where;
        for (int j = 0; j < want.top_logprobs_size(); ++j) {
          EXPECT_EQ(got.top_logprobs(j).token_id(), want.top_logprobs(j).token_id())
              << where << " token " << t << " top " << j;
          EXPECT_PRED2(near, got.top_logprobs(j).logprob(), want.top_logprobs(j).logprob())
              << where << " token " << t << " top " << j;
        }
      }
    }
  }
}

// (5) Bad plans: INVALID_ARGUMENT naming request and field; the executor
// (cache and histories) stays usable.
TEST_F(StepExecutorTest, BadPlansAreRejectedAndLeaveTheExecutorUsable) {
  const auto& p = ref_.prompts[2];
  Request good{.id = "good", .prompt = p.ids};
  blocks_.Assign(good);
  Request other{.id = "other", .prompt = ref_.prompts[1].ids};
  blocks_.Assign(other);

  struct Case {
    std::string name;
    std::function<void(control::v1::StepPlan&)> corrupt;
    std::string request;
    std::string field;
  };
  const int64_t vocab = e_->desc().vocab_size;
  const std::vector<Case> cases = {
      {"token out of vocab",
       [&](auto& plan) { plan.mutable_sequences(1)->set_token_ids(0, static_cast<uint32_t>(vocab)); },
       "other", "sequences[1].token_ids[0]"},
      {"block out of range",
       [](auto& plan) { plan.mutable_sequences(0)->set_block_table(1, kNumBlocks); }, "good",
       "sequences[0].block_table[1]"},
      {"block shared",
       [](auto& plan) {
         plan.mutable_sequences(1)->set_block_table(0, plan.sequences(0).block_table(0));
       },
       "other", "sequences[1].block_table"},
      {"positions beyond the block table",
       [](auto& plan) { plan.mutable_sequences(0)->set_start_position(10000); }, "good",
       "sequences[0].block_table"},
      {"too few blocks",
       [](auto& plan) { plan.mutable_sequences(0)->mutable_block_table()->Truncate(1); }, "good",
       "sequences[0].block_table"},
      {"invalid temperature",
       [](auto& plan) { plan.mutable_sequences(1)->mutable_sampling_params()->set_temperature(-1); },
       "other", "sequences[1].sampling_params"},
      {"invalid top_p",
       [](auto& plan) { plan.mutable_sequences(0)->mutable_sampling_params()->set_top_p(0.0f); },
       "good", "top_p"},
      {"empty tokens", [](auto& plan) { plan.mutable_sequences(0)->clear_token_ids(); }, "good",
       "sequences[0].token_ids"},
      {"duplicate request",
       [](auto& plan) { plan.mutable_sequences(1)->set_request_id("good"); }, "good",
       "sequences[1].request_id"},
  };
  for (const Case& c : cases) {
    control::v1::StepPlan plan;
    *plan.add_sequences() = PlanFor(good);
    *plan.add_sequences() = PlanFor(other);
    c.corrupt(plan);
    auto result = e_->Execute(plan);
    ASSERT_FALSE(result.ok()) << c.name;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(result.status().message()),
                AllOf(HasSubstr(absl::StrCat("'", c.request, "'")), HasSubstr(c.field)))
        << c.name;
  }
  EXPECT_EQ(e_->num_tracked_requests(), 0u);  // nothing recorded by a rejected plan

  // The same executor then runs valid plans to the reference tokens.
  std::vector<Request> both = {good, other};
  RunTogether(*e_, both);
  EXPECT_EQ(both[0].out, p.greedy_new_tokens);
  EXPECT_EQ(both[1].out, ref_.prompts[1].greedy_new_tokens);
}

TEST_F(StepExecutorTest, GapAfterTheRecordedTokensIsRejected) {
  Request r{.id = "r", .prompt = ref_.prompts[3].ids, .chunk = 8};
  blocks_.Assign(r);
  control::v1::StepPlan plan;
  *plan.add_sequences() = PlanFor(r);
  ASSERT_TRUE(e_->Execute(plan).ok());
  r.fed = 16;  // skips tokens 8..15
  plan.Clear();
  *plan.add_sequences() = PlanFor(r);
  auto result = e_->Execute(plan);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              AllOf(HasSubstr("'r'"), HasSubstr("start_position")));
  EXPECT_TRUE(e_->Release("r"));
  EXPECT_FALSE(e_->Release("r"));
}

// (6) Lockstep: a worker with nothing to run still answers every step.
TEST_F(StepExecutorTest, EmptyPlanGivesEmptyResult) {
  control::v1::StepPlan plan;
  plan.set_step_id(42);
  auto result = e_->Execute(plan);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->step_id(), 42u);
  EXPECT_EQ(result->sequences_size(), 0);
  EXPECT_TRUE(result->error().empty());
}

TEST_F(StepExecutorTest, NonFinalChunksGetNoResult) {
  Request r{.id = "r", .prompt = ref_.prompts[3].ids, .chunk = 8};
  blocks_.Assign(r);
  control::v1::StepPlan plan;
  *plan.add_sequences() = PlanFor(r);
  ASSERT_FALSE(plan.sequences(0).sample());
  auto result = e_->Execute(plan);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->sequences_size(), 0);
  EXPECT_EQ(e_->num_tracked_requests(), 1u);
  e_->Release("r");
}

TEST(StepExecutorHistory, TrackedRequestsAreBounded) {
  StepExecutorOptions options;
  options.max_tracked_requests = 2;
  auto e = LoadExecutor("tiny-qwen3-moe", options);
  ASSERT_NE(e, nullptr);
  Blocks blocks;
  for (int i = 0; i < 4; ++i) {
    Request r{.id = absl::StrCat("r", i), .prompt = {1, 2, 3}, .max_new = 1};
    blocks.Assign(r);
    control::v1::StepPlan plan;
    *plan.add_sequences() = PlanFor(r);
    ASSERT_TRUE(e->Execute(plan).ok());
    EXPECT_LE(e->num_tracked_requests(), 2u);
  }
  EXPECT_FALSE(e->Release("r0"));  // evicted
  EXPECT_TRUE(e->Release("r3"));
}

// (7) KV block sizing from a byte budget.
TEST(KvBlocksForBudget, FillsTheBudgetWithWholeBlocks) {
  const kv_cache::KvCacheShape shape = kv_cache::UniformKeyValueShape(3, 2, 8);
  const uint64_t per_block = KvBlockBytes(shape, 16, DataType::kBFloat16);
  EXPECT_EQ(per_block, 2u * 3 * 16 * 2 * 8 * 2);
  auto n = KvBlocksForBudget(shape, 16, DataType::kBFloat16, 10 * per_block + per_block - 1);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 10);
  EXPECT_EQ(*KvBlocksForBudget(shape, 16, DataType::kFloat32, per_block), 0);
  EXPECT_FALSE(KvBlocksForBudget(shape, 0, DataType::kFloat32, 1 << 20).ok());
  EXPECT_FALSE(KvBlocksForBudget(shape, 16, DataType::kInt32, 1 << 20).ok());
}

TEST(KvBlocksForBudget, AgreesWithTheCacheTheExecutorAllocates) {
  auto probe = LoadExecutor("tiny-qwen3-moe");
  ASSERT_NE(probe, nullptr);
  const kv_cache::KvCacheShape shape = probe->cache().shape();
  const uint64_t budget = 3u << 20;
  auto n = KvBlocksForBudget(shape, kBlockSize, DataType::kFloat32, budget);
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_GT(*n, 0);
  StepExecutorOptions options;
  options.num_blocks = *n;
  auto e = LoadExecutor("tiny-qwen3-moe", options);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->num_blocks(), *n);
  EXPECT_LE(e->cache().bytes(), budget);
  EXPECT_GT(e->cache().bytes() + KvBlockBytes(shape, kBlockSize, DataType::kFloat32), budget);
}

}  // namespace
}  // namespace epserve::step
