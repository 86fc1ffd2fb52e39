// Backend::AttentionPrologue on the CUDA backend (the fused kernel, or the
// separate kernels it falls back to) against the CPU backend, which runs
// HeadRmsNorm, Rope and WriteKvCache one after the other, at real shapes:
// Qwen3-30B-A3B (32/4 heads of 128, per-head q/k norm), Mixtral (32/8 of
// 128, no q/k norm), other rope layouts / variants / head sizes, and a head
// size only the separate kernels take; 1, 7 and 300 tokens; float32,
// bfloat16 and float16 caches.
//
// Tolerances (max |gpu - cpu| / max |cpu| over the tensor):
//   q, k (float32, normalised and rotated) ... 1e-5 (fp32 warp-tree norm sum vs the
//                                              CPU's double sum; identical rope table)
//   K cache, float32 ......................... 1e-5
//   K cache, bfloat16 / float16 .............. 1e-2 / 2e-3 (k within 1e-6 may round
//                                              to a neighbouring value: <= 2^-7 / 2^-10)
//   V cache .................................. exact (only narrowed, round to nearest even)
// Against the separate CUDA kernels (HeadRmsNorm, Rope, WriteKvCache) the
// op is bit-identical: the fused kernel runs the same device code.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/dtype_convert.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/test_util.h"

namespace epserve::kernels::testing {
namespace {

double KCacheTolerance(DataType c) {
  switch (c) {
    case DataType::kBFloat16: return 1e-2;
    case DataType::kFloat16: return 2e-3;
    default: return 1e-5;
  }
}

struct PrologueCase {
  std::string name;
  int64_t q_heads, kv_heads, head_dim;
  bool qk_norm;
  RopeConfig rope;
};

std::vector<PrologueCase> Cases() {
  RopeConfig qwen3;  // Qwen3-30B-A3B and Mixtral: default rope, neox, theta 1e6
  qwen3.theta = 1e6;
  RopeConfig llama3;
  llama3.type = RopeType::kLlama3;
  llama3.layout = RopeLayout::kInterleaved;
  llama3.theta = 500000;
  llama3.factor = 8.0;
  llama3.original_max_position_embeddings = 8192;
  RopeConfig yarn;
  yarn.type = RopeType::kYarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 4096;
  return {
      {"Qwen3-30B-A3B", 32, 4, 128, true, qwen3},
      {"Mixtral-8x7B", 32, 8, 128, false, qwen3},
      {"interleaved llama3, D=64", 8, 2, 64, true, llama3},
      {"yarn, D=256", 16, 4, 256, true, yarn},
      // head_dim 12 is not a multiple of 8: the separate kernels run.
      {"D=12 (separate kernels)", 4, 2, 12, true, qwen3},
  };
}

using CudaAttentionPrologueTest = GpuCpuTest;

// A cache's elements as float32 (bytes of `dtype`).
std::vector<float> CacheValues(const void* bytes, DataType dtype, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  EXPECT_TRUE(ConvertElements(bytes, dtype, out.data(), DataType::kFloat32, n).ok());
  return out;
}

// The inputs of one AttentionPrologue call, on the host.
struct Inputs {
  Tensor q, k, v, q_norm, k_norm, positions, slots, k_cache, v_cache;
};

// A device copy of every tensor of `host`.
Inputs Upload(Backend& gpu, const Inputs& host) {
  auto up = [&](const Tensor& t) {
    auto d = gpu.ToDevice(t);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : Tensor{};
  };
  return Inputs{up(host.q),      up(host.k),     up(host.v),
                up(host.q_norm), up(host.k_norm), up(host.positions),
                up(host.slots),  up(host.k_cache), up(host.v_cache)};
}

Inputs MakeInputs(const PrologueCase& c, int64_t t, DataType cache_type, uint32_t seed) {
  const int64_t d = c.head_dim, block = 16;
  const int64_t num_blocks = (t + block - 1) / block + 3;
  // Distinct shuffled slots; token 1 is padding (-1).
  std::vector<int32_t> slots(static_cast<size_t>(num_blocks * block));
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), std::mt19937(seed));
  slots.resize(static_cast<size_t>(t));
  if (t > 1) slots[1] = -1;
  std::vector<int32_t> pos(static_cast<size_t>(t));
  for (int64_t i = 0; i < t; ++i) pos[i] = static_cast<int32_t>((i * 7919 + seed) % 40000);
  if (t > 2) pos[2] = 0;
  Inputs in;
  in.q = MakeF32({t, c.q_heads * d}, Random(t * c.q_heads * d, seed + 1, -4.0f, 4.0f));
  in.k = MakeF32({t, c.kv_heads * d}, Random(t * c.kv_heads * d, seed + 2, -4.0f, 4.0f));
  in.v = MakeF32({t, c.kv_heads * d}, Random(t * c.kv_heads * d, seed + 3));
  in.q_norm = MakeF32({d}, Random(d, seed + 4, 0.5f, 1.5f));
  in.k_norm = MakeF32({d}, Random(d, seed + 5, 0.5f, 1.5f));
  in.positions = MakeI32({t}, pos);
  in.slots = MakeI32({t}, slots);
  // Caches start with random contents (the same on both backends), so a
  // write to a slot that should stay untouched shows.
  const std::vector<int64_t> cache_shape = {num_blocks, block, c.kv_heads, d};
  const int64_t cache_n = num_blocks * block * c.kv_heads * d;
  in.k_cache = MakeTyped(cache_type, cache_shape, Random(cache_n, seed + 6));
  in.v_cache = MakeTyped(cache_type, cache_shape, Random(cache_n, seed + 7));
  return in;
}

AttentionPrologueArgs ArgsFor(const PrologueCase& c, Inputs& in) {
  AttentionPrologueArgs a;
  a.q = &in.q;
  a.k = &in.k;
  a.v = &in.v;
  a.q_norm = c.qk_norm ? &in.q_norm : nullptr;
  a.k_norm = c.qk_norm ? &in.k_norm : nullptr;
  a.norm_eps = 1e-6f;
  a.rope = c.rope;
  a.head_dim = c.head_dim;
  a.positions = &in.positions;
  a.slot_mapping = &in.slots;
  a.k_cache = &in.k_cache;
  a.v_cache = &in.v_cache;
  return a;
}

TEST_F(CudaAttentionPrologueTest, MatchesCpuAndTheSeparateKernels) {
  uint32_t seed = 1000;
  for (const PrologueCase& c : Cases()) {
    for (int64_t t : {1, 7, 300}) {
      for (DataType cache_type : {DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16}) {
        SCOPED_TRACE(::testing::Message() << c.name << " T=" << t << " "
                                          << DataTypeName(cache_type));
        seed += 10;
        Inputs host = MakeInputs(c, t, cache_type, seed);
        // Two device copies (the op, the separate kernels), taken before the
        // CPU updates the host tensors in place.
        Inputs dev = Upload(*gpu_, host);
        Inputs sep = Upload(*gpu_, host);
        absl::Status s = cpu_->AttentionPrologue(ArgsFor(c, host));
        ASSERT_TRUE(s.ok()) << s;
        s = gpu_->AttentionPrologue(ArgsFor(c, dev));
        ASSERT_TRUE(s.ok()) << s;

        EXPECT_LE(MaxRelError(Down(dev.q), ToVector(host.q)), 1e-5);
        EXPECT_LE(MaxRelError(Down(dev.k), ToVector(host.k)), 1e-5);
        const int64_t n = host.k_cache.numel();
        const std::vector<uint8_t> kc = DownBytes(dev.k_cache), vc = DownBytes(dev.v_cache);
        EXPECT_LE(MaxRelError(CacheValues(kc.data(), cache_type, n),
                              CacheValues(host.k_cache.data(), cache_type, n)),
                  KCacheTolerance(cache_type));
        EXPECT_EQ(std::memcmp(vc.data(), host.v_cache.data(), vc.size()), 0);

        // The separate kernels on the GPU: the same bits.
        if (c.qk_norm) {
          ASSERT_TRUE(gpu_->HeadRmsNorm(&sep.q, sep.q_norm, 1e-6f).ok());
          ASSERT_TRUE(gpu_->HeadRmsNorm(&sep.k, sep.k_norm, 1e-6f).ok());
        }
        ASSERT_TRUE(gpu_->Rope(c.rope, c.head_dim, sep.positions, &sep.q, &sep.k).ok());
        ASSERT_TRUE(gpu_->WriteKvCache(sep.k, sep.v, sep.slots, &sep.k_cache, &sep.v_cache).ok());
        EXPECT_EQ(DownBytes(dev.q), DownBytes(sep.q));
        EXPECT_EQ(DownBytes(dev.k), DownBytes(sep.k));
        EXPECT_EQ(kc, DownBytes(sep.k_cache));
        EXPECT_EQ(vc, DownBytes(sep.v_cache));
      }
    }
  }
}

TEST_F(CudaAttentionPrologueTest, BadSlotIsReportedWithTheOpName) {
  const PrologueCase c = Cases()[0];  // Qwen3: the fused kernel
  Inputs host = MakeInputs(c, 3, DataType::kBFloat16, 7);
  const int64_t num_slots = host.k_cache.shape[0] * host.k_cache.shape[1];
  host.slots = MakeI32({3}, {0, static_cast<int32_t>(num_slots), 2});  // one past the end
  Inputs dev = Upload(*gpu_, host);
  ASSERT_TRUE(gpu_->AttentionPrologue(ArgsFor(c, dev)).ok());  // enqueued
  absl::Status s = gpu_->Synchronize();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("AttentionPrologue: a slot outside the cache"), std::string::npos)
      << s;
  // Reported once; the backend stays usable.
  EXPECT_TRUE(gpu_->Synchronize().ok());

  // A negative position, likewise.
  host.positions = MakeI32({3}, {0, -5, 2});
  host.slots = MakeI32({3}, {0, 1, 2});
  dev.positions = Up(host.positions);
  dev.slots = Up(host.slots);
  ASSERT_TRUE(gpu_->AttentionPrologue(ArgsFor(c, dev)).ok());
  s = gpu_->Synchronize();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("AttentionPrologue: a negative position"), std::string::npos) << s;
  EXPECT_TRUE(gpu_->Synchronize().ok());
}

TEST_F(CudaAttentionPrologueTest, GraphReplayEqualsEager) {
  const PrologueCase c = Cases()[0];
  const int64_t t = 8;
  Inputs host = MakeInputs(c, t, DataType::kBFloat16, 50);
  Inputs dev = Upload(*gpu_, host);
  const AttentionPrologueArgs args = ArgsFor(c, dev);
  // Once eagerly first: uploads the rope table (as a step's warm-up does).
  ASSERT_TRUE(gpu_->AttentionPrologue(args).ok());
  auto graph = gpu_->Capture([&]() { return gpu_->AttentionPrologue(args); });
  ASSERT_TRUE(graph.ok()) << graph.status();
  for (uint32_t round = 0; round < 3; ++round) {
    const std::vector<float> q = Random(t * c.q_heads * c.head_dim, 60 + round, -4.0f, 4.0f);
    const std::vector<float> k = Random(t * c.kv_heads * c.head_dim, 70 + round, -4.0f, 4.0f);
    auto load = [&]() {
      ASSERT_TRUE(gpu_->CopyFromHost(q.data(), q.size() * 4, &dev.q).ok());
      ASSERT_TRUE(gpu_->CopyFromHost(k.data(), k.size() * 4, &dev.k).ok());
    };
    load();
    ASSERT_TRUE((*graph)->Replay().ok());
    const std::vector<uint8_t> q_replayed = DownBytes(dev.q), kc_replayed = DownBytes(dev.k_cache);
    load();
    ASSERT_TRUE(gpu_->AttentionPrologue(args).ok());
    EXPECT_EQ(q_replayed, DownBytes(dev.q)) << "round " << round;
    EXPECT_EQ(kc_replayed, DownBytes(dev.k_cache)) << "round " << round;
  }
}

}  // namespace
}  // namespace epserve::kernels::testing
