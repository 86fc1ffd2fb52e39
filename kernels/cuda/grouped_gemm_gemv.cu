// GemvKernel: the grouped expert GEMM (and GateUp's fused gate + up pass) for
// bf16/fp16 weights and few rows per expert (decode), memory-bound on the
// weights. Row tiles, the kernel choice and the entry points:
// grouped_gemm.cu.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "common/cuda/cuda_status.h"
#include "common/status.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/grouped_gemm_common.cuh"

namespace epserve::kernels::cuda::grouped_gemm_internal {
namespace {

// ---- small M: GemvKernel ------------------------------------------------------
//
// mma m16n8k16 with A = 16 weight rows x 16 k, B = 16 k x 8 token rows. The
// k order inside an MMA is free as long as A and B agree, so lane (g =
// lane/4, q = lane%4) takes 8 consecutive k (16 bytes of a weight row, two
// float4 of a token row) at k0 + 8q for a 32-wide k chunk and uses them for
// two MMAs:
//   MMA 0: slots {2q, 2q+1, 2q+8, 2q+9} <- k0 + 8q + {0, 1, 2, 3}
//   MMA 1: slots {2q, 2q+1, 2q+8, 2q+9} <- k0 + 8q + {4, 5, 6, 7}
// Weight rows g and g+8 of each 16-row tile are A rows g and g+8; token row
// g of each 8-row tile is B column g. Accumulator c0..c3 = (weight row g,
// token rows 2q, 2q+1), (weight row g+8, token rows 2q, 2q+1).
//
// Ring: warp w takes chunks w, w + 4, w + 8, ... (a CTA step reads
// contiguous spans); its t-th chunk goes to stage t % kStages. A stage holds,
// per lane, kSlots 16-byte pieces: for each weight matrix and 16-row tile j
// the pieces of rows g and g + 8, then two per 8-row token tile. Slot s of
// lane l is at [stage][s][l], so the reads back are bank-conflict free.
// Pieces outside the problem (k >= K, weight tiles past N, token rows past
// the tile) are zero-filled by cp.async without reading global memory.

constexpr int kGemvWarps = 4;
constexpr int kGemvThreads = kGemvWarps * 32;
constexpr int kGemvRingBytes = 64 * 1024;  // per CTA: 3 CTAs per SM

template <int kMi, int kNj, bool kFused>
struct GemvShape {
  static constexpr int kBm = 8 * kMi;   // token rows per CTA
  static constexpr int kBn = 16 * kNj;  // output columns per CTA
  static constexpr int kMats = kFused ? 2 : 1;
  static constexpr int kWSlots = 2 * kNj * kMats;  // weight pieces per lane per chunk
  static constexpr int kSlots = kWSlots + 2 * kMi;
  static constexpr int kStageBytes = kGemvThreads * 16 * kSlots;
  static constexpr int kStages = std::min(16, std::max(2, kGemvRingBytes / kStageBytes));
  static constexpr int kLd = kBn + 4;  // reduction row stride (bank-conflict free)
  static constexpr int kRedBytes = kGemvWarps * kBm * kLd * 4;
  static constexpr int kSmemBytes = std::max(kStages * kStageBytes, kRedBytes);
  static constexpr int kOutPerThread = kBm * kBn / kGemvThreads;
  static_assert(kBm * kBn % kGemvThreads == 0, "outputs split evenly over the threads");
};

template <typename T, int kMi, int kNj, bool kFused>
__global__ void __launch_bounds__(kGemvThreads, 1) GemvKernel(const Problem p) {
  using S = GemvShape<kMi, kNj, kFused>;
  constexpr int kMats = S::kMats;
  constexpr int kStages = S::kStages;
  extern __shared__ uint4 s_ring[];  // [warp][stage][slot][lane]; then the reduction
  __shared__ int s_off[kMaxExperts + 1];
  __shared__ RowTile s_tile;

  const int n0 = blockIdx.y * S::kBn;
  const RowTile rt = FindRowTile(p, S::kBm, blockIdx.x, s_off, &s_tile);
  if (rt.expert < 0) return;
  if (rt.w == nullptr || (kFused && rt.w2 == nullptr)) {
    MissingExpert(rt, n0, S::kBn, p);
    return;
  }
  const int k = p.k;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, q = lane & 3;

  // Weight rows g and g + 8 of tile j (n % 16 == 0: a 16-row tile is all in
  // or all out; out ones point at row 0 and are never read).
  const T* w_lo[kMats][kNj];
  const T* w_hi[kMats][kNj];
  bool n_in[kNj];
#pragma unroll
  for (int j = 0; j < kNj; ++j) n_in[j] = n0 + j * 16 < p.n;
#pragma unroll
  for (int m = 0; m < kMats; ++m) {
    const T* w = static_cast<const T*>(m == 0 ? rt.w : rt.w2);
#pragma unroll
    for (int j = 0; j < kNj; ++j) {
      w_lo[m][j] = w + static_cast<int64_t>(n_in[j] ? n0 + j * 16 + g : 0) * k + 8 * q;
      w_hi[m][j] = w_lo[m][j] + (n_in[j] ? 8 * static_cast<int64_t>(k) : 0);
    }
  }
  const float* x = p.rows + static_cast<int64_t>(rt.row_begin) * k;
  const float* x_row[kMi];
  bool m_in[kMi];
#pragma unroll
  for (int i = 0; i < kMi; ++i) {
    m_in[i] = i * 8 + g < rt.num_rows;
    x_row[i] = x + static_cast<int64_t>(m_in[i] ? i * 8 + g : 0) * k + 8 * q;
  }

  uint4* ring = s_ring + warp * (kStages * S::kSlots * 32) + lane;
  // This warp's t-th chunk -> stage t % kStages.
  auto issue = [&](int t) {
    // w_lo / w_hi / x_row already include this lane's 8 * q: offset them by
    // the chunk start only (adding kk would count 8 * q twice).
    const int k0 = (warp + kGemvWarps * t) * 32;
    const bool k_in = k0 + 8 * q < k;  // k % 16 == 0: 8 elements all in or all out
    const int ks = k_in ? k0 : 0;
    uint4* dst = ring + (t % kStages) * (S::kSlots * 32);
#pragma unroll
    for (int m = 0; m < kMats; ++m) {
#pragma unroll
      for (int j = 0; j < kNj; ++j) {
        const int s = 2 * (m * kNj + j);
        CpAsync16(dst + s * 32, w_lo[m][j] + ks, k_in && n_in[j]);
        CpAsync16(dst + (s + 1) * 32, w_hi[m][j] + ks, k_in && n_in[j]);
      }
    }
#pragma unroll
    for (int i = 0; i < kMi; ++i) {
      const int s = S::kWSlots + 2 * i;
      CpAsync16(dst + s * 32, x_row[i] + ks, k_in && m_in[i]);
      CpAsync16(dst + (s + 1) * 32, x_row[i] + ks + 4, k_in && m_in[i]);
    }
  };

  float acc[kMats][kNj][kMi][4];
#pragma unroll
  for (int m = 0; m < kMats; ++m)
#pragma unroll
    for (int j = 0; j < kNj; ++j)
#pragma unroll
      for (int i = 0; i < kMi; ++i)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[m][j][i][c] = 0.0f;

  const int num_chunks = (k + 31) / 32;
  const int my_chunks = warp < num_chunks ? (num_chunks - 1 - warp) / kGemvWarps + 1 : 0;
  // One commit group per chunk (empty past the last), kStages - 1 ahead.
#pragma unroll
  for (int t = 0; t < kStages - 1; ++t) {
    if (t < my_chunks) issue(t);
    CpAsyncCommit();
  }
  for (int t = 0; t < my_chunks; ++t) {
    // Stage (t - 1) % kStages was read back last iteration; each lane reads
    // only its own slots, the warp barrier just keeps the ordering explicit.
    __syncwarp();
    if (t + kStages - 1 < my_chunks) issue(t + kStages - 1);
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();  // chunk t's group has landed
    const uint4* src = ring + (t % kStages) * (S::kSlots * 32);
    uint4 wv[S::kWSlots];
#pragma unroll
    for (int s = 0; s < S::kWSlots; ++s) wv[s] = src[s * 32];
#pragma unroll
    for (int i = 0; i < kMi; ++i) {
      const uint4 ua = src[(S::kWSlots + 2 * i) * 32];
      const uint4 ub = src[(S::kWSlots + 2 * i + 1) * 32];
      const uint32_t b00 = Pack2<T>(__uint_as_float(ua.x), __uint_as_float(ua.y));
      const uint32_t b01 = Pack2<T>(__uint_as_float(ua.z), __uint_as_float(ua.w));
      const uint32_t b10 = Pack2<T>(__uint_as_float(ub.x), __uint_as_float(ub.y));
      const uint32_t b11 = Pack2<T>(__uint_as_float(ub.z), __uint_as_float(ub.w));
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
#pragma unroll
        for (int j = 0; j < kNj; ++j) {
          const uint4& lo = wv[2 * (m * kNj + j)];
          const uint4& hi = wv[2 * (m * kNj + j) + 1];
          Mma16816<T>(acc[m][j][i], lo.x, hi.x, lo.y, hi.y, b00, b01);
          Mma16816<T>(acc[m][j][i], lo.z, hi.z, lo.w, hi.w, b10, b11);
        }
      }
    }
  }
  CpAsyncWait<0>();
  __syncthreads();  // every warp is done with its ring: the reduction reuses it

  // Partial sums per warp -> shared, then a fixed-order sum over warps; one
  // pass per weight matrix (GateUp: gate sums kept in registers).
  float* s_red = reinterpret_cast<float*>(s_ring);  // [warp][kBm][kLd]
  const int cols = min(S::kBn, p.n - n0);
  float first[S::kOutPerThread];
#pragma unroll
  for (int m = 0; m < kMats; ++m) {
    if (m > 0) __syncthreads();  // the previous pass has read s_red
#pragma unroll
    for (int j = 0; j < kNj; ++j) {
#pragma unroll
      for (int i = 0; i < kMi; ++i) {
        const int r = i * 8 + 2 * q, c = j * 16 + g;
        float* base = s_red + (warp * S::kBm + r) * S::kLd + c;
        base[0] = acc[m][j][i][0];
        base[S::kLd] = acc[m][j][i][1];
        base[8] = acc[m][j][i][2];
        base[S::kLd + 8] = acc[m][j][i][3];
      }
    }
    __syncthreads();
#pragma unroll
    for (int it = 0; it < S::kOutPerThread; ++it) {
      const int idx = threadIdx.x + it * kGemvThreads;
      const int r = idx / S::kBn, c = idx % S::kBn;
      float sum = s_red[r * S::kLd + c];
#pragma unroll
      for (int wi = 1; wi < kGemvWarps; ++wi) sum += s_red[(wi * S::kBm + r) * S::kLd + c];
      if (kFused && m == 0) {
        first[it] = sum;
      } else if (r < rt.num_rows && c < cols) {
        p.out[static_cast<int64_t>(rt.row_begin + r) * p.n + n0 + c] =
            kFused ? Silu(first[it]) * sum : sum;
      }
    }
  }
}

// Once per device: `kKernel`'s dynamic shared memory limit raised to `smem`;
// returns its resident CTAs per SM. Neither call is stream work (safe during
// graph capture; in practice done by the first, uncaptured step).
template <auto kKernel>
absl::StatusOr<int> PrepareKernel(int threads, int smem) {
  static std::atomic<int> cache[kMaxDevices] = {};
  ASSIGN_OR_RETURN(const int device, CurrentDevice());
  int occupancy = cache[device].load(std::memory_order_relaxed);
  if (occupancy > 0) return occupancy;
  RETURN_IF_CUDA_ERROR(
      cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  RETURN_IF_CUDA_ERROR(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occupancy, kKernel, threads, smem));
  occupancy = std::max(occupancy, 1);
  cache[device].store(occupancy, std::memory_order_relaxed);
  return occupancy;
}

template <typename T, int kMi, int kNj, bool kFused>
struct Gemv {
  using S = GemvShape<kMi, kNj, kFused>;
  static constexpr auto kKernel = GemvKernel<T, kMi, kNj, kFused>;
  // CTAs that fit on the device at once.
  static absl::StatusOr<int64_t> Slots(int num_sms) {
    ASSIGN_OR_RETURN(const int occupancy, PrepareKernel<kKernel>(kGemvThreads, S::kSmemBytes));
    return static_cast<int64_t>(occupancy) * num_sms;
  }
  static int64_t Ctas(const Problem& p) {
    return RowTileBound(p.num_rows, p.num_experts, S::kBm) * CeilDiv(p.n, S::kBn);
  }
  static absl::Status Run(const Problem& p, cudaStream_t stream) {
    RETURN_IF_ERROR(PrepareKernel<kKernel>(kGemvThreads, S::kSmemBytes).status());
    return Launch(kKernel, "GemvKernel", S::kBm, S::kBn, kGemvThreads, S::kSmemBytes, p, stream);
  }
};

}  // namespace

// The narrowest weight tile whose grid fits in one wave (decode: more CTAs
// spread the same bytes in flight over more SMs), else the widest (16 x
// kMaxNj rows).
template <typename T, int kMi, bool kFused>
absl::Status LaunchGemv(const Problem& p, int num_sms, cudaStream_t stream) {
  using G1 = Gemv<T, kMi, 1, kFused>;
  using G2 = Gemv<T, kMi, 2, kFused>;
  ASSIGN_OR_RETURN(const int64_t slots1, G1::Slots(num_sms));
  if (G1::Ctas(p) <= slots1) return G1::Run(p, stream);
  if constexpr (kFused) {
    return G2::Run(p, stream);  // gate + up: 2 x 32 weight rows per CTA at most
  } else {
    ASSIGN_OR_RETURN(const int64_t slots2, G2::Slots(num_sms));
    if (G2::Ctas(p) <= slots2) return G2::Run(p, stream);
    return Gemv<T, kMi, 4, false>::Run(p, stream);
  }
}

// The cases Dispatch (grouped_gemm.cu) launches.
#define EPSERVE_INSTANTIATE_GEMV(T)                                                 \
  template absl::Status LaunchGemv<T, 1, false>(const Problem&, int, cudaStream_t); \
  template absl::Status LaunchGemv<T, 2, false>(const Problem&, int, cudaStream_t); \
  template absl::Status LaunchGemv<T, 4, false>(const Problem&, int, cudaStream_t); \
  template absl::Status LaunchGemv<T, 1, true>(const Problem&, int, cudaStream_t);  \
  template absl::Status LaunchGemv<T, 2, true>(const Problem&, int, cudaStream_t);  \
  template absl::Status LaunchGemv<T, 4, true>(const Problem&, int, cudaStream_t);
EPSERVE_INSTANTIATE_GEMV(__nv_bfloat16)
EPSERVE_INSTANTIATE_GEMV(__half)
#undef EPSERVE_INSTANTIATE_GEMV

}  // namespace epserve::kernels::cuda::grouped_gemm_internal
