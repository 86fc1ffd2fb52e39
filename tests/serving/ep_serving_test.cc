// Expert parallelism through the router, as real processes on loopback:
// every MoE fixture served with its experts split over N = 1..4 workers
// (linear and round-robin placement) under concurrent mixed-length traffic
// (so some workers have no tokens in some steps) gives the single-process
// runner's greedy tokens and log-probabilities; EP metrics after traffic;
// a killed or stopped worker ends every in-flight request with UNAVAILABLE
// and the group serves the reference output again once it is back.
//
// EPSERVE_TEST_DEVICE=cuda (ctest ep_serving_gpu, label gpu) runs the same
// with GPU workers that share GPU 0 (--local-gpus=1: the exchange goes
// through host memory over Gloo) against the single-process GPU runner;
// rows cross in bfloat16 there, so log-probabilities agree within
// kGpuLogprobTolerance and greedy tokens exactly.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <functional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/gpu/gpu_test_util.h"
#include "tests/integration/cluster_harness.h"
#include "tests/models/quantize_reference.h"

namespace epserve::testing {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kFixtures[] = EPSERVE_SOURCE_DIR "/tests/fixtures/models";

// bfloat16 rows (8 significant bits) on the wire, out and back, in every MoE
// layer of the fixtures: a few 1e-3 of relative error in the MoE output,
// which the random tiny models turn into log-probability changes of at most
// a few 1e-2.
constexpr double kGpuLogprobTolerance = 5e-2;

const auto* const kGpuEnvironment =
    ::testing::AddGlobalTestEnvironment(new kernels::testing::GpuTestEnvironment);

bool OnGpu() { return kernels::testing::TestDeviceFromEnv().type == kernels::DeviceType::kCuda; }

double LogprobTolerance() { return OnGpu() ? kGpuLogprobTolerance : 1e-4; }

// Worker flags for the device under test: GPU workers share GPU 0.
// EPSERVE_TEST_EAGER=1: without decode graphs.
std::vector<std::string> DeviceArgs() {
  if (!OnGpu()) return {};
  std::vector<std::string> args = {"--device=cuda", "--local-gpus=1", "--kv-cache-memory-mb=64"};
  const char* eager = std::getenv("EPSERVE_TEST_EAGER");
  if (eager != nullptr && std::string(eager) == "1") args.push_back("--enforce-eager");
  return args;
}

struct Prompt {
  std::string text;
  int max_tokens;
};

// Mixed lengths: prompts of 1 to ~40 tokens, outputs of 2 to 12 tokens, so
// requests end at different steps and ranks run out of work at different
// times.
const std::vector<Prompt>& Traffic() {
  static const std::vector<Prompt> traffic = {
      {"Hello world", 12},
      {"a", 2},
      {"The quick brown fox jumps over the lazy dog and keeps running far away", 7},
      {"Mixture of experts", 10},
      {"1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20", 4},
      {"Once upon a time", 12},
  };
  return traffic;
}

struct Reference {
  std::vector<uint32_t> ids;
  std::vector<double> logprobs;
  std::string finish_reason;
};

Reference RunOffline(const std::string& model, const Prompt& p) {
  RunResult r =
      RunToExit(Binary("epserve-run"),
                {"generate", "--model", model, "--prompt", p.text, "--max-tokens",
                 absl::StrCat(p.max_tokens), "--logprobs", "--device", OnGpu() ? "cuda:0" : "cpu"},
                seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  Reference ref;
  if (r.exit_code != 0) return ref;
  // The JSON object is the last line of the output.
  std::string out = r.output;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  auto json = nlohmann::json::parse(out.substr(out.rfind('\n') + 1));
  ref.ids = json["generated_ids"].get<std::vector<uint32_t>>();
  for (const auto& lp : json["logprobs"]) ref.logprobs.push_back(lp["logprob"].get<double>());
  ref.finish_reason = json["finish_reason"].get<std::string>();
  return ref;
}

struct Outcome {
  grpc::Status status;
  std::vector<uint32_t> ids;
  std::vector<double> logprobs;
  v1::GenerateComplete complete;
};

Outcome Generate(v1::Epserve::Stub& stub, const Prompt& p, seconds deadline = seconds(120)) {
  v1::GenerateRequest req;
  req.set_text(p.text);
  req.mutable_sampling_params()->set_temperature(0.0f);
  req.mutable_sampling_params()->set_max_tokens(static_cast<uint32_t>(p.max_tokens));
  req.mutable_sampling_params()->set_logprobs(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  auto reader = stub.Generate(&ctx, req);
  Outcome out;
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (resp.has_chunk()) {
      out.ids.insert(out.ids.end(), resp.chunk().token_ids().begin(),
                     resp.chunk().token_ids().end());
      for (const auto& lp : resp.chunk().logprobs()) out.logprobs.push_back(lp.logprob());
    }
    if (resp.has_complete()) out.complete = resp.complete();
  }
  out.status = reader->Finish();
  return out;
}

std::unique_ptr<RouterHandle> StartExpertParallel(const std::string& model, int workers,
                                                  const std::string& placement,
                                                  std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--model=" + model, absl::StrCat("--local-workers=", workers),
                                   absl::StrCat("--expert-parallel=", workers),
                                   "--expert-placement=" + placement, "--log-level=warn"};
  for (std::string& a : DeviceArgs()) args.push_back(std::move(a));
  args.insert(args.end(), extra.begin(), extra.end());
  auto router = RouterHandle::Start(args);
  if (router == nullptr) return nullptr;
  if (!WaitFor([&] { return router->Serving(); }, seconds(60))) {
    ADD_FAILURE() << "router not serving; output:\n" << router->process().output();
    return nullptr;
  }
  return router;
}

// Expert parallelism over `workers` remote workers started by the test (so
// one can be killed and started again by hand), with the given
// --recovery-timeout-s and --survivor-grace-ms (-1: the group waits for a
// replacement); short liveness and collective timeouts.
std::unique_ptr<RouterHandle> StartRemoteExpertParallel(const std::string& model, int workers,
                                                        int recovery_timeout_s,
                                                        int survivor_grace_ms = -1,
                                                        std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--model=" + model,
                                   absl::StrCat("--workers=", workers),
                                   absl::StrCat("--expert-parallel=", workers),
                                   "--worker-timeout-ms=1500",
                                   "--heartbeat-interval-ms=200",
                                   "--collective-timeout-ms=3000",
                                   absl::StrCat("--recovery-timeout-s=", recovery_timeout_s),
                                   absl::StrCat("--survivor-grace-ms=", survivor_grace_ms),
                                   "--log-level=warn"};
  args.insert(args.end(), extra.begin(), extra.end());
  return RouterHandle::Start(args);
}

// One remote worker of `router` for `rank` (on the GPU where the suite runs
// there, all workers sharing it).
Process StartRemoteWorker(const RouterHandle& router, int rank, const std::string& tag) {
  std::vector<std::string> args = router.WorkerJoinArgs();
  args.insert(args.end(),
              {absl::StrCat("--rank=", rank), "--collective-host=127.0.0.1",
               "--metrics-listen=127.0.0.1:0", "--connect-timeout-s=20", "--cpu-threads=1"});
  if (OnGpu()) {
    args.insert(args.end(),
                {"--device=cuda:0", "--gpu-memory-utilization=0", "--kv-cache-memory-mb=64"});
  }
  return Start(Binary("epserve-worker"), args, absl::StrCat(ScratchDir(), "/worker_", tag, ".log"));
}

struct Case {
  std::string fixture;
  int workers;
  std::string placement;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.fixture << " over " << c.workers << " workers, " << c.placement;
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string placement = info.param.placement == "round-robin" ? "roundrobin" : "linear";
  return absl::StrCat(info.param.fixture, "_", info.param.workers, "workers_", placement);
}

class ExpertParallelParity : public ::testing::TestWithParam<Case> {};

TEST_P(ExpertParallelParity, GreedyTokensAndLogprobsEqualSingleProcess) {
  const Case& c = GetParam();
  const std::string model = absl::StrCat(kFixtures, "/", c.fixture);
  std::vector<Reference> refs;
  for (const Prompt& p : Traffic()) refs.push_back(RunOffline(model, p));
  auto router = StartExpertParallel(model, c.workers, c.placement);
  ASSERT_NE(router, nullptr);
  v1::GetServerInfoResponse info = router->Info();
  EXPECT_EQ(info.parallelism(), "expert");
  EXPECT_EQ(info.expert_placement().strategy(), c.placement);
  auto stub = ClientStub(router->grpc_address());
  // Two rounds of the traffic at once: requests of different lengths overlap.
  const size_t n = Traffic().size();
  std::vector<Outcome> outcomes(2 * n);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    threads.emplace_back([&, i] { outcomes[i] = Generate(*stub, Traffic()[i % n]); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Reference& ref = refs[i % n];
    const Outcome& out = outcomes[i];
    ASSERT_TRUE(out.status.ok()) << i << ": " << out.status.error_message();
    EXPECT_EQ(out.ids, ref.ids) << "request " << i;
    ASSERT_EQ(out.logprobs.size(), ref.logprobs.size()) << "request " << i;
    for (size_t j = 0; j < ref.logprobs.size(); ++j) {
      EXPECT_NEAR(out.logprobs[j], ref.logprobs[j], LogprobTolerance())
          << "request " << i << " token " << j;
    }
  }
  if (c.workers > 1) {
    // Every worker exchanged rows and counted its experts' tokens.
    const v1::GetServerInfoResponse after = router->Info();
    for (const auto& w : after.workers()) {
      std::string m = ScrapeMetrics(w.metrics_address());
      EXPECT_GT(MetricSum(m, "epserve_moe_alltoall_bytes_total"), 0) << "rank " << w.rank();
      EXPECT_GT(MetricValue(m, "epserve_moe_dispatch_seconds_count"), 0) << "rank " << w.rank();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, ExpertParallelParity,
    ::testing::Values(Case{"qwen3_moe", 1, "linear"}, Case{"qwen3_moe", 2, "linear"},
                      Case{"qwen3_moe", 2, "round-robin"}, Case{"qwen3_moe", 3, "linear"},
                      Case{"qwen3_moe", 3, "round-robin"}, Case{"qwen3_moe", 4, "linear"},
                      Case{"qwen3_moe", 4, "round-robin"}, Case{"mixtral", 2, "round-robin"},
                      Case{"mixtral", 4, "linear"}, Case{"qwen2_moe", 3, "linear"},
                      Case{"qwen2_moe", 4, "round-robin"}, Case{"olmoe", 2, "linear"},
                      Case{"olmoe", 3, "round-robin"}),
    CaseName);

TEST(ExpertParallel, MetricsAfterTrafficAddUp) {
  const std::string model = absl::StrCat(kFixtures, "/qwen3_moe");
  constexpr int kWorkers = 3;
  std::vector<Reference> refs;
  for (const Prompt& p : Traffic()) refs.push_back(RunOffline(model, p));
  // Eager on a GPU: a decode graph's padding rows would go through the
  // experts too and be counted.
  auto router = StartExpertParallel(
      model, kWorkers, "linear",
      OnGpu() ? std::vector<std::string>{"--enforce-eager"} : std::vector<std::string>{});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  uint64_t tokens = 0;  // tokens that went through the MoE layers
  // One request at a time: it lives on one worker, and the other two run
  // every step with no tokens of their own, serving its rows to their experts.
  for (size_t i = 0; i < Traffic().size(); ++i) {
    Outcome out = Generate(*stub, Traffic()[i]);
    ASSERT_TRUE(out.status.ok()) << out.status.error_message();
    EXPECT_EQ(out.ids, refs[i].ids) << "request " << i;
    // Every prompt token and every generated token but the last is fed
    // through the model once.
    tokens += out.complete.usage().prompt_tokens() + out.complete.usage().completion_tokens() - 1;
  }
  // Qwen3-MoE: layer i is MoE when (i + 1) % decoder_sparse_step == 0 and i
  // is not in mlp_only_layers (the fixture has 4 layers, 1 of them MoE).
  auto config = nlohmann::json::parse(ReadFile(model + "/config.json"));
  const int top_k = config["num_experts_per_tok"].get<int>();
  const int step = config["decoder_sparse_step"].get<int>();
  const auto mlp_only = config["mlp_only_layers"].get<std::vector<int>>();
  int layers = 0;
  for (int i = 0; i < config["num_hidden_layers"].get<int>(); ++i) {
    if ((i + 1) % step == 0 && std::find(mlp_only.begin(), mlp_only.end(), i) == mlp_only.end()) {
      ++layers;
    }
  }
  ASSERT_GT(layers, 0);
  double expert_tokens = 0;
  int idle_workers = 0;
  const v1::GetServerInfoResponse info = router->Info();
  for (const auto& w : info.workers()) {
    std::string m = ScrapeMetrics(w.metrics_address());
    expert_tokens += MetricSum(m, "epserve_moe_expert_tokens_total");
    if (MetricValue(m, "epserve_worker_idle_steps_total") > 0) ++idle_workers;
    EXPECT_THAT(m, HasSubstr("epserve_moe_load_imbalance_ratio"));
    EXPECT_GT(MetricValue(m, "epserve_moe_combine_seconds_count"), 0);
  }
  EXPECT_EQ(expert_tokens, static_cast<double>(tokens) * top_k * layers);
  EXPECT_GE(idle_workers, kWorkers - 1);
}

TEST(ExpertParallel, KilledWorkerEndsRequestsThenGroupReformsAndServesReference) {
  const std::string model = absl::StrCat(kFixtures, "/qwen3_moe");
  const Prompt long_prompt{"Hello world", 2000};
  const Prompt check{"Mixture of experts", 10};
  const Reference ref = RunOffline(model, check);
  constexpr int kWorkers = 3;
  // Fail-stop (--recovery-timeout-s=0): the requests end with the loss.
  auto router = StartRemoteExpertParallel(model, kWorkers, /*recovery_timeout_s=*/0);
  ASSERT_NE(router, nullptr);
  auto start_worker = [&](int rank, const std::string& tag) {
    return StartRemoteWorker(*router, rank, tag);
  };
  std::vector<Process> workers;
  for (int r = 0; r < kWorkers; ++r) workers.push_back(start_worker(r, absl::StrCat(r)));
  ASSERT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(30)))
      << router->process().output();
  auto stub = ClientStub(router->grpc_address());

  for (int signal : {SIGKILL, SIGSTOP}) {
    SCOPED_TRACE(signal == SIGKILL ? "SIGKILL" : "SIGSTOP");
    std::vector<Outcome> outcomes(4);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < outcomes.size(); ++i) {
      threads.emplace_back([&, i] { outcomes[i] = Generate(*stub, long_prompt, seconds(60)); });
    }
    ASSERT_TRUE(WaitFor([&] { return router->Info().requests_running() == 4; }, seconds(20)));
    std::this_thread::sleep_for(milliseconds(200));  // mid-generation
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(kill(workers[1].proc.pid(), signal), 0);
    for (auto& t : threads) t.join();
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // SIGKILL: the stream closes at once; SIGSTOP: the liveness timeout.
    EXPECT_LT(took, signal == SIGKILL ? 5.0 : 8.0);
    for (size_t i = 0; i < outcomes.size(); ++i) {
      EXPECT_EQ(outcomes[i].status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << i << ": " << outcomes[i].status.error_message();
      EXPECT_THAT(outcomes[i].status.error_message(), HasSubstr("rank 1")) << i;
    }
    EXPECT_TRUE(WaitFor([&] { return !router->Serving(); }, seconds(5)));
    // Bring rank 1 back: a stopped worker is killed first, as an operator
    // (or Kubernetes) would.
    if (signal == SIGSTOP) {
      kill(workers[1].proc.pid(), SIGKILL);
    }
    workers[1].proc.Wait(seconds(10));
    workers[1] = start_worker(1, signal == SIGKILL ? "1b" : "1c");
    ASSERT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(30)))
        << router->process().output();
    // The survivors were not restarted, and new requests give the reference.
    EXPECT_FALSE(workers[0].proc.Wait(milliseconds(0)).has_value());
    EXPECT_FALSE(workers[2].proc.Wait(milliseconds(0)).has_value());
    Outcome again = Generate(*stub, check);
    ASSERT_TRUE(again.status.ok()) << again.status.error_message();
    EXPECT_EQ(again.ids, ref.ids);
  }
  // Killing the router ends the workers once they gave up waiting for it to
  // come back (--connect-timeout-s 20).
  ASSERT_EQ(kill(router->process().proc.pid(), SIGKILL), 0);
  for (Process& w : workers) {
    EXPECT_TRUE(w.proc.Wait(seconds(40)).has_value()) << w.output();
  }
}

// Four greedy streams of 200 tokens: the traffic of the recovery tests.
std::vector<Prompt> RecoveryTraffic() {
  return {{"Hello world", 200},
          {"Mixture of experts", 200},
          {"Once upon a time", 200},
          {"The quick brown fox", 200}};
}

// Every prompt of `traffic` as a stream of its own, all at once; `meanwhile`
// runs while they are in flight (e.g. kills a rank).
std::vector<Outcome> RunConcurrently(v1::Epserve::Stub& stub, const std::vector<Prompt>& traffic,
                                     const std::function<void()>& meanwhile) {
  std::vector<Outcome> outcomes(traffic.size());
  std::vector<std::thread> threads;
  threads.reserve(traffic.size());
  for (size_t i = 0; i < traffic.size(); ++i) {
    threads.emplace_back([&, i] { outcomes[i] = Generate(stub, traffic[i], seconds(120)); });
  }
  meanwhile();
  for (auto& t : threads) t.join();
  return outcomes;
}

// With recovery (the default): a rank killed mid-generation and started
// again (as Kubernetes restarts a pod) re-forms the group with its experts;
// every in-flight stream completes with exactly the undisturbed output.
TEST(ExpertParallel, KilledRankRestartedMidStreamEveryStreamCompletesUndisturbed) {
  const std::string model = absl::StrCat(kFixtures, "/qwen3_moe");
  constexpr int kWorkers = 3;
  auto router = StartRemoteExpertParallel(model, kWorkers, /*recovery_timeout_s=*/60);
  ASSERT_NE(router, nullptr);
  auto start_worker = [&](int rank, const std::string& tag) {
    return StartRemoteWorker(*router, rank, tag);
  };
  std::vector<Process> workers;
  workers.reserve(kWorkers);
  for (int r = 0; r < kWorkers; ++r) workers.push_back(start_worker(r, absl::StrCat(r)));
  ASSERT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(30)))
      << router->process().output();
  auto stub = ClientStub(router->grpc_address());
  const std::vector<Prompt> traffic = RecoveryTraffic();
  auto run = [&](const std::function<void()>& meanwhile) {
    return RunConcurrently(*stub, traffic, meanwhile);
  };
  const std::vector<Outcome> undisturbed = run([] {});
  for (size_t i = 0; i < traffic.size(); ++i) {
    ASSERT_TRUE(undisturbed[i].status.ok()) << i << ": " << undisturbed[i].status.error_message();
  }
  std::chrono::steady_clock::time_point killed;
  const std::vector<Outcome> disturbed = run([&] {
    ASSERT_TRUE(
        WaitFor([&] { return router->Info().requests_running() == traffic.size(); }, seconds(20)));
    std::this_thread::sleep_for(milliseconds(100));  // mid-generation
    killed = std::chrono::steady_clock::now();
    ASSERT_EQ(kill(workers[1].proc.pid(), SIGKILL), 0);
    workers[1].proc.Wait(seconds(10));
    workers[1] = start_worker(1, "1b");
  });
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  for (size_t i = 0; i < traffic.size(); ++i) {
    ASSERT_TRUE(disturbed[i].status.ok()) << i << ": " << disturbed[i].status.error_message();
    EXPECT_EQ(disturbed[i].ids, undisturbed[i].ids) << i;
    EXPECT_EQ(disturbed[i].complete.finish_reason(), undisturbed[i].complete.finish_reason()) << i;
  }
  std::cerr << "recovery (expert parallel, " << kWorkers << " ranks): streams completed " << took
            << " s after SIGKILL of rank 1\n";
  EXPECT_GE(MetricValue(ScrapeMetrics(router->metrics_address()),
                        "epserve_requests_recovered_total{model=\"qwen3_moe\"}"),
            1);
  // The survivors were not restarted.
  EXPECT_FALSE(workers[0].proc.Wait(milliseconds(0)).has_value());
  EXPECT_FALSE(workers[2].proc.Wait(milliseconds(0)).has_value());
}

// Quantized checkpoints (fp8-block, awq-int4 of the MoE fixture, made by the
// reference quantizers) split over 2 CPU workers: each loads only its
// experts' quantized tensors, and the greedy tokens equal the single-process
// runner's on the same checkpoint.
TEST(ExpertParallel, QuantizedCheckpointsEqualSingleProcess) {
  if (OnGpu()) GTEST_SKIP() << "the CUDA backend has no fp8-block / awq-int4 kernels yet";
  for (QuantFormat format : {QuantFormat::kFp8Block, QuantFormat::kAwqInt4}) {
    SCOPED_TRACE(format == QuantFormat::kFp8Block ? "fp8-block" : "awq-int4");
    QuantizedPair pair;
    const std::string dir =
        absl::StrCat(ScratchDir(), "/quantized_", format == QuantFormat::kFp8Block ? "fp8" : "awq");
    absl::Status made = QuantizeModel(absl::StrCat(kFixtures, "/qwen3_moe"), dir, format, &pair);
    ASSERT_TRUE(made.ok()) << made;
    std::vector<Reference> refs;
    for (const Prompt& p : Traffic()) refs.push_back(RunOffline(pair.quantized_dir, p));
    auto router = StartExpertParallel(pair.quantized_dir, 2, "linear");
    ASSERT_NE(router, nullptr);
    auto stub = ClientStub(router->grpc_address());
    for (size_t i = 0; i < Traffic().size(); ++i) {
      Outcome out = Generate(*stub, Traffic()[i]);
      ASSERT_TRUE(out.status.ok()) << i << ": " << out.status.error_message();
      EXPECT_EQ(out.ids, refs[i].ids) << "request " << i;
    }
    const v1::GetServerInfoResponse info = router->Info();
    ASSERT_EQ(info.workers_size(), 2);
    EXPECT_EQ(info.workers(0).local_experts_size() + info.workers(1).local_experts_size(), 8);
  }
}

// A rank killed mid-generation and not replaced: after --survivor-grace-ms
// the two survivors form a group of their own, take over its experts
// (loading them, or from the copies --redundant-experts keeps), and every
// in-flight stream completes with exactly the undisturbed output. When the
// rank comes back the full group forms again and serves the reference.
class SurvivorsTakeOver : public ::testing::TestWithParam<bool> {};

TEST_P(SurvivorsTakeOver, KilledRankNotReplacedStreamsCompleteUndisturbed) {
  const bool redundant = GetParam();
  const std::string model = absl::StrCat(kFixtures, "/qwen3_moe");
  const Prompt check{"Mixture of experts", 10};
  const Reference ref = RunOffline(model, check);
  constexpr int kWorkers = 3;
  std::vector<std::string> extra;
  if (redundant) extra.push_back("--redundant-experts");
  auto router = StartRemoteExpertParallel(model, kWorkers, /*recovery_timeout_s=*/60,
                                          /*survivor_grace_ms=*/0, extra);
  ASSERT_NE(router, nullptr);
  std::vector<Process> workers;
  workers.reserve(kWorkers);
  for (int r = 0; r < kWorkers; ++r) {
    workers.push_back(StartRemoteWorker(*router, r, absl::StrCat("s", redundant, "_", r)));
  }
  ASSERT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(30)))
      << router->process().output();
  const v1::GetServerInfoResponse before = router->Info();
  ASSERT_EQ(before.workers_size(), kWorkers);
  const uint32_t num_experts = static_cast<uint32_t>(before.workers(0).local_experts_size() +
                                                     before.workers(1).local_experts_size() +
                                                     before.workers(2).local_experts_size());
  auto stub = ClientStub(router->grpc_address());
  const std::vector<Prompt> traffic = RecoveryTraffic();
  auto run = [&](const std::function<void()>& meanwhile) {
    return RunConcurrently(*stub, traffic, meanwhile);
  };
  const std::vector<Outcome> undisturbed = run([] {});
  for (size_t i = 0; i < traffic.size(); ++i) {
    ASSERT_TRUE(undisturbed[i].status.ok()) << i << ": " << undisturbed[i].status.error_message();
  }
  std::chrono::steady_clock::time_point killed;
  const std::vector<Outcome> disturbed = run([&] {
    ASSERT_TRUE(
        WaitFor([&] { return router->Info().requests_running() == traffic.size(); }, seconds(20)));
    std::this_thread::sleep_for(milliseconds(100));  // mid-generation
    killed = std::chrono::steady_clock::now();
    ASSERT_EQ(kill(workers[1].proc.pid(), SIGKILL), 0);
    workers[1].proc.Wait(seconds(10));
  });
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  for (size_t i = 0; i < traffic.size(); ++i) {
    ASSERT_TRUE(disturbed[i].status.ok()) << i << ": " << disturbed[i].status.error_message();
    EXPECT_EQ(disturbed[i].ids, undisturbed[i].ids) << i;
    EXPECT_EQ(disturbed[i].complete.finish_reason(), undisturbed[i].complete.finish_reason()) << i;
  }
  std::cerr << "recovery on survivors (expert parallel, " << kWorkers << " ranks, "
            << (redundant ? "redundant experts" : "experts loaded") << "): streams completed "
            << took << " s after SIGKILL of rank 1\n";

  // Serving on two: between them they hold every expert, rank 1's included.
  v1::GetServerInfoResponse info = router->Info();
  EXPECT_EQ(info.state(), v1::CLUSTER_STATE_SERVING);
  EXPECT_THAT(info.state_reason(), HasSubstr("serving on 2 of 3 workers (rank 1 missing)"));
  ASSERT_EQ(info.workers_size(), 2);
  std::set<uint32_t> held;
  for (const v1::WorkerInfo& w : info.workers()) {
    EXPECT_EQ(w.state(), v1::WORKER_STATE_READY);
    held.insert(w.local_experts().begin(), w.local_experts().end());
    // Experts loaded for the group: none with redundant copies.
    const double loaded =
        MetricValue(ScrapeMetrics(w.metrics_address()), "epserve_worker_experts_loaded_total");
    if (redundant) {
      EXPECT_EQ(loaded, 0) << "rank " << w.rank();
    } else {
      EXPECT_GT(loaded, 0) << "rank " << w.rank();
    }
  }
  EXPECT_EQ(held.size(), num_experts);
  Outcome alone = Generate(*stub, check);
  ASSERT_TRUE(alone.status.ok()) << alone.status.error_message();
  EXPECT_EQ(alone.ids, ref.ids);

  // Rank 1 back: the full group with the plan's placement.
  workers[1] = StartRemoteWorker(*router, 1, absl::StrCat("s", redundant, "_1b"));
  ASSERT_TRUE(WaitFor(
      [&] {
        const v1::GetServerInfoResponse i = router->Info();
        return i.state() == v1::CLUSTER_STATE_SERVING && i.workers_size() == kWorkers &&
               i.state_reason().empty();
      },
      seconds(30)))
      << router->process().output();
  info = router->Info();
  for (int r = 0; r < kWorkers; ++r) {
    EXPECT_EQ(info.workers(r).local_experts_size(), before.workers(r).local_experts_size()) << r;
  }
  Outcome full = Generate(*stub, check);
  ASSERT_TRUE(full.status.ok()) << full.status.error_message();
  EXPECT_EQ(full.ids, ref.ids);
  EXPECT_FALSE(workers[0].proc.Wait(milliseconds(0)).has_value());
  EXPECT_FALSE(workers[2].proc.Wait(milliseconds(0)).has_value());
}

INSTANTIATE_TEST_SUITE_P(Load, SurvivorsTakeOver, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "RedundantExperts" : "LoadsExperts";
                         });

}  // namespace
}  // namespace epserve::testing
