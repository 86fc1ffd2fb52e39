// GroupedExpertMatMul: out rows of expert e = rows of e · weights[e]^T, every
// expert in one launch. GroupedExpertGateUp: silu(rows · gate[e]^T) *
// (rows · up[e]^T), the first half of the experts' SwiGLU MLPs.
//
// Row tiles. The grid's x index is a row tile; expert e owns
// ceil(count_e / BM) consecutive tile indices, experts in id order:
//
//   expert_offsets  0        5            5     13 ...   (device)
//   tiles (BM=4)    [e0 t0][e0 t1]  (e1: none)  [e2 t0][e2 t1] ...
//   blockIdx.x      0      1                    2      3      ...  past the last: exit
//
// Each CTA loads expert_offsets into shared memory and one warp scans the
// per-expert tile counts to find its expert and rows (FindRowTile); the
// experts' weight pointers are read speculatively (thread e reads expert e's)
// while the offsets are still in flight. The grid is sized from host-known
// bounds only: at most min(R, (R + min(R, E) * (BM - 1)) / BM) tiles. grid.y
// is the N tile.
//
// Three kernels, chosen on the host from the mean rows per routed expert
// (R / min(R, E)):
//  * GemvKernel (bf16/fp16, mean <= 32; decode): memory-bound on weights.
//    A CTA (4 warps) owns 8/16/32 rows x BN = 16/32/64 weight rows (for
//    GateUp: BN gate rows and the same BN up rows); the warps split K in
//    32-wide chunks. Each thread streams the 16-byte pieces it will use as
//    mma.sync m16n8k16 fragments (weights are the MMA's M side, token rows
//    its N side) with cp.async into its own slots of a per-warp ring of
//    stages in shared memory, so many chunks are in flight without holding
//    registers, and reads them back itself (no barrier in the main loop).
//    Every weight byte of the tile is read once per CTA. The warps' partial
//    sums meet in shared memory and are added in a fixed order. BN is the
//    narrowest for which the grid fits in one wave (more CTAs, same bytes
//    in flight), else the widest.
//  * TcKernel (bf16/fp16, mean > 32; prefill): BM = 64/128 x BN = 128 x
//    BK = 32, 8 warps (2 x 4), mma.sync m16n8k16 from ldmatrix, weights by
//    double-buffered cp.async, rows loaded as float32 one tile ahead into
//    registers and stored to shared memory rounded to the weight type.
//  * F32Kernel (float32 weights; tiny test models): 64 x 64 x 16 tiles in
//    fp32, any N and K.
// GateUp on TcKernel / F32Kernel: the gate product goes to the workspace,
// then the up launch's epilogue writes silu(gate) * up.
// Rows of an expert whose weight pointer is null get zeros and set
// kErrMissingExpert.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"
#include "common/status.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/moe.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxExperts = 1024;  // expert_offsets staged in shared memory
constexpr int kMaxDevices = 64;    // per-device caches

absl::Status Bad(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

// Everything a kernel needs (passed by value).
struct Problem {
  const float* rows;  // [R, K]
  int num_rows;
  int k;
  const int32_t* expert_offsets;  // [E + 1]
  int num_experts;
  const void* const* weights;   // [E] device pointers to [N, K]
  const void* const* weights2;  // GemvKernel GateUp: the up weights; else null
  int n;
  float* out;         // [R, N]
  const float* gate;  // TcKernel / F32Kernel: non-null -> out = silu(gate) * product
  uint32_t* errors;
};

// Like the CPU SiluAndMul (kernels/cpu/elementwise.cc).
__device__ __forceinline__ float Silu(float g) { return g / (1.0f + expf(-g)); }

// ---- row tiles -------------------------------------------------------------

struct RowTile {
  int expert;      // -1: past the last real tile
  int row_begin;   // first permuted row
  int num_rows;    // 1..BM
  const void* w;   // weights[expert]
  const void* w2;  // weights2[expert] (null without weights2)
};

// Upper bound on the number of row tiles for R rows over E experts.
int64_t RowTileBound(int64_t num_rows, int64_t num_experts, int64_t bm) {
  const int64_t routed = std::min(num_rows, num_experts);  // experts with rows
  return std::min(num_rows, (num_rows + routed * (bm - 1)) / bm);
}

// A read-only device pointer; volatile so that it is issued where written
// (early), not sunk to its use.
__device__ __forceinline__ const void* LoadPtr(const void* const* p) {
  unsigned long long v;
  asm volatile("ld.global.nc.u64 %0, [%1];\n" : "=l"(v) : "l"(p));
  return reinterpret_cast<const void*>(v);
}

// The row tile `tile` (see the file comment) and its expert's weight
// pointers. Called by every thread. Offsets are clamped to [0, R] and counts
// to >= 0, so even corrupt offsets give in-bounds rows.
__device__ RowTile FindRowTile(const Problem& p, int bm, int tile, int* s_off, RowTile* s_tile) {
  const int tid = threadIdx.x;
  // Speculative: thread e holds expert e's pointers, read while the offsets
  // load (experts >= blockDim.x are read after the scan).
  const bool pre = tid < p.num_experts;
  const void* pre_w = pre ? LoadPtr(p.weights + tid) : nullptr;
  const void* pre_w2 = pre && p.weights2 != nullptr ? LoadPtr(p.weights2 + tid) : nullptr;
  for (int i = tid; i <= p.num_experts; i += blockDim.x) {
    s_off[i] = min(max(p.expert_offsets[i], 0), p.num_rows);
  }
  __syncthreads();
  if (tid < 32) {
    const int lane = tid;
    int carry = 0;
    bool found = false;
    for (int base = 0; base < p.num_experts && !found; base += 32) {
      const int e = base + lane;
      const int count = e < p.num_experts ? max(s_off[e + 1] - s_off[e], 0) : 0;
      const int tiles = (count + bm - 1) / bm;
      int incl = tiles;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int o = __shfl_up_sync(kFullMask, incl, d);
        if (lane >= d) incl += o;
      }
      const int first = carry + incl - tiles;
      const bool hit = tile >= first && tile < first + tiles;
      if (hit) {
        const int local = (tile - first) * bm;
        *s_tile = RowTile{e, s_off[e] + local, min(bm, count - local), nullptr, nullptr};
      }
      found = __ballot_sync(kFullMask, hit) != 0;
      carry += __shfl_sync(kFullMask, incl, 31);
    }
    if (!found && lane == 0) *s_tile = RowTile{-1, 0, 0, nullptr, nullptr};
  }
  __syncthreads();
  const int e = s_tile->expert;
  if (e >= 0) {
    if (e < static_cast<int>(blockDim.x)) {
      if (tid == e) {
        s_tile->w = pre_w;
        s_tile->w2 = pre_w2;
      }
    } else if (tid == 0) {
      s_tile->w = LoadPtr(p.weights + e);
      s_tile->w2 = p.weights2 != nullptr ? LoadPtr(p.weights2 + e) : nullptr;
    }
  }
  __syncthreads();
  return *s_tile;
}

// A CTA whose expert has no weights: zeros for its [num_rows, bn] block.
__device__ void MissingExpert(const RowTile& rt, int n0, int bn, const Problem& p) {
  if (blockIdx.y == 0 && threadIdx.x == 0) atomicOr(p.errors, kErrMissingExpert);
  const int cols = min(bn, p.n - n0);
  for (int i = threadIdx.x; i < rt.num_rows * cols; i += blockDim.x) {
    p.out[static_cast<int64_t>(rt.row_begin + i / cols) * p.n + n0 + i % cols] = 0.0f;
  }
}

// ---- tensor-core primitives -------------------------------------------------

// Two floats as one 32-bit register of T pair (lo = a), round to nearest even.
template <typename T>
__device__ __forceinline__ uint32_t Pack2(float a, float b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

// d += a · b, m16n8k16, row.col, fp32 accumulate.
template <typename T>
__device__ __forceinline__ void Mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// 16 bytes global -> shared; zero-filled when !pred (src is then not read).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool pred) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

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

// ---- large M: TcKernel --------------------------------------------------------

constexpr int kTcThreads = 256;  // 8 warps: 2 along M x 4 along N
constexpr int kTcBn = 128;
constexpr int kTcBk = 32;
constexpr int kTcLd = kTcBk + 8;  // 80-byte smem rows: ldmatrix bank-conflict free

template <typename T, int kBm>
__global__ void __launch_bounds__(kTcThreads, 2) TcKernel(const Problem p) {
  constexpr int kWm = kBm / 2;                         // warp tile rows
  constexpr int kMi = kWm / 16;                        // m16 tiles per warp
  constexpr int kNi = 4;                               // n8 tiles per warp (32 columns)
  constexpr int kXv = kBm * kTcBk / 4 / kTcThreads;    // float4 of rows per thread per stage
  constexpr int kWv = kTcBn * kTcBk / 8 / kTcThreads;  // 16-byte weight chunks per thread
  __shared__ alignas(16) T s_a[2][kBm][kTcLd];
  __shared__ alignas(16) T s_b[2][kTcBn][kTcLd];
  __shared__ int s_off[kMaxExperts + 1];
  __shared__ RowTile s_tile;

  const int n0 = blockIdx.y * kTcBn;
  const RowTile rt = FindRowTile(p, kBm, blockIdx.x, s_off, &s_tile);
  if (rt.expert < 0) return;
  const T* w = static_cast<const T*>(rt.w);
  if (w == nullptr) {
    MissingExpert(rt, n0, kTcBn, p);
    return;
  }
  const int k = p.k, n = p.n;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int warp_m = warp >> 2, warp_n = warp & 3;
  const float* x = p.rows + static_cast<int64_t>(rt.row_begin) * k;
  const int num_k_tiles = (k + kTcBk - 1) / kTcBk;

  float4 xr[kXv];
  auto load_x = [&](int kt) {
#pragma unroll
    for (int v = 0; v < kXv; ++v) {
      const int idx = tid + v * kTcThreads;
      const int r = idx >> 3, c = (idx & 7) * 4;
      const int kk = kt * kTcBk + c;
      // Branch-free: rows past the tile read row 0 (never stored); k past
      // the end reads k = 0 and is zeroed.
      const bool k_in = kk < k;
      const int64_t off = static_cast<int64_t>(r < rt.num_rows ? r : 0) * k + (k_in ? kk : 0);
      xr[v] = __ldg(reinterpret_cast<const float4*>(x + off));
      if (!k_in) xr[v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  };
  auto store_x = [&](int stage) {
#pragma unroll
    for (int v = 0; v < kXv; ++v) {
      const int idx = tid + v * kTcThreads;
      const int r = idx >> 3, c = (idx & 7) * 4;
      *reinterpret_cast<uint2*>(&s_a[stage][r][c]) =
          make_uint2(Pack2<T>(xr[v].x, xr[v].y), Pack2<T>(xr[v].z, xr[v].w));
    }
  };
  auto load_w = [&](int kt, int stage) {
#pragma unroll
    for (int v = 0; v < kWv; ++v) {
      const int idx = tid + v * kTcThreads;
      const int r = idx >> 2, c = (idx & 3) * 8;
      const int kk = kt * kTcBk + c;
      const bool in = n0 + r < n && kk < k;  // k % 8 == 0
      const T* src = in ? w + static_cast<int64_t>(n0 + r) * k + kk : w;
      CpAsync16(&s_b[stage][r][c], src, in);
    }
  };

  float acc[kMi][kNi][4];
#pragma unroll
  for (int i = 0; i < kMi; ++i)
#pragma unroll
    for (int j = 0; j < kNi; ++j)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

  if (num_k_tiles > 0) {
    load_x(0);
    load_w(0, 0);
    CpAsyncCommit();
    store_x(0);
  }
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < num_k_tiles;
    if (more) {
      load_w(kt + 1, cur ^ 1);
      load_x(kt + 1);
    }
    CpAsyncCommit();  // possibly empty: keeps the group count uniform
    CpAsyncWait<1>();
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < kTcBk; ks += 16) {
      uint32_t a[kMi][4];
#pragma unroll
      for (int i = 0; i < kMi; ++i) {
        LdMatrixX4(a[i], &s_a[cur][warp_m * kWm + i * 16 + (lane & 15)][ks + (lane >> 4) * 8]);
      }
      uint32_t b[kNi][2];
#pragma unroll
      for (int p = 0; p < kNi / 2; ++p) {
        uint32_t r4[4];
        LdMatrixX4(r4, &s_b[cur][warp_n * 32 + p * 16 + (lane & 7) + ((lane >> 4) << 3)]
                           [ks + ((lane >> 3) & 1) * 8]);
        b[2 * p][0] = r4[0];
        b[2 * p][1] = r4[1];
        b[2 * p + 1][0] = r4[2];
        b[2 * p + 1][1] = r4[3];
      }
#pragma unroll
      for (int i = 0; i < kMi; ++i)
#pragma unroll
        for (int j = 0; j < kNi; ++j)
          Mma16816<T>(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j][0], b[j][1]);
    }
    if (more) store_x(cur ^ 1);
    __syncthreads();
  }

  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int i = 0; i < kMi; ++i) {
#pragma unroll
    for (int j = 0; j < kNi; ++j) {
      const int col = n0 + warp_n * 32 + j * 8 + 2 * q;
      if (col >= n) continue;  // n even: col + 1 < n too
      const int r = warp_m * kWm + i * 16 + g;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (r + 8 * h >= rt.num_rows) continue;
        const int64_t o = static_cast<int64_t>(rt.row_begin + r + 8 * h) * n + col;
        float2 v = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        if (p.gate != nullptr) {  // GateUp's up launch
          const float2 gv = *reinterpret_cast<const float2*>(p.gate + o);
          v = make_float2(Silu(gv.x) * v.x, Silu(gv.y) * v.y);
        }
        *reinterpret_cast<float2*>(p.out + o) = v;
      }
    }
  }
}

// ---- float32 weights: F32Kernel -----------------------------------------------

constexpr int kF32Bm = 64, kF32Bn = 64, kF32Bk = 16, kF32Threads = 256;
static_assert(kF32Bm == kF32Bn && kF32Bm * kF32Bk % kF32Threads == 0,
              "F32Kernel loads both tiles in one loop");

__global__ void __launch_bounds__(kF32Threads) F32Kernel(const Problem p) {
  __shared__ float s_a[kF32Bk][kF32Bm + 4];
  __shared__ float s_b[kF32Bk][kF32Bn + 4];
  __shared__ int s_off[kMaxExperts + 1];
  __shared__ RowTile s_tile;

  const int n0 = blockIdx.y * kF32Bn;
  const RowTile rt = FindRowTile(p, kF32Bm, blockIdx.x, s_off, &s_tile);
  if (rt.expert < 0) return;
  const float* w = static_cast<const float*>(rt.w);
  if (w == nullptr) {
    MissingExpert(rt, n0, kF32Bn, p);
    return;
  }
  const int k = p.k, n = p.n;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const float* x = p.rows + static_cast<int64_t>(rt.row_begin) * k;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < k; k0 += kF32Bk) {
#pragma unroll
    for (int v = 0; v < kF32Bm * kF32Bk / kF32Threads; ++v) {
      const int idx = tid + v * kF32Threads;
      const int r = idx / kF32Bk, kk = idx % kF32Bk;
      s_a[kk][r] = r < rt.num_rows && k0 + kk < k ? x[static_cast<int64_t>(r) * k + k0 + kk] : 0.0f;
      s_b[kk][r] = n0 + r < n && k0 + kk < k ? w[static_cast<int64_t>(n0 + r) * k + k0 + kk] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kF32Bk; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = s_a[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = s_b[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = ty + 16 * i;
    if (r >= rt.num_rows) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = n0 + tx + 16 * j;
      if (col >= n) continue;
      const int64_t o = static_cast<int64_t>(rt.row_begin + r) * n + col;
      // GateUp's up launch: silu(gate) * up.
      p.out[o] = p.gate != nullptr ? Silu(p.gate[o]) * acc[i][j] : acc[i][j];
    }
  }
}

// ---- host ---------------------------------------------------------------------

// Device index for the per-device caches.
absl::StatusOr<int> CurrentDevice() {
  int device = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices) {
    return absl::InternalError(
        absl::StrCat("GroupedExpertMatMul: device ", device, " is outside the per-device caches"));
  }
  return device;
}

// SM count of the current device, queried once per device (no stream work,
// so it is safe during graph capture).
absl::StatusOr<int> NumSms() {
  static std::atomic<int> cache[kMaxDevices] = {};
  ASSIGN_OR_RETURN(const int device, CurrentDevice());
  int sms = cache[device].load(std::memory_order_relaxed);
  if (sms > 0) return sms;
  RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  sms = std::max(sms, 1);
  cache[device].store(sms, std::memory_order_relaxed);
  return sms;
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

absl::Status Launch(void (*kernel)(Problem), const char* name, int64_t bm, int64_t bn, int threads,
                    int smem, const Problem& p, cudaStream_t stream) {
  const int64_t row_tiles = RowTileBound(p.num_rows, p.num_experts, bm);
  const int64_t n_tiles = CeilDiv(p.n, bn);
  if (n_tiles > 65535) {
    return Bad("GroupedExpertMatMul", absl::StrCat("n = ", p.n, " is too large"));
  }
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(n_tiles));
  kernel<<<grid, threads, smem, stream>>>(p);
  return LaunchStatus(name);
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

bool AlignedTo(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Shared argument checks of GroupedExpertMatMul and GroupedExpertGateUp.
absl::Status CheckArgs(const char* op, const float* rows, int64_t num_rows, int64_t k,
                       int64_t num_experts, Elem weight_type, int64_t n, const float* out) {
  if (num_rows < 0 || k < 0 || n < 0) {
    return Bad(op, absl::StrCat("sizes: expected >= 0, found rows=", num_rows, " k=", k, " n=", n));
  }
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return Bad(op, absl::StrCat("num_experts: expected 1..", kMaxExperts, ", found ", num_experts));
  }
  if (num_rows > INT_MAX || k > INT_MAX || n > INT_MAX) {
    return Bad(op, absl::StrCat("rows=", num_rows, " k=", k, " n=", n, ": expected int32 sizes"));
  }
  if (weight_type != Elem::kF32 && (n % 16 != 0 || k % 16 != 0)) {
    return Bad(op, absl::StrCat("bfloat16/float16 weights need n and k multiples of 16, found n=",
                                n, " k=", k));
  }
  if (num_rows > 0 && n > 0 && weight_type != Elem::kF32 &&
      (!AlignedTo(rows, 16) || !AlignedTo(out, 8))) {
    return Bad(op, "rows must be 16-byte and out 8-byte aligned");
  }
  return absl::OkStatus();
}

// Mean rows per routed expert; the host cannot see the real distribution.
int64_t MeanRows(int64_t num_rows, int64_t num_experts) {
  return CeilDiv(num_rows, std::max<int64_t>(1, std::min(num_rows, num_experts)));
}

// GemvKernel takes batches of up to this many mean rows per expert; 0 sends
// every bf16/fp16 problem to TcKernel.
constexpr int64_t kGemvMaxMeanRows = 32;

// GateUp runs as gate -> workspace, then up with a silu-mul epilogue.
bool GateUpInTwoLaunches(int64_t num_rows, int64_t num_experts, Elem weight_type) {
  return weight_type == Elem::kF32 || MeanRows(num_rows, num_experts) > kGemvMaxMeanRows;
}

// One GEMM (or GateUp's fused GEMV) on the kernel the sizes call for.
absl::Status Dispatch(const Problem& p, Elem weight_type, bool fused, cudaStream_t stream) {
  if (weight_type == Elem::kF32) {
    return Launch(F32Kernel, "F32Kernel", kF32Bm, kF32Bn, kF32Threads, 0, p, stream);
  }
  const int64_t mean_rows = MeanRows(p.num_rows, p.num_experts);
  ASSIGN_OR_RETURN(const int num_sms, NumSms());
  return DispatchElem(weight_type, [&](auto tag) -> absl::Status {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float>) {
      return absl::InternalError("GroupedExpertMatMul: float32 reached the tensor-core path");
    } else {
      if (mean_rows <= kGemvMaxMeanRows) {
        if (fused) {
          if (mean_rows <= 8) return LaunchGemv<T, 1, true>(p, num_sms, stream);
          if (mean_rows <= 16) return LaunchGemv<T, 2, true>(p, num_sms, stream);
          return LaunchGemv<T, 4, true>(p, num_sms, stream);
        }
        if (mean_rows <= 8) return LaunchGemv<T, 1, false>(p, num_sms, stream);
        if (mean_rows <= 16) return LaunchGemv<T, 2, false>(p, num_sms, stream);
        return LaunchGemv<T, 4, false>(p, num_sms, stream);
      }
      if (fused) return absl::InternalError("GroupedExpertGateUp: fused launch for large M");
      if (mean_rows <= 96) {
        return Launch(TcKernel<T, 64>, "TcKernel", 64, kTcBn, kTcThreads, 0, p, stream);
      }
      return Launch(TcKernel<T, 128>, "TcKernel", 128, kTcBn, kTcThreads, 0, p, stream);
    }
  });
}

}  // namespace

size_t GroupedExpertMatMulWorkspaceBytes(int64_t /*num_rows*/, int64_t /*k*/, int64_t /*n*/,
                                         int64_t /*num_experts*/, Elem /*weight_type*/) {
  return 0;
}

absl::Status GroupedExpertMatMul(const float* rows, int64_t num_rows, int64_t k,
                                 const int32_t* expert_offsets, int64_t num_experts,
                                 const void* const* expert_weights, Elem weight_type, int64_t n,
                                 float* out, void* /*workspace*/, size_t /*workspace_bytes*/,
                                 uint32_t* errors, cudaStream_t stream) {
  RETURN_IF_ERROR(
      CheckArgs("GroupedExpertMatMul", rows, num_rows, k, num_experts, weight_type, n, out));
  if (num_rows == 0 || n == 0) return absl::OkStatus();
  const Problem p{rows,
                  static_cast<int>(num_rows),
                  static_cast<int>(k),
                  expert_offsets,
                  static_cast<int>(num_experts),
                  expert_weights,
                  nullptr,
                  static_cast<int>(n),
                  out,
                  nullptr,
                  errors};
  return Dispatch(p, weight_type, /*fused=*/false, stream);
}

size_t GroupedExpertGateUpWorkspaceBytes(int64_t num_rows, int64_t /*k*/, int64_t n,
                                         int64_t num_experts, Elem weight_type) {
  if (num_rows <= 0 || n <= 0 || num_experts < 1) return 0;
  if (!GateUpInTwoLaunches(num_rows, num_experts, weight_type)) return 0;
  return static_cast<size_t>(num_rows) * static_cast<size_t>(n) * sizeof(float);
}

absl::Status GroupedExpertGateUp(const float* rows, int64_t num_rows, int64_t k,
                                 const int32_t* expert_offsets, int64_t num_experts,
                                 const void* const* gate_weights, const void* const* up_weights,
                                 Elem weight_type, int64_t n, float* out, void* workspace,
                                 size_t workspace_bytes, uint32_t* errors, cudaStream_t stream) {
  constexpr const char* kOp = "GroupedExpertGateUp";
  RETURN_IF_ERROR(CheckArgs(kOp, rows, num_rows, k, num_experts, weight_type, n, out));
  if (num_rows == 0 || n == 0) return absl::OkStatus();
  Problem p{rows,
            static_cast<int>(num_rows),
            static_cast<int>(k),
            expert_offsets,
            static_cast<int>(num_experts),
            gate_weights,
            up_weights,
            static_cast<int>(n),
            out,
            nullptr,
            errors};
  if (!GateUpInTwoLaunches(num_rows, num_experts, weight_type)) {
    return Dispatch(p, weight_type, /*fused=*/true, stream);  // one launch, both matrices
  }
  const size_t need = GroupedExpertGateUpWorkspaceBytes(num_rows, k, n, num_experts, weight_type);
  if (workspace == nullptr || workspace_bytes < need || !AlignedTo(workspace, 16)) {
    return Bad(kOp, absl::StrCat("workspace: expected ", need, " bytes, 16-byte aligned, found ",
                                 workspace_bytes, " at ", reinterpret_cast<uintptr_t>(workspace)));
  }
  float* gate_out = static_cast<float*>(workspace);
  // gate -> workspace; then up, whose epilogue writes silu(gate) * up.
  p.weights2 = nullptr;
  p.out = gate_out;
  RETURN_IF_ERROR(Dispatch(p, weight_type, /*fused=*/false, stream));
  p.weights = up_weights;
  p.out = out;
  p.gate = gate_out;
  return Dispatch(p, weight_type, /*fused=*/false, stream);
}

}  // namespace epserve::kernels::cuda
