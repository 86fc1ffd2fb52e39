// SiluAndMul (separate and packed), Add, SigmoidGateMulAdd.
#include <cmath>

#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::epserve::kernels::testing;

double SiluRef(double g) { return g / (1.0 + std::exp(-g)); }

TEST(SiluAndMul, SeparateAndPackedMatchReference) {
  auto backend = cpu::CreateCpuBackend();
  for (auto [t, n] : {std::pair<int64_t, int64_t>{1, 1}, {7, 13}, {33, 300}}) {
    std::vector<float> g = Random(t * n, 20, -20, 20), u = Random(t * n, 21, -3, 3);
    Tensor out = Zeros({t, n});
    ASSERT_TRUE(backend->SiluAndMul(MakeF32({t, n}, g), MakeF32({t, n}, u), &out).ok());
    std::vector<float> packed(2 * t * n);
    for (int64_t r = 0; r < t; ++r) {
      for (int64_t i = 0; i < n; ++i) {
        packed[r * 2 * n + i] = g[r * n + i];
        packed[r * 2 * n + n + i] = u[r * n + i];
      }
    }
    Tensor out2 = Zeros({t, n});
    ASSERT_TRUE(backend->SiluAndMulPacked(MakeF32({t, 2 * n}, packed), &out2).ok());
    std::vector<float> a = ToVector(out), b = ToVector(out2);
    for (int64_t i = 0; i < t * n; ++i) {
      const double ref = SiluRef(g[i]) * u[i];
      ASSERT_NEAR(a[i], ref, 1e-6 * std::max(1.0, std::fabs(ref)));
      ASSERT_EQ(a[i], b[i]);
    }
  }
}

TEST(SiluAndMul, InPlaceOnGate) {
  auto backend = cpu::CreateCpuBackend();
  std::vector<float> g = Random(12, 22), u = Random(12, 23);
  Tensor gt = MakeF32({3, 4}, g);
  ASSERT_TRUE(backend->SiluAndMul(gt, MakeF32({3, 4}, u), &gt).ok());
  std::vector<float> got = ToVector(gt);
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(got[i], SiluRef(g[i]) * u[i], 1e-6);
}

TEST(Add, AndSigmoidGateMulAdd) {
  auto backend = cpu::CreateCpuBackend();
  const int64_t t = 5, h = 17;
  std::vector<float> a = Random(t * h, 24), b = Random(t * h, 25), gl = Random(t, 26, -8, 8);
  Tensor out = Zeros({t, h});
  ASSERT_TRUE(backend->Add(MakeF32({t, h}, a), MakeF32({t, h}, b), &out).ok());
  std::vector<float> sum = ToVector(out);
  for (int64_t i = 0; i < t * h; ++i) ASSERT_EQ(sum[i], a[i] + b[i]);
  ASSERT_TRUE(backend->SigmoidGateMulAdd(MakeF32({t, 1}, gl), MakeF32({t, h}, b), &out).ok());
  std::vector<float> got = ToVector(out);
  for (int64_t r = 0; r < t; ++r) {
    const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(gl[r])));
    for (int64_t i = 0; i < h; ++i) {
      ASSERT_NEAR(got[r * h + i], sum[r * h + i] + s * b[r * h + i], 1e-6);
    }
  }
}

TEST(ElementwiseErrors, NameTheArgument) {
  auto backend = cpu::CreateCpuBackend();
  Tensor out = Zeros({2, 3});
  absl::Status s = backend->SiluAndMul(Zeros({2, 3}), Zeros({2, 4}), &out);
  EXPECT_THAT(s.message(), HasSubstr("SiluAndMul: up: expected shape [2, 3], found [2, 4]"));
  s = backend->SiluAndMulPacked(Zeros({2, 5}), &out);
  EXPECT_THAT(s.message(), HasSubstr("SiluAndMulPacked: gate_up: expected an even width"));
  s = backend->SigmoidGateMulAdd(Zeros({2, 2}), Zeros({2, 3}), &out);
  EXPECT_THAT(s.message(), HasSubstr("SigmoidGateMulAdd: gate_logit: expected shape [2, 1]"));
}

}  // namespace
}  // namespace epserve::kernels
