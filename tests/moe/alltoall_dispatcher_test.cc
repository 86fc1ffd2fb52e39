// AllToAllTokenDispatcher against the single-process LocalTokenDispatcher:
// N ranks (threads of this process, Gloo over loopback) each run
// Dispatch → GroupedExpertMatMul with only their own experts → Combine on
// their own tokens, and must get what one process holding every expert gets
// for the same tokens (max |diff| <= 1e-5 · max |out|). Also: the exchange
// statistics, buffer reuse, a peer that never calls, call order and bad
// arguments.
#include "worker/moe/alltoall_dispatcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/placement.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "tests/moe/dispatch_cases.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/local_communicator.h"
#include "worker/comm/rendezvous.h"
#include "worker/moe/token_dispatcher.h"

namespace epserve::moe {
namespace {

using ::testing::HasSubstr;

class AllToAllDispatcherTest : public ::testing::TestWithParam<std::tuple<int, PlacementStrategy>> {
};

TEST_P(AllToAllDispatcherTest, MatchesSingleProcessAndReportsExchange) {
  const auto [world, strategy] = GetParam();
  const std::vector<uint32_t> placement = *PlaceExperts(kExperts, world, strategy);
  const std::vector<Tensor> experts = ExpertWeights();
  const std::vector<Step> steps = Steps(world);
  const std::vector<int64_t> top_ks = {1, 2, kExperts};
  // records[rank][k index]: one record per step.
  std::vector<std::vector<std::vector<ExchangeRecord>>> records(
      world, std::vector<std::vector<ExchangeRecord>>(top_ks.size()));

  RunRanks(world, milliseconds(5000), "match/", [&](comm::Communicator& comm) {
    const int me = comm.rank();
    auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
    const std::vector<Tensor> local = LocalExperts(experts, placement, me);
    for (size_t ki = 0; ki < top_ks.size(); ++ki) {
      const int64_t k = top_ks[ki];
      auto dispatcher =
          AllToAllTokenDispatcher::Create(*backend, kExperts, k, kHidden, placement, &comm);
      ASSERT_TRUE(dispatcher.ok()) << dispatcher.status();
      Recorder recorder;
      (*dispatcher)->SetObserver(&recorder);
      for (size_t i = 0; i < steps.size(); ++i) {
        const RankInputs in = MakeInputs(steps[i], static_cast<int>(i), me, k, placement);
        (*dispatcher)->SetLayer(static_cast<int>(i));
        absl::Status status;
        const std::vector<float> got = RunLayer(*backend, **dispatcher, in, local, &status);
        ASSERT_TRUE(status.ok()) << "rank " << me << " k " << k << " step " << i << ": " << status;
        EXPECT_LE(RelativeError(got, Reference(*backend, in, experts)), kTolerance)
            << "rank " << me << " k " << k << " step " << i;
      }
      records[me][ki] = std::move(recorder.records);
    }
  });

  for (size_t ki = 0; ki < top_ks.size(); ++ki) {
    const int64_t k = top_ks[ki];
    for (size_t i = 0; i < steps.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "k " << k << " step " << i);
      // Assignments per expert over all ranks' inputs.
      std::vector<int64_t> want(kExperts, 0);
      int64_t assignments = 0;
      for (int r = 0; r < world; ++r) {
        const RankInputs in = MakeInputs(steps[i], static_cast<int>(i), r, k, placement);
        const int32_t* ids = in.topk_ids.data_as<int32_t>();
        for (int64_t a = 0; a < in.topk_ids.numel(); ++a) ++want[ids[a]];
        assignments += in.topk_ids.numel();
      }
      std::vector<int64_t> want_per_rank(world, 0);
      for (int64_t e = 0; e < kExperts; ++e) want_per_rank[placement[e]] += want[e];

      int64_t received = 0;
      for (int r = 0; r < world; ++r) {
        ASSERT_EQ(records[r][ki].size(), steps.size()) << "rank " << r;
        const ExchangeRecord& rec = records[r][ki][i];
        EXPECT_EQ(rec.layer, static_cast<int>(i));
        EXPECT_EQ(rec.rows_per_rank, want_per_rank) << "rank " << r;
        ASSERT_EQ(rec.rows_per_expert.size(), static_cast<size_t>(kExperts));
        for (int64_t e = 0; e < kExperts; ++e) {
          EXPECT_EQ(rec.rows_per_expert[e], placement[e] == static_cast<uint32_t>(r) ? want[e] : 0)
              << "rank " << r << " expert " << e;
        }
        received +=
            std::accumulate(rec.rows_per_expert.begin(), rec.rows_per_expert.end(), int64_t{0});
        EXPECT_EQ(rec.bytes_sent, rec.bytes_received);
        if (world == 1) {
          EXPECT_EQ(rec.bytes_sent, 0u);
        } else {
          EXPECT_GE(rec.bytes_sent, (world - 1) * kExperts * sizeof(int64_t));
        }
      }
      EXPECT_EQ(received, assignments);
    }
  }
}

std::string RanksAndPlacement(
    const ::testing::TestParamInfo<std::tuple<int, PlacementStrategy>>& param) {
  return absl::StrCat(
      std::get<0>(param.param), "Ranks",
      std::get<1>(param.param) == PlacementStrategy::kLinear ? "Linear" : "RoundRobin");
}

INSTANTIATE_TEST_SUITE_P(Ranks, AllToAllDispatcherTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4),
                                            ::testing::Values(PlacementStrategy::kLinear,
                                                              PlacementStrategy::kRoundRobin)),
                         RanksAndPlacement);

// With k = E every token reaches every expert, so no later step with fewer
// tokens per rank needs more room than the first, largest one.
TEST(AllToAllDispatcher, ReusesBuffersAcrossLayersAndSteps) {
  constexpr int kWorld = 3;
  const std::vector<uint32_t> placement =
      *PlaceExperts(kExperts, kWorld, PlacementStrategy::kRoundRobin);
  const std::vector<Tensor> experts = ExpertWeights();
  RunRanks(kWorld, milliseconds(5000), "reuse/", [&](comm::Communicator& comm) {
    const int me = comm.rank();
    auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
    const std::vector<Tensor> local = LocalExperts(experts, placement, me);
    auto dispatcher =
        *AllToAllTokenDispatcher::Create(*backend, kExperts, kExperts, kHidden, placement, &comm);
    int64_t allocations = -1;
    std::mt19937 rng(7);  // same sequence on every rank
    for (int i = 0; i < 12; ++i) {
      Step step{Routing::kRandom, 0, std::vector<int64_t>(kWorld, 20)};
      if (i > 0) {
        for (int64_t& t : step.tokens) t = std::uniform_int_distribution<int64_t>(0, 20)(rng);
      }
      const RankInputs in = MakeInputs(step, i, me, kExperts, placement);
      dispatcher->SetLayer(i % 4);
      absl::Status status;
      const std::vector<float> got = RunLayer(*backend, *dispatcher, in, local, &status);
      ASSERT_TRUE(status.ok()) << status;
      EXPECT_LE(RelativeError(got, Reference(*backend, in, experts)), kTolerance) << "step " << i;
      if (i == 0) allocations = dispatcher->num_buffer_allocations();
      EXPECT_EQ(dispatcher->num_buffer_allocations(), allocations)
          << "rank " << me << " step " << i;
    }
  });
}

TEST(AllToAllDispatcher, PeerThatNeverCallsFailsNamingTheLayerThenANewGroupWorks) {
  constexpr int kWorld = 2;
  const std::vector<uint32_t> placement =
      *PlaceExperts(kExperts, kWorld, PlacementStrategy::kLinear);
  const std::vector<Tensor> experts = ExpertWeights();
  const Step step{Routing::kRandom, 0, {6, 4}};
  std::promise<void> dispatch_failed, combine_failed;
  std::shared_future<void> dispatch_done = dispatch_failed.get_future().share();
  std::shared_future<void> combine_done = combine_failed.get_future().share();
  comm::InMemoryRendezvous rendezvous;
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
      const RankInputs in = MakeInputs(step, 0, r, 2, placement);
      const std::vector<Tensor> local = LocalExperts(experts, placement, r);
      auto first =
          comm::GlooCommunicator::Create(Options(r, kWorld, "a/", milliseconds(500)), rendezvous);
      ASSERT_TRUE(first.ok()) << first.status();
      auto dispatcher =
          *AllToAllTokenDispatcher::Create(*backend, kExperts, 2, kHidden, placement, first->get());
      // Dispatch: rank 1 never calls.
      if (r == 0) {
        dispatcher->SetLayer(3);
        const auto start = std::chrono::steady_clock::now();
        auto d = dispatcher->Dispatch(in.hidden, in.topk_ids, in.topk_weights);
        EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
        ASSERT_FALSE(d.ok());
        EXPECT_THAT(std::string(d.status().message()), HasSubstr("MoE layer 3 dispatch: "));
        dispatch_failed.set_value();
      } else {
        dispatch_done.wait();
      }

      // Combine: both dispatch on a fresh group, rank 1 never combines.
      auto second =
          comm::GlooCommunicator::Create(Options(r, kWorld, "b/", milliseconds(500)), rendezvous);
      ASSERT_TRUE(second.ok()) << second.status();
      ASSERT_TRUE(dispatcher->SetCommunicator(second->get()).ok());
      dispatcher->SetLayer(7);
      auto d = dispatcher->Dispatch(in.hidden, in.topk_ids, in.topk_weights);
      ASSERT_TRUE(d.ok()) << d.status();
      if (r == 0) {
        Tensor expert_out = *backend->Empty(DataType::kFloat32, {d->rows.shape[0], kHidden});
        ASSERT_TRUE(
            backend->GroupedExpertMatMul(d->rows, d->expert_offsets, Linears(local), &expert_out)
                .ok());
        Tensor out = *backend->Empty(DataType::kFloat32, {in.hidden.shape[0], kHidden});
        absl::Status s = dispatcher->Combine(expert_out, &out);
        EXPECT_THAT(std::string(s.message()), HasSubstr("MoE layer 7 combine: "));
        combine_failed.set_value();
      } else {
        combine_done.wait();
      }

      // A re-formed group serves again through the same dispatcher.
      auto third =
          comm::GlooCommunicator::Create(Options(r, kWorld, "c/", milliseconds(5000)), rendezvous);
      ASSERT_TRUE(third.ok()) << third.status();
      ASSERT_TRUE(dispatcher->SetCommunicator(third->get()).ok());
      absl::Status status;
      const std::vector<float> got = RunLayer(*backend, *dispatcher, in, local, &status);
      ASSERT_TRUE(status.ok()) << status;
      EXPECT_LE(RelativeError(got, Reference(*backend, in, experts)), kTolerance);
    });
  }
  for (std::thread& t : threads) t.join();
}

// A communicator of `world` ranks on which every collective fails.
class FailingCommunicator final : public comm::Communicator {
 public:
  explicit FailingCommunicator(int world) : world_(world) {}
  int rank() const override { return 0; }
  int world_size() const override { return world_; }
  std::string backend() const override { return "failing"; }
  absl::Status AllToAllV(const void*, absl::Span<const int64_t>, void*, absl::Span<const int64_t>,
                         size_t, void*) override {
    return absl::UnavailableError("AllToAllV: peer gone");
  }
  absl::Status AllGather(const void*, void*, size_t, void*) override {
    return absl::UnavailableError("AllGather: peer gone");
  }
  absl::Status AllReduceSum(void*, size_t, DataType, void*) override {
    return absl::UnavailableError("AllReduceSum: peer gone");
  }
  absl::Status Barrier() override { return absl::UnavailableError("Barrier: peer gone"); }

 private:
  int world_;
};

TEST(AllToAllDispatcher, EnforcesDispatchCombineOrder) {
  auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
  comm::LocalCommunicator local_comm;
  const std::vector<uint32_t> placement(kExperts, 0);
  auto d = *AllToAllTokenDispatcher::Create(*backend, kExperts, 2, kHidden, placement, &local_comm);
  const RankInputs in = MakeInputs({Routing::kRandom, 0, {5}}, 0, 0, 2, placement);
  Tensor out = *backend->Empty(DataType::kFloat32, {5, kHidden});
  Tensor no_rows = *backend->Empty(DataType::kFloat32, {10, kHidden});

  EXPECT_EQ(d->Combine(no_rows, &out).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(d->Dispatch(in.hidden, in.topk_ids, in.topk_weights).ok());
  EXPECT_EQ(d->Dispatch(in.hidden, in.topk_ids, in.topk_weights).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(d->Combine(no_rows, &out).ok());
  EXPECT_EQ(d->Combine(no_rows, &out).code(), absl::StatusCode::kFailedPrecondition);

  // A failed exchange leaves no Dispatch pending; the error names the layer.
  FailingCommunicator failing(1);
  ASSERT_TRUE(d->SetCommunicator(&failing).ok());
  d->SetLayer(2);
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto s = d->Dispatch(in.hidden, in.topk_ids, in.topk_weights).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(s.message(), "MoE layer 2 dispatch: AllGather: peer gone");
  }
  ASSERT_TRUE(d->SetCommunicator(nullptr).ok());
  EXPECT_EQ(d->Dispatch(in.hidden, in.topk_ids, in.topk_weights).status().code(),
            absl::StatusCode::kFailedPrecondition);

  // Arguments of the wrong shape.
  ASSERT_TRUE(d->SetCommunicator(&local_comm).ok());
  Tensor wide = *backend->Empty(DataType::kFloat32, {5, kHidden + 1});
  EXPECT_EQ(d->Dispatch(wide, in.topk_ids, in.topk_weights).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(d->Dispatch(in.hidden, in.topk_ids, in.topk_weights).ok());
  EXPECT_EQ(d->Combine(wide, &out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(AllToAllDispatcher, RejectsBadConstructionArguments) {
  auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
  comm::LocalCommunicator one_rank;
  const std::vector<uint32_t> all_on_zero(kExperts, 0);
  auto create = [&](std::vector<uint32_t> placement, comm::Communicator* c, int64_t top_k = 2,
                    int64_t hidden = kHidden) {
    return AllToAllTokenDispatcher::Create(*backend, kExperts, top_k, hidden, std::move(placement),
                                           c)
        .status();
  };
  absl::Status s = create(std::vector<uint32_t>(kExperts - 1, 0), &one_rank);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("expert_to_rank: expected 8 entries"));

  std::vector<uint32_t> beyond = all_on_zero;
  beyond[3] = 1;
  s = create(beyond, &one_rank);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("expert_to_rank[3]: expected a rank in [0, 1)"));

  // Unbound (no group yet): created, but Dispatch fails until a group is set.
  {
    auto unbound =
        AllToAllTokenDispatcher::Create(*backend, kExperts, 2, kHidden, all_on_zero, nullptr);
    ASSERT_TRUE(unbound.ok()) << unbound.status();
    auto hidden = backend->Empty(DataType::kFloat32, {1, kHidden});
    auto ids = backend->Empty(DataType::kInt32, {1, 2});
    ASSERT_TRUE(hidden.ok() && ids.ok());
    EXPECT_FALSE((*unbound)->Dispatch(*hidden, *ids, *ids).ok());
  }
  EXPECT_EQ(create(all_on_zero, &one_rank, /*top_k=*/0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(all_on_zero, &one_rank, /*top_k=*/kExperts + 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create(all_on_zero, &one_rank, 2, /*hidden=*/0).code(),
            absl::StatusCode::kInvalidArgument);

  s = AllToAllTokenDispatcher::Create(*backend, kExperts, 2, kHidden, all_on_zero, &one_rank,
                                      DataType::kFloat16)
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("wire_dtype: expected float32 or bfloat16, found float16"));

  // A later group too small for the placement is refused; the old one stays.
  FailingCommunicator two_ranks(2);
  auto d = *AllToAllTokenDispatcher::Create(*backend, kExperts, 2, kHidden, beyond, &two_ranks);
  s = d->SetCommunicator(&one_rank);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  const RankInputs in = MakeInputs({Routing::kRandom, 0, {3}}, 0, 0, 2, beyond);
  EXPECT_THAT(std::string(d->Dispatch(in.hidden, in.topk_ids, in.topk_weights).status().message()),
              HasSubstr("AllGather: peer gone"));
}

// Rows crossing as bfloat16 (converted by CopyRows on both sides) give the
// float32 wire's results within bf16 rounding, with half the row bytes.
TEST(AllToAllDispatcher, Bfloat16WireMatchesFloat32WireWithinBf16Tolerance) {
  constexpr double kBf16Tolerance = 2e-2;
  const std::vector<Tensor> experts = ExpertWeights();
  for (int world : {2, 3}) {
    for (PlacementStrategy strategy :
         {PlacementStrategy::kLinear, PlacementStrategy::kRoundRobin}) {
      SCOPED_TRACE(testing::Message()
                   << world << " ranks, strategy " << static_cast<int>(strategy));
      const std::vector<uint32_t> placement = *PlaceExperts(kExperts, world, strategy);
      const std::vector<Step> steps = Steps(world);
      std::vector<double> max_error(world, 0.0);
      RunRanks(world, milliseconds(5000),
               absl::StrCat("wire/", world, "/", static_cast<int>(strategy), "/"),
               [&](comm::Communicator& comm) {
                 const int me = comm.rank();
                 auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
                 const std::vector<Tensor> local = LocalExperts(experts, placement, me);
                 auto f32 = AllToAllTokenDispatcher::Create(*backend, kExperts, 2, kHidden,
                                                            placement, &comm);
                 auto bf16 = AllToAllTokenDispatcher::Create(*backend, kExperts, 2, kHidden,
                                                             placement, &comm, DataType::kBFloat16);
                 ASSERT_TRUE(f32.ok() && bf16.ok());
                 Recorder f32_records, bf16_records;
                 (*f32)->SetObserver(&f32_records);
                 (*bf16)->SetObserver(&bf16_records);
                 for (size_t i = 0; i < steps.size(); ++i) {
                   const RankInputs in =
                       MakeInputs(steps[i], static_cast<int>(i), me, 2, placement);
                   absl::Status s32, s16;
                   const std::vector<float> want = RunLayer(*backend, **f32, in, local, &s32);
                   const std::vector<float> got = RunLayer(*backend, **bf16, in, local, &s16);
                   ASSERT_TRUE(s32.ok()) << s32;
                   ASSERT_TRUE(s16.ok()) << s16;
                   const double error = RelativeError(got, want);
                   EXPECT_LE(error, kBf16Tolerance) << "rank " << me << " step " << i;
                   max_error[me] = std::max(max_error[me], error);
                 }
                 ASSERT_EQ(f32_records.records.size(), bf16_records.records.size());
                 const uint64_t count_bytes = (world - 1) * kExperts * sizeof(int64_t);
                 for (size_t i = 0; i < f32_records.records.size(); ++i) {
                   EXPECT_EQ(bf16_records.records[i].bytes_sent - count_bytes,
                             (f32_records.records[i].bytes_sent - count_bytes) / 2)
                       << "rank " << me << " step " << i;
                 }
               });
      // The rows did cross in bfloat16: some result moved by its rounding.
      EXPECT_GT(*std::max_element(max_error.begin(), max_error.end()), 0.0);
    }
  }
}

}  // namespace
}  // namespace epserve::moe
