// SkinnyGemm (see skinny_gemm.cuh for the contract): y = x · w^T (+ bias)
// for 1..16 float32 rows x and a bf16 / fp16 / float32 weight matrix w [N, K].
//
// Memory-bound GEMV-style kernel with plain fp32 FMAs (no tensor cores, no
// TF32). One CTA is 4 warps (128 threads):
//
//   lane = slot * 8 + lk         4 row slots x 8 lanes along K per warp
//   warp = group * ks + split    4/ks row groups x ks K splits per CTA
//
// A thread owns kR consecutive weight rows (output columns); per step it
// reads one 16-byte chunk of each (8 bf16 / fp16 elements, 4 float32: kChunk),
// the 8 lanes of a slot covering 128 contiguous bytes (one whole line) of a
// row, so a warp load touches 4 whole lines. A warp covers 4 * kR rows and
// walks its K split 8 chunks (64 or 32 elements) per step. Steps come in
// batches of kU (kU * kR loads per thread), double-buffered: the next
// batch's loads are issued before this batch's FMAs. Weights use
// ld.global.nc.L1::no_allocate.L2::256B (read once; L1 is left to x). x is
// read through L1 / L2 with float4 __ldg (at most 16 * K floats, read by
// every CTA): one float4 per token row per 4 elements of a chunk (two for
// 16-bit weights, one for float32), each used for the thread's kR rows, and
// since the 4 slots of a warp read the same x addresses, one x load serves
// 4 * kR weight rows. Weight chunks are widened to float once (4 elements at
// a time) and used for every token row.
//
// Accumulation: acc[t][r] = fmaf(x[t][k], w[r][k], acc[t][r]), one chain per
// lane in ascending k; then an xor butterfly over the slot's 8 lanes (1, 2,
// 4; every lane ends with the same bits); then, when ks > 1, the ks warps of
// a row group summed in split order through shared memory; the bias last.
// The order depends on ks alone, chosen from (N, K, weight type, SM count)
// and never from T or kR: results are deterministic, and a token row's
// outputs do not depend on T or on the other rows (batch invariance).
//
// Token rows: template bucket kRows in {1, 2, 4, 8, 16} >= T; rows >= T
// re-read row T-1 (valid memory) and are never stored. Registers: ptxas
// issues every x load of a batch up front (kRows * XVecs * kU float4), so
// kU shrinks as kRows grows and the larger buckets run fewer CTAs per SM
// (MinBlocks): 16 rows x kR = 4 is ~250 registers, 8 warps per SM, no
// spills (checked with -Xptxas -v for every instance, float32 included).
//
// Launch shape (host): ks = smallest of 1, 2, 4 giving >= 2 CTAs per SM at
// kR = 4 (while each warp keeps >= 2 steps of K); then kR = largest of 4, 2,
// 1 giving >= 1 CTA per SM. lm_head (N = 151936) runs ks = 1, kR = 4: 2374
// CTAs of 64 rows x all of K; q / o_proj-sized N splits K over the CTA's
// warps; k / v / router (N <= 512) run kR = 1 (the fp32 MoE router, N = 128,
// K = 2048: 128 CTAs of 4 rows, K split over the 4 warps).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/skinny_gemm.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kLanesK = 8;            // lanes of a row slot, along K
constexpr int kSlots = 32 / kLanesK;  // row slots per warp
constexpr int kKMultiple = 8;         // K granularity (one 16-byte bf16 chunk)
constexpr int kMaxSplits = kWarps;    // K splits per CTA (ks)
// x row offsets are int: (kMaxSkinnyRows - 1) * kMaxK < 2^31.
constexpr int64_t kMaxK = (int64_t{1} << 27) - kKMultiple;

// Weight elements per 16-byte load (a chunk): 8 for bf16 / fp16, 4 for
// float32; and the x float4 each chunk needs per token row.
template <typename T>
constexpr int ChunkElems() {
  return 16 / static_cast<int>(sizeof(T));
}
template <typename T>
constexpr int XVecs() {
  return ChunkElems<T>() / 4;
}

struct Params {
  const float* x;  // [t, k]
  int64_t t;
  int64_t k;
  const void* w;  // [n, k]
  int64_t n;
  const void* bias;  // [n] or null
  Elem bias_type;
  float* y;  // [t, n]
  int ks;                // K splits per CTA: 1, 2 or 4 (divides kWarps)
  int64_t split_chunks;  // 16-byte chunks per K split, a multiple of kLanesK
  // SkinnyGemmShared: CTAs [parts[i].cta_begin, parts[i + 1].cta_begin)
  // compute weight i (its w, n, bias, y, ks and split_chunks replace the
  // fields above); num_parts 0 for a single weight.
  struct Part {
    const void* w;
    int64_t n;
    const void* bias;
    float* y;
    int ks;
    int64_t split_chunks;
    int64_t cta_begin;
  };
  int num_parts;
  Part parts[kMaxSkinnyShared];
};

// Steps per batch. A batch is kU * kR 16-byte weight loads per thread (at
// most 8 for 1-2 token rows, 4 beyond; two batches in flight) and
// XVecs * kRows * kU float4 x loads (at most 16; 32 at 16 rows), which
// ptxas hoists into registers.
template <typename T, int kRows, int kR>
constexpr int Unroll() {
  constexpr int by_weights = (kRows <= 2 ? 8 : 4) / kR;
  constexpr int by_x = 16 / (XVecs<T>() * kRows);
  constexpr int u = by_weights < by_x ? by_weights : by_x;
  return u < 1 ? 1 : u;
}

// CTAs per SM the registers must allow (at most 65536 / (128 * this) per
// thread): 255 for 16 token rows (64 accumulators, 32 x floats and two
// weight batches in flight), 168 for 8, 128 below. Float32 weights take 168
// from 2 rows: a float32 load needs half the x of a 16-bit one, so at the
// same x budget their batches are twice as deep (twice the weight registers).
template <typename T, int kRows>
constexpr int MinBlocks() {
  if (kRows >= 16) return 2;
  if (kRows >= 8 || (XVecs<T>() == 1 && kRows >= 2)) return 3;
  return 4;
}

// Streamed once: bypass L1, let L2 fetch 256-byte blocks (the next step of
// the same row).
__device__ __forceinline__ uint4 LoadWeights16(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Elements 4h .. 4h+3 of a 16-byte chunk as float (h < XVecs<T>()); 16-bit
// elements are packed two to a word, element 2i in the low half.
template <typename T>
__device__ __forceinline__ void Widen4(const uint4& v, int h, float (&f)[4]);

template <>
__device__ __forceinline__ void Widen4<float>(const uint4& v, int /*h*/, float (&f)[4]) {
  f[0] = __uint_as_float(v.x);
  f[1] = __uint_as_float(v.y);
  f[2] = __uint_as_float(v.z);
  f[3] = __uint_as_float(v.w);
}

template <>
__device__ __forceinline__ void Widen4<__nv_bfloat16>(const uint4& v, int h, float (&f)[4]) {
  const uint32_t u0 = h == 0 ? v.x : v.z, u1 = h == 0 ? v.y : v.w;
  f[0] = __uint_as_float(u0 << 16);
  f[1] = __uint_as_float(u0 & 0xffff0000u);
  f[2] = __uint_as_float(u1 << 16);
  f[3] = __uint_as_float(u1 & 0xffff0000u);
}

template <>
__device__ __forceinline__ void Widen4<__half>(const uint4& v, int h, float (&f)[4]) {
  const uint32_t u0 = h == 0 ? v.x : v.z, u1 = h == 0 ? v.y : v.w;
  f[0] = __half2float(__ushort_as_half(static_cast<unsigned short>(u0 & 0xffffu)));
  f[1] = __half2float(__ushort_as_half(static_cast<unsigned short>(u0 >> 16)));
  f[2] = __half2float(__ushort_as_half(static_cast<unsigned short>(u1 & 0xffffu)));
  f[3] = __half2float(__ushort_as_half(static_cast<unsigned short>(u1 >> 16)));
}

__device__ __forceinline__ float LoadBias(const void* bias, Elem type, int64_t i) {
  switch (type) {
    case Elem::kBF16: return ToF32(static_cast<const __nv_bfloat16*>(bias)[i]);
    case Elem::kF16: return ToF32(static_cast<const __half*>(bias)[i]);
    default: return static_cast<const float*>(bias)[i];
  }
}

// acc[t][r] += x[t][k0 .. k0+kChunk) · chunk r, one fmaf chain in ascending
// k. XVecs groups of 4 k: the widened weights (4 * kR floats) and one float4
// of x live at a time, which keeps registers for the accumulators.
// xk = x + k0; row t of x at xk + xoff[t].
template <typename T, int kRows, int kR>
__device__ __forceinline__ void Accumulate(float (&acc)[kRows][kR], const uint4 (&wv)[kR],
                                           const float* __restrict__ xk,
                                           const int (&xoff)[kRows]) {
#pragma unroll
  for (int h = 0; h < XVecs<T>(); ++h) {
    float wf[kR][4];
#pragma unroll
    for (int r = 0; r < kR; ++r) Widen4<T>(wv[r], h, wf[r]);
#pragma unroll
    for (int t = 0; t < kRows; ++t) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(xk + xoff[t]) + h);
      // Activations rounded to the weight type, as cuBLAS sees them on the
      // many-row path: a token's result does not depend on which path its
      // batch size takes (products and sums stay fp32). The identity for
      // float32 weights.
      const float xv[4] = {ToF32(FromF32<T>(a.x)), ToF32(FromF32<T>(a.y)),
                           ToF32(FromF32<T>(a.z)), ToF32(FromF32<T>(a.w))};
#pragma unroll
      for (int r = 0; r < kR; ++r)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[t][r] = fmaf(xv[j], wf[r][j], acc[t][r]);
    }
  }
}

template <typename T, int kRows, int kR>
__global__ void __launch_bounds__(kThreads, MinBlocks<T, kRows>())
    SkinnyGemmKernel(const Params params) {
  Params p = params;
  int64_t cta = blockIdx.x;
  if (p.num_parts > 0) {
    int m = 0;
    while (m + 1 < p.num_parts && cta >= params.parts[m + 1].cta_begin) ++m;
    const Params::Part& part = params.parts[m];
    p.w = part.w;
    p.n = part.n;
    p.bias = part.bias;
    p.y = part.y;
    p.ks = part.ks;
    p.split_chunks = part.split_chunks;
    cta -= part.cta_begin;
  }
  constexpr int kU = Unroll<T, kRows, kR>();
  constexpr int kChunk = ChunkElems<T>();
  __shared__ float s_part[kWarps][kSlots][kR][kRows];  // ks > 1 only

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int lk = lane % kLanesK, slot = lane / kLanesK;
  const int ks = p.ks;
  const int groups = kWarps / ks;
  const int group = warp / ks, split = warp % ks;
  const int64_t cta_rows = static_cast<int64_t>(groups) * kSlots * kR;
  const int64_t cta_row0 = cta * cta_rows;
  const int64_t row0 = cta_row0 + (static_cast<int64_t>(group) * kSlots + slot) * kR;

  // Rows past N re-read row N-1 (only in the last CTA) and are not stored.
  const T* w = static_cast<const T*>(p.w);
  const T* wrow[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) wrow[r] = w + min(row0 + r, p.n - 1) * p.k;
  int xoff[kRows];  // (T-1) * K fits in int (checked on the host)
#pragma unroll
  for (int t = 0; t < kRows; ++t) {
    xoff[t] = static_cast<int>(min(static_cast<int64_t>(t), p.t - 1) * p.k);
  }

  float acc[kRows][kR];
#pragma unroll
  for (int t = 0; t < kRows; ++t)
#pragma unroll
    for (int r = 0; r < kR; ++r) acc[t][r] = 0.0f;

  const int64_t chunks = p.k / kChunk;
  const int64_t cb = split * p.split_chunks;
  const int64_t ce = min(chunks, cb + p.split_chunks);
  // Whole batches (kU steps, every lane in range), double-buffered: the next
  // batch's loads are issued before this batch's FMAs.
  constexpr int64_t kBatch = kU * kLanesK;
  const int64_t full_end = ce > cb ? cb + (ce - cb) / kBatch * kBatch : cb;
  const int64_t lane_elem = static_cast<int64_t>(lk) * kChunk;
  auto load = [&](uint4 (&wv)[kU][kR], int64_t c) {
#pragma unroll
    for (int u = 0; u < kU; ++u)
#pragma unroll
      for (int r = 0; r < kR; ++r)
        wv[u][r] = LoadWeights16(wrow[r] + (c + u * kLanesK) * kChunk + lane_elem);
  };
  auto compute = [&](const uint4 (&wv)[kU][kR], int64_t c) {
#pragma unroll
    for (int u = 0; u < kU; ++u)
      Accumulate<T, kRows, kR>(acc, wv[u], p.x + (c + u * kLanesK) * kChunk + lane_elem, xoff);
  };
  int64_t c0 = cb;
  if (c0 < full_end) {
    uint4 cur[kU][kR];
    load(cur, c0);
#pragma unroll 1
    for (;;) {
      const bool more = c0 + kBatch < full_end;
      uint4 nxt[kU][kR] = {};
      if (more) load(nxt, c0 + kBatch);
      compute(cur, c0);
      if (!more) break;
#pragma unroll
      for (int u = 0; u < kU; ++u)
#pragma unroll
        for (int r = 0; r < kR; ++r) cur[u][r] = nxt[u][r];
      c0 += kBatch;
    }
    c0 = full_end;
  }
  // Tail: one step at a time, lanes past the split's end idle. Same per-lane
  // order as above (ascending chunks).
#pragma unroll 1
  for (; c0 < ce; c0 += kLanesK) {
    const int64_t c = c0 + lk;
    if (c < ce) {
      uint4 wv[kR];
#pragma unroll
      for (int r = 0; r < kR; ++r) wv[r] = LoadWeights16(wrow[r] + c * kChunk);
      Accumulate<T, kRows, kR>(acc, wv, p.x + c * kChunk, xoff);
    }
  }

  // Sum over the slot's 8 lanes; every lane ends with the same bits.
#pragma unroll
  for (int t = 0; t < kRows; ++t)
#pragma unroll
    for (int r = 0; r < kR; ++r)
#pragma unroll
      for (int off = 1; off < kLanesK; off <<= 1)
        acc[t][r] += __shfl_xor_sync(0xffffffffu, acc[t][r], off);

  if (ks == 1) {
    // Lane lk stores the entries e = t * kR + r with e % 8 == lk.
#pragma unroll
    for (int t = 0; t < kRows; ++t)
#pragma unroll
      for (int r = 0; r < kR; ++r) {
        const int64_t col = row0 + r;
        if ((t * kR + r) % kLanesK == lk && t < p.t && col < p.n) {
          float v = acc[t][r];
          if (p.bias != nullptr) v += LoadBias(p.bias, p.bias_type, col);
          p.y[t * p.n + col] = v;
        }
      }
    return;
  }

#pragma unroll
  for (int t = 0; t < kRows; ++t)
#pragma unroll
    for (int r = 0; r < kR; ++r)
      if ((t * kR + r) % kLanesK == lk) s_part[warp][slot][r][t] = acc[t][r];
  __syncthreads();
  // Output (t, CTA row i): consecutive threads take consecutive columns.
  const int64_t outputs = p.t * cta_rows;
  for (int64_t o = threadIdx.x; o < outputs; o += kThreads) {
    const int t = static_cast<int>(o / cta_rows);
    const int i = static_cast<int>(o % cta_rows);
    const int64_t col = cta_row0 + i;
    if (col >= p.n) continue;
    const int g = i / (kSlots * kR), sl = (i / kR) % kSlots, r = i % kR;
    float v = s_part[g * ks][sl][r][t];
    for (int s = 1; s < ks; ++s) v += s_part[g * ks + s][sl][r][t];
    if (p.bias != nullptr) v += LoadBias(p.bias, p.bias_type, col);
    p.y[t * p.n + col] = v;
  }
}

// SM count of the current device, queried once per device (no stream work,
// so it is safe during graph capture).
int NumSms() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices] = {};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    cudaGetLastError();  // not sticky; keep it out of the next LaunchStatus
    return 132;
  }
  int sms = cache[device].load(std::memory_order_relaxed);
  if (sms > 0) return sms;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      sms <= 0) {
    cudaGetLastError();
    return 132;
  }
  cache[device].store(sms, std::memory_order_relaxed);
  return sms;
}

bool AlignedTo(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

absl::Status Bad(const char* what, int64_t value) {
  return absl::InvalidArgumentError(absl::StrCat("SkinnyGemm: ", what, " ", value));
}

int64_t CtaRows(int ks, int r) { return static_cast<int64_t>(kWarps / ks) * kSlots * r; }

template <typename T, int kRows, int kR>
absl::Status Launch(Params p, cudaStream_t stream) {
  int64_t ctas = 0;
  if (p.num_parts == 0) {
    ctas = CeilDiv(p.n, CtaRows(p.ks, kR));
  } else {
    for (int i = 0; i < p.num_parts; ++i) {
      p.parts[i].cta_begin = ctas;
      ctas += CeilDiv(p.parts[i].n, CtaRows(p.parts[i].ks, kR));
    }
  }
  if (ctas > INT_MAX) return Bad("n too large:", p.n);
  SkinnyGemmKernel<T, kRows, kR><<<static_cast<unsigned>(ctas), kThreads, 0, stream>>>(p);
  return LaunchStatus("SkinnyGemmKernel");
}

template <typename T, int kRows>
absl::Status LaunchRows(const Params& p, int r, cudaStream_t stream) {
  switch (r) {
    case 4: return Launch<T, kRows, 4>(p, stream);
    case 2: return Launch<T, kRows, 2>(p, stream);
    default: return Launch<T, kRows, 1>(p, stream);
  }
}

// Launch shape from (N, K, T's chunk size, SMs) only, so the summation
// order (ks) never depends on the number of token rows.
template <typename T>
int KSplits(int64_t n, int64_t chunks, int64_t sms) {
  int ks = 1;
  while (ks < kMaxSplits && CeilDiv(n, CtaRows(ks, 4)) < 2 * sms &&
         chunks >= 2 * kLanesK * (2 * ks)) {
    ks *= 2;
  }
  return ks;
}

// Each weight keeps the K split a launch of its own would use, so its
// outputs are bit-identical to SkinnyGemm's; r (rows per slot) does not
// change the sums and is chosen for the launch as a whole.
template <typename T>
absl::Status LaunchType(Params p, cudaStream_t stream) {
  const int64_t sms = NumSms();
  const int64_t chunks = p.k / ChunkElems<T>();
  auto split_chunks = [&](int ks) { return CeilDiv(CeilDiv(chunks, ks), kLanesK) * kLanesK; };
  int r = 4;
  if (p.num_parts == 0) {
    const int ks = KSplits<T>(p.n, chunks, sms);
    while (r > 1 && CeilDiv(p.n, CtaRows(ks, r)) < sms) r /= 2;
    p.ks = ks;
    p.split_chunks = split_chunks(ks);
  } else {
    for (int i = 0; i < p.num_parts; ++i) {
      p.parts[i].ks = KSplits<T>(p.parts[i].n, chunks, sms);
      p.parts[i].split_chunks = split_chunks(p.parts[i].ks);
    }
    auto total_ctas = [&](int rows) {
      int64_t c = 0;
      for (int i = 0; i < p.num_parts; ++i) c += CeilDiv(p.parts[i].n, CtaRows(p.parts[i].ks, rows));
      return c;
    };
    while (r > 1 && total_ctas(r) < sms) r /= 2;
    p.w = p.parts[0].w;
    p.n = p.parts[0].n;
  }

  if (p.t == 1) return LaunchRows<T, 1>(p, r, stream);
  if (p.t == 2) return LaunchRows<T, 2>(p, r, stream);
  if (p.t <= 4) return LaunchRows<T, 4>(p, r, stream);
  if (p.t <= 8) return LaunchRows<T, 8>(p, r, stream);
  return LaunchRows<T, 16>(p, r, stream);
}

}  // namespace

bool SkinnyGemmApplies(int64_t t, int64_t k, const void* x, const void* w) {
  return t >= 1 && t <= kMaxSkinnyRows && k >= 0 && k <= kMaxK && k % kKMultiple == 0 &&
         AlignedTo(x, 16) && AlignedTo(w, 16);
}

namespace {

// SkinnyGemm and SkinnyGemmShared: the checks, then one launch (num_parts 0
// for a single weight, whose launch shape is then exactly SkinnyGemm's).
absl::Status Run(const float* x, int64_t t, int64_t k, absl::Span<const SkinnyOutput> outputs,
                 Elem w_type, Elem bias_type, cudaStream_t stream) {
  if (outputs.size() > static_cast<size_t>(kMaxSkinnyShared)) {
    return Bad("at most 4 weights share an input, got", static_cast<int64_t>(outputs.size()));
  }
  if (t < 1 || t > kMaxSkinnyRows) return Bad("rows must be in [1, 16], got", t);
  if (k < 0 || k > kMaxK || k % kKMultiple != 0) {
    return Bad("k must be a multiple of 8 in [0, 2^27), got", k);
  }
  if (w_type != Elem::kF32 && w_type != Elem::kBF16 && w_type != Elem::kF16) {
    return absl::InvalidArgumentError("SkinnyGemm: unknown weight element type");
  }
  Params p{};
  p.x = x;
  p.t = t;
  p.k = k;
  p.bias_type = bias_type;
  for (const SkinnyOutput& o : outputs) {
    if (o.n < 0) return Bad("n must be non-negative, got", o.n);
    if (!AlignedTo(x, 16) || !AlignedTo(o.w, 16)) {
      return absl::InvalidArgumentError("SkinnyGemm: x and w must be 16-byte aligned");
    }
    if (o.bias != nullptr && bias_type != Elem::kF32 && bias_type != Elem::kBF16 &&
        bias_type != Elem::kF16) {
      return absl::InvalidArgumentError("SkinnyGemm: unknown bias element type");
    }
    if (o.n == 0) continue;  // nothing to compute for this weight
    if (x == nullptr || o.w == nullptr || o.y == nullptr) {
      return absl::InvalidArgumentError("SkinnyGemm: null x, w or y");
    }
    Params::Part& part = p.parts[p.num_parts++];
    part.w = o.w;
    part.n = o.n;
    part.bias = o.bias;
    part.y = o.y;
  }
  if (p.num_parts == 0) return absl::OkStatus();
  if (p.num_parts == 1) {  // one weight: the plain launch
    p.w = p.parts[0].w;
    p.n = p.parts[0].n;
    p.bias = p.parts[0].bias;
    p.y = p.parts[0].y;
    p.num_parts = 0;
  }
  return DispatchElem(
      w_type, [&](auto tag) -> absl::Status { return LaunchType<decltype(tag)>(p, stream); });
}

}  // namespace

absl::Status SkinnyGemm(const float* x, int64_t t, int64_t k, const void* w, Elem w_type,
                        int64_t n, const void* bias, Elem bias_type, float* y,
                        cudaStream_t stream) {
  const SkinnyOutput one{w, n, bias, y};
  return Run(x, t, k, absl::MakeConstSpan(&one, 1), w_type, bias_type, stream);
}

absl::Status SkinnyGemmShared(const float* x, int64_t t, int64_t k,
                              absl::Span<const SkinnyOutput> outputs, Elem w_type, Elem bias_type,
                              cudaStream_t stream) {
  return Run(x, t, k, outputs, w_type, bias_type, stream);
}

}  // namespace epserve::kernels::cuda
