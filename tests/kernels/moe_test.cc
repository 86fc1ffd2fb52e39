// MoE: gate numerics (incl. NaN/inf/all-equal rows), permutation against a
// hand-computed routing table, grouped GEMM + un-permute against a naive
// MoE, one expert == dense SiLU MLP, fp32 accumulation of fp16 experts,
// missing experts.
#include <cmath>
#include <limits>
#include <set>

#include "gmock/gmock.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace ::epserve::kernels::testing;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct GateOut {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

GateOut Gate(Backend& b, int64_t t, int64_t e, const std::vector<float>& logits, int64_t k,
             bool renorm) {
  Tensor ids = *EmptyHostTensor(DataType::kInt32, {t, k});
  Tensor w = Zeros({t, k});
  absl::Status s = b.MoeGate(MakeF32({t, e}, logits), SoftmaxTopK(k, renorm), &ids, &w);
  EXPECT_TRUE(s.ok()) << s;
  return {ToIntVector(ids), ToVector(w)};
}

TEST(MoeGate, MatchesSoftmaxTopKReference) {
  auto backend = cpu::CreateCpuBackend();
  const int64_t t = 13, e = 11;
  std::vector<float> logits = Random(t * e, 50, -4, 4);
  for (int64_t k : {1, 2, 8}) {
    for (bool renorm : {false, true}) {
      GateOut g = Gate(*backend, t, e, logits, k, renorm);
      for (int64_t r = 0; r < t; ++r) {
        std::vector<double> p(e);
        double mx = -1e300, sum = 0;
        for (int64_t i = 0; i < e; ++i) mx = std::max(mx, double{logits[r * e + i]});
        for (int64_t i = 0; i < e; ++i) sum += (p[i] = std::exp(logits[r * e + i] - mx));
        for (double& x : p) x /= sum;
        std::vector<int> order(e);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
        double ksum = 0;
        for (int64_t j = 0; j < k; ++j) ksum += p[order[j]];
        for (int64_t j = 0; j < k; ++j) {
          ASSERT_EQ(g.ids[r * k + j], order[j]) << "row " << r;
          const double want = renorm ? p[order[j]] / ksum : p[order[j]];
          ASSERT_NEAR(g.weights[r * k + j], want, 1e-6);
        }
      }
    }
  }
}

TEST(MoeGate, NonFiniteAndEqualRowsGiveValidIdsAndFiniteWeights) {
  auto backend = cpu::CreateCpuBackend();
  const int64_t e = 6, k = 3;
  const std::vector<std::vector<float>> rows = {
      {kNaN, kNaN, kNaN, kNaN, kNaN, kNaN},  // all NaN -> uniform -> ids 0,1,2
      {1, 1, 1, 1, 1, 1},                    // all equal -> ids 0,1,2
      {0, kNaN, 5, kNaN, -1, 2},             // NaN never preferred
      {0, kInf, 1, kInf, 2, -kInf},          // +inf experts share the mass
      {-kInf, -kInf, -kInf, -kInf, -kInf, -kInf},
      {kNaN, -kInf, kNaN, 3, kNaN, kNaN},  // one finite logit
  };
  std::vector<float> logits;
  for (const auto& r : rows) logits.insert(logits.end(), r.begin(), r.end());
  const int64_t t = static_cast<int64_t>(rows.size());
  for (bool renorm : {false, true}) {
    GateOut g = Gate(*backend, t, e, logits, k, renorm);
    for (int64_t r = 0; r < t; ++r) {
      std::set<int32_t> distinct;
      for (int64_t j = 0; j < k; ++j) {
        const int32_t id = g.ids[r * k + j];
        const float w = g.weights[r * k + j];
        EXPECT_TRUE(id >= 0 && id < e) << "row " << r;
        distinct.insert(id);
        EXPECT_TRUE(std::isfinite(w) && w >= 0.0f && w <= 1.0f) << "row " << r << " w " << w;
      }
      EXPECT_EQ(distinct.size(), static_cast<size_t>(k)) << "row " << r;
    }
    auto ids = [&](int r) {
      return std::vector<int32_t>(g.ids.begin() + r * k, g.ids.begin() + (r + 1) * k);
    };
    EXPECT_THAT(ids(0), ElementsAre(0, 1, 2));
    EXPECT_THAT(ids(1), ElementsAre(0, 1, 2));
    EXPECT_THAT(ids(2), ElementsAre(2, 5, 0));
    EXPECT_THAT(ids(3), ElementsAre(1, 3, 0));
    EXPECT_THAT(ids(5), ElementsAre(3, 0, 1));
    const float uniform = renorm ? 1.0f / 3 : 1.0f / 6;
    EXPECT_FLOAT_EQ(g.weights[0], uniform);
    EXPECT_FLOAT_EQ(g.weights[3], uniform);
    EXPECT_FLOAT_EQ(g.weights[9], 0.5f);   // row 3: two +inf experts
    EXPECT_FLOAT_EQ(g.weights[11], 0.0f);  // row 3: the rest get nothing
    EXPECT_FLOAT_EQ(g.weights[15], 1.0f);  // row 5: the only finite logit
  }
}

TEST(MoePermute, FixedRoutingTableIsHandComputed) {
  auto backend = cpu::CreateCpuBackend();
  // T=3, k=2, E=4: token 0 -> {2,0}, token 1 -> {2,3}, token 2 -> {1,2}.
  const int64_t t = 3, k = 2, h = 2, e = 4;
  Tensor hidden = MakeF32({t, h}, {10, 11, 20, 21, 30, 31});
  auto perm = EmptyMoePermutation(*backend, t, k, h, e);
  ASSERT_TRUE(perm.ok());
  ASSERT_TRUE(backend->MoePermute(hidden, MakeI32({t, k}, {2, 0, 2, 3, 1, 2}), &*perm).ok());
  EXPECT_THAT(ToIntVector(perm->expert_offsets), ElementsAre(0, 1, 2, 5, 6));
  // expert 0: a=1 | expert 1: a=4 | expert 2: a=0, 2, 5 | expert 3: a=3
  EXPECT_THAT(ToIntVector(perm->permuted_to_assignment), ElementsAre(1, 4, 0, 2, 5, 3));
  EXPECT_THAT(ToIntVector(perm->assignment_to_permuted), ElementsAre(2, 0, 3, 5, 1, 4));
  EXPECT_THAT(ToVector(perm->rows), ElementsAre(10, 11, 30, 31, 10, 11, 20, 21, 30, 31, 20, 21));

  // Experts scale rows by (e + 1) through a diagonal weight; combine by hand.
  std::vector<Tensor> weights;
  for (int i = 0; i < e; ++i) {
    weights.push_back(MakeF32({h, h}, {float(i + 1), 0, 0, float(i + 1)}));
  }
  Tensor expert_out = Zeros({t * k, h});
  ASSERT_TRUE(
      backend->GroupedExpertMatMul(perm->rows, perm->expert_offsets, Linears(weights), &expert_out)
          .ok());
  Tensor topk_w = MakeF32({t, k}, {0.75f, 0.25f, 0.5f, 0.5f, 1.0f, 0.0f});
  Tensor out = Zeros({t, h});
  ASSERT_TRUE(backend->MoeUnpermute(expert_out, topk_w, *perm, &out).ok());
  // token 0: 0.75*3*x + 0.25*1*x = 2.5x; token 1: 0.5*3x + 0.5*4x = 3.5x; token 2: 2x.
  EXPECT_THAT(ToVector(out), ElementsAre(25, 27.5, 70, 73.5, 60, 62));
}

// Dense SwiGLU MLP through MatMul: down(silu(gate x) * up x).
std::vector<float> DenseMlp(Backend& b, const Tensor& x, const Tensor& wg, const Tensor& wu,
                            const Tensor& wd) {
  const int64_t t = x.shape[0], m = wg.shape[0], h = wd.shape[0];
  Tensor g = Zeros({t, m}), u = Zeros({t, m}), y = Zeros({t, h});
  EXPECT_TRUE(b.MatMul(x, Linear(wg), Tensor{}, &g).ok());
  EXPECT_TRUE(b.MatMul(x, Linear(wu), Tensor{}, &u).ok());
  EXPECT_TRUE(b.SiluAndMul(g, u, &g).ok());
  EXPECT_TRUE(b.MatMul(g, Linear(wd), Tensor{}, &y).ok());
  return ToVector(y);
}

// The MoE layer through the MoE ops.
std::vector<float> MoeLayer(Backend& b, const Tensor& x, const Tensor& logits, int64_t k,
                            bool renorm, absl::Span<const Tensor> wg, absl::Span<const Tensor> wu,
                            absl::Span<const Tensor> wd) {
  const int64_t t = x.shape[0], h = x.shape[1], e = static_cast<int64_t>(wg.size());
  const int64_t m = wg[0].shape[0];
  Tensor ids = *EmptyHostTensor(DataType::kInt32, {t, k}), w = Zeros({t, k});
  EXPECT_TRUE(b.MoeGate(logits, SoftmaxTopK(k, renorm), &ids, &w).ok());
  MoePermutation perm = *EmptyMoePermutation(b, t, k, h, e);
  EXPECT_TRUE(b.MoePermute(x, ids, &perm).ok());
  Tensor g = Zeros({t * k, m}), u = Zeros({t * k, m}), y = Zeros({t * k, h}), out = Zeros({t, h});
  EXPECT_TRUE(b.GroupedExpertMatMul(perm.rows, perm.expert_offsets, Linears(wg), &g).ok());
  EXPECT_TRUE(b.GroupedExpertMatMul(perm.rows, perm.expert_offsets, Linears(wu), &u).ok());
  EXPECT_TRUE(b.SiluAndMul(g, u, &g).ok());
  EXPECT_TRUE(b.GroupedExpertMatMul(g, perm.expert_offsets, Linears(wd), &y).ok());
  EXPECT_TRUE(b.MoeUnpermute(y, w, perm, &out).ok());
  return ToVector(out);
}

TEST(Moe, OneExpertWithWeightOneEqualsDenseMlp) {
  auto backend = cpu::CreateCpuBackend();
  const int64_t t = 7, h = 24, m = 40;
  Tensor x = MakeF32({t, h}, Random(t * h, 60));
  Tensor wg = MakeTyped(DataType::kBFloat16, {m, h}, Random(m * h, 61));
  Tensor wu = MakeTyped(DataType::kBFloat16, {m, h}, Random(m * h, 62));
  Tensor wd = MakeTyped(DataType::kBFloat16, {h, m}, Random(h * m, 63));
  std::vector<float> dense = DenseMlp(*backend, x, wg, wu, wd);
  std::vector<float> moe = MoeLayer(*backend, x, MakeF32({t, 1}, Random(t, 64)), 1,
                                    /*renorm=*/false, {wg}, {wu}, {wd});
  EXPECT_EQ(moe, dense);  // weight 1.0, identity permutation: bit-identical
}

TEST(Moe, RandomRoutingMatchesNaiveReference) {
  auto backend = cpu::CreateCpuBackend();
  const int64_t t = 19, h = 16, m = 12, e = 5, k = 2;
  std::vector<float> xv = Random(t * h, 70), lv = Random(t * e, 71, -2, 2);
  std::vector<Tensor> wg, wu, wd;
  std::vector<std::vector<float>> g(e), u(e), d(e);
  for (int i = 0; i < e; ++i) {
    g[i] = RoundTo(DataType::kFloat16, Random(m * h, 80 + i));
    u[i] = RoundTo(DataType::kFloat16, Random(m * h, 90 + i));
    d[i] = RoundTo(DataType::kFloat16, Random(h * m, 100 + i));
    wg.push_back(MakeTyped(DataType::kFloat16, {m, h}, g[i]));
    wu.push_back(MakeTyped(DataType::kFloat16, {m, h}, u[i]));
    wd.push_back(MakeTyped(DataType::kFloat16, {h, m}, d[i]));
  }
  std::vector<float> got = MoeLayer(*backend, MakeF32({t, h}, xv), MakeF32({t, e}, lv), k,
                                    /*renorm=*/true, wg, wu, wd);
  for (int64_t r = 0; r < t; ++r) {
    std::vector<double> p(e);
    double mx = -1e300, sum = 0;
    for (int i = 0; i < e; ++i) mx = std::max(mx, double{lv[r * e + i]});
    for (int i = 0; i < e; ++i) sum += (p[i] = std::exp(lv[r * e + i] - mx));
    std::vector<int> order(e);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    const double ksum = p[order[0]] + p[order[1]];
    std::vector<double> ref(h, 0.0);
    for (int j = 0; j < k; ++j) {
      const int ex = order[j];
      std::vector<double> act(m);
      for (int64_t i = 0; i < m; ++i) {
        double gs = 0, us = 0;
        for (int64_t c = 0; c < h; ++c) {
          gs += double{g[ex][i * h + c]} * xv[r * h + c];
          us += double{u[ex][i * h + c]} * xv[r * h + c];
        }
        act[i] = gs / (1 + std::exp(-gs)) * us;
      }
      for (int64_t o = 0; o < h; ++o) {
        double s = 0;
        for (int64_t i = 0; i < m; ++i) s += double{d[ex][o * m + i]} * act[i];
        ref[o] += p[ex] / ksum * s;
      }
    }
    for (int64_t o = 0; o < h; ++o) ASSERT_NEAR(got[r * h + o], ref[o], 1e-5) << r << "," << o;
  }
}

TEST(Moe, Fp16ExpertWeightsAccumulateInFp32) {
  // Each output is 128 * 1000 = 128000, beyond fp16's range (65504), and
  // sum(1 + 2^-11 * c) needs more precision than fp16 has.
  auto backend = cpu::CreateCpuBackend();
  const int64_t k = 128;
  std::vector<float> w(2 * k);
  for (int64_t c = 0; c < k; ++c) {
    w[c] = 1.0f;
    w[k + c] = 1.0f + static_cast<float>(c % 4) * 0.00048828125f;  // exact in fp16
  }
  Tensor rows = MakeF32({1, k}, std::vector<float>(k, 1000.0f));
  Tensor out = Zeros({1, 2});
  std::vector<Tensor> weights = {MakeTyped(DataType::kFloat16, {2, k}, w)};
  ASSERT_TRUE(
      backend->GroupedExpertMatMul(rows, MakeI32({2}, {0, 1}), Linears(weights), &out).ok());
  std::vector<float> got = ToVector(out);
  EXPECT_EQ(got[0], 128000.0f);
  EXPECT_NEAR(got[1], 1000.0 * (128 + 32 * (0 + 1 + 2 + 3) * 0.00048828125), 1e-2);
}

TEST(Moe, MissingExpertIsAnErrorNotADrop) {
  auto backend = cpu::CreateCpuBackend();
  Tensor rows = Zeros({3, 4}), out = Zeros({3, 2});
  std::vector<Tensor> weights = {Zeros({2, 4}), Tensor{}, Zeros({2, 4})};
  absl::Status s =
      backend->GroupedExpertMatMul(rows, MakeI32({4}, {0, 1, 3, 3}), Linears(weights), &out);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("2 rows are routed to expert 1"));
  // Not held and not routed to: fine.
  EXPECT_TRUE(
      backend->GroupedExpertMatMul(rows, MakeI32({4}, {0, 3, 3, 3}), Linears(weights), &out).ok());
}

// Every RoutingParams field outside softmax / no bias / no groups / scaling 1
// is refused at the op boundary, naming the field and the value.
struct UnsupportedRoutingCase {
  const char* name;
  void (*edit)(RoutingParams*);
  const char* message;
};

class MoeGateUnsupportedRouting : public ::testing::TestWithParam<UnsupportedRoutingCase> {};

TEST_P(MoeGateUnsupportedRouting, IsRefusedNamingTheField) {
  auto backend = cpu::CreateCpuBackend();
  RoutingParams routing = SoftmaxTopK(2, true);
  GetParam().edit(&routing);
  Tensor ids = *EmptyHostTensor(DataType::kInt32, {2, 2}), w = Zeros({2, 2});
  absl::Status s = backend->MoeGate(Zeros({2, 4}), routing, &ids, &w);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr(GetParam().message));
  // The same routing with the field back at its supported value runs.
  EXPECT_TRUE(backend->MoeGate(Zeros({2, 4}), SoftmaxTopK(2, true), &ids, &w).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Fields, MoeGateUnsupportedRouting,
    ::testing::Values(
        UnsupportedRoutingCase{"Sigmoid",
                               [](RoutingParams* r) { r->scoring = RoutingScoring::kSigmoid; },
                               "MoeGate: routing.scoring: expected softmax, found sigmoid"},
        UnsupportedRoutingCase{"CorrectionBias",
                               [](RoutingParams* r) { r->correction_bias = true; },
                               "MoeGate: routing.correction_bias: expected false, found true"},
        UnsupportedRoutingCase{"NGroup", [](RoutingParams* r) { r->n_group = 2; },
                               "MoeGate: routing.n_group: expected 1 (no expert groups), found 2"},
        UnsupportedRoutingCase{
            "TopkGroup", [](RoutingParams* r) { r->topk_group = 2; },
            "MoeGate: routing.topk_group: expected 1 (no expert groups), found 2"},
        UnsupportedRoutingCase{"ScalingFactor",
                               [](RoutingParams* r) { r->routed_scaling_factor = 2.5; },
                               "MoeGate: routing.routed_scaling_factor: expected 1, found 2.5"}),
    [](const ::testing::TestParamInfo<UnsupportedRoutingCase>& param_info) {
      return param_info.param.name;
    });

TEST(MoeErrors, NameTheArgument) {
  auto backend = cpu::CreateCpuBackend();
  MoePermutation perm = *EmptyMoePermutation(*backend, 2, 1, 4, 3);
  absl::Status s = backend->MoePermute(Zeros({2, 4}), MakeI32({2, 1}, {0, 3}), &perm);
  EXPECT_THAT(s.message(), HasSubstr("MoePermute: topk_ids[1, 0] = 3 is outside the experts [0, 3)"));
  Tensor ids = *EmptyHostTensor(DataType::kInt32, {2, 4}), w = Zeros({2, 4});
  s = backend->MoeGate(Zeros({2, 3}), SoftmaxTopK(4, false), &ids, &w);
  EXPECT_THAT(s.message(), HasSubstr("MoeGate: top_k: expected 1..3 (num_experts), found 4"));
  Tensor out = Zeros({2, 5});
  s = backend->GroupedExpertMatMul(Zeros({2, 4}), MakeI32({3}, {0, 1, 2}),
                                   Linears({Zeros({5, 4}), Zeros({5, 3})}), &out);
  EXPECT_THAT(s.message(), HasSubstr("GroupedExpertMatMul: weights[1]: expected shape [5, 4], found [5, 3]"));
}

}  // namespace
}  // namespace epserve::kernels
