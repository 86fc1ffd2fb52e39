// The CUDA backend's decode-sized paths against the CPU reference backend:
// MatMul with float32 weights at 1..4 rows (the skinny GEMV kernel; the MoE
// router), MoeGate at 1..3 rows and beyond (logits in registers for E <= 512,
// in shared memory above), MoePermute at few assignments (the one-warp sort,
// R = T*k <= 256) and many (the block sort), bad expert ids, and the three
// captured in a CUDA graph.
//
// Tolerances (max |gpu - cpu| / max |cpu| over the output):
//   MatMul, float32 weights ........ 1e-5  (same fp32 math, another summation order)
//   MoeGate weights ................ 4e-6  (expf within 2 ulp of std::exp, another sum order)
//   MoeGate ids, permutations ...... exact
//   skinny rows at T = 1 vs T = 4 .. exact (the kernel's batch invariance)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels::testing {
namespace {

using CudaMoeSmallTest = GpuCpuTest;

// ---- MatMul, float32 weights, 1..4 rows ----

struct GemmShape {
  int64_t n, k;
  bool bias;
};

// Router [128, 2048]; a dense layer; odd N; K % 8 != 0 (cuBLAS fallback);
// N large and K short (other launch shapes of the skinny kernel).
constexpr GemmShape kGemmShapes[] = {
    {128, 2048, false}, {128, 2048, true}, {768, 2048, true},
    {129, 520, true},   {64, 100, true},   {20000, 64, false},
};

TEST_F(CudaMoeSmallTest, MatMulFloat32WeightsAtFewRowsMatchesCpu) {
  for (const GemmShape& sh : kGemmShapes) {
    for (int64_t t : {1, 2, 3, 4, 5}) {
      SCOPED_TRACE(::testing::Message()
                   << "N=" << sh.n << " K=" << sh.k << " bias=" << sh.bias << " T=" << t);
      Tensor x = MakeF32({t, sh.k}, Random(t * sh.k, 200 + t));
      Tensor w = MakeF32({sh.n, sh.k}, Random(sh.n * sh.k, 201, -0.05f, 0.05f));
      Tensor bias = sh.bias ? MakeF32({sh.n}, Random(sh.n, 202)) : Tensor{};
      Tensor y_cpu = Zeros({t, sh.n});
      ASSERT_TRUE(cpu_->MatMul(x, Linear(w), bias, &y_cpu).ok());
      Tensor y = GpuEmpty(DataType::kFloat32, {t, sh.n});
      ASSERT_TRUE(gpu_->MatMul(Up(x), Linear(Up(w)), sh.bias ? Up(bias) : Tensor{}, &y).ok());
      EXPECT_LE(MaxRelError(Down(y), ToVector(y_cpu)), 1e-5);
    }
  }
}

// MatMulShared (the q, k and v projections in one launch at decode sizes)
// gives each output the exact bits of its own MatMul: Qwen3-30B-A3B's and
// Mixtral's projections, Qwen2's biased ones, every weight type, 1..5 rows
// (5: the per-weight fallback), and mixed weight types (the fallback).
TEST_F(CudaMoeSmallTest, MatMulSharedIsBitIdenticalToMatMulPerWeight) {
  struct Qkv {
    int64_t hidden, q, kv;
    bool bias;
  };
  for (const Qkv& sh : {Qkv{2048, 4096, 512, false}, Qkv{4096, 4096, 1024, false},
                        Qkv{3584, 3584, 512, true}}) {
    for (DataType wt : {DataType::kBFloat16, DataType::kFloat16, DataType::kFloat32}) {
      for (int64_t t : {1, 2, 3, 4, 5}) {
        SCOPED_TRACE(::testing::Message() << "hidden=" << sh.hidden << " q=" << sh.q << " kv="
                                          << sh.kv << " " << DtypeName(wt) << " T=" << t);
        Tensor x = Up(MakeF32({t, sh.hidden}, Random(t * sh.hidden, 300 + t)));
        const int64_t ns[3] = {sh.q, sh.kv, sh.kv};
        LinearWeight w[3];
        Tensor b[3], shared[3], single[3];
        for (int i = 0; i < 3; ++i) {
          w[i] = Linear(Up(MakeTyped(wt, {ns[i], sh.hidden},
                                     Random(ns[i] * sh.hidden, 310 + i, -0.05f, 0.05f))));
          if (sh.bias) b[i] = Up(MakeTyped(wt, {ns[i]}, Random(ns[i], 320 + i)));
          shared[i] = GpuEmpty(DataType::kFloat32, {t, ns[i]});
          single[i] = GpuEmpty(DataType::kFloat32, {t, ns[i]});
          ASSERT_TRUE(gpu_->MatMul(x, w[i], b[i], &single[i]).ok());
        }
        const LinearWeight* ws[] = {&w[0], &w[1], &w[2]};
        const Tensor* bs[] = {&b[0], &b[1], &b[2]};
        Tensor* ys[] = {&shared[0], &shared[1], &shared[2]};
        absl::Status st = gpu_->MatMulShared(x, ws, bs, ys);
        ASSERT_TRUE(st.ok()) << st;
        for (int i = 0; i < 3; ++i) EXPECT_EQ(Down(shared[i]), Down(single[i])) << "weight " << i;
      }
    }
  }
  // Mixed weight types: one MatMul each, same bits.
  Tensor x = Up(MakeF32({1, 256}, Random(256, 330)));
  LinearWeight w0 = Linear(Up(MakeTyped(DataType::kBFloat16, {64, 256}, Random(64 * 256, 331))));
  LinearWeight w1 = Linear(Up(MakeTyped(DataType::kFloat32, {32, 256}, Random(32 * 256, 332))));
  Tensor y0 = GpuEmpty(DataType::kFloat32, {1, 64}), y1 = GpuEmpty(DataType::kFloat32, {1, 32});
  Tensor r0 = GpuEmpty(DataType::kFloat32, {1, 64}), r1 = GpuEmpty(DataType::kFloat32, {1, 32});
  const LinearWeight* ws[] = {&w0, &w1};
  const Tensor* bs[] = {nullptr, nullptr};
  Tensor* ys[] = {&y0, &y1};
  ASSERT_TRUE(gpu_->MatMulShared(x, ws, bs, ys).ok());
  ASSERT_TRUE(gpu_->MatMul(x, w0, Tensor{}, &r0).ok());
  ASSERT_TRUE(gpu_->MatMul(x, w1, Tensor{}, &r1).ok());
  EXPECT_EQ(Down(y0), Down(r0));
  EXPECT_EQ(Down(y1), Down(r1));
}

TEST_F(CudaMoeSmallTest, MatMulFloat32RowIsTheSameBitsAtOneAndFourRows) {
  const int64_t t = 4, k = 2048;
  for (int64_t n : {128, 768}) {
    SCOPED_TRACE(n);
    std::vector<float> xs = Random(t * k, 210);
    LinearWeight w = Linear(Up(MakeF32({n, k}, Random(n * k, 211, -0.05f, 0.05f))));
    Tensor bias = Up(MakeF32({n}, Random(n, 212)));
    Tensor y4 = GpuEmpty(DataType::kFloat32, {t, n});
    ASSERT_TRUE(gpu_->MatMul(Up(MakeF32({t, k}, xs)), w, bias, &y4).ok());
    const std::vector<float> all = Down(y4);
    for (int64_t r = 0; r < t; ++r) {
      std::vector<float> row(xs.begin() + r * k, xs.begin() + (r + 1) * k);
      Tensor y1 = GpuEmpty(DataType::kFloat32, {1, n});
      ASSERT_TRUE(gpu_->MatMul(Up(MakeF32({1, k}, row)), w, bias, &y1).ok());
      EXPECT_EQ(Down(y1), std::vector<float>(all.begin() + r * n, all.begin() + (r + 1) * n))
          << "row " << r;
    }
  }
}

// ---- MoeGate ----

constexpr int kGatePatterns = 9;

// Row `pattern` of E logits: plain, all tied, with NaN, one / two +inf, all
// -inf, NaN and -inf only, few distinct values (many ties), -inf sprinkled.
std::vector<float> GateRow(int pattern, int64_t e, uint32_t seed) {
  std::vector<float> row = Random(e, seed, -4.0f, 4.0f);
  std::mt19937 gen(seed);
  auto at = [&](int64_t i) -> float& { return row[static_cast<size_t>(i % e)]; };
  switch (pattern) {
    case 1:
      std::fill(row.begin(), row.end(), 1.0f);
      break;
    case 2:
      at(3) = NAN;
      at(gen()) = NAN;
      break;
    case 3:
      at(gen()) = INFINITY;
      at(1) = NAN;
      break;
    case 4:
      at(e - 1) = INFINITY;
      at(e / 2) = INFINITY;
      break;
    case 5:
      std::fill(row.begin(), row.end(), -INFINITY);
      break;
    case 6:
      for (int64_t i = 0; i < e; ++i) row[i] = i % 3 == 0 ? NAN : -INFINITY;
      break;
    case 7:
      for (float& v : row) v = std::round(v / 4.0f);  // -1, 0 or 1
      break;
    case 8:
      for (int64_t i = 0; i < e; i += 3) row[i] = -INFINITY;
      break;
    default:
      break;
  }
  return row;
}

TEST_F(CudaMoeSmallTest, MoeGateMatchesCpuAtFewAndManyRows) {
  // (E, k): Qwen3-30B-A3B, Mixtral, Qwen2-MoE, DeepSeek-V3-sized, the
  // register kernel's largest E at the largest k, the shared-memory kernel,
  // one expert, k = 32 just under E.
  const std::pair<int64_t, int64_t> kCases[] = {{128, 8},  {8, 2},   {60, 4}, {256, 8},
                                                {512, 32}, {513, 4}, {1, 1},  {33, 32}};
  for (auto [e, k] : kCases) {
    for (int64_t t : {1, 2, 3, 37, 300}) {
      // At 1..3 rows every pattern gets its turn at every row.
      const int offsets = t < kGatePatterns ? kGatePatterns : 1;
      for (int offset = 0; offset < offsets; ++offset) {
        for (bool renorm : {true, false}) {
          SCOPED_TRACE(::testing::Message() << "E=" << e << " k=" << k << " T=" << t
                                            << " offset=" << offset << " renorm=" << renorm);
          std::vector<float> logits;
          for (int64_t r = 0; r < t; ++r) {
            const std::vector<float> row = GateRow(static_cast<int>((r + offset) % kGatePatterns),
                                                   e, static_cast<uint32_t>(300 + r));
            logits.insert(logits.end(), row.begin(), row.end());
          }
          Tensor lg = MakeF32({t, e}, logits);
          Tensor ids_cpu = MakeI32({t, k}, std::vector<int32_t>(t * k));
          Tensor w_cpu = Zeros({t, k});
          ASSERT_TRUE(cpu_->MoeGate(lg, SoftmaxTopK(k, renorm), &ids_cpu, &w_cpu).ok());
          Tensor ids = GpuEmpty(DataType::kInt32, {t, k});
          Tensor w = GpuEmpty(DataType::kFloat32, {t, k});
          ASSERT_TRUE(gpu_->MoeGate(Up(lg), SoftmaxTopK(k, renorm), &ids, &w).ok());
          ASSERT_EQ(DownInt(ids), ToIntVector(ids_cpu));
          ASSERT_LE(MaxRelError(Down(w), ToVector(w_cpu)), 4e-6);
        }
      }
    }
  }
}

// ---- MoePermute ----

// T*k ids: k distinct experts per token from a skewed subset, or (`repeat`)
// drawn with replacement (an expert twice in a token is legal).
std::vector<int32_t> RoutingIds(int64_t t, int64_t k, int64_t e, bool repeat, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<int32_t> ids(static_cast<size_t>(t * k));
  for (int64_t i = 0; i < t; ++i) {
    std::vector<int32_t> all(static_cast<size_t>(e));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.begin() + std::min<int64_t>(e, 20), gen);
    for (int64_t j = 0; j < k; ++j) {
      ids[i * k + j] = repeat ? static_cast<int32_t>(gen() % std::min<int64_t>(e, 5))
                              : all[static_cast<size_t>(j % e)];
    }
  }
  return ids;
}

struct PermuteCase {
  int64_t t, k, e, h;
  bool repeat;
};

TEST_F(CudaMoeSmallTest, MoePermuteMatchesCpuExactlyAtFewAndManyAssignments) {
  // R = T*k: 8, 16, 24 (decode), 248 / 256 (the one-warp sort's last sizes),
  // 264 / 257 (the block sort's first), 4800; E up to kMaxExperts; H not a
  // multiple of 4 (scalar gather).
  const PermuteCase kCases[] = {
      {1, 8, 128, 256, false},  {2, 8, 128, 256, false},  {3, 8, 128, 256, false},
      {31, 8, 128, 256, false}, {32, 8, 128, 256, false}, {33, 8, 128, 256, false},
      {600, 8, 128, 64, false}, {1, 2, 8, 256, false},    {3, 2, 8, 6, true},
      {256, 1, 8, 16, true},    {257, 1, 8, 16, true},    {1, 8, 4096, 32, false},
      {3, 8, 4096, 32, true},   {2, 1, 1, 8, false},      {40, 8, 128, 32, true},
  };
  for (const PermuteCase& c : kCases) {
    SCOPED_TRACE(::testing::Message() << "T=" << c.t << " k=" << c.k << " E=" << c.e << " H=" << c.h
                                      << " repeat=" << c.repeat);
    const std::vector<int32_t> ids = RoutingIds(c.t, c.k, c.e, c.repeat, 400 + c.t);
    Tensor hidden = MakeF32({c.t, c.h}, Random(c.t * c.h, 401));
    Tensor topk = MakeI32({c.t, c.k}, ids);
    auto p_cpu = EmptyMoePermutation(*cpu_, c.t, c.k, c.h, c.e);
    auto p_gpu = EmptyMoePermutation(*gpu_, c.t, c.k, c.h, c.e);
    ASSERT_TRUE(p_cpu.ok() && p_gpu.ok());
    ASSERT_TRUE(cpu_->MoePermute(hidden, topk, &*p_cpu).ok());
    ASSERT_TRUE(gpu_->MoePermute(Up(hidden), Up(topk), &*p_gpu).ok());
    ASSERT_TRUE(gpu_->Synchronize().ok());
    EXPECT_EQ(DownInt(p_gpu->expert_offsets), ToIntVector(p_cpu->expert_offsets));
    EXPECT_EQ(DownInt(p_gpu->permuted_to_assignment), ToIntVector(p_cpu->permuted_to_assignment));
    EXPECT_EQ(DownInt(p_gpu->assignment_to_permuted), ToIntVector(p_cpu->assignment_to_permuted));
    EXPECT_EQ(Down(p_gpu->rows), ToVector(p_cpu->rows));
  }
}

// An id outside [0, E) sets the device error word (reported once, naming
// MoePermute); the assignment is placed as expert E-1, so the outputs are the
// CPU permutation of the ids with the bad ones replaced by E-1.
TEST_F(CudaMoeSmallTest, MoePermuteFlagsBadExpertIdsInBothSorts) {
  const int64_t k = 8, e = 128, h = 32;
  for (int64_t t : {1, 3, 40}) {  // R = 8, 24: one-warp sort; 320: block sort
    SCOPED_TRACE(t);
    std::vector<int32_t> ids = RoutingIds(t, k, e, false, 500 + t);
    ids[1] = static_cast<int32_t>(e);
    ids[ids.size() - 1] = -1;
    std::vector<int32_t> clamped = ids;
    for (int32_t& id : clamped) {
      if (id < 0 || id >= e) id = static_cast<int32_t>(e - 1);
    }
    Tensor hidden = MakeF32({t, h}, Random(t * h, 501));
    auto p_cpu = EmptyMoePermutation(*cpu_, t, k, h, e);
    auto p_gpu = EmptyMoePermutation(*gpu_, t, k, h, e);
    ASSERT_TRUE(p_cpu.ok() && p_gpu.ok());
    ASSERT_TRUE(cpu_->MoePermute(hidden, MakeI32({t, k}, clamped), &*p_cpu).ok());
    ASSERT_TRUE(gpu_->MoePermute(Up(hidden), Up(MakeI32({t, k}, ids)), &*p_gpu).ok());  // enqueued
    absl::Status s = gpu_->Synchronize();
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("MoePermute"), std::string::npos) << s;
    EXPECT_TRUE(gpu_->Synchronize().ok());  // reported once
    EXPECT_EQ(DownInt(p_gpu->expert_offsets), ToIntVector(p_cpu->expert_offsets));
    EXPECT_EQ(DownInt(p_gpu->permuted_to_assignment), ToIntVector(p_cpu->permuted_to_assignment));
    EXPECT_EQ(DownInt(p_gpu->assignment_to_permuted), ToIntVector(p_cpu->assignment_to_permuted));
    EXPECT_EQ(Down(p_gpu->rows), ToVector(p_cpu->rows));
  }
}

// ---- the decode router step in a CUDA graph ----

TEST_F(CudaMoeSmallTest, RouterGatePermuteGraphReplayEqualsEager) {
  const int64_t t = 1, hsz = 2048, e = 128, k = 8;
  Tensor w = Up(MakeF32({e, hsz}, Random(e * hsz, 600, -0.05f, 0.05f)));
  Tensor x = GpuEmpty(DataType::kFloat32, {t, hsz});
  Tensor logits = GpuEmpty(DataType::kFloat32, {t, e});
  Tensor ids = GpuEmpty(DataType::kInt32, {t, k});
  Tensor weights = GpuEmpty(DataType::kFloat32, {t, k});
  auto perm = EmptyMoePermutation(*gpu_, t, k, hsz, e);
  ASSERT_TRUE(perm.ok()) << perm.status();
  auto body = [&]() -> absl::Status {
    absl::Status s = gpu_->MatMul(x, Linear(w), {}, &logits);
    if (!s.ok()) return s;
    s = gpu_->MoeGate(logits, SoftmaxTopK(k, /*renormalize=*/true), &ids, &weights);
    if (!s.ok()) return s;
    return gpu_->MoePermute(x, ids, &*perm);
  };
  auto graph = gpu_->Capture(body);
  ASSERT_TRUE(graph.ok()) << graph.status();
  for (uint32_t round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    std::vector<float> input = Random(t * hsz, 610 + round);
    ASSERT_TRUE(gpu_->CopyFromHost(input.data(), input.size() * 4, &x).ok());
    ASSERT_TRUE((*graph)->Replay().ok());
    const std::vector<float> g_logits = Down(logits), g_weights = Down(weights),
                             g_rows = Down(perm->rows);
    const std::vector<int32_t> g_ids = DownInt(ids), g_p2a = DownInt(perm->permuted_to_assignment);
    ASSERT_TRUE(body().ok());
    EXPECT_EQ(g_logits, Down(logits));
    EXPECT_EQ(g_ids, DownInt(ids));
    EXPECT_EQ(g_weights, Down(weights));
    EXPECT_EQ(g_p2a, DownInt(perm->permuted_to_assignment));
    EXPECT_EQ(g_rows, Down(perm->rows));
  }
}

}  // namespace
}  // namespace epserve::kernels::testing
