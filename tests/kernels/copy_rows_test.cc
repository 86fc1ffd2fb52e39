// CopyRows on the CPU backend: blocks copied in any order, rows no block
// names left alone, float32 <-> bfloat16 conversion, and the errors.
#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::epserve::kernels::testing;

// Row r of a [rows, 2] tensor holds (10 r, 10 r + 1).
Tensor Numbered(int64_t rows) {
  std::vector<float> v;
  for (int64_t r = 0; r < rows; ++r) {
    v.push_back(10.0f * r);
    v.push_back(10.0f * r + 1.0f);
  }
  return MakeF32({rows, 2}, v);
}

TEST(CopyRows, CopiesEachBlockAndLeavesOtherRows) {
  auto backend = cpu::CreateCpuBackend();
  Tensor src = Numbered(5);
  Tensor dst = MakeF32({6, 2}, std::vector<float>(12, -1.0f));
  // rows 3..4 -> 0..1, row 0 -> 3, an empty block; dst rows 2, 4, 5 untouched.
  Tensor blocks = MakeI32({3, 3}, {3, 0, 2, 0, 3, 1, 4, 5, 0});
  ASSERT_TRUE(backend->CopyRows(src, blocks, &dst).ok());
  EXPECT_THAT(ToVector(dst), ElementsAre(30, 31, 40, 41, -1, -1, 0, 1, -1, -1, -1, -1));
}

TEST(CopyRows, ConvertsToAndFromBfloat16) {
  auto backend = cpu::CreateCpuBackend();
  Tensor src = MakeF32({2, 2}, {1.0f, 1.00390625f, -3.140625f, 1e-3f});
  Tensor wire = *EmptyHostTensor(DataType::kBFloat16, {2, 2});
  Tensor back = Zeros({2, 2});
  Tensor swap = MakeI32({2, 3}, {0, 1, 1, 1, 0, 1});
  ASSERT_TRUE(backend->CopyRows(src, swap, &wire).ok());
  ASSERT_TRUE(backend->CopyRows(wire, swap, &back).ok());
  // Swapped twice: original order, each value rounded to bfloat16.
  EXPECT_EQ(ToVector(back), RoundTo(DataType::kBFloat16, ToVector(src)));
  EXPECT_NE(ToVector(back), ToVector(src));  // 1.00390625 and 1e-3 are not bf16 values
}

TEST(CopyRows, RefusesBlocksOutsideAndBadArguments) {
  auto backend = cpu::CreateCpuBackend();
  Tensor src = Numbered(4);
  Tensor dst = Zeros({4, 2});
  absl::Status s = backend->CopyRows(src, MakeI32({2, 3}, {0, 0, 1, 2, 3, 2}), &dst);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("CopyRows: blocks[1] = (src 2, dst 3, rows 2) is outside src [4, 2] or "
                        "dst [4, 2]"));
  s = backend->CopyRows(src, MakeI32({1, 3}, {0, 0, -1}), &dst);
  EXPECT_THAT(std::string(s.message()), HasSubstr("blocks[0]"));

  Tensor narrow = Zeros({4, 3});
  s = backend->CopyRows(src, MakeI32({1, 3}, {0, 0, 1}), &narrow);
  EXPECT_THAT(std::string(s.message()), HasSubstr("CopyRows: dst: expected shape [*, 2]"));
  s = backend->CopyRows(src, MakeI32({3}, {0, 0, 1}), &dst);
  EXPECT_THAT(std::string(s.message()), HasSubstr("CopyRows: blocks: expected shape [*, 3]"));
  s = backend->CopyRows(src, MakeI32({1, 3}, {0, 1, 1}), &src);
  EXPECT_THAT(std::string(s.message()), HasSubstr("CopyRows: dst: expected a buffer distinct"));
}

}  // namespace
}  // namespace epserve::kernels
