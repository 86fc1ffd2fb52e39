// Rope frequency tables (default, linear, llama3, yarn) against the formulas
// of transformers' modeling_rope_utils.py written out here in double, and the
// in-place rotation (neox and interleaved layouts) against a direct formula.
#include <cmath>

#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::HasSubstr;
using namespace ::epserve::kernels::testing;

std::vector<double> DefaultInvFreq(double theta, int d) {
  std::vector<double> f(d / 2);
  for (int i = 0; i < d / 2; ++i) f[i] = std::pow(theta, -2.0 * i / d);
  return f;
}

void ExpectFreqs(const RopeFrequencies& got, const std::vector<double>& want) {
  ASSERT_EQ(got.inv_freq.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got.inv_freq[i], want[i], 1e-6 * want[i]) << "i=" << i;
  }
}

TEST(RopeFrequencies, DefaultAndLinear) {
  RopeConfig c;
  c.theta = 1e6;
  auto f = ComputeRopeFrequencies(c, 128);
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectFreqs(*f, DefaultInvFreq(1e6, 128));
  EXPECT_EQ(f->attention_factor, 1.0f);
  c.type = RopeType::kLinear;
  c.factor = 4.0;
  f = ComputeRopeFrequencies(c, 64);
  ASSERT_TRUE(f.ok());
  std::vector<double> want = DefaultInvFreq(1e6, 64);
  for (double& x : want) x /= 4.0;
  ExpectFreqs(*f, want);
}

TEST(RopeFrequencies, Llama3) {
  RopeConfig c;
  c.type = RopeType::kLlama3;
  c.theta = 500000.0;
  c.factor = 8.0;
  c.low_freq_factor = 1.0;
  c.high_freq_factor = 4.0;
  c.original_max_position_embeddings = 8192;
  auto f = ComputeRopeFrequencies(c, 128);
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<double> want = DefaultInvFreq(500000.0, 128);
  int num_low = 0, num_mid = 0, num_high = 0;
  for (double& x : want) {
    const double wavelen = 2 * M_PI / x;
    if (wavelen < 8192.0 / 4.0) {
      ++num_high;  // unchanged
    } else if (wavelen > 8192.0 / 1.0) {
      x /= 8.0;
      ++num_low;
    } else {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      x = (1 - smooth) * x / 8.0 + smooth * x;
      ++num_mid;
    }
  }
  EXPECT_GT(num_low, 0);
  EXPECT_GT(num_mid, 0);
  EXPECT_GT(num_high, 0);
  ExpectFreqs(*f, want);
  EXPECT_EQ(f->attention_factor, 1.0f);
}

TEST(RopeFrequencies, Yarn) {
  RopeConfig c;
  c.type = RopeType::kYarn;
  c.theta = 10000.0;
  c.factor = 4.0;
  c.original_max_position_embeddings = 2048;
  const int d = 64;
  auto f = ComputeRopeFrequencies(c, d);
  ASSERT_TRUE(f.ok()) << f.status();
  auto corr = [&](double rot) {
    return d * std::log(2048.0 / (rot * 2 * M_PI)) / (2 * std::log(10000.0));
  };
  const double low = std::max(std::floor(corr(32.0)), 0.0);
  const double high = std::min(std::ceil(corr(1.0)), d - 1.0);
  std::vector<double> want = DefaultInvFreq(10000.0, d);
  for (int i = 0; i < d / 2; ++i) {
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double extrap = 1.0 - ramp;
    want[i] = want[i] / 4.0 * (1 - extrap) + want[i] * extrap;
  }
  ExpectFreqs(*f, want);
  EXPECT_NEAR(f->attention_factor, 0.1 * std::log(4.0) + 1.0, 1e-7);
  // Both mscales: their ratio; explicit attention_factor wins.
  c.mscale = 1.0;
  c.mscale_all_dim = 0.5;
  f = ComputeRopeFrequencies(c, d);
  EXPECT_NEAR(f->attention_factor, (0.1 * std::log(4.0) + 1) / (0.05 * std::log(4.0) + 1), 1e-7);
  c.attention_factor = 1.25;
  f = ComputeRopeFrequencies(c, d);
  EXPECT_EQ(f->attention_factor, 1.25f);
}

TEST(RopeFrequencies, ErrorsNameTheParameter) {
  RopeConfig c;
  EXPECT_THAT(ComputeRopeFrequencies(c, 7).status().message(), HasSubstr("head_dim"));
  c.type = RopeType::kLlama3;
  c.factor = 8;
  EXPECT_THAT(ComputeRopeFrequencies(c, 8).status().message(),
              HasSubstr("original_max_position_embeddings"));
}

struct RopeCase {
  RopeType type;
  RopeLayout layout;
};

class RopeApply : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeApply, MatchesDirectRotation) {
  RopeConfig c;
  c.type = GetParam().type;
  c.layout = GetParam().layout;
  c.theta = 10000.0;
  c.factor = 4.0;
  c.original_max_position_embeddings = 256;
  const int64_t t = 11, d = 16, hq = 4, hkv = 2;
  auto freqs = ComputeRopeFrequencies(c, d);
  ASSERT_TRUE(freqs.ok());
  std::vector<int32_t> pos = {0, 1, 2, 5, 17, 100, 255, 256, 1000, 4095, 7};
  std::vector<float> q = Random(t * hq * d, 30), k = Random(t * hkv * d, 31);
  Tensor qt = MakeF32({t, hq * d}, q), kt = MakeF32({t, hkv * d}, k);
  auto backend = cpu::CreateCpuBackend();
  ASSERT_TRUE(backend->Rope(c, d, MakeI32({t}, pos), &qt, &kt).ok());
  auto check = [&](const std::vector<float>& in, const std::vector<float>& got, int64_t heads) {
    for (int64_t r = 0; r < t; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* x = &in[(r * heads + h) * d];
        const float* y = &got[(r * heads + h) * d];
        for (int64_t i = 0; i < d / 2; ++i) {
          // The angle as transformers forms it: float(pos) * inv_freq in fp32.
          const float angle = static_cast<float>(pos[r]) * freqs->inv_freq[i];
          const double cs = std::cos(static_cast<double>(angle)) * freqs->attention_factor;
          const double sn = std::sin(static_cast<double>(angle)) * freqs->attention_factor;
          const int64_t a = c.layout == RopeLayout::kNeox ? i : 2 * i;
          const int64_t b = c.layout == RopeLayout::kNeox ? i + d / 2 : 2 * i + 1;
          ASSERT_NEAR(y[a], x[a] * cs - x[b] * sn, 1e-6) << "row " << r << " i " << i;
          ASSERT_NEAR(y[b], x[b] * cs + x[a] * sn, 1e-6) << "row " << r << " i " << i;
        }
      }
    }
  };
  check(q, ToVector(qt), hq);
  check(k, ToVector(kt), hkv);
}

INSTANTIATE_TEST_SUITE_P(Variants, RopeApply,
                         ::testing::Values(RopeCase{RopeType::kDefault, RopeLayout::kNeox},
                                           RopeCase{RopeType::kDefault, RopeLayout::kInterleaved},
                                           RopeCase{RopeType::kLinear, RopeLayout::kNeox},
                                           RopeCase{RopeType::kLlama3, RopeLayout::kNeox},
                                           RopeCase{RopeType::kYarn, RopeLayout::kNeox},
                                           RopeCase{RopeType::kYarn, RopeLayout::kInterleaved}));

TEST(RopeErrors, NameTheArgument) {
  auto backend = cpu::CreateCpuBackend();
  RopeConfig c;
  Tensor q = Zeros({2, 12}), k = Zeros({2, 8});
  absl::Status s = backend->Rope(c, 8, MakeI32({2}, {0, 1}), &q, &k);
  EXPECT_THAT(s.message(), HasSubstr("Rope: q: expected a width that is a multiple of head_dim 8"));
  Tensor q2 = Zeros({2, 16});
  s = backend->Rope(c, 8, MakeI32({3}, {0, 1, 2}), &q2, &k);
  EXPECT_THAT(s.message(), HasSubstr("Rope: q: expected shape [3, *], found [2, 16]"));
  s = backend->Rope(c, 8, MakeI32({2}, {0, -4}), &q2, &k);
  EXPECT_THAT(s.message(), HasSubstr("Rope: positions[1] = -4 is negative"));
}

}  // namespace
}  // namespace epserve::kernels
