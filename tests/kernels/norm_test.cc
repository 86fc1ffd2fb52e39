// RmsNorm, AddRmsNorm, HeadRmsNorm (per head) and the full-width q/k norm.
#include <cmath>

#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::epserve::kernels::testing;

// Double reference of one row; tolerance 2e-6 relative to max(|y|, 1).
void ExpectNormRow(const float* x, const float* w, int64_t n, float eps, const float* got) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double inv = 1.0 / std::sqrt(ss / n + eps);
  for (int64_t i = 0; i < n; ++i) {
    const double ref = x[i] * inv * w[i];
    ASSERT_NEAR(got[i], ref, 2e-6 * std::max(1.0, std::fabs(ref))) << "element " << i;
  }
}

TEST(RmsNorm, MatchesReferenceAtSeveralShapes) {
  auto backend = cpu::CreateCpuBackend();
  for (auto [t, h] : {std::pair<int64_t, int64_t>{1, 1}, {3, 7}, {17, 129}, {64, 1024}}) {
    std::vector<float> x = Random(t * h, 5, -3, 3), w = Random(h, 6, 0.5, 1.5);
    Tensor y = Zeros({t, h});
    ASSERT_TRUE(backend->RmsNorm(MakeF32({t, h}, x), MakeF32({h}, w), 1e-6f, &y).ok());
    std::vector<float> got = ToVector(y);
    for (int64_t r = 0; r < t; ++r) ExpectNormRow(&x[r * h], w.data(), h, 1e-6f, &got[r * h]);
  }
}

TEST(RmsNorm, InPlaceAndEps) {
  auto backend = cpu::CreateCpuBackend();
  std::vector<float> x = Random(5 * 16, 7, -1e-3f, 1e-3f), w = Random(16, 8);
  Tensor xt = MakeF32({5, 16}, x);
  ASSERT_TRUE(backend->RmsNorm(xt, MakeF32({16}, w), 1e-5f, &xt).ok());  // y aliases x
  std::vector<float> got = ToVector(xt);
  for (int r = 0; r < 5; ++r) ExpectNormRow(&x[r * 16], w.data(), 16, 1e-5f, &got[r * 16]);
}

TEST(AddRmsNorm, UpdatesResidualThenNorms) {
  auto backend = cpu::CreateCpuBackend();
  const int64_t t = 9, h = 33;
  std::vector<float> x = Random(t * h, 9), res = Random(t * h, 10), w = Random(h, 11);
  Tensor rt = MakeF32({t, h}, res), y = Zeros({t, h});
  ASSERT_TRUE(backend->AddRmsNorm(MakeF32({t, h}, x), &rt, MakeF32({h}, w), 1e-6f, &y).ok());
  std::vector<float> new_res = ToVector(rt), got = ToVector(y);
  for (int64_t i = 0; i < t * h; ++i) ASSERT_EQ(new_res[i], res[i] + x[i]);
  for (int64_t r = 0; r < t; ++r) ExpectNormRow(&new_res[r * h], w.data(), h, 1e-6f, &got[r * h]);
}

TEST(HeadRmsNorm, NormalisesEveryHead) {
  auto backend = cpu::CreateCpuBackend();
  const int64_t t = 5, heads = 3, d = 10;
  std::vector<float> x = Random(t * heads * d, 12, -2, 2), w = Random(d, 13);
  Tensor xt = MakeF32({t, heads * d}, x);
  ASSERT_TRUE(backend->HeadRmsNorm(&xt, MakeF32({d}, w), 1e-6f).ok());
  std::vector<float> got = ToVector(xt);
  for (int64_t r = 0; r < t * heads; ++r) ExpectNormRow(&x[r * d], w.data(), d, 1e-6f, &got[r * d]);
}

TEST(HeadRmsNorm, FullWidthQkNormIsRmsNormOverTheRow) {
  // OLMoE: q_norm has weight [Hq*D] and normalises the whole projection.
  auto backend = cpu::CreateCpuBackend();
  const int64_t t = 4, width = 4 * 8;
  std::vector<float> q = Random(t * width, 14), w = Random(width, 15);
  Tensor qt = MakeF32({t, width}, q);
  ASSERT_TRUE(backend->RmsNorm(qt, MakeF32({width}, w), 1e-5f, &qt).ok());
  std::vector<float> got = ToVector(qt);
  for (int64_t r = 0; r < t; ++r) ExpectNormRow(&q[r * width], w.data(), width, 1e-5f, &got[r * width]);
}

TEST(RmsNormErrors, NameTheArgument) {
  auto backend = cpu::CreateCpuBackend();
  Tensor y = Zeros({2, 4});
  absl::Status s = backend->RmsNorm(Zeros({2, 4}), Zeros({5}), 1e-6f, &y);
  EXPECT_THAT(s.message(), HasSubstr("RmsNorm: w: expected shape [4], found [5]"));
  s = backend->RmsNorm(Zeros({2, 4}), MakeTyped(DataType::kBFloat16, {4}, {1, 1, 1, 1}), 1e-6f, &y);
  EXPECT_THAT(s.message(), HasSubstr("RmsNorm: w: expected dtype float32, found bfloat16"));
  Tensor x = Zeros({2, 10});
  s = backend->HeadRmsNorm(&x, Zeros({4}), 1e-6f);
  EXPECT_THAT(s.message(), HasSubstr("HeadRmsNorm: x: expected a width that is a multiple of head_dim 4"));
  Tensor r = Zeros({3, 4});
  s = backend->AddRmsNorm(Zeros({2, 4}), &r, Zeros({4}), 1e-6f, &y);
  EXPECT_THAT(s.message(), HasSubstr("AddRmsNorm: residual: expected shape [2, 4], found [3, 4]"));
}

}  // namespace
}  // namespace epserve::kernels
