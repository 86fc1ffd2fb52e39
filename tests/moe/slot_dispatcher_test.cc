// SlotTokenDispatcher against the single-process LocalTokenDispatcher: N
// ranks (threads of this process, Gloo over loopback) each run Dispatch →
// GroupedExpertMatMul with only their own experts → Combine on their own
// tokens, in both exchanges (counts first; fixed capacity) and both wire
// dtypes, on random routings (spread, all to one expert, all to one rank,
// ranks without tokens, top-k 1 / 2 / E so several picks share a rank).
// Also: the exchange statistics, buffer reuse, a peer that never calls, call
// order and bad arguments.
#include "worker/moe/slot_dispatcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/placement.h"
#include "kernels/registry.h"
#include "tests/moe/dispatch_cases.h"
#include "worker/comm/local_communicator.h"

namespace epserve::moe {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kCapacity = 32;  // >= every step's tokens per rank in Steps()

int64_t MostTokens(const Step& step) {
  return *std::max_element(step.tokens.begin(), step.tokens.end());
}

class SlotDispatcherTest
    : public ::testing::TestWithParam<std::tuple<int, PlacementStrategy, bool, bool, DataType>> {};

TEST_P(SlotDispatcherTest, MatchesSingleProcessAndReportsExchange) {
  // Named copies, not structured bindings: lambdas below capture them.
  const int world = std::get<0>(GetParam());
  const PlacementStrategy strategy = std::get<1>(GetParam());
  const bool fixed = std::get<2>(GetParam());
  const bool staged = std::get<3>(GetParam());
  const DataType wire = std::get<4>(GetParam());
  const std::vector<uint32_t> placement = *PlaceExperts(kExperts, world, strategy);
  const std::vector<Tensor> experts = ExpertWeights();
  const std::vector<Step> steps = Steps(world);
  const std::vector<int64_t> top_ks = {1, 2, kExperts};
  // float32 rows differ from one process only by the association of the
  // per-rank partial sums; bfloat16 rows are rounded twice (out and back).
  const double tolerance = wire == DataType::kFloat32 ? 1e-5 : 2e-2;
  std::vector<std::vector<std::vector<ExchangeRecord>>> records(
      world, std::vector<std::vector<ExchangeRecord>>(top_ks.size()));

  RunRanks(world, milliseconds(5000), "slots/", [&](comm::Communicator& comm) {
    const int me = comm.rank();
    auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
    const std::vector<Tensor> local = LocalExperts(experts, placement, me);
    for (size_t ki = 0; ki < top_ks.size(); ++ki) {
      const int64_t k = top_ks[ki];
      SlotDispatcherOptions o;
      o.num_experts = kExperts;
      o.top_k = k;
      o.hidden = kHidden;
      o.expert_to_rank = placement;
      o.wire_dtype = wire;
      o.decode_capacity = fixed ? kCapacity : 0;
      o.force_host_staging = staged;
      o.num_layers = static_cast<int>(steps.size());  // each step is a layer here
      auto dispatcher = SlotTokenDispatcher::Create(*backend, o, &comm);
      ASSERT_TRUE(dispatcher.ok()) << dispatcher.status();
      Recorder recorder;
      (*dispatcher)->SetObserver(&recorder);
      // Twice through the steps: the second pass allocates nothing.
      int64_t allocations = 0;
      for (int pass = 0; pass < 2; ++pass) {
        if (pass == 1) {
          allocations = (*dispatcher)->num_buffer_allocations();
          recorder.records.clear();
        }
        for (size_t i = 0; i < steps.size(); ++i) {
          SCOPED_TRACE(testing::Message() << "rank " << me << " k " << k << " step " << i);
          const RankInputs in = MakeInputs(steps[i], static_cast<int>(i), me, k, placement);
          (*dispatcher)->BeginStep(MostTokens(steps[i]));
          // A step where no rank has tokens (max 0) is "unknown": counts first.
          EXPECT_EQ((*dispatcher)->fixed_capacity_step(), fixed && MostTokens(steps[i]) > 0);
          EXPECT_EQ((*dispatcher)->step_capturable(), (*dispatcher)->fixed_capacity_step());
          (*dispatcher)->SetLayer(static_cast<int>(i));
          absl::Status status;
          const std::vector<float> got = RunLayer(*backend, **dispatcher, in, local, &status);
          ASSERT_TRUE(status.ok()) << status;
          EXPECT_LE(RelativeError(got, Reference(*backend, in, experts)), tolerance);
          ASSERT_TRUE((*dispatcher)->EndStep().ok());
        }
      }
      EXPECT_EQ((*dispatcher)->num_buffer_allocations(), allocations);
      records[me][ki] = std::move(recorder.records);
    }
  });

  // Every step reports the rows each expert received; counts-first steps
  // also the tokens each rank received.
  for (size_t ki = 0; ki < top_ks.size(); ++ki) {
    const int64_t k = top_ks[ki];
    for (size_t i = 0; i < steps.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "k " << k << " step " << i);
      std::vector<int64_t> want(kExperts, 0);
      std::vector<int64_t> tokens_per_rank(world, 0);
      for (int r = 0; r < world; ++r) {
        const RankInputs in = MakeInputs(steps[i], static_cast<int>(i), r, k, placement);
        const int32_t* ids = in.topk_ids.data_as<int32_t>();
        for (int64_t t = 0; t < in.topk_ids.shape[0]; ++t) {
          std::vector<bool> reached(world, false);
          for (int64_t j = 0; j < k; ++j) {
            ++want[ids[t * k + j]];
            reached[placement[ids[t * k + j]]] = true;
          }
          for (int q = 0; q < world; ++q) tokens_per_rank[q] += reached[q] ? 1 : 0;
        }
      }
      const bool fixed_step = fixed && MostTokens(steps[i]) > 0;
      uint64_t sent = 0, received = 0;  // what leaves one rank arrives at another
      for (int r = 0; r < world; ++r) {
        ASSERT_EQ(records[r][ki].size(), steps.size()) << "rank " << r;
        const ExchangeRecord& rec = records[r][ki][i];
        EXPECT_EQ(rec.layer, static_cast<int>(i));
        // Counts first: host time; fixed capacity: the stream's marks.
        EXPECT_TRUE(rec.timed) << "rank " << r << " step " << i;
        sent += rec.bytes_sent;
        received += rec.bytes_received;
        if (world == 1) {
          EXPECT_EQ(rec.bytes_sent, 0u);
        }
        if (fixed_step) {
          // Reported at EndStep from the offsets the step recorded.
          EXPECT_TRUE(rec.rows_per_rank.empty());
          if (world > 1) {
            const uint64_t row = kHidden * DataTypeSize(wire);
            EXPECT_EQ(rec.bytes_sent, (world - 1) * (4 + kCapacity * (2 * row + 2 * k * 4)));
          }
        } else {
          EXPECT_EQ(rec.rows_per_rank, tokens_per_rank) << "rank " << r;
        }
        ASSERT_EQ(rec.rows_per_expert.size(), static_cast<size_t>(kExperts));
        for (int64_t e = 0; e < kExperts; ++e) {
          EXPECT_EQ(rec.rows_per_expert[e], placement[e] == static_cast<uint32_t>(r) ? want[e] : 0)
              << "rank " << r << " expert " << e;
        }
      }
      EXPECT_EQ(sent, received);
    }
  }
}

std::string CaseName(
    const ::testing::TestParamInfo<std::tuple<int, PlacementStrategy, bool, bool, DataType>>&
        param) {
  const auto& [world, strategy, fixed, staged, wire] = param.param;
  return absl::StrCat(world, "Ranks",
                      strategy == PlacementStrategy::kLinear ? "Linear" : "RoundRobin",
                      fixed ? "FixedCapacity" : "CountsFirst", staged ? "Staged" : "",
                      wire == DataType::kFloat32 ? "F32" : "Bf16");
}

INSTANTIATE_TEST_SUITE_P(Ranks, SlotDispatcherTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4),
                                            ::testing::Values(PlacementStrategy::kLinear,
                                                              PlacementStrategy::kRoundRobin),
                                            ::testing::Bool(), ::testing::Bool(),
                                            ::testing::Values(DataType::kFloat32,
                                                              DataType::kBFloat16)),
                         CaseName);

// A rank that never calls: the others' exchange fails within the
// communicator's timeout, naming the MoE layer, instead of hanging — from
// Dispatch (exchanges on the calling thread) or from EndStep (the staged
// fixed-capacity exchange runs in stream order, in a host call).
TEST(SlotDispatcher, PeerThatNeverCallsFailsWithinTimeout) {
  const std::vector<uint32_t> placement = *PlaceExperts(kExperts, 2, PlacementStrategy::kLinear);
  for (int mode = 0; mode < 3; ++mode) {
    const bool fixed = mode > 0, staged = mode == 2;
    SCOPED_TRACE(mode == 0 ? "counts first" : staged ? "fixed capacity, staged" : "fixed capacity");
    RunRanks(2, milliseconds(300), absl::StrCat("silent", mode, "/"),
             [&](comm::Communicator& comm) {
               if (comm.rank() == 1) return;  // never joins the exchange
               auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
               SlotDispatcherOptions o{kExperts, 2, kHidden, placement, DataType::kFloat32};
               o.decode_capacity = fixed ? kCapacity : 0;
               o.force_host_staging = staged;
               auto d = SlotTokenDispatcher::Create(*backend, o, &comm);
               ASSERT_TRUE(d.ok()) << d.status();
               const RankInputs in = MakeInputs({Routing::kRandom, 0, {4, 4}}, 0, 0, 2, placement);
               (*d)->BeginStep(4);
               (*d)->SetLayer(3);
               const auto start = std::chrono::steady_clock::now();
               auto got = (*d)->Dispatch(in.hidden, in.topk_ids, in.topk_weights);
               absl::Status error = got.status();
               if (staged) {
                 ASSERT_TRUE(got.ok()) << got.status();  // enqueued; the host call fails
                 Tensor expert_out = *backend->Empty(DataType::kFloat32, got->rows.shape);
                 Tensor out = *backend->Empty(DataType::kFloat32, {4, kHidden});
                 EXPECT_TRUE((*d)->Combine(expert_out, &out).ok());
                 error = (*d)->EndStep();
               }
               EXPECT_FALSE(error.ok());
               EXPECT_THAT(std::string(error.message()), HasSubstr("MoE layer 3 dispatch"));
               EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
             });
  }
}

TEST(SlotDispatcher, RefusesBadArgumentsAndCallsOutOfOrder) {
  auto backend = *kernels::CreateBackend(kernels::DeviceSpec{});
  comm::LocalCommunicator one;
  const std::vector<uint32_t> placement(kExperts, 0);
  auto create = [&](SlotDispatcherOptions o, comm::Communicator* c) {
    return SlotTokenDispatcher::Create(*backend, std::move(o), c).status();
  };
  const SlotDispatcherOptions good{kExperts, 2, kHidden, placement, DataType::kFloat32, 8};
  SlotDispatcherOptions o = good;
  o.top_k = kExperts + 1;
  EXPECT_THAT(std::string(create(o, &one).message()), HasSubstr("top_k: expected in [1, 8]"));
  o = good;
  o.expert_to_rank.pop_back();
  EXPECT_THAT(std::string(create(o, &one).message()),
              HasSubstr("expert_to_rank: expected 8 entries"));
  o = good;
  o.expert_to_rank[3] = 1;
  EXPECT_THAT(std::string(create(o, &one).message()),
              HasSubstr("expert_to_rank[3]: expected a rank in [0, 1), found 1"));
  o = good;
  o.wire_dtype = DataType::kFloat16;
  EXPECT_THAT(std::string(create(o, &one).message()),
              HasSubstr("wire_dtype: expected float32 or bfloat16"));
  o = good;
  o.decode_capacity = -1;
  EXPECT_EQ(create(o, &one).code(), absl::StatusCode::kInvalidArgument);

  // Unbound: Dispatch fails until a group is set.
  auto unbound = SlotTokenDispatcher::Create(*backend, good, nullptr);
  ASSERT_TRUE(unbound.ok()) << unbound.status();
  const RankInputs in = MakeInputs({Routing::kRandom, 0, {12}}, 0, 0, 2, placement);
  EXPECT_THAT(
      std::string((*unbound)->Dispatch(in.hidden, in.topk_ids, in.topk_weights).status().message()),
      HasSubstr("no communicator"));

  auto d = SlotTokenDispatcher::Create(*backend, good, &one);
  ASSERT_TRUE(d.ok());
  Tensor out = *backend->Empty(DataType::kFloat32, {12, kHidden});
  EXPECT_EQ((*d)->Combine(out, &out).code(), absl::StatusCode::kFailedPrecondition);
  // 12 tokens do not fit a fixed-capacity step of 8 slots.
  (*d)->BeginStep(8);
  ASSERT_TRUE((*d)->fixed_capacity_step());
  EXPECT_THAT(
      std::string((*d)->Dispatch(in.hidden, in.topk_ids, in.topk_weights).status().message()),
      HasSubstr("at most 8 tokens in a fixed-capacity step"));
  // Counts first takes them; a second Dispatch before Combine is refused.
  (*d)->BeginStep(12);
  EXPECT_FALSE((*d)->fixed_capacity_step());
  auto first = (*d)->Dispatch(in.hidden, in.topk_ids, in.topk_weights);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ((*d)->Dispatch(in.hidden, in.topk_ids, in.topk_weights).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Tensor wrong = *backend->Empty(DataType::kFloat32, {3, kHidden});
  EXPECT_THAT(std::string((*d)->Combine(wrong, &out).message()), HasSubstr("expert_out"));
  Tensor bad_ids = *backend->Empty(DataType::kInt32, {12, 3});
  EXPECT_THAT(std::string((*d)->Dispatch(in.hidden, bad_ids, in.topk_weights).status().message()),
              HasSubstr("topk_ids: expected [12, 2] int32"));
}

}  // namespace
}  // namespace epserve::moe
