// Every op of the CUDA backend against the CPU reference backend on random
// inputs at real model shapes (Qwen3-30B-A3B: hidden 2048, 32/4 heads of
// 128, 128 experts top-8, expert width 768; Mixtral: 8 experts top-2).
//
// Tolerances (max |gpu - cpu| / max |cpu| over the output):
//   float32 weights / cache ........ 1e-5  (same fp32 math, other order)
//   bfloat16 weights (GEMMs) ....... 1e-2  (activations rounded to bf16 for tensor cores)
//   float16 weights (GEMMs) ........ 2e-3
//   bf16 / fp16 KV cache attention . 2e-2 / 5e-3 (q and P rounded for tensor cores)
//   routing (ids, permutations) .... exact
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "common/dtype_convert.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels::testing {
namespace {

double GemmTolerance(DataType w) {
  switch (w) {
    case DataType::kBFloat16: return 1e-2;
    case DataType::kFloat16: return 2e-3;
    default: return 1e-5;
  }
}

double CacheTolerance(DataType c) {
  switch (c) {
    case DataType::kBFloat16: return 2e-2;
    case DataType::kFloat16: return 5e-3;
    default: return 1e-5;
  }
}

using CudaOpsTest = GpuCpuTest;

// ---- dense ----

TEST_F(CudaOpsTest, MatMulMatchesCpuForEveryWeightType) {
  for (DataType wt : {DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16}) {
    // 1..16 rows take the skinny kernel, more rows cuBLAS.
    for (int64_t t : {1, 7, 16, 17, 130}) {
      SCOPED_TRACE(::testing::Message() << DataTypeName(wt) << " T=" << t);
      const int64_t k = 2048, n = 768;
      Tensor x = MakeF32({t, k}, Random(t * k, 1));
      Tensor w = MakeTyped(wt, {n, k}, Random(n * k, 2, -0.05f, 0.05f));
      Tensor bias = MakeTyped(wt, {n}, Random(n, 3));
      Tensor y_cpu = Zeros({t, n});
      ASSERT_TRUE(cpu_->MatMul(x, Linear(w), bias, &y_cpu).ok());
      Tensor y = GpuEmpty(DataType::kFloat32, {t, n});
      ASSERT_TRUE(gpu_->MatMul(Up(x), Linear(Up(w)), Up(bias), &y).ok());
      EXPECT_LE(MaxRelError(Down(y), ToVector(y_cpu)), GemmTolerance(wt));
    }
  }
}

TEST_F(CudaOpsTest, EmbeddingGathersRowsAndFlagsBadIds) {
  Tensor table = MakeTyped(DataType::kBFloat16, {1000, 256}, Random(256000, 4));
  Tensor ids = MakeI32({5}, {0, 999, 3, 3, 500});
  Tensor want = Zeros({5, 256});
  ASSERT_TRUE(cpu_->Embedding(ids, table, &want).ok());
  Tensor out = GpuEmpty(DataType::kFloat32, {5, 256});
  ASSERT_TRUE(gpu_->Embedding(Up(ids), Up(table), &out).ok());
  EXPECT_EQ(Down(out), ToVector(want));

  Tensor bad = MakeI32({2}, {1, 1000});
  Tensor out2 = GpuEmpty(DataType::kFloat32, {2, 256});
  ASSERT_TRUE(gpu_->Embedding(Up(bad), Up(table), &out2).ok());  // enqueued
  std::vector<float> host(512);
  absl::Status s = gpu_->CopyToHost(out2, host.data(), out2.nbytes());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("Embedding"), std::string::npos) << s;
  // Reported once; the backend stays usable.
  EXPECT_TRUE(gpu_->Synchronize().ok());
}

TEST_F(CudaOpsTest, NormsMatchCpu) {
  const int64_t t = 9, h = 2048;
  Tensor x = MakeF32({t, h}, Random(t * h, 5, -3.0f, 3.0f));
  Tensor w = MakeF32({h}, Random(h, 6, 0.5f, 1.5f));
  Tensor y_cpu = Zeros({t, h});
  ASSERT_TRUE(cpu_->RmsNorm(x, w, 1e-6f, &y_cpu).ok());
  Tensor y = GpuEmpty(DataType::kFloat32, {t, h});
  ASSERT_TRUE(gpu_->RmsNorm(Up(x), Up(w), 1e-6f, &y).ok());
  EXPECT_LE(MaxRelError(Down(y), ToVector(y_cpu)), 1e-5);

  Tensor res_cpu = MakeF32({t, h}, Random(t * h, 7));
  Tensor res_gpu = Up(res_cpu);  // a device copy, taken before res_cpu is updated
  Tensor y2_cpu = Zeros({t, h});
  ASSERT_TRUE(cpu_->AddRmsNorm(x, &res_cpu, w, 1e-6f, &y2_cpu).ok());
  Tensor y2 = GpuEmpty(DataType::kFloat32, {t, h});
  ASSERT_TRUE(gpu_->AddRmsNorm(Up(x), &res_gpu, Up(w), 1e-6f, &y2).ok());
  EXPECT_LE(MaxRelError(Down(y2), ToVector(y2_cpu)), 1e-5);
  EXPECT_LE(MaxRelError(Down(res_gpu), ToVector(res_cpu)), 1e-6);

  Tensor q_cpu = MakeF32({t, 32 * 128}, Random(t * 32 * 128, 8, -4.0f, 4.0f));
  Tensor qn = MakeF32({128}, Random(128, 9, 0.5f, 1.5f));
  Tensor q = Up(q_cpu);
  ASSERT_TRUE(cpu_->HeadRmsNorm(&q_cpu, qn, 1e-6f).ok());
  ASSERT_TRUE(gpu_->HeadRmsNorm(&q, Up(qn), 1e-6f).ok());
  EXPECT_LE(MaxRelError(Down(q), ToVector(q_cpu)), 1e-5);
}

TEST_F(CudaOpsTest, RopeVariantsMatchCpu) {
  const int64_t t = 6, d = 128;
  std::vector<RopeConfig> configs(4);
  configs[0].theta = 1e6;
  configs[1].layout = RopeLayout::kInterleaved;
  configs[2].type = RopeType::kYarn;
  configs[2].factor = 4.0;
  configs[2].original_max_position_embeddings = 4096;
  configs[3].type = RopeType::kLlama3;
  configs[3].theta = 500000;
  configs[3].factor = 8.0;
  configs[3].original_max_position_embeddings = 8192;
  Tensor pos = MakeI32({t}, {0, 1, 17, 511, 4000, 32767});
  for (size_t c = 0; c < configs.size(); ++c) {
    SCOPED_TRACE(c);
    Tensor q_cpu = MakeF32({t, 32 * d}, Random(t * 32 * d, 10 + c));
    Tensor k_cpu = MakeF32({t, 4 * d}, Random(t * 4 * d, 20 + c));
    Tensor q = Up(q_cpu), k = Up(k_cpu);
    ASSERT_TRUE(cpu_->Rope(configs[c], d, pos, &q_cpu, &k_cpu).ok());
    ASSERT_TRUE(gpu_->Rope(configs[c], d, Up(pos), &q, &k).ok());
    EXPECT_LE(MaxRelError(Down(q), ToVector(q_cpu)), 1e-5);
    EXPECT_LE(MaxRelError(Down(k), ToVector(k_cpu)), 1e-5);
  }
}

TEST_F(CudaOpsTest, ElementwiseOpsMatchCpu) {
  const int64_t t = 5, i = 768;
  Tensor gate = MakeF32({t, i}, Random(t * i, 30, -6.0f, 6.0f));
  Tensor up = MakeF32({t, i}, Random(t * i, 31));
  Tensor want = Zeros({t, i});
  ASSERT_TRUE(cpu_->SiluAndMul(gate, up, &want).ok());
  Tensor out = GpuEmpty(DataType::kFloat32, {t, i});
  ASSERT_TRUE(gpu_->SiluAndMul(Up(gate), Up(up), &out).ok());
  EXPECT_LE(MaxRelError(Down(out), ToVector(want)), 1e-6);

  Tensor packed = MakeF32({t, 2 * i}, Random(t * 2 * i, 32, -6.0f, 6.0f));
  Tensor want_p = Zeros({t, i});
  ASSERT_TRUE(cpu_->SiluAndMulPacked(packed, &want_p).ok());
  Tensor out_p = GpuEmpty(DataType::kFloat32, {t, i});
  ASSERT_TRUE(gpu_->SiluAndMulPacked(Up(packed), &out_p).ok());
  EXPECT_LE(MaxRelError(Down(out_p), ToVector(want_p)), 1e-6);

  Tensor a = MakeF32({t, i}, Random(t * i, 33)), b = MakeF32({t, i}, Random(t * i, 34));
  Tensor sum_cpu = Zeros({t, i});
  ASSERT_TRUE(cpu_->Add(a, b, &sum_cpu).ok());
  Tensor sum = GpuEmpty(DataType::kFloat32, {t, i});
  ASSERT_TRUE(gpu_->Add(Up(a), Up(b), &sum).ok());
  EXPECT_EQ(Down(sum), ToVector(sum_cpu));

  Tensor logit = MakeF32({t, 1}, {-30.0f, -1.0f, 0.0f, 2.0f, 40.0f});
  Tensor acc_cpu = MakeF32({t, i}, Random(t * i, 35));
  Tensor acc = Up(acc_cpu);
  ASSERT_TRUE(cpu_->SigmoidGateMulAdd(logit, b, &acc_cpu).ok());
  ASSERT_TRUE(gpu_->SigmoidGateMulAdd(Up(logit), Up(b), &acc).ok());
  EXPECT_LE(MaxRelError(Down(acc), ToVector(acc_cpu)), 1e-6);
}

// ---- attention ----

struct AttnCase {
  std::vector<std::pair<int, int>> seqs;  // (context_len, q_len)
  int64_t head_dim;
  int64_t q_heads, kv_heads;
};

class CudaAttentionTest : public CudaOpsTest,
                          public ::testing::WithParamInterface<DataType> {};

void RunAttentionCase(Backend& cpu, Backend& gpu, CudaOpsTest& self, const AttnCase& c,
                      DataType cache_dtype, uint32_t seed);

TEST_P(CudaAttentionTest, PrefillChunkedAndDecodeMatchCpu) {
  const DataType dtype = GetParam();
  const std::vector<AttnCase> cases = {
      // Mixed: a fresh prompt, a chunk after a cached prefix, decodes.
      {{{1, 1}, {37, 37}, {300, 45}, {129, 1}, {2000, 1}}, 128, 32, 4},
      // Decode only (the decode kernel), long contexts for split-K.
      {{{1, 1}, {16, 1}, {17, 1}, {511, 1}, {4097, 1}, {900, 1}}, 128, 32, 4},
      // One 700-token prompt.
      {{{700, 700}}, 128, 16, 4},
      // Other head sizes.
      {{{64, 64}, {40, 1}, {90, 7}}, 64, 8, 8},
      {{{33, 33}, {20, 1}}, 16, 4, 2},
      {{{50, 10}, {70, 1}}, 256, 8, 2},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "case " << i << " " << DataTypeName(dtype));
    RunAttentionCase(*cpu_, *gpu_, *this, cases[i], dtype, 100 + static_cast<uint32_t>(i));
  }
}

INSTANTIATE_TEST_SUITE_P(CacheTypes, CudaAttentionTest,
                         ::testing::Values(DataType::kFloat32, DataType::kBFloat16,
                                           DataType::kFloat16),
                         [](const auto& param_info) { return std::string(DataTypeName(param_info.param)); });

void RunAttentionCase(Backend& cpu, Backend& gpu, CudaOpsTest& /*self*/, const AttnCase& c,
                      DataType cache_dtype, uint32_t seed) {
  const int64_t block = 16, d = c.head_dim, hq = c.q_heads, hkv = c.kv_heads;
  int64_t total_blocks = 0, max_blocks = 0, num_tokens = 0, total_ctx = 0;
  for (auto [ctx, q] : c.seqs) {
    total_blocks += (ctx + block - 1) / block;
    max_blocks = std::max<int64_t>(max_blocks, (ctx + block - 1) / block);
    num_tokens += q;
    total_ctx += ctx;
  }
  const int64_t num_blocks = total_blocks + 3;
  // Shuffled distinct blocks per sequence.
  std::vector<int32_t> pool(static_cast<size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(seed));
  const int64_t s = static_cast<int64_t>(c.seqs.size());
  std::vector<int32_t> tables(static_cast<size_t>(s * max_blocks), 0), qstart = {0}, ctxs;
  std::vector<int32_t> all_slots;  // every context token's slot (K/V fill)
  size_t next = 0;
  for (int64_t i = 0; i < s; ++i) {
    auto [ctx, q] = c.seqs[i];
    for (int64_t b = 0; b < (ctx + block - 1) / block; ++b) tables[i * max_blocks + b] = pool[next++];
    for (int64_t j = 0; j < ctx; ++j) {
      all_slots.push_back(tables[i * max_blocks + j / block] * static_cast<int32_t>(block) +
                          static_cast<int32_t>(j % block));
    }
    qstart.push_back(qstart.back() + q);
    ctxs.push_back(ctx);
  }
  const int64_t width = hkv * d;
  Tensor k_all = MakeF32({total_ctx, width}, Random(total_ctx * width, seed + 1));
  Tensor v_all = MakeF32({total_ctx, width}, Random(total_ctx * width, seed + 2));
  Tensor slots = MakeI32({total_ctx}, all_slots);
  auto kc_cpu = EmptyHostTensor(cache_dtype, {num_blocks, block, hkv, d});
  auto vc_cpu = EmptyHostTensor(cache_dtype, {num_blocks, block, hkv, d});
  ASSERT_TRUE(kc_cpu.ok() && vc_cpu.ok());
  std::memset(kc_cpu->mutable_data(), 0, kc_cpu->nbytes());
  std::memset(vc_cpu->mutable_data(), 0, vc_cpu->nbytes());
  auto kc = gpu.ToDevice(*kc_cpu);  // zeroed copies
  auto vc = gpu.ToDevice(*vc_cpu);
  ASSERT_TRUE(kc.ok() && vc.ok());
  ASSERT_TRUE(cpu.WriteKvCache(k_all, v_all, slots, &*kc_cpu, &*vc_cpu).ok());
  auto kd = gpu.ToDevice(k_all), vd = gpu.ToDevice(v_all), sd = gpu.ToDevice(slots);
  ASSERT_TRUE(gpu.WriteKvCache(*kd, *vd, *sd, &*kc, &*vc).ok());
  // The caches hold the same (rounded) values.
  std::vector<uint8_t> kc_back(kc_cpu->nbytes());
  ASSERT_TRUE(gpu.CopyToHost(*kc, kc_back.data(), kc_back.size()).ok());
  EXPECT_EQ(std::memcmp(kc_back.data(), kc_cpu->data(), kc_back.size()), 0);

  Tensor q = MakeF32({num_tokens, hq * d}, Random(num_tokens * hq * d, seed + 3));
  AttentionMetadata m_cpu{MakeI32({s + 1}, qstart), MakeI32({s}, ctxs),
                          MakeI32({s, max_blocks}, tables)};
  auto up = [&](const Tensor& t) { return *gpu.ToDevice(t); };
  AttentionMetadata m_gpu{up(m_cpu.query_start), up(m_cpu.context_lens), up(m_cpu.block_tables)};
  PagedAttentionArgs a_cpu{&q, &*kc_cpu, &*vc_cpu, &m_cpu, hq, 0.0f};
  Tensor out_cpu = Zeros({num_tokens, hq * d});
  ASSERT_TRUE(cpu.PagedAttention(a_cpu, &out_cpu).ok());
  Tensor qd = up(q);
  PagedAttentionArgs a_gpu{&qd, &*kc, &*vc, &m_gpu, hq, 0.0f};
  auto out = gpu.Empty(DataType::kFloat32, {num_tokens, hq * d});
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(gpu.PagedAttention(a_gpu, &*out).ok());
  std::vector<float> got(static_cast<size_t>(out->numel()));
  ASSERT_TRUE(gpu.CopyToHost(*out, got.data(), out->nbytes()).ok());
  EXPECT_LE(MaxRelError(got, ToVector(out_cpu)), CacheTolerance(cache_dtype));
}

TEST_F(CudaOpsTest, AttentionFlagsBlocksOutsideTheCache) {
  const int64_t d = 64;
  Tensor kc = GpuEmpty(DataType::kBFloat16, {4, 16, 1, d});
  Tensor vc = GpuEmpty(DataType::kBFloat16, {4, 16, 1, d});
  Tensor q = Up(MakeF32({1, d}, Random(d, 50)));
  AttentionMetadata m{Up(MakeI32({2}, {0, 1})), Up(MakeI32({1}, {20})),
                      Up(MakeI32({1, 2}, {0, 9}))};  // block 9 of 4
  PagedAttentionArgs args{&q, &kc, &vc, &m, 1, 0.0f};
  Tensor out = GpuEmpty(DataType::kFloat32, {1, d});
  ASSERT_TRUE(gpu_->PagedAttention(args, &out).ok());
  absl::Status s = gpu_->Synchronize();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("PagedAttention"), std::string::npos) << s;
}

// ---- MoE ----

TEST_F(CudaOpsTest, MoeGateMatchesCpuExactly) {
  for (auto [e, k] : {std::pair<int64_t, int64_t>{128, 8}, {8, 2}, {60, 4}}) {
    for (bool renorm : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "E=" << e << " k=" << k << " renorm=" << renorm);
      const int64_t t = 37;
      std::vector<float> logits = Random(t * e, 60 + e, -4.0f, 4.0f);
      for (int64_t j = 0; j < e; ++j) logits[j] = 1.0f;  // row 0: all tied
      logits[e + 3] = NAN;
      logits[2 * e + 5] = INFINITY;
      Tensor lg = MakeF32({t, e}, logits);
      Tensor ids_cpu = MakeI32({t, k}, std::vector<int32_t>(t * k));
      Tensor w_cpu = Zeros({t, k});
      ASSERT_TRUE(cpu_->MoeGate(lg, SoftmaxTopK(k, renorm), &ids_cpu, &w_cpu).ok());
      Tensor ids = GpuEmpty(DataType::kInt32, {t, k});
      Tensor w = GpuEmpty(DataType::kFloat32, {t, k});
      ASSERT_TRUE(gpu_->MoeGate(Up(lg), SoftmaxTopK(k, renorm), &ids, &w).ok());
      EXPECT_EQ(DownInt(ids), ToIntVector(ids_cpu));
      EXPECT_LE(MaxRelError(Down(w), ToVector(w_cpu)), 1e-6);
    }
  }
}

TEST_F(CudaOpsTest, MoePermuteAndUnpermuteMatchCpuExactly) {
  for (int64_t t : {0, 1, 33, 600}) {
    SCOPED_TRACE(t);
    const int64_t k = 8, e = 128, h = 256;
    std::vector<int32_t> ids(static_cast<size_t>(t * k));
    std::mt19937 gen(70 + t);
    for (int64_t i = 0; i < t; ++i) {  // k distinct experts per token, skewed
      std::vector<int32_t> all(e);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.begin() + 20, gen);
      for (int64_t j = 0; j < k; ++j) ids[i * k + j] = all[j];
    }
    Tensor hidden = MakeF32({t, h}, Random(t * h, 71));
    Tensor topk = MakeI32({t, k}, ids);
    auto p_cpu = EmptyMoePermutation(*cpu_, t, k, h, e);
    auto p_gpu = EmptyMoePermutation(*gpu_, t, k, h, e);
    ASSERT_TRUE(p_cpu.ok() && p_gpu.ok());
    ASSERT_TRUE(cpu_->MoePermute(hidden, topk, &*p_cpu).ok());
    ASSERT_TRUE(gpu_->MoePermute(Up(hidden), Up(topk), &*p_gpu).ok());
    EXPECT_EQ(DownInt(p_gpu->expert_offsets), ToIntVector(p_cpu->expert_offsets));
    EXPECT_EQ(DownInt(p_gpu->permuted_to_assignment), ToIntVector(p_cpu->permuted_to_assignment));
    EXPECT_EQ(DownInt(p_gpu->assignment_to_permuted), ToIntVector(p_cpu->assignment_to_permuted));
    EXPECT_EQ(Down(p_gpu->rows), ToVector(p_cpu->rows));

    Tensor expert_out = MakeF32({t * k, h}, Random(t * k * h, 72));
    Tensor weights = MakeF32({t, k}, Random(t * k, 73, 0.0f, 1.0f));
    Tensor out_cpu = Zeros({t, h});
    ASSERT_TRUE(cpu_->MoeUnpermute(expert_out, weights, *p_cpu, &out_cpu).ok());
    Tensor out = GpuEmpty(DataType::kFloat32, {t, h});
    ASSERT_TRUE(gpu_->MoeUnpermute(Up(expert_out), Up(weights), *p_gpu, &out).ok());
    EXPECT_LE(MaxRelError(Down(out), ToVector(out_cpu)), 1e-6);
  }
}

// The all-to-all exchange's row moves: blocks in any order, some rows of dst
// untouched, converting between every pair of element types.
TEST_F(CudaOpsTest, CopyRowsMatchesCpuExactlyAndFlagsBlocksOutside) {
  const int64_t n = 40, m = 48, w = 2048;
  // (src row, dst row, rows): out of order, one empty block, dst rows
  // [20, 24) and [45, 48) untouched.
  const std::vector<int32_t> blocks = {30, 0, 10, 0, 10, 5, 5, 15, 5, 39, 24, 1, 12, 25, 20, 7, 45, 0};
  const std::vector<DataType> types = {DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16};
  for (DataType src_t : types) {
    for (DataType dst_t : types) {
      SCOPED_TRACE(::testing::Message() << DataTypeName(src_t) << " -> " << DataTypeName(dst_t));
      Tensor src = MakeTyped(src_t, {n, w}, Random(n * w, 90));
      Tensor dst_cpu = MakeTyped(dst_t, {m, w}, Random(m * w, 91));
      Tensor dst = Up(dst_cpu);
      Tensor b = MakeI32({6, 3}, blocks);
      ASSERT_TRUE(cpu_->CopyRows(src, b, &dst_cpu).ok());
      ASSERT_TRUE(gpu_->CopyRows(Up(src), Up(b), &dst).ok());
      std::vector<uint8_t> want(dst_cpu.nbytes());
      std::memcpy(want.data(), dst_cpu.data(), want.size());
      EXPECT_EQ(DownBytes(dst), want);
    }
  }

  Tensor src = MakeF32({n, w}, Random(n * w, 92));
  Tensor dst = GpuEmpty(DataType::kFloat32, {m, w});
  Tensor outside = MakeI32({1, 3}, {35, 0, 6});  // src rows [35, 41) of 40
  ASSERT_TRUE(gpu_->CopyRows(Up(src), Up(outside), &dst).ok());  // enqueued
  std::vector<float> host(m * w);
  absl::Status s = gpu_->CopyToHost(dst, host.data(), dst.nbytes());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("CopyRows"), std::string::npos) << s;
  EXPECT_TRUE(gpu_->Synchronize().ok());
}

TEST_F(CudaOpsTest, GroupedExpertMatMulMatchesCpu) {
  struct Shape {
    int64_t e, k_top, hidden, width, tokens;
  };
  const std::vector<Shape> shapes = {
      {128, 8, 2048, 768, 1},  {128, 8, 2048, 768, 16}, {128, 8, 2048, 768, 256},
      {128, 8, 768, 2048, 64},  // down projection
      {8, 2, 1024, 512, 64},    // Mixtral-like, many rows per expert
      {8, 2, 64, 96, 9},        // tiny test-model sizes
  };
  for (DataType wt : {DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16}) {
    for (const Shape& sh : shapes) {
      if (wt != DataType::kFloat32 && sh.hidden % 16 != 0) continue;
      SCOPED_TRACE(::testing::Message() << DataTypeName(wt) << " E=" << sh.e << " K=" << sh.hidden
                                        << " N=" << sh.width << " T=" << sh.tokens);
      const int64_t r = sh.tokens * sh.k_top;
      // Rows per expert: a random routing's counts (some experts empty).
      std::vector<int32_t> offsets = {0};
      std::mt19937 gen(80 + sh.tokens);
      std::vector<int32_t> counts(sh.e, 0);
      for (int64_t i = 0; i < r; ++i) counts[gen() % (sh.e / 2 + 1)]++;
      for (int64_t x = 0; x < sh.e; ++x) offsets.push_back(offsets.back() + counts[x]);
      Tensor rows = MakeF32({r, sh.hidden}, Random(r * sh.hidden, 81));
      std::vector<Tensor> w_cpu(sh.e), w_gpu(sh.e);
      for (int64_t x = 0; x < sh.e; ++x) {
        if (counts[x] == 0 && x % 3 == 0) continue;  // not held and not routed to
        w_cpu[x] = MakeTyped(wt, {sh.width, sh.hidden},
                             Random(sh.width * sh.hidden, 1000 + x, -0.05f, 0.05f));
        w_gpu[x] = Up(w_cpu[x]);
      }
      Tensor off = MakeI32({sh.e + 1}, offsets);
      Tensor want = Zeros({r, sh.width});
      ASSERT_TRUE(cpu_->GroupedExpertMatMul(rows, off, Linears(w_cpu), &want).ok());
      Tensor out = GpuEmpty(DataType::kFloat32, {r, sh.width});
      absl::Status st = gpu_->GroupedExpertMatMul(Up(rows), Up(off), Linears(w_gpu), &out);
      ASSERT_TRUE(st.ok()) << st;
      EXPECT_LE(MaxRelError(Down(out), ToVector(want)), GemmTolerance(wt));
    }
  }
}

TEST_F(CudaOpsTest, GroupedExpertGateUpMatchesCpu) {
  struct Shape {
    int64_t e, k_top, hidden, width, tokens;
  };
  const std::vector<Shape> shapes = {
      {128, 8, 2048, 768, 1}, {128, 8, 2048, 768, 64}, {128, 8, 2048, 768, 512},
      {8, 2, 1024, 512, 300}, {8, 2, 64, 96, 9},
  };
  for (DataType wt : {DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16}) {
    for (const Shape& sh : shapes) {
      SCOPED_TRACE(::testing::Message() << DataTypeName(wt) << " E=" << sh.e << " K=" << sh.hidden
                                        << " N=" << sh.width << " T=" << sh.tokens);
      const int64_t r = sh.tokens * sh.k_top;
      std::vector<int32_t> offsets = {0};
      std::mt19937 gen(180 + sh.tokens);
      std::vector<int32_t> counts(sh.e, 0);
      for (int64_t i = 0; i < r; ++i) counts[gen() % sh.e]++;
      for (int64_t x = 0; x < sh.e; ++x) offsets.push_back(offsets.back() + counts[x]);
      Tensor rows = MakeF32({r, sh.hidden}, Random(r * sh.hidden, 181));
      std::vector<Tensor> g_cpu(sh.e), u_cpu(sh.e), g_gpu(sh.e), u_gpu(sh.e);
      for (int64_t x = 0; x < sh.e; ++x) {
        if (counts[x] == 0 && x % 2 == 0) continue;  // not held, not routed to
        g_cpu[x] = MakeTyped(wt, {sh.width, sh.hidden},
                             Random(sh.width * sh.hidden, 2000 + x, -0.05f, 0.05f));
        u_cpu[x] = MakeTyped(wt, {sh.width, sh.hidden},
                             Random(sh.width * sh.hidden, 3000 + x, -0.05f, 0.05f));
        g_gpu[x] = Up(g_cpu[x]);
        u_gpu[x] = Up(u_cpu[x]);
      }
      Tensor off = MakeI32({sh.e + 1}, offsets);
      Tensor want = Zeros({r, sh.width});
      ASSERT_TRUE(cpu_->GroupedExpertGateUp(rows, off, Linears(g_cpu), Linears(u_cpu), &want).ok());
      Tensor out = GpuEmpty(DataType::kFloat32, {r, sh.width});
      absl::Status st =
          gpu_->GroupedExpertGateUp(Up(rows), Up(off), Linears(g_gpu), Linears(u_gpu), &out);
      ASSERT_TRUE(st.ok()) << st;
      EXPECT_LE(MaxRelError(Down(out), ToVector(want)), 2 * GemmTolerance(wt));
    }
  }
}

TEST_F(CudaOpsTest, GroupedExpertMatMulFlagsRowsForMissingExperts) {
  std::vector<Tensor> w(4);
  w[0] = Up(MakeTyped(DataType::kBFloat16, {32, 64}, Random(32 * 64, 90)));
  Tensor rows = Up(MakeF32({3, 64}, Random(3 * 64, 91)));
  Tensor off = Up(MakeI32({5}, {0, 1, 3, 3, 3}));  // 2 rows for expert 1 (not held)
  Tensor out = GpuEmpty(DataType::kFloat32, {3, 32});
  ASSERT_TRUE(gpu_->GroupedExpertMatMul(rows, off, Linears(w), &out).ok());
  absl::Status s = gpu_->Synchronize();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("GroupedExpertMatMul"), std::string::npos) << s;
}

// ---- sampling support, dummy weights, graphs, devices ----

TEST_F(CudaOpsTest, FillDummyIsBitIdenticalToTheHost) {
  for (DataType d : {DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16}) {
    auto host = EmptyHostTensor(d, {1000, 77});
    ASSERT_TRUE(host.ok());
    ASSERT_TRUE(cpu_->FillDummy(&*host, 0x1234567ull, 0.0346f, false).ok());
    Tensor dev = GpuEmpty(d, {1000, 77});
    ASSERT_TRUE(gpu_->FillDummy(&dev, 0x1234567ull, 0.0346f, false).ok());
    std::vector<uint8_t> back(dev.nbytes());
    ASSERT_TRUE(gpu_->CopyToHost(dev, back.data(), back.size()).ok());
    EXPECT_EQ(std::memcmp(back.data(), host->data(), back.size()), 0) << DataTypeName(d);
  }
}

TEST_F(CudaOpsTest, GraphReplayEqualsEagerWithNewInputs) {
  const int64_t t = 8, k = 512, n = 256;
  Tensor w = Up(MakeTyped(DataType::kBFloat16, {n, k}, Random(n * k, 110, -0.1f, 0.1f)));
  Tensor nw = Up(MakeF32({n}, Random(n, 111, 0.5f, 1.5f)));
  Tensor x = GpuEmpty(DataType::kFloat32, {t, k});
  Tensor y = GpuEmpty(DataType::kFloat32, {t, n});
  auto body = [&]() -> absl::Status {
    auto h = gpu_->Empty(DataType::kFloat32, {t, n});  // a graph-owned temporary
    if (!h.ok()) return h.status();
    absl::Status s = gpu_->MatMul(x, Linear(w), {}, &*h);
    if (!s.ok()) return s;
    return gpu_->RmsNorm(*h, nw, 1e-6f, &y);
  };
  auto graph = gpu_->Capture(body);
  ASSERT_TRUE(graph.ok()) << graph.status();
  for (uint32_t round = 0; round < 3; ++round) {
    std::vector<float> input = Random(t * k, 120 + round);
    ASSERT_TRUE(gpu_->CopyFromHost(input.data(), input.size() * 4, &x).ok());
    ASSERT_TRUE((*graph)->Replay().ok());
    std::vector<float> replayed = Down(y);
    ASSERT_TRUE(body().ok());
    EXPECT_EQ(replayed, Down(y)) << "round " << round;
  }
}

TEST(CudaDevice, WrongIndexNamesTheDeviceCount) {
  EPSERVE_REQUIRE_GPU();
  auto b = CreateBackend(DeviceSpec{DeviceType::kCuda, 99});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("cuda:99"), std::string::npos) << b.status();
  EXPECT_NE(b.status().message().find("CUDA device(s)"), std::string::npos) << b.status();
}

TEST(CudaDevice, AllocationBeyondTheDeviceNamesTheNumbers) {
  EPSERVE_REQUIRE_GPU();
  auto b = CreateBackend(DeviceSpec{DeviceType::kCuda, 0});
  ASSERT_TRUE(b.ok());
  auto t = (*b)->Empty(DataType::kFloat32, {int64_t{1} << 40});  // 4 TiB
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(t.status().message().find("bytes free"), std::string::npos) << t.status();
  // Still usable afterwards.
  EXPECT_TRUE((*b)->Empty(DataType::kFloat32, {1024}).ok());
}

}  // namespace
}  // namespace epserve::kernels::testing
