// The expert-parallel exchange ops of the CPU backend (the reference of the
// GPU kernels) on hand-computed slots: EpDispatchPack, EpDispatchUnpack,
// EpCombinePack, EpCombineUnpack, their content errors and their op-boundary
// checks.
#include <chrono>
#include <cstring>
#include <thread>

#include "common/dtype_convert.h"
#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
// NOLINTNEXTLINE(google-build-using-namespace)
using namespace ::epserve::kernels::testing;

int32_t Bits(float f) {
  int32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

struct Packed {
  Tensor rows, routes, counts, slots;
};

// 2 ranks, 3 slots each; experts 0, 1 on rank 0 and 2, 3 on rank 1.
Packed Pack(Backend& b, DataType wire, absl::Status* status) {
  Packed p{Zeros({6, 2}), *b.Empty(DataType::kInt32, {6, 4}), *b.Empty(DataType::kInt32, {2}),
           *b.Empty(DataType::kInt32, {3, 2})};
  if (wire != DataType::kFloat32) p.rows = MakeTyped(wire, {6, 2}, std::vector<float>(12, 0.0f));
  std::fill_n(p.routes.mutable_data_as<int32_t>(), 24, 99);
  *status =
      b.EpDispatchPack(MakeF32({3, 2}, {1, 2, 3, 4, 5, 6}), MakeI32({3, 2}, {0, 2, 1, 0, 3, 2}),
                       MakeF32({3, 2}, {0.75f, 0.25f, 0.5f, 0.5f, 0.625f, 0.375f}),
                       MakeI32({4}, {0, 0, 1, 1}), &p.rows, &p.routes, &p.counts, &p.slots);
  return p;
}

TEST(EpExchange, DispatchPackSendsEachTokenOnceToEachRankInTokenOrder) {
  auto b = cpu::CreateCpuBackend();
  absl::Status s;
  Packed p = Pack(*b, DataType::kFloat32, &s);
  ASSERT_TRUE(s.ok()) << s;
  // Token 0 goes to both ranks, token 1 to rank 0 only, token 2 to rank 1.
  EXPECT_THAT(ToIntVector(p.counts), ElementsAre(2, 2));
  EXPECT_THAT(ToIntVector(p.slots), ElementsAre(0, 0, 1, -1, -1, 1));
  EXPECT_THAT(ToVector(p.rows), ElementsAre(1, 2, 3, 4, 0, 0, 1, 2, 5, 6, 0, 0));
  const int32_t q = Bits(0.75f), h = Bits(0.25f), f = Bits(0.5f);
  const int32_t a = Bits(0.625f), c = Bits(0.375f);
  EXPECT_THAT(ToIntVector(p.routes), ElementsAreArray({0,  -1, q,  h,   // rank 0 slot 0: token 0
                                                       1,  0,  f,  f,   // rank 0 slot 1: token 1
                                                       99, 99, 99, 99,  // unused slot
                                                       -1, 2,  q,  h,   // rank 1 slot 0: token 0
                                                       3,  2,  a,  c,   // rank 1 slot 1: token 2
                                                       99, 99, 99, 99}));
  // bfloat16 on the wire: the same rows, rounded.
  Packed bf = Pack(*b, DataType::kBFloat16, &s);
  ASSERT_TRUE(s.ok()) << s;
  std::vector<float> got;
  got.reserve(12);
  for (int i = 0; i < 12; ++i) got.push_back(Bf16ToFp32(bf.rows.data_as<uint16_t>()[i]));
  EXPECT_THAT(got, ElementsAre(1, 2, 3, 4, 0, 0, 1, 2, 5, 6, 0, 0));
}

TEST(EpExchange, UnpackGroupsByExpertAndCombineSumsBack) {
  auto b = cpu::CreateCpuBackend();
  // Received from 2 ranks, 2 slots each: rank 0 sent 2 tokens, rank 1 one.
  const int32_t f = Bits(0.5f), q = Bits(0.75f), h = Bits(0.25f);
  Tensor recv_rows = MakeF32({4, 2}, {1, 2, 3, 4, 7, 8, -9, -9});
  Tensor recv_routes = MakeI32({4, 4}, {0, -1, q, h,   //
                                        1, 0, f, f,    //
                                        -1, 1, f, f,   //
                                        3, 3, 0, 0});  // past the count: ignored
  Tensor counts = MakeI32({2}, {2, 1});
  Tensor rows = MakeF32({5, 2}, std::vector<float>(10, -1.0f));
  Tensor offsets = *b->Empty(DataType::kInt32, {5});
  Tensor route_rows = *b->Empty(DataType::kInt32, {4, 2});
  ASSERT_TRUE(
      b->EpDispatchUnpack(recv_rows, recv_routes, counts, &rows, &offsets, &route_rows).ok());
  EXPECT_THAT(ToIntVector(offsets), ElementsAre(0, 2, 4, 4, 4));
  // Expert 0: slots 0 and 1; expert 1: slots 1 and 2; the fifth row untouched.
  EXPECT_THAT(ToVector(rows), ElementsAre(1, 2, 3, 4, 3, 4, 7, 8, -1, -1));
  EXPECT_THAT(ToIntVector(route_rows), ElementsAre(0, -1, 2, 1, -1, 3, -1, -1));

  // Expert outputs = 10 x their rows; each slot gets its picks' weighted sum.
  Tensor expert_out = MakeF32({5, 2}, {10, 20, 30, 40, 30, 40, 70, 80, 0, 0});
  Tensor back = MakeF32({4, 2}, std::vector<float>(8, -5.0f));
  ASSERT_TRUE(b->EpCombinePack(expert_out, recv_routes, counts, route_rows, &back).ok());
  EXPECT_THAT(ToVector(back), ElementsAre(7.5f, 15, 30, 40, 35, 40, -5, -5));

  // Home again: token 0 was in slot 0 of both ranks, token 1 in slot 1 of rank 0.
  Tensor returned = MakeF32({4, 2}, {1, 1, 2, 2, 10, 10, 20, 20});
  Tensor out = Zeros({2, 2});
  ASSERT_TRUE(b->EpCombineUnpack(returned, MakeI32({2, 2}, {0, 0, 1, -1}), &out).ok());
  EXPECT_THAT(ToVector(out), ElementsAre(11, 11, 2, 2));
}

TEST(EpExchange, ContentErrorsNameTheValue) {
  auto b = cpu::CreateCpuBackend();
  Tensor rows = Zeros({4, 2}), routes = *b->Empty(DataType::kInt32, {4, 4});
  Tensor counts = *b->Empty(DataType::kInt32, {2}), slots = *b->Empty(DataType::kInt32, {1, 2});
  absl::Status s =
      b->EpDispatchPack(MakeF32({1, 2}, {1, 2}), MakeI32({1, 2}, {0, 1}), MakeF32({1, 2}, {1, 0}),
                        MakeI32({2}, {0, 2}), &rows, &routes, &counts, &slots);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("expert_to_rank[1] = 2 is outside the ranks [0, 2)"));
  s = b->EpDispatchPack(MakeF32({1, 2}, {1, 2}), MakeI32({1, 2}, {0, 5}), MakeF32({1, 2}, {1, 0}),
                        MakeI32({2}, {0, 1}), &rows, &routes, &counts, &slots);
  EXPECT_THAT(std::string(s.message()), HasSubstr("topk_ids[0, 1] = 5 is outside the experts"));

  Tensor out_rows = Zeros({2, 2}), offsets = *b->Empty(DataType::kInt32, {3});
  Tensor route_rows = *b->Empty(DataType::kInt32, {4, 2});
  Tensor recv_routes = MakeI32({4, 4}, {0, 1, 0, 0, 0, 1, 0, 0, 2, -1, 0, 0, 0, 0, 0, 0});
  s = b->EpDispatchUnpack(rows, recv_routes, MakeI32({2}, {3, 0}), &out_rows, &offsets,
                          &route_rows);
  EXPECT_THAT(std::string(s.message()), HasSubstr("recv_counts[0] = 3 is outside [0, 2]"));
  s = b->EpDispatchUnpack(rows, recv_routes, MakeI32({2}, {0, 1}), &out_rows, &offsets,
                          &route_rows);
  EXPECT_THAT(std::string(s.message()), HasSubstr("recv_routes[2, 0] = 2 is outside the experts"));
  s = b->EpDispatchUnpack(rows, recv_routes, MakeI32({2}, {2, 0}), &out_rows, &offsets,
                          &route_rows);
  EXPECT_THAT(std::string(s.message()), HasSubstr("make 4 expert rows; rows holds 2"));
  Tensor out = Zeros({1, 2});
  s = b->EpCombineUnpack(rows, MakeI32({1, 2}, {0, 2}), &out);
  EXPECT_THAT(std::string(s.message()), HasSubstr("token_slots[0, 1] = 2 is outside the 2 slots"));
}

TEST(EpExchange, OpBoundaryChecksShapes) {
  auto b = cpu::CreateCpuBackend();
  Tensor routes = *b->Empty(DataType::kInt32, {5, 4});
  Tensor counts = *b->Empty(DataType::kInt32, {2}), slots = *b->Empty(DataType::kInt32, {3, 2});
  Tensor odd = Zeros({5, 2});
  absl::Status s =
      b->EpDispatchPack(Zeros({3, 2}), MakeI32({3, 2}, {0, 1, 0, 1, 0, 1}), Zeros({3, 2}),
                        MakeI32({2}, {0, 1}), &odd, &routes, &counts, &slots);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("EpDispatchPack: send_rows: expected W*C rows (a multiple of W = 2)"));
  Tensor small = Zeros({4, 2});
  s = b->EpDispatchPack(Zeros({3, 2}), MakeI32({3, 2}, {0, 1, 0, 1, 0, 1}), Zeros({3, 2}),
                        MakeI32({2}, {0, 1}), &small, &routes, &counts, &slots);
  EXPECT_THAT(std::string(s.message()), HasSubstr("expected at least T = 3 slots per rank"));
  Tensor half = MakeTyped(DataType::kFloat16, {6, 2}, std::vector<float>(12, 0.0f));
  Tensor out = Zeros({3, 2});
  s = b->EpCombineUnpack(half, slots, &out);
  EXPECT_THAT(std::string(s.message()), HasSubstr("returned_rows: expected dtype float32 or"));
}

// The stream marks that time a fixed-capacity exchange: host time after the
// queue drained on the CPU; ordered, and refusing marks never taken.
TEST(EpExchange, TimestampsMeasureBetweenMarksAndNameBadOnes) {
  auto b = cpu::CreateCpuBackend();
  auto marks = b->CreateTimestamps(3);
  ASSERT_TRUE(marks.ok()) << marks.status();
  ASSERT_TRUE((*marks)->Record(0).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE((*marks)->Record(1).ok());
  absl::StatusOr<double> seconds = (*marks)->Seconds(0, 1);
  ASSERT_TRUE(seconds.ok()) << seconds.status();
  EXPECT_GE(*seconds, 0.015);
  EXPECT_LT(*seconds, 5.0);
  absl::StatusOr<double> back = (*marks)->Seconds(1, 0);
  ASSERT_TRUE(back.ok());
  EXPECT_DOUBLE_EQ(*back, -*seconds);

  absl::StatusOr<double> never = (*marks)->Seconds(0, 2);
  EXPECT_EQ(never.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(never.status().message(), HasSubstr("mark 2 was never recorded"));
  EXPECT_EQ((*marks)->Record(3).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*marks)->Seconds(-1, 0).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT((*marks)->Record(3).message(), HasSubstr("mark 3 outside [0, 3)"));
  EXPECT_EQ(b->CreateTimestamps(-1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Moe, GroupedMatMulLeavesRowsPastTheOffsetsAlone) {
  auto b = cpu::CreateCpuBackend();
  Tensor rows = MakeF32({3, 2}, {1, 2, 3, 4, 5, 6});
  Tensor out = MakeF32({3, 1}, {-7, -7, -7});
  std::vector<Tensor> w = {MakeF32({1, 2}, {1, 1})};
  ASSERT_TRUE(b->GroupedExpertMatMul(rows, MakeI32({2}, {0, 2}), Linears(w), &out).ok());
  EXPECT_THAT(ToVector(out), ElementsAre(3, 7, -7));
  absl::Status s = b->GroupedExpertMatMul(rows, MakeI32({2}, {0, 4}), Linears(w), &out);
  EXPECT_THAT(std::string(s.message()), HasSubstr("expert_offsets[1]: expected at most 3"));
}

}  // namespace
}  // namespace epserve::kernels
