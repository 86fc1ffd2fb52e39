// The cluster as real processes on loopback: a router and workers form a
// collective group through the router's rendezvous, run the warm-up
// all-to-all-v, serve health and info, detect dead and stalled workers,
// re-form when a replacement arrives, and shut down without orphans.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/model_config/model_config.h"
#include "common/model_config/tensor_spec.h"
#include "common/shape.h"
#include "tests/integration/cluster_harness.h"
#include "worker/comm/alltoall_check.h"

namespace epserve::testing {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kModel[] = EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe";

Process StartWorker(RouterHandle& router, int rank, const std::string& tag,
                    std::vector<std::string> extra = {}) {
  std::vector<std::string> args = router.WorkerJoinArgs();
  args.insert(args.end(), {absl::StrCat("--rank=", rank), "--collective-host=127.0.0.1",
                           "--metrics-listen=127.0.0.1:0", "--connect-timeout-s=20"});
  args.insert(args.end(), extra.begin(), extra.end());
  return Start(Binary("epserve-worker"), args, absl::StrCat(ScratchDir(), "/worker_", tag, ".log"));
}

bool ProcessExists(pid_t pid) { return kill(pid, 0) == 0; }

const v1::WorkerInfo* FindRank(const v1::GetServerInfoResponse& info, uint32_t rank) {
  for (const auto& w : info.workers()) {
    if (w.rank() == rank) return &w;
  }
  return nullptr;
}

TEST(Cluster, FormsGroupDetectsLossAndStallReformsAndShutsDown) {
  constexpr int kWorld = 3;
  auto router = RouterHandle::Start({"--model=" + std::string(kModel), "--load-format=dummy",
                                     absl::StrCat("--workers=", kWorld),
                                     absl::StrCat("--expert-parallel=", kWorld),
                                     "--worker-timeout-ms=1500", "--heartbeat-interval-ms=200",
                                     "--collective-timeout-ms=5000"});
  ASSERT_NE(router, nullptr);
  EXPECT_EQ(router->Health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(router->Info().state(), v1::CLUSTER_STATE_FORMING);

  // Workers start in scrambled order and ask for their ranks.
  std::vector<Process> workers;
  for (int rank : {2, 0, 1}) workers.push_back(StartWorker(*router, rank, absl::StrCat(rank)));
  auto worker_for_rank = [&](int rank) -> Process& {
    return workers[rank == 2 ? 0 : rank == 0 ? 1 : 2];
  };
  ASSERT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(30)))
      << router->process().output();

  // Every worker ran the warm-up all-to-all-v with the other two, through
  // the rendezvous, and moved exactly the expected bytes.
  v1::GetServerInfoResponse info = router->Info();
  EXPECT_EQ(info.state(), v1::CLUSTER_STATE_SERVING);
  ASSERT_EQ(info.workers_size(), kWorld);
  uint64_t first_epoch = info.group_epoch();
  for (int rank = 0; rank < kWorld; ++rank) {
    const v1::WorkerInfo* w = FindRank(info, rank);
    ASSERT_NE(w, nullptr) << "rank " << rank;
    EXPECT_EQ(w->state(), v1::WORKER_STATE_READY);
    EXPECT_EQ(w->device().device(), "cpu");
    EXPECT_EQ(w->collective_backend(), "gloo");
    EXPECT_EQ(static_cast<pid_t>(w->pid()), worker_for_rank(rank).proc.pid());
    uint64_t expected = 0;
    for (int peer = 0; peer < kWorld; ++peer) {
      expected += (comm::AllToAllCheckCount(rank, peer) + comm::AllToAllCheckCount(peer, rank)) *
                  sizeof(int32_t);
    }
    EXPECT_EQ(w->warmup_alltoall_bytes(), expected) << "rank " << rank;
    // The worker's own metrics endpoint agrees.
    std::string scraped = ScrapeMetrics(w->metrics_address());
    EXPECT_THAT(scraped, HasSubstr("epserve_worker_group_joins_total{result=\"ok\"} 1"));
    EXPECT_THAT(scraped, HasSubstr(absl::StrCat("epserve_worker_rank ", rank)));
  }
  // Each worker holds the dense weights and exactly its own experts.
  auto desc = LoadModelConfig(kModel);
  ASSERT_TRUE(desc.ok()) << desc.status();
  const std::vector<uint32_t> owners = {0, 0, 0, 1, 1, 1, 2, 2};
  for (int rank = 0; rank < kWorld; ++rank) {
    const v1::WorkerInfo* w = FindRank(info, rank);
    std::vector<uint32_t> mine;
    for (uint32_t e = 0; e < owners.size(); ++e) {
      if (owners[e] == static_cast<uint32_t>(rank)) mine.push_back(e);
    }
    EXPECT_EQ(std::vector<uint32_t>(w->local_experts().begin(), w->local_experts().end()), mine);
    uint64_t bytes = 0;
    for (const TensorSpec& s : ExpectedTensors(*desc)) {
      if (s.expert >= 0 && owners[static_cast<size_t>(s.expert)] != static_cast<uint32_t>(rank)) {
        continue;
      }
      bytes += static_cast<uint64_t>(NumElements(s.shape)) * 4;  // the tiny model is float32
    }
    EXPECT_EQ(w->weight_dtype(), "float32");
    EXPECT_EQ(w->weight_bytes(), bytes) << "rank " << rank;
  }
  // Tiny model: 8 experts, linear over 3 ranks.
  EXPECT_EQ(std::vector<uint32_t>(info.expert_placement().expert_to_rank().begin(),
                                  info.expert_placement().expert_to_rank().end()),
            (std::vector<uint32_t>{0, 0, 0, 1, 1, 1, 2, 2}));
  EXPECT_TRUE(WaitFor([&] {
    return ScrapeMetrics(router->metrics_address()).find("epserve_cluster_serving 1") !=
           std::string::npos;
  }, seconds(5)));

  // A worker that dies is noticed within seconds.
  pid_t dead_pid = worker_for_rank(1).proc.pid();
  auto killed_at = std::chrono::steady_clock::now();
  worker_for_rank(1).proc.Signal(SIGKILL);
  ASSERT_TRUE(WaitFor([&] { return !router->Serving(); }, seconds(5)));
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, seconds(5));
  EXPECT_EQ(router->Health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  info = router->Info();
  EXPECT_EQ(info.state(), v1::CLUSTER_STATE_DEGRADED);
  EXPECT_EQ(info.workers_size(), kWorld - 1);
  EXPECT_EQ(FindRank(info, 1), nullptr);
  EXPECT_THAT(info.state_reason(), HasSubstr("rank 1"));
  for (const auto& w : info.workers()) EXPECT_NE(static_cast<pid_t>(w.pid()), dead_pid);

  // A replacement takes rank 1; the survivors join a new group with it.
  Process replacement = StartWorker(*router, 1, "1b");
  ASSERT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(30)))
      << router->process().output();
  info = router->Info();
  EXPECT_GT(info.group_epoch(), first_epoch);
  EXPECT_EQ(static_cast<pid_t>(FindRank(info, 1)->pid()), replacement.proc.pid());
  for (const auto& w : info.workers()) EXPECT_EQ(w.state(), v1::WORKER_STATE_READY);

  // A worker that stalls (alive but silent) is declared lost too.
  Process& stalled = worker_for_rank(2);
  stalled.proc.Signal(SIGSTOP);
  auto stalled_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitFor([&] { return !router->Serving(); }, seconds(6)));
  EXPECT_LT(std::chrono::steady_clock::now() - stalled_at, seconds(6));
  info = router->Info();
  EXPECT_EQ(FindRank(info, 2), nullptr);
  EXPECT_THAT(info.state_reason(), HasSubstr("silent"));
  stalled.proc.Signal(SIGKILL);
  stalled.proc.Wait(seconds(5));

  // SIGTERM: the router tells the workers, they exit 0, so does the router.
  router->process().proc.Signal(SIGTERM);
  EXPECT_EQ(router->process().proc.Wait(seconds(15)), 0) << router->process().output();
  EXPECT_EQ(worker_for_rank(0).proc.Wait(seconds(10)), 0) << worker_for_rank(0).output();
  EXPECT_EQ(replacement.proc.Wait(seconds(10)), 0) << replacement.output();
  EXPECT_THAT(replacement.output(), HasSubstr("router asked this worker to shut down"));
}

// A router that dies and comes back on the same control address: the remote
// workers wait for it, register again with their ranks and serve without
// loading their weights again.
TEST(Cluster, RemoteWorkersRejoinARestartedRouterWithoutReloading) {
  auto first = RouterHandle::Start({"--model=" + std::string(kModel), "--workers=2"});
  ASSERT_NE(first, nullptr);
  std::vector<Process> workers;
  workers.reserve(2);
  for (int rank : {0, 1}) workers.push_back(StartWorker(*first, rank, absl::StrCat(rank)));
  ASSERT_TRUE(WaitFor([&] { return first->Serving(); }, seconds(30))) << first->process().output();
  auto generate = [](RouterHandle& router) {
    auto stub = ClientStub(router.grpc_address());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
    v1::GenerateRequest req;
    req.mutable_token_ids()->add_ids(5);
    req.mutable_token_ids()->add_ids(9);
    req.mutable_sampling_params()->set_max_tokens(8);
    req.mutable_sampling_params()->set_temperature(0);
    auto reader = stub->Generate(&ctx, req);
    std::vector<uint32_t> ids;
    v1::GenerateResponse resp;
    while (reader->Read(&resp)) {
      if (resp.has_chunk()) {
        ids.insert(ids.end(), resp.chunk().token_ids().begin(), resp.chunk().token_ids().end());
      }
    }
    EXPECT_TRUE(reader->Finish().ok());
    return ids;
  };
  const std::vector<uint32_t> before = generate(*first);
  ASSERT_FALSE(before.empty());

  first->process().proc.Signal(SIGKILL);
  first->process().proc.Wait(seconds(5));
  std::this_thread::sleep_for(milliseconds(500));
  for (Process& w : workers) EXPECT_TRUE(w.proc.running()) << w.output();  // waiting

  auto second = RouterHandle::Start({"--model=" + std::string(kModel), "--workers=2",
                                     "--control-listen=" + first->control_address(),
                                     "--cluster-secret-file=" + first->secret_file()});
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(WaitFor([&] { return second->Serving(); }, seconds(30)))
      << second->process().output() << workers[0].output();
  for (int rank : {0, 1}) {
    const std::string log = workers[rank].output();
    EXPECT_THAT(log, HasSubstr("registering again as rank " + std::to_string(rank)));
    EXPECT_THAT(log, HasSubstr("weights were loaded for: kept"));
    size_t loads = 0;
    for (size_t at = log.find("] loaded "); at != std::string::npos;
         at = log.find("] loaded ", at + 1)) {
      ++loads;
    }
    EXPECT_EQ(loads, 1u) << log;  // loaded once, for the first router
    EXPECT_EQ(FindRank(second->Info(), static_cast<uint32_t>(rank))->pid(),
              static_cast<uint32_t>(workers[rank].proc.pid()));
  }
  EXPECT_EQ(generate(*second), before);
  second->process().proc.Signal(SIGTERM);
  EXPECT_EQ(second->process().proc.Wait(seconds(20)), 0);
  for (Process& w : workers) EXPECT_EQ(w.proc.Wait(seconds(20)), 0) << w.output();
}

TEST(Cluster, WorkerWithWrongProtocolVersionIsRefused) {
  auto router = RouterHandle::Start(
      {"--model=" + std::string(kModel), "--load-format=dummy", "--workers=1"});
  ASSERT_NE(router, nullptr);
  Process bad = StartWorker(*router, -1, "bad", {"--protocol-version=999"});
  std::optional<int> code = bad.proc.Wait(seconds(15));
  ASSERT_TRUE(code.has_value()) << "worker with a wrong protocol version kept running";
  EXPECT_NE(*code, 0);
  EXPECT_THAT(bad.output(), HasSubstr("protocol version mismatch"));
  EXPECT_THAT(bad.output(), HasSubstr("version 999"));
  EXPECT_THAT(router->process().output(), HasSubstr("refused registration"));
  EXPECT_EQ(router->Info().workers_size(), 0);
  // The right version is still welcome.
  Process good = StartWorker(*router, -1, "good");
  EXPECT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(20))) << good.output();
}

TEST(Cluster, LocalWorkersServeAndLeaveNoOrphans) {
  // The bundled model's real (random) weights, as the quick start serves it.
  auto router = RouterHandle::Start({"--model=" + std::string(kModel), "--local-workers=2"});
  ASSERT_NE(router, nullptr);
  ASSERT_TRUE(WaitFor([&] { return router->Serving(); }, seconds(30)))
      << router->process().output();
  std::vector<pid_t> pids;
  v1::GetServerInfoResponse info = router->Info();
  for (const auto& w : info.workers()) pids.push_back(static_cast<pid_t>(w.pid()));
  ASSERT_EQ(pids.size(), 2u);
  // Killing the router outright (no chance to drain) still takes the
  // workers down with it.
  router->process().proc.Signal(SIGKILL);
  router->process().proc.Wait(seconds(5));
  EXPECT_TRUE(WaitFor([&] {
    for (pid_t p : pids) {
      if (ProcessExists(p)) return false;
    }
    return true;
  }, seconds(10)));
}

TEST(Cluster, WorkerThatCannotLoadItsWeightsIsReportedWithTheReason) {
  // config.json but no weight files: the router starts (it warns), the
  // worker fails to load, says why, and exits non-zero.
  auto router = RouterHandle::Start({"--model=" + ConfigOnlyModel(), "--workers=1"});
  ASSERT_NE(router, nullptr);
  EXPECT_THAT(router->process().output(), HasSubstr("no safetensors weights"));
  Process worker = StartWorker(*router, 0, "noweights");
  std::optional<int> code = worker.proc.Wait(seconds(20));
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_THAT(worker.output(), HasSubstr("no safetensors weights"));
  v1::GetServerInfoResponse info = router->Info();
  EXPECT_EQ(info.workers_size(), 0);
  EXPECT_THAT(info.state_reason(), HasSubstr("no safetensors weights"));
  EXPECT_FALSE(router->Serving());
}

}  // namespace
}  // namespace epserve::testing
