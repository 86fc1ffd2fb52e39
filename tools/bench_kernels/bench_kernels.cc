// Kernel benchmarks for the CPU backend. Results and the command line:
// docs/kernels.md.
//   BM_MatMul/<w dtype>/T/N/K  vs  BM_Sgemm/T/N/K (plain cblas_sgemm, the peer)
//   BM_AttentionDecode/<cache dtype>/context  (batch 8, Hq 16, Hkv 4, D 128)
//   BM_MoeGrouped/T  vs  BM_MoeDenseEqualFlops/T  (E 8, top-2, H 1024, M 1024)
//   BM_QuantizedMatMul/<format>/T/N/K (awq-int4 g 128, fp8-block 128x128; the
//     weight's bytes per second)  vs  BM_Copy (memcpy of 512 MiB: the host's
//     memory bandwidth, read + write counted)
#include <cblas.h>

#include <cstring>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/dtype_convert.h"
#include "kernels/ops.h"
#include "kernels/registry.h"

namespace epserve::kernels {
namespace {

Tensor RandomTensor(DataType dtype, std::vector<int64_t> shape, uint32_t seed) {
  Tensor t = *EmptyHostTensor(dtype, std::move(shape));
  std::vector<float> v(static_cast<size_t>(t.numel()));
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& x : v) x = dist(gen);
  (void)ConvertElements(v.data(), DataType::kFloat32, t.mutable_data(), dtype, t.numel());
  return t;
}

DataType DtypeArg(int64_t i) {
  return i == 0 ? DataType::kFloat32 : i == 1 ? DataType::kBFloat16 : DataType::kFloat16;
}

void SetFlops(benchmark::State& state, double flops) {
  state.counters["FLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::OneK::kIs1000);
}

// Args: w dtype (0 f32, 1 bf16, 2 f16), T, N, K.
void BM_MatMul(benchmark::State& state) {
  const DataType dt = DtypeArg(state.range(0));
  const int64_t t = state.range(1), n = state.range(2), k = state.range(3);
  auto backend = *CreateBackend(DeviceSpec{});
  Tensor x = RandomTensor(DataType::kFloat32, {t, k}, 1);
  LinearWeight w = LinearWeight::Unquantized(RandomTensor(dt, {n, k}, 2));
  Tensor y = *EmptyHostTensor(DataType::kFloat32, {t, n});
  for (auto _ : state) {
    if (!backend->MatMul(x, w, Tensor{}, &y).ok()) state.SkipWithError("MatMul failed");
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(DataTypeName(dt));
  SetFlops(state, 2.0 * t * n * k);
}

// The peer: cblas_sgemm on fp32 data of the same shape.
void BM_Sgemm(benchmark::State& state) {
  const int64_t t = state.range(0), n = state.range(1), k = state.range(2);
  Tensor x = RandomTensor(DataType::kFloat32, {t, k}, 1);
  Tensor w = RandomTensor(DataType::kFloat32, {n, k}, 2);
  std::vector<float> y(static_cast<size_t>(t * n));
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(t), int(n), int(k), 1.0f,
                x.data_as<float>(), int(k), w.data_as<float>(), int(k), 0.0f, y.data(), int(n));
    benchmark::DoNotOptimize(y.data());
  }
  SetFlops(state, 2.0 * t * n * k);
}

// Args: cache dtype, context. Batch of 8 decode sequences, each `context`
// tokens long (incl. the new one), block size 16.
void BM_AttentionDecode(benchmark::State& state) {
  const DataType dt = DtypeArg(state.range(0));
  const int64_t ctx = state.range(1), seqs = 8, hq = 16, hkv = 4, d = 128, bs = 16;
  const int64_t blocks_per_seq = (ctx + bs - 1) / bs;
  auto backend = *CreateBackend(DeviceSpec{});
  Tensor kc = RandomTensor(dt, {seqs * blocks_per_seq, bs, hkv, d}, 3);
  Tensor vc = RandomTensor(dt, {seqs * blocks_per_seq, bs, hkv, d}, 4);
  Tensor q = RandomTensor(DataType::kFloat32, {seqs, hq * d}, 5);
  Tensor out = *EmptyHostTensor(DataType::kFloat32, {seqs, hq * d});
  AttentionMetadata m;
  m.query_start = *EmptyHostTensor(DataType::kInt32, {seqs + 1});
  m.context_lens = *EmptyHostTensor(DataType::kInt32, {seqs});
  m.block_tables = *EmptyHostTensor(DataType::kInt32, {seqs, blocks_per_seq});
  for (int64_t s = 0; s <= seqs; ++s) m.query_start.mutable_data_as<int32_t>()[s] = int32_t(s);
  for (int64_t s = 0; s < seqs; ++s) m.context_lens.mutable_data_as<int32_t>()[s] = int32_t(ctx);
  for (int64_t i = 0; i < seqs * blocks_per_seq; ++i) {
    m.block_tables.mutable_data_as<int32_t>()[i] = int32_t(i);
  }
  PagedAttentionArgs args{&q, &kc, &vc, &m, hq, 0.0f};
  for (auto _ : state) {
    if (!backend->PagedAttention(args, &out).ok()) state.SkipWithError("attention failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(DataTypeName(dt));
  // Bytes of K and V read per step.
  state.SetBytesProcessed(state.iterations() * 2 * seqs * ctx * hkv * d *
                          static_cast<int64_t>(DataTypeSize(dt)));
  SetFlops(state, 4.0 * seqs * hq * ctx * d);
}

constexpr int64_t kE = 8, kTopK = 2, kH = 1024, kM = 1024;

// Args: w dtype, T. One grouped GEMM over T*k permuted rows (evenly routed).
void BM_MoeGrouped(benchmark::State& state) {
  const DataType dt = DtypeArg(state.range(0));
  const int64_t t = state.range(1), r = t * kTopK;
  auto backend = *CreateBackend(DeviceSpec{});
  Tensor rows = RandomTensor(DataType::kFloat32, {r, kH}, 6);
  std::vector<LinearWeight> weights;
  for (int64_t e = 0; e < kE; ++e) {
    weights.push_back(LinearWeight::Unquantized(RandomTensor(dt, {kM, kH}, 10 + e)));
  }
  Tensor offsets = *EmptyHostTensor(DataType::kInt32, {kE + 1});
  for (int64_t e = 0; e <= kE; ++e) offsets.mutable_data_as<int32_t>()[e] = int32_t(e * r / kE);
  Tensor out = *EmptyHostTensor(DataType::kFloat32, {r, kM});
  for (auto _ : state) {
    if (!backend->GroupedExpertMatMul(rows, offsets, weights, &out).ok()) {
      state.SkipWithError("grouped matmul failed");
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(DataTypeName(dt));
  SetFlops(state, 2.0 * r * kM * kH);
}

// The same FLOPs as one dense MatMul [T*k, H] x [M, H]^T.
void BM_MoeDenseEqualFlops(benchmark::State& state) {
  const DataType dt = DtypeArg(state.range(0));
  const int64_t t = state.range(1), r = t * kTopK;
  auto backend = *CreateBackend(DeviceSpec{});
  Tensor rows = RandomTensor(DataType::kFloat32, {r, kH}, 6);
  LinearWeight w = LinearWeight::Unquantized(RandomTensor(dt, {kM, kH}, 10));
  Tensor out = *EmptyHostTensor(DataType::kFloat32, {r, kM});
  for (auto _ : state) {
    if (!backend->MatMul(rows, w, Tensor{}, &out).ok()) state.SkipWithError("MatMul failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetLabel(DataTypeName(dt));
  SetFlops(state, 2.0 * r * kM * kH);
}

// Args: format (0 awq-int4 group 128, 1 fp8-block 128x128), T, N, K. Random
// codes and scales; bytes = the layer's quantized bytes (weight, scales,
// zero points) read per call.
void BM_QuantizedMatMul(benchmark::State& state) {
  const bool awq = state.range(0) == 0;
  const int64_t t = state.range(1), n = state.range(2), k = state.range(3);
  auto backend = *CreateBackend(DeviceSpec{});
  Tensor x = RandomTensor(DataType::kFloat32, {t, k}, 1);
  LinearWeight w;
  std::mt19937 gen(3);
  auto random_bytes = [&](Tensor* tensor) {
    uint8_t* p = static_cast<uint8_t*>(tensor->mutable_data());
    for (size_t i = 0; i < tensor->nbytes(); ++i) p[i] = static_cast<uint8_t>(gen() & 0x77);
  };
  if (awq) {
    constexpr int64_t g = 128;
    w.format = WeightFormat::kAwqInt4;
    w.group_size = g;
    w.weight = *EmptyHostTensor(DataType::kInt32, {k, n / 8});
    w.zero_points = *EmptyHostTensor(DataType::kInt32, {k / g, n / 8});
    w.scales = RandomTensor(DataType::kFloat16, {k / g, n}, 4);
    random_bytes(&w.weight);
    random_bytes(&w.zero_points);
  } else {
    w.format = WeightFormat::kFp8Block;
    w.block_shape = {128, 128};
    w.weight = *EmptyHostTensor(DataType::kFloat8E4M3, {n, k});
    w.scales = RandomTensor(DataType::kFloat32, {(n + 127) / 128, (k + 127) / 128}, 4);
    random_bytes(&w.weight);  // 0x77 masks: finite codes only
  }
  Tensor y = *EmptyHostTensor(DataType::kFloat32, {t, n});
  for (auto _ : state) {
    if (!backend->MatMul(x, w, Tensor{}, &y).ok()) state.SkipWithError("MatMul failed");
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(WeightFormatName(w.format));
  const int64_t bytes =
      static_cast<int64_t>(w.weight.nbytes() + w.scales.nbytes() +
                           (w.zero_points.defined() ? w.zero_points.nbytes() : 0));
  state.SetBytesProcessed(state.iterations() * bytes);
  SetFlops(state, 2.0 * t * n * k);
}

// The host's memory bandwidth: memcpy of 512 MiB, bytes read + written.
void BM_Copy(benchmark::State& state) {
  const size_t bytes = size_t{512} << 20;
  std::vector<char> a(bytes, 1), b(bytes, 2);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::DoNotOptimize(b.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(2 * bytes));
}

BENCHMARK(BM_MatMul)
    ->ArgNames({"wdtype", "T", "N", "K"})
    ->ArgsProduct({{0, 1, 2}, {1, 128}, {2048}, {2048}})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Sgemm)->ArgNames({"T", "N", "K"})->Args({1, 2048, 2048})->Args({128, 2048, 2048})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_AttentionDecode)
    ->ArgNames({"cache", "ctx"})
    ->ArgsProduct({{0, 1}, {512, 2048}})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_MoeGrouped)->ArgNames({"wdtype", "T"})->ArgsProduct({{0, 1}, {4, 64}})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_MoeDenseEqualFlops)->ArgNames({"wdtype", "T"})->ArgsProduct({{0, 1}, {4, 64}})
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
// DeepSeek-V3 expert shape: 7168 -> 2048 (and the bf16 MatMul of the same
// shape for comparison through BM_MatMul's arguments).
BENCHMARK(BM_QuantizedMatMul)
    ->ArgNames({"fmt", "T", "N", "K"})
    ->ArgsProduct({{0, 1}, {1, 4, 64}, {2048}, {7168}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_MatMul)
    ->ArgNames({"wdtype", "T", "N", "K"})
    ->Args({1, 1, 2048, 7168})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_Copy)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace epserve::kernels

BENCHMARK_MAIN();
