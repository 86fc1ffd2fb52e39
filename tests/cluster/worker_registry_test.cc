#include "router/cluster/worker_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace epserve::router {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;

class FakeChannel : public WorkerChannel {
 public:
  void Send(const control::v1::RouterMessage& m) override { sent.push_back(m); }
  void Close(const absl::Status& s) override { closed = s; }
  // The newest JoinGroup sent (default: none).
  control::v1::JoinGroup last_join() const {
    for (auto it = sent.rbegin(); it != sent.rend(); ++it) {
      if (it->has_join_group()) return it->join_group();
    }
    return {};
  }
  // The newest JoinGroup epoch sent, 0 if none.
  uint64_t last_join_epoch() const {
    for (auto it = sent.rbegin(); it != sent.rend(); ++it) {
      if (it->has_join_group()) return it->join_group().epoch();
    }
    return 0;
  }
  std::vector<control::v1::RouterMessage> sent;
  std::optional<absl::Status> closed;
};

class RegistryTest : public ::testing::Test {
 protected:
  void Init(uint32_t world, const std::string& collective_backend = "auto",
            const std::vector<uint32_t>& expert_to_rank = {}) {
    RegistryOptions o;
    o.world_size = world;
    o.survivor_grace = milliseconds(500);
    for (uint32_t r : expert_to_rank) o.plan.mutable_expert_placement()->add_expert_to_rank(r);
    o.plan.mutable_expert_placement()->set_strategy("linear");
    o.collective_backend = collective_backend;
    o.protocol_version = 7;
    o.worker_timeout = milliseconds(1000);
    o.reform_backoff = milliseconds(100);
    registry_ = std::make_unique<WorkerRegistry>(o, &store_);
    registry_->SetServingListener([this](bool s) { transitions_.push_back(s); });
    channels_.resize(world);
  }

  control::v1::RegisterRequest Req(int rank = -1, unsigned version = 7) {
    control::v1::RegisterRequest r;
    r.set_protocol_version(version);
    r.set_hostname("host");
    r.set_requested_rank(rank);
    return r;
  }

  // Registers and attaches a worker for `rank` and (unless `load` is false)
  // reports its weights loaded; returns its id.
  std::string Join(uint32_t rank, bool load = true) {
    return JoinAs(Req(static_cast<int>(rank)), rank, load);
  }

  // A worker on `device` of `host` offering `backends`.
  control::v1::RegisterRequest DeviceReq(uint32_t rank, const std::string& host,
                                         const std::string& device,
                                         const std::vector<std::string>& backends) {
    control::v1::RegisterRequest r = Req(static_cast<int>(rank));
    r.set_hostname(host);
    r.mutable_device()->set_device(device);
    for (const std::string& b : backends) r.mutable_capabilities()->add_collective_backends(b);
    return r;
  }

  std::string JoinAs(const control::v1::RegisterRequest& req, uint32_t rank, bool load = true) {
    auto resp = registry_->Register(req, now_);
    EXPECT_TRUE(resp.ok()) << resp.status();
    channels_[rank] = std::make_unique<FakeChannel>();
    EXPECT_TRUE(registry_->Attach(resp->worker_id(), channels_[rank].get(), now_).ok());
    if (load) Loaded(resp->worker_id(), rank);
    return resp->worker_id();
  }

  void Loaded(const std::string& id, uint32_t expert) {
    control::v1::ModelLoaded loaded;
    loaded.set_weight_dtype("bfloat16");
    loaded.set_weight_bytes(1000 + expert);
    loaded.add_local_experts(expert);
    registry_->OnModelLoaded(id, loaded, now_);
  }

  void Ready(const std::string& id, uint64_t epoch, bool ok = true, uint32_t kv_blocks = 0) {
    control::v1::GroupReady r;
    r.set_kv_num_blocks(kv_blocks);
    r.set_epoch(epoch);
    r.set_ok(ok);
    r.set_alltoall_bytes(128);
    if (!ok) r.set_error("boom");
    registry_->OnGroupReady(id, r, now_);
  }

  v1::GetServerInfoResponse Info() {
    v1::GetServerInfoResponse info;
    registry_->FillServerInfo(&info, now_);
    return info;
  }

  RendezvousStore store_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::vector<std::unique_ptr<FakeChannel>> channels_;
  std::vector<bool> transitions_;
  Clock::time_point now_ = Clock::time_point() + std::chrono::hours(1);
};

TEST_F(RegistryTest, ProtocolMismatchIsRefusedNamingBothVersions) {
  Init(2);
  auto resp = registry_->Register(Req(-1, 3), now_);
  ASSERT_EQ(resp.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(resp.status().message()), HasSubstr("protocol version"));
  EXPECT_THAT(std::string(resp.status().message()), HasSubstr("version 3"));
  EXPECT_THAT(std::string(resp.status().message()), HasSubstr("version 7"));
  EXPECT_EQ(Info().workers_size(), 0);
}

TEST_F(RegistryTest, RankAssignmentTable) {
  Init(3);
  struct Case {
    int requested;
    absl::StatusCode code;
    int expected_rank;
  };
  const Case cases[] = {
      {-1, absl::StatusCode::kOk, 0},          {2, absl::StatusCode::kOk, 2},
      {2, absl::StatusCode::kUnavailable, -1}, {5, absl::StatusCode::kInvalidArgument, -1},
      {-1, absl::StatusCode::kOk, 1},          {-1, absl::StatusCode::kResourceExhausted, -1},
  };
  for (const Case& c : cases) {
    auto resp = registry_->Register(Req(c.requested), now_);
    ASSERT_EQ(resp.status().code(), c.code) << "requested " << c.requested << ": "
                                            << resp.status();
    if (resp.ok()) {
      EXPECT_EQ(static_cast<int>(resp->rank()), c.expected_rank);
      EXPECT_EQ(resp->world_size(), 3u);
    }
  }
}

TEST_F(RegistryTest, ServingOnlyAfterEveryWorkerPassedWarmUp) {
  Init(2);
  std::string a = Join(0);
  EXPECT_EQ(channels_[0]->last_join_epoch(), 0u);  // not everyone is here yet
  std::string b = Join(1);
  uint64_t epoch = channels_[0]->last_join_epoch();
  ASSERT_GT(epoch, 0u);
  EXPECT_EQ(channels_[1]->last_join_epoch(), epoch);
  EXPECT_EQ(Info().state(), v1::CLUSTER_STATE_FORMING);
  Ready(a, epoch);
  EXPECT_FALSE(registry_->serving());
  Ready(b, epoch - 1);  // stale epoch: ignored
  EXPECT_FALSE(registry_->serving());
  Ready(b, epoch);
  EXPECT_TRUE(registry_->serving());
  EXPECT_EQ(transitions_, std::vector<bool>{true});
  EXPECT_EQ(registry_->groups_formed_total(), 1u);
  auto info = Info();
  ASSERT_EQ(info.workers_size(), 2);
  EXPECT_EQ(info.workers(0).state(), v1::WORKER_STATE_READY);
  EXPECT_EQ(info.workers(1).warmup_alltoall_bytes(), 128u);
}

TEST_F(RegistryTest, FailedWarmUpRetriesWithANewEpochAfterBackoff) {
  Init(2);
  std::string a = Join(0), b = Join(1);
  uint64_t epoch = channels_[0]->last_join_epoch();
  Ready(a, epoch);
  Ready(b, epoch, /*ok=*/false);
  EXPECT_FALSE(registry_->serving());
  EXPECT_THAT(Info().state_reason(), HasSubstr("boom"));
  registry_->Sweep(now_ + milliseconds(50));  // still backing off
  EXPECT_EQ(channels_[0]->last_join_epoch(), epoch);
  now_ += milliseconds(150);
  registry_->Sweep(now_);
  uint64_t retry = channels_[0]->last_join_epoch();
  EXPECT_GT(retry, epoch);
  Ready(a, retry);
  Ready(b, retry);
  EXPECT_TRUE(registry_->serving());
}

TEST_F(RegistryTest, LostWorkerStopsServingAndReplacementReformsGroup) {
  Init(2);
  std::string a = Join(0), b = Join(1);
  uint64_t epoch = channels_[0]->last_join_epoch();
  Ready(a, epoch);
  Ready(b, epoch);
  ASSERT_TRUE(registry_->serving());
  store_.Set(RendezvousStore::EpochPrefix(epoch) + "rank_0", "addr").IgnoreError();

  registry_->Detach(b, "stream closed");
  EXPECT_FALSE(registry_->serving());
  auto info = Info();
  EXPECT_EQ(info.state(), v1::CLUSTER_STATE_DEGRADED);
  EXPECT_THAT(info.state_reason(), HasSubstr(b));
  EXPECT_THAT(info.state_reason(), HasSubstr("stream closed"));
  ASSERT_EQ(info.workers_size(), 1);
  EXPECT_EQ(info.workers(0).state(), v1::WORKER_STATE_CONNECTED);
  EXPECT_EQ(registry_->workers_lost_total(), 1u);
  EXPECT_FALSE(channels_[1]->closed.has_value());  // a detached stream is never closed again

  std::string c = Join(1);  // replacement takes the free rank
  uint64_t next = channels_[0]->last_join_epoch();
  EXPECT_GT(next, epoch);
  EXPECT_EQ(channels_[1]->last_join_epoch(), next);
  EXPECT_EQ(store_.Get(RendezvousStore::EpochPrefix(epoch) + "rank_0"), std::nullopt);
  Ready(a, next);
  Ready(c, next);
  EXPECT_TRUE(registry_->serving());
  EXPECT_EQ(transitions_, (std::vector<bool>{true, false, true}));
}

TEST_F(RegistryTest, SilentWorkerIsDeclaredLostAndItsStreamClosed) {
  Init(2);
  std::string a = Join(0), b = Join(1);
  uint64_t epoch = channels_[0]->last_join_epoch();
  Ready(a, epoch);
  Ready(b, epoch);
  now_ += milliseconds(800);
  registry_->Touch(a, now_);
  now_ += milliseconds(400);  // b silent for 1200 ms > 1000 ms
  registry_->Sweep(now_);
  EXPECT_FALSE(registry_->serving());
  ASSERT_TRUE(channels_[1]->closed.has_value());
  EXPECT_EQ(channels_[1]->closed->code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(Info().state_reason(), HasSubstr("silent for 1200 ms"));
  EXPECT_FALSE(channels_[0]->closed.has_value());
}

TEST_F(RegistryTest, RegisteredButNeverAttachedIsDropped) {
  Init(1);
  auto resp = registry_->Register(Req(), now_);
  ASSERT_TRUE(resp.ok());
  registry_->Sweep(now_ + milliseconds(1500));
  EXPECT_EQ(Info().workers_size(), 0);
  FakeChannel late;
  auto s = registry_->Attach(resp->worker_id(), &late, now_);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("register again"));
}

TEST_F(RegistryTest, AttachTwiceOrUnknownIsRefused) {
  Init(2);
  std::string a = Join(0);
  FakeChannel other;
  EXPECT_EQ(registry_->Attach(a, &other, now_).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(registry_->Attach("nobody", &other, now_).code(), absl::StatusCode::kNotFound);
}

TEST_F(RegistryTest, ShutdownTellsEveryWorkerAndDrains) {
  Init(2);
  std::string a = Join(0), b = Join(1);
  registry_->ShutdownAll("maintenance");
  for (auto& ch : channels_) {
    ASSERT_FALSE(ch->sent.empty());
    ASSERT_TRUE(ch->sent.back().has_shutdown());
    EXPECT_EQ(ch->sent.back().shutdown().reason(), "maintenance");
  }
  EXPECT_EQ(Info().state(), v1::CLUSTER_STATE_DRAINING);
  registry_->Detach(a, "exited");
  EXPECT_EQ(Info().state(), v1::CLUSTER_STATE_DRAINING);  // no re-forming while draining
}

TEST_F(RegistryTest, GroupFormsOnlyOnceEveryWorkerHoldsItsWeights) {
  Init(2);
  std::string a = Join(0);
  std::string b = Join(1, /*load=*/false);
  EXPECT_EQ(channels_[0]->last_join_epoch(), 0u);
  EXPECT_EQ(Info().state(), v1::CLUSTER_STATE_FORMING);
  Loaded(b, 1);
  uint64_t epoch = channels_[0]->last_join_epoch();
  ASSERT_GT(epoch, 0u);
  Ready(a, epoch);
  Ready(b, epoch);
  EXPECT_TRUE(registry_->serving());
  auto info = Info();
  EXPECT_EQ(info.workers(1).weight_bytes(), 1001u);
  EXPECT_EQ(info.workers(1).weight_dtype(), "bfloat16");
  ASSERT_EQ(info.workers(1).local_experts_size(), 1);
  EXPECT_EQ(info.workers(1).local_experts(0), 1u);
}

TEST_F(RegistryTest, FatalErrorIsTheReasonTheWorkerIsLost) {
  Init(2);
  std::string a = Join(0);
  std::string b = Join(1, /*load=*/false);
  registry_->OnFatal(b, "checkpoint does not match: missing 1 tensor(s): x");
  auto info = Info();
  EXPECT_EQ(info.workers_size(), 1);
  EXPECT_THAT(info.state_reason(), HasSubstr("missing 1 tensor(s): x (it reported a fatal error)"));
  ASSERT_TRUE(channels_[1]->closed.has_value());
  EXPECT_THAT(std::string(channels_[1]->closed->message()), HasSubstr("fatal"));
}

// The JoinGroup messages sent to `rank`, newest last.
std::vector<control::v1::JoinGroup> Joins(const FakeChannel& channel) {
  std::vector<control::v1::JoinGroup> joins;
  for (const auto& m : channel.sent) {
    if (m.has_join_group()) joins.push_back(m.join_group());
  }
  return joins;
}

TEST_F(RegistryTest, AutoChoosesNcclForGpuWorkersOnGpusOfTheirOwn) {
  Init(2);
  auto resp = registry_->Register(DeviceReq(0, "h", "cuda:0", {"gloo", "nccl"}), now_);
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->collective_backend(), "");  // chosen per group
  channels_[0] = std::make_unique<FakeChannel>();
  ASSERT_TRUE(registry_->Attach(resp->worker_id(), channels_[0].get(), now_).ok());
  Loaded(resp->worker_id(), 0);
  std::string b = JoinAs(DeviceReq(1, "h", "cuda:1", {"gloo", "nccl"}), 1);
  for (int r = 0; r < 2; ++r) {
    auto joins = Joins(*channels_[r]);
    ASSERT_EQ(joins.size(), 1u);
    EXPECT_EQ(joins[0].collective_backend(), "nccl");
  }
  EXPECT_EQ(Info().workers(0).collective_backend(), "nccl");
}

TEST_F(RegistryTest, AutoChoosesGlooForGpuWorkersSharingAGpu) {
  Init(2);
  JoinAs(DeviceReq(0, "h", "cuda:0", {"gloo", "nccl"}), 0);
  JoinAs(DeviceReq(1, "h", "cuda:0", {"gloo", "nccl"}), 1);
  auto joins = Joins(*channels_[1]);
  ASSERT_EQ(joins.size(), 1u);
  EXPECT_EQ(joins[0].collective_backend(), "gloo");
}

TEST_F(RegistryTest, ExplicitNcclWithAWorkerThatLacksItDoesNotFormUntilReplaced) {
  Init(2, "nccl");
  auto resp = registry_->Register(DeviceReq(0, "h", "cuda:0", {"gloo", "nccl"}), now_);
  ASSERT_TRUE(resp.ok());
  EXPECT_EQ(resp->collective_backend(), "nccl");
  channels_[0] = std::make_unique<FakeChannel>();
  ASSERT_TRUE(registry_->Attach(resp->worker_id(), channels_[0].get(), now_).ok());
  Loaded(resp->worker_id(), 0);
  std::string cpu = JoinAs(DeviceReq(1, "h", "cpu", {"gloo"}), 1);
  EXPECT_TRUE(Joins(*channels_[0]).empty());
  EXPECT_TRUE(Joins(*channels_[1]).empty());
  auto info = Info();
  EXPECT_EQ(info.state(), v1::CLUSTER_STATE_FORMING);
  EXPECT_THAT(info.state_reason(), HasSubstr("cannot form a collective group"));
  EXPECT_THAT(info.state_reason(), HasSubstr(absl::StrCat("worker ", cpu,
                                                          " (rank 1 on h, cpu) "
                                                          "does not offer nccl")));
  // A GPU worker takes the rank over: the group forms over NCCL.
  registry_->Detach(cpu, "stream closed");
  JoinAs(DeviceReq(1, "h", "cuda:1", {"gloo", "nccl"}), 1);
  auto joins = Joins(*channels_[0]);
  ASSERT_EQ(joins.size(), 1u);
  EXPECT_EQ(joins[0].collective_backend(), "nccl");
}

TEST_F(RegistryTest, WorldOfOne) {
  Init(1);
  std::string a = Join(0);
  uint64_t epoch = channels_[0]->last_join_epoch();
  ASSERT_GT(epoch, 0u);
  Ready(a, epoch);
  EXPECT_TRUE(registry_->serving());
}

TEST_F(RegistryTest, SurvivorsFormAGroupOfTheirOwnAfterTheGraceAndTheFullGroupReturns) {
  // 6 experts linear over 3 ranks: {0,1} {2,3} {4,5}.
  Init(3, "auto", {0, 0, 1, 1, 2, 2});
  std::string a = Join(0), b = Join(1), c = Join(2);
  uint64_t epoch = channels_[0]->last_join_epoch();
  Ready(a, epoch);
  Ready(b, epoch);
  Ready(c, epoch);
  ASSERT_TRUE(registry_->serving());
  EXPECT_EQ(channels_[1]->last_join().world_size(), 3u);
  EXPECT_THAT(channels_[1]->last_join().expert_placement().expert_to_rank(),
              ::testing::ElementsAre(0, 0, 1, 1, 2, 2));

  registry_->Detach(b, "stream closed", now_);
  EXPECT_FALSE(registry_->serving());
  registry_->Sweep(now_ + milliseconds(400));  // within the grace: waits for a replacement
  EXPECT_EQ(channels_[0]->last_join_epoch(), epoch);
  now_ += milliseconds(600);
  registry_->Sweep(now_);
  const control::v1::JoinGroup join_a = channels_[0]->last_join();
  const control::v1::JoinGroup join_c = channels_[2]->last_join();
  ASSERT_GT(join_a.epoch(), epoch);
  EXPECT_EQ(join_c.epoch(), join_a.epoch());
  EXPECT_EQ(join_a.rank(), 0u);
  EXPECT_EQ(join_c.rank(), 1u);  // rank 2 is group rank 1
  EXPECT_EQ(join_a.world_size(), 2u);
  EXPECT_THAT(join_a.member_ranks(), ::testing::ElementsAre(0, 2));
  // Rank 1's experts 2 and 3 re-placed on the two survivors.
  EXPECT_THAT(join_c.expert_placement().expert_to_rank(), ::testing::ElementsAre(0, 0, 0, 1, 1, 1));
  EXPECT_EQ(join_c.expert_placement().strategy(), "survivors");
  Ready(a, join_a.epoch(), true, /*kv_blocks=*/7);
  EXPECT_FALSE(registry_->serving());
  Ready(c, join_a.epoch(), true, /*kv_blocks=*/9);
  ASSERT_TRUE(registry_->serving());
  std::string reason;
  std::optional<WorkerRegistry::ServingGroupInfo> group = registry_->ServingGroup(&reason);
  ASSERT_TRUE(group.has_value());
  EXPECT_EQ(group->kv_blocks, (std::vector<int>{7, 9}));  // from GroupReady, by group rank
  EXPECT_THAT(Info().state_reason(), HasSubstr("serving on 2 of 3 workers (rank 1 missing)"));

  // Steps go to group ranks; results come back under them.
  std::vector<std::pair<uint32_t, uint64_t>> results;
  registry_->SetStepResultListener([&](uint32_t rank, uint64_t e, const control::v1::StepResult&) {
    results.push_back({rank, e});
  });
  std::vector<control::v1::StepPlan> plans(2);
  plans[0].set_step_id(10);
  plans[1].set_step_id(11);
  ASSERT_TRUE(registry_->SendStep(group->epoch, plans).ok());
  EXPECT_EQ(channels_[2]->sent.back().step_plan().step_id(), 11u);
  EXPECT_EQ(registry_->SendStep(group->epoch, std::vector<control::v1::StepPlan>(3)).code(),
            absl::StatusCode::kInternal);
  registry_->OnStepResult(c, control::v1::StepResult());
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].first, 1u);

  // A replacement that registers, then goes away before it loaded, does not
  // disturb the serving group.
  std::string b2 = Join(1, /*load=*/false);
  EXPECT_TRUE(registry_->serving());
  registry_->Detach(b2, "stream closed", now_);
  EXPECT_TRUE(registry_->serving());
  EXPECT_EQ(channels_[0]->last_join_epoch(), join_a.epoch());

  // One that loads brings the full group back, with the plan's placement.
  std::string b3 = Join(1);
  const control::v1::JoinGroup full = channels_[1]->last_join();
  ASSERT_GT(full.epoch(), join_a.epoch());
  EXPECT_EQ(channels_[2]->last_join().rank(), 2u);
  EXPECT_EQ(full.world_size(), 3u);
  EXPECT_THAT(full.expert_placement().expert_to_rank(), ::testing::ElementsAre(0, 0, 1, 1, 2, 2));
  EXPECT_FALSE(registry_->serving());
  Ready(a, full.epoch());
  Ready(b3, full.epoch());
  Ready(c, full.epoch());
  EXPECT_TRUE(registry_->serving());
  EXPECT_EQ(Info().state_reason(), "");
}

TEST_F(RegistryTest, ASurvivorGroupThatFailsIsNotRetriedUntilTheMembershipChanges) {
  Init(3, "auto", {0, 1, 2});
  std::string a = Join(0), b = Join(1), c = Join(2);
  uint64_t epoch = channels_[0]->last_join_epoch();
  for (const std::string& id : {a, b, c}) Ready(id, epoch);
  ASSERT_TRUE(registry_->serving());
  registry_->Detach(c, "stream closed", now_);
  now_ += milliseconds(600);
  registry_->Sweep(now_);
  const uint64_t survivors = channels_[0]->last_join_epoch();
  ASSERT_GT(survivors, epoch);
  Ready(a, survivors);
  Ready(b, survivors, /*ok=*/false);  // e.g. no memory for the extra experts
  EXPECT_FALSE(registry_->serving());
  now_ += milliseconds(2000);
  registry_->Touch(a, now_);
  registry_->Touch(b, now_);
  registry_->Sweep(now_);
  EXPECT_EQ(channels_[0]->last_join_epoch(), survivors);  // the same survivors: not again
  // Another loss: the one left forms a group alone, holding every expert.
  registry_->Detach(b, "stream closed", now_);
  registry_->Sweep(now_);
  const control::v1::JoinGroup alone = channels_[0]->last_join();
  ASSERT_GT(alone.epoch(), survivors);
  EXPECT_EQ(alone.world_size(), 1u);
  EXPECT_THAT(alone.expert_placement().expert_to_rank(), ::testing::ElementsAre(0, 0, 0));
  Ready(a, alone.epoch());
  EXPECT_TRUE(registry_->serving());
}

TEST_F(RegistryTest, NoSurvivorGroupWhenTheGraceIsNegative) {
  RegistryOptions o;
  o.world_size = 2;
  o.protocol_version = 7;
  o.worker_timeout = milliseconds(1000);
  o.survivor_grace = milliseconds(-1);
  registry_ = std::make_unique<WorkerRegistry>(o, &store_);
  channels_.resize(2);
  std::string a = Join(0), b = Join(1);
  uint64_t epoch = channels_[0]->last_join_epoch();
  Ready(a, epoch);
  Ready(b, epoch);
  registry_->Detach(b, "stream closed", now_);
  now_ += std::chrono::hours(1);
  registry_->Touch(a, now_);
  registry_->Sweep(now_);
  EXPECT_EQ(channels_[0]->last_join_epoch(), epoch);
  EXPECT_EQ(Info().state(), v1::CLUSTER_STATE_DEGRADED);
}

}  // namespace
}  // namespace epserve::router
