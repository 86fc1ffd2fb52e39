// MatMul and Embedding against naive double-accumulation references.
#include <cmath>
#include <string>
#include <tuple>

#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::epserve::kernels::testing;

// Tolerance for a float32 dot product of length K: relative to the sum of
// |x_k * w_k| (a rounding-error bound), 1e-5 of it.
struct MatMulCase {
  int64_t t, n, k;
  DataType w_type;
  bool bias;
};

class MatMulTest : public ::testing::TestWithParam<MatMulCase> {};

TEST_P(MatMulTest, MatchesReference) {
  const MatMulCase c = GetParam();
  auto backend = cpu::CreateCpuBackend();
  std::vector<float> x = Random(c.t * c.k, 1);
  std::vector<float> w = RoundTo(c.w_type, Random(c.n * c.k, 2));
  std::vector<float> b = RoundTo(c.w_type, Random(c.n, 3));
  Tensor xt = MakeF32({c.t, c.k}, x);
  Tensor wt = MakeTyped(c.w_type, {c.n, c.k}, w);
  Tensor bt = c.bias ? MakeTyped(c.w_type, {c.n}, b) : Tensor{};
  Tensor y = Zeros({c.t, c.n});
  ASSERT_TRUE(backend->MatMul(xt, Linear(wt), bt, &y).ok());
  std::vector<float> got = ToVector(y);
  double worst = 0.0;
  for (int64_t i = 0; i < c.t; ++i) {
    for (int64_t j = 0; j < c.n; ++j) {
      double ref = c.bias ? b[j] : 0.0, mag = std::fabs(ref);
      for (int64_t q = 0; q < c.k; ++q) {
        ref += static_cast<double>(x[i * c.k + q]) * w[j * c.k + q];
        mag += std::fabs(static_cast<double>(x[i * c.k + q]) * w[j * c.k + q]);
      }
      const double err = std::fabs(got[i * c.n + j] - ref);
      worst = std::max(worst, err / (mag + 1e-30));
      ASSERT_LE(err, 1e-5 * mag + 1e-7) << "row " << i << " col " << j;
    }
  }
  RecordProperty("worst_relative_error", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatMulTest,
    ::testing::Values(MatMulCase{1, 1, 1, DataType::kFloat32, false},
                      MatMulCase{3, 7, 5, DataType::kFloat32, true},
                      MatMulCase{17, 33, 65, DataType::kFloat32, true},
                      MatMulCase{1, 130, 96, DataType::kBFloat16, false},
                      MatMulCase{5, 33, 65, DataType::kBFloat16, true},
                      MatMulCase{9, 31, 47, DataType::kFloat16, true},
                      // several bf16/fp16 panels (panel = 2^19 / K rows = 64 here)
                      MatMulCase{3, 150, 8192, DataType::kBFloat16, true},
                      MatMulCase{2, 129, 8192, DataType::kFloat16, false},
                      MatMulCase{0, 8, 4, DataType::kFloat32, true}));

TEST(MatMulErrors, NameTheArgument) {
  auto backend = cpu::CreateCpuBackend();
  Tensor x = Zeros({2, 5});
  Tensor y = Zeros({2, 3});
  absl::Status s = backend->MatMul(x, Linear(Zeros({3, 4})), Tensor{}, &y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("MatMul: w: expected shape [*, 5], found [3, 4]"));
  s = backend->MatMul(MakeI32({2, 1}, {1, 2}), Linear(Zeros({3, 1})), Tensor{}, &y);
  EXPECT_THAT(s.message(), HasSubstr("MatMul: x: expected dtype float32, found int32"));
  s = backend->MatMul(x, Linear(Zeros({3, 5})), Zeros({4}), &y);
  EXPECT_THAT(s.message(), HasSubstr("MatMul: bias: expected shape [3], found [4]"));
  Tensor y_bad = Zeros({2, 4});
  s = backend->MatMul(x, Linear(Zeros({3, 5})), Tensor{}, &y_bad);
  EXPECT_THAT(s.message(), HasSubstr("MatMul: y: expected shape [2, 3], found [2, 4]"));
  s = backend->MatMul(x, LinearWeight{}, Tensor{}, &y);
  EXPECT_THAT(s.message(), HasSubstr("MatMul: w: expected a tensor"));
}

// MatMulShared computes each weight as MatMul does (the CPU default runs
// MatMul per weight), and names the argument that is wrong.
TEST(MatMulShared, EqualsMatMulPerWeightAndNamesBadArguments) {
  auto backend = cpu::CreateCpuBackend();
  Tensor x = MakeF32({3, 16}, Random(48, 40));
  LinearWeight w0 = Linear(MakeTyped(DataType::kBFloat16, {8, 16}, Random(128, 41)));
  LinearWeight w1 = Linear(MakeF32({4, 16}, Random(64, 42)));
  Tensor b1 = MakeF32({4}, Random(4, 43));
  Tensor y0 = Zeros({3, 8}), y1 = Zeros({3, 4}), r0 = Zeros({3, 8}), r1 = Zeros({3, 4});
  const LinearWeight* ws[] = {&w0, &w1};
  const Tensor* bs[] = {nullptr, &b1};
  Tensor* ys[] = {&y0, &y1};
  ASSERT_TRUE(backend->MatMulShared(x, ws, bs, ys).ok());
  ASSERT_TRUE(backend->MatMul(x, w0, Tensor{}, &r0).ok());
  ASSERT_TRUE(backend->MatMul(x, w1, b1, &r1).ok());
  EXPECT_EQ(ToVector(y0), ToVector(r0));
  EXPECT_EQ(ToVector(y1), ToVector(r1));

  Tensor bad_y = Zeros({3, 5});
  Tensor* bad_ys[] = {&y0, &bad_y};
  absl::Status s = backend->MatMulShared(x, ws, bs, bad_ys);
  EXPECT_THAT(s.message(), HasSubstr("MatMulShared: ys[1]")) << s;
  LinearWeight bad_w = Linear(MakeF32({4, 15}, Random(60, 44)));
  const LinearWeight* bad_ws[] = {&w0, &bad_w};
  s = backend->MatMulShared(x, bad_ws, bs, ys);
  EXPECT_THAT(s.message(), HasSubstr("MatMulShared: ws[1]")) << s;
  const Tensor* one_bias[] = {nullptr};
  s = backend->MatMulShared(x, ws, one_bias, ys);
  EXPECT_THAT(s.message(), HasSubstr("biases, ys")) << s;
  Tensor* aliasing[] = {&y0, &x};
  LinearWeight w_sq = Linear(MakeF32({16, 16}, Random(256, 45)));
  const LinearWeight* sq_ws[] = {&w0, &w_sq};
  const Tensor* no_bias[] = {nullptr, nullptr};
  s = backend->MatMulShared(x, sq_ws, no_bias, aliasing);
  EXPECT_THAT(s.message(), HasSubstr("ys[1]")) << s;
}

TEST(Embedding, GathersAndWidens) {
  auto backend = cpu::CreateCpuBackend();
  for (DataType dt : {DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16}) {
    std::vector<float> table = RoundTo(dt, Random(10 * 7, 4));
    Tensor out = Zeros({4, 7});
    ASSERT_TRUE(backend->Embedding(MakeI32({4}, {3, 0, 9, 3}), MakeTyped(dt, {10, 7}, table), &out)
                    .ok());
    std::vector<float> got = ToVector(out);
    const int ids[4] = {3, 0, 9, 3};
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 7; ++j) EXPECT_EQ(got[i * 7 + j], table[ids[i] * 7 + j]);
    }
  }
}

TEST(Embedding, OutOfRangeIdIsNamed) {
  auto backend = cpu::CreateCpuBackend();
  Tensor out = Zeros({3, 2});
  absl::Status s = backend->Embedding(MakeI32({3}, {1, 0, 10}), Zeros({10, 2}), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("Embedding: ids[2] = 10 is outside the table [0, 10)"));
  s = backend->Embedding(MakeI32({1}, {-1}), Zeros({10, 2}), &out);
  EXPECT_THAT(s.message(), HasSubstr("out: expected shape [1, 2], found [3, 2]"));
}

}  // namespace
}  // namespace epserve::kernels
