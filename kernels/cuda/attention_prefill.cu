// Paged attention for everything but decode batches on the tensor cores
// (contract: attention.cuh; launch choice: attention.cu).
//
//   PrefillKernel (bf16/f16 cache, D in {64, 128, 256}, not a decode batch):
//     flash attention. CTA = 64 consecutive query vectors of a sequence and
//     kv head (16 per warp) x key tiles of 64 (32 for D=256), cp.async double
//     buffering, ldmatrix, mma.sync with q and p rounded to the cache type,
//     fp32 accumulation, online softmax; key tiles past the CTA's last
//     position are never loaded and warps skip tiles entirely above their
//     rows.
//   GenericKernel (f32 cache or any other D, any batch): the same work split
//     in plain fp32 FMA, 8 query vectors per CTA, key tiles of 32 in shared
//     memory (split-K when decoding; CombineKernel of attention_decode.cu
//     merges the splits).
//
// CTAs of both kernels find their sequence by a warp scan over query_start
// (BeginTile, attention_common.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/cuda/cuda_status.h"
#include "common/status.h"
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda::attention_internal {
namespace {

__device__ __forceinline__ void Ldsm4(uint32_t (&r)[4], const void* smem) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

__device__ __forceinline__ void Ldsm4T(uint32_t (&r)[4], const void* smem) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// Four consecutive cache elements as float (p 16-byte aligned for float,
// 8-byte aligned for 16-bit types).
template <typename T>
__device__ __forceinline__ float4 Load4(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return __ldg(reinterpret_cast<const float4*>(p));
  } else {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
    const uint32_t w[2] = {raw.x, raw.y};
    float f[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const auto bits = static_cast<unsigned short>((w[i / 2] >> (16 * (i % 2))) & 0xffffu);
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        f[i] = ToF32(__ushort_as_bfloat16(bits));
      } else {
        f[i] = ToF32(__ushort_as_half(bits));
      }
    }
    return make_float4(f[0], f[1], f[2], f[3]);
  }
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// ---- prefill: flash attention on tensor cores ------------------------------

template <int D>
struct PrefillShape {
  static constexpr int kKeys = D <= 128 ? 64 : 32;  // keys per tile
  static constexpr int kChunks = D / 8;             // 16-byte chunks per row
  // Q tile + double-buffered K and V tiles, 16-bit elements.
  static constexpr int kSmemBytes = (kPrefillVectors * D + 4 * kKeys * D) * 2;
};

// Element offset of 16-byte chunk `ch` of row `row` in a [rows][D] 16-bit
// tile, XOR-swizzled over 8 rows so ldmatrix and cp.async hit distinct banks.
template <int D>
__device__ __forceinline__ int Swz(int row, int ch) {
  return row * D + ((ch ^ (row & 7)) << 3);
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) PrefillKernel(const KernelArgs a) {
  using Shape = PrefillShape<D>;
  constexpr int kKeys = Shape::kKeys, kChunks = Shape::kChunks;
  extern __shared__ uint4 smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);  // [64][D]
  T* k_s = q_s + kPrefillVectors * D;       // [2][kKeys][D]
  T* v_s = k_s + 2 * kKeys * D;             // [2][kKeys][D]

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r = lane >> 2, c = lane & 3;
  const int kv_head = blockIdx.y;
  if (blockIdx.x == 0 && blockIdx.y == 0) CheckQueryLayout(a);
  TileWork w;
  if (!BeginTile(a, kPrefillVectors, D, kv_head, /*split=*/0, &w)) return;
  const int s = w.s, q0 = w.q0, ctx = w.ctx, q_len = w.q_len;
  const int v_begin = w.v_begin, v_end = w.v_end;
  const int first_pos = ctx - q_len;                       // position of query row 0
  const int kend = first_pos + (v_end - 1) / a.group + 1;  // keys [0, kend) are used
  const int num_tiles = (kend + kKeys - 1) / kKeys;

  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;
  const int64_t row_stride = static_cast<int64_t>(a.num_kv_heads) * D;
  const T* kc = static_cast<const T*>(a.k_cache) + static_cast<int64_t>(kv_head) * D;
  const T* vc = static_cast<const T*>(a.v_cache) + static_cast<int64_t>(kv_head) * D;
  auto load_kv = [&](int t, int stage) {
    T* kd = k_s + stage * kKeys * D;
    T* vd = v_s + stage * kKeys * D;
    for (int u = threadIdx.x; u < kKeys * kChunks; u += kThreads) {
      const int row = u / kChunks, ch = u % kChunks;
      const int j = t * kKeys + row;
      const bool valid = j < kend;
      int64_t off = 0;
      if (valid) {
        off = (static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size) *
                  row_stride +
              ch * 8;
      }
      CpAsync16(kd + Swz<D>(row, ch), kc + off, valid);
      CpAsync16(vd + Swz<D>(row, ch), vc + off, valid);
    }
    CpAsyncCommit();
  };
  load_kv(0, 0);

  // Q tile, rounded to the cache type.
  for (int u = threadIdx.x; u < kPrefillVectors * kChunks; u += kThreads) {
    const int vi = u / kChunks, ch = u % kChunks;
    const int v = v_begin + vi;
    float4 x0 = make_float4(0.f, 0.f, 0.f, 0.f), x1 = x0;
    if (v < v_end) {
      const float* qp = a.q + (static_cast<int64_t>(q0) + v / a.group) * a.num_q_heads * D +
                        static_cast<int64_t>(kv_head * a.group + v % a.group) * D + ch * 8;
      x0 = __ldg(reinterpret_cast<const float4*>(qp));
      x1 = __ldg(reinterpret_cast<const float4*>(qp + 4));
    }
    *reinterpret_cast<uint4*>(q_s + Swz<D>(vi, ch)) = make_uint4(
        Pack2<T>(x0.x, x0.y), Pack2<T>(x0.z, x0.w), Pack2<T>(x1.x, x1.y), Pack2<T>(x1.z, x1.w));
  }

  // This lane's rows: vectors va (c-fragment rows r) and va + 8 (rows r + 8).
  const int va = v_begin + warp * 16 + r;
  const int pos[2] = {va < v_end ? first_pos + va / a.group : -1,
                      va + 8 < v_end ? first_pos + (va + 8) / a.group : -1};
  const int warp_first = v_begin + warp * 16;
  const int warp_last_pos =
      warp_first < v_end ? first_pos + (MinI(warp_first + 15, v_end - 1)) / a.group : -1;

  float o[D / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o[nt][e] = 0.0f;
  }
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

  for (int t = 0; t < num_tiles; ++t) {
    if (t + 1 < num_tiles) {
      load_kv(t + 1, (t + 1) & 1);
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    if (warp_last_pos >= t * kKeys) {  // else every key of the tile is above this warp's rows
      const T* ks = k_s + (t & 1) * kKeys * D;
      const T* vs = v_s + (t & 1) * kKeys * D;
      float sc[kKeys / 8][4];
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[nt][e] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qa[4];
        Ldsm4(qa, q_s + Swz<D>(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
        for (int np = 0; np < kKeys / 16; ++np) {
          uint32_t kb[4];
          Ldsm4(kb,
                ks + Swz<D>(16 * np + (lane & 7) + ((lane >> 4) << 3), 2 * kk + ((lane >> 3) & 1)));
          Mma<T>(sc[2 * np], qa[0], qa[1], qa[2], qa[3], kb[0], kb[1]);
          Mma<T>(sc[2 * np + 1], qa[0], qa[1], qa[2], qa[3], kb[2], kb[3]);
        }
      }
      // Causal mask (key j visible to a row at position pos iff j <= pos)
      // and online softmax over the 4 lanes of each row.
      float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = t * kKeys + nt * 8 + 2 * c + (e & 1);
          sc[nt][e] = j <= pos[e >> 1] ? sc[nt][e] * a.scale_log2 : -INFINITY;
          tile_max[e >> 1] = fmaxf(tile_max[e >> 1], sc[nt][e]);
        }
      }
      float alpha[2], offset[2], row_sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(kFullMask, tile_max[h], 1));
        tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(kFullMask, tile_max[h], 2));
        const float m_new = fmaxf(m[h], tile_max[h]);
        offset[h] = MaxOffset(m_new);
        alpha[h] = exp2f(m[h] - offset[h]);
        m[h] = m_new;
      }
#pragma unroll
      for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          sc[nt][e] = exp2f(sc[nt][e] - offset[e >> 1]);
          row_sum[e >> 1] += sc[nt][e];
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) l[h] = l[h] * alpha[h] + row_sum[h];
#pragma unroll
      for (int nt = 0; nt < D / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) o[nt][e] *= alpha[e >> 1];
      }
      // O += P V (P from the score fragments, rounded to T).
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        const uint32_t pa0 = Pack2<T>(sc[2 * kk][0], sc[2 * kk][1]);
        const uint32_t pa1 = Pack2<T>(sc[2 * kk][2], sc[2 * kk][3]);
        const uint32_t pa2 = Pack2<T>(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
        const uint32_t pa3 = Pack2<T>(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
          uint32_t vb[4];
          Ldsm4T(vb, vs + Swz<D>(16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3),
                                 2 * dp + (lane >> 4)));
          Mma<T>(o[2 * dp], pa0, pa1, pa2, pa3, vb[0], vb[1]);
          Mma<T>(o[2 * dp + 1], pa0, pa1, pa2, pa3, vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // the stage read here is refilled next iteration
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(kFullMask, l[h], 1);
    l[h] += __shfl_xor_sync(kFullMask, l[h], 2);
    const int v = va + 8 * h;
    if (v >= v_end) continue;
    const int64_t row = static_cast<int64_t>(q0) + v / a.group;
    float* dst = a.out + row * a.num_q_heads * D +
                 static_cast<int64_t>(kv_head * a.group + v % a.group) * D + 2 * c;
    const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      *reinterpret_cast<float2*>(dst + nt * 8) =
          make_float2(o[nt][2 * h] * inv, o[nt][2 * h + 1] * inv);
    }
  }
}

// ---- generic: fp32 FMA (f32 cache, small head dims) ------------------------

template <int D>
struct GenericShape {
  static constexpr int kSlots = (D + 31) / 32;  // output dims per lane
  static constexpr int kKStride = D + 1;        // padded K rows: lane j reads row j
  static constexpr int kSmemBytes =
      (kGenericVectors * D + kGenericKeys * kKStride + kGenericKeys * D) * 4;
};

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) GenericKernel(const KernelArgs a) {
  using Shape = GenericShape<D>;
  constexpr int kSlots = Shape::kSlots, kKStride = Shape::kKStride;
  constexpr int kPerWarp = kGenericVectors / kWarps;
  static_assert(kPerWarp == 2, "two query vectors per warp");
  extern __shared__ float4 smem_f4[];
  float* q_s = reinterpret_cast<float*>(smem_f4);  // [8][D]
  float* k_s = q_s + kGenericVectors * D;          // [32][D + 1]
  float* v_s = k_s + kGenericKeys * kKStride;      // [32][D] (16-byte aligned: D % 16 == 0)

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kv_head = blockIdx.y, split = blockIdx.z;
  if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) CheckQueryLayout(a);
  TileWork w;
  if (!BeginTile(a, kGenericVectors, D, kv_head, split, &w)) return;
  const int s = w.s, q0 = w.q0, ctx = w.ctx, q_len = w.q_len;
  const int v_begin = w.v_begin, v_end = w.v_end;
  const int first_pos = ctx - q_len;
  const int kend = first_pos + (v_end - 1) / a.group + 1;
  int k0 = 0, k1 = kend;
  if (a.num_splits > 1) {
    const int chunk = SplitChunk(ctx, a.num_splits);
    k0 = static_cast<int>(Min64(static_cast<int64_t>(split) * chunk, kend));
    k1 = static_cast<int>(Min64(static_cast<int64_t>(k0) + chunk, kend));
  }

  for (int u = threadIdx.x; u < kGenericVectors * D; u += kThreads) {
    const int v = v_begin + u / D, d = u % D;
    float x = 0.0f;
    if (v < v_end) {
      x = a.q[(static_cast<int64_t>(q0) + v / a.group) * a.num_q_heads * D +
              static_cast<int64_t>(kv_head * a.group + v % a.group) * D + d];
    }
    q_s[u] = x;
  }

  int pos[kPerWarp];
#pragma unroll
  for (int e = 0; e < kPerWarp; ++e) {
    const int v = v_begin + warp * kPerWarp + e;
    pos[e] = v < v_end ? first_pos + v / a.group : -1;
  }
  const int warp_last_pos = MaxI(pos[0], pos[1]);
  float m[kPerWarp], l[kPerWarp], acc[kPerWarp][kSlots];
#pragma unroll
  for (int e = 0; e < kPerWarp; ++e) {
    m[e] = -INFINITY;
    l[e] = 0.0f;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) acc[e][i] = 0.0f;
  }

  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;
  const int64_t row_stride = static_cast<int64_t>(a.num_kv_heads) * D;
  const T* kc = static_cast<const T*>(a.k_cache) + static_cast<int64_t>(kv_head) * D;
  const T* vc = static_cast<const T*>(a.v_cache) + static_cast<int64_t>(kv_head) * D;
  for (int kt = k0; kt < k1; kt += kGenericKeys) {
    __syncthreads();  // q_s written / previous tile consumed
    for (int u = threadIdx.x; u < kGenericKeys * (D / 4); u += kThreads) {
      const int jr = u / (D / 4), d = (u % (D / 4)) * 4;
      const int j = kt + jr;
      float4 kx = make_float4(0.f, 0.f, 0.f, 0.f), vx = kx;
      if (j < k1) {
        const int64_t off =
            (static_cast<int64_t>(table[j / a.block_size]) * a.block_size + j % a.block_size) *
                row_stride +
            d;
        kx = Load4(kc + off);
        vx = Load4(vc + off);
      }
      float* kd = k_s + jr * kKStride + d;
      kd[0] = kx.x;
      kd[1] = kx.y;
      kd[2] = kx.z;
      kd[3] = kx.w;
      *reinterpret_cast<float4*>(v_s + jr * D + d) = vx;
    }
    __syncthreads();
    if (warp_last_pos < kt) continue;  // warp-uniform: the whole tile is masked

    const int j = kt + lane;
    float dot[kPerWarp] = {0.0f, 0.0f};
    const float* kr = k_s + lane * kKStride;
    const float* qa = q_s + warp * kPerWarp * D;
#pragma unroll 16
    for (int d = 0; d < D; ++d) {
      const float kd = kr[d];
      dot[0] += qa[d] * kd;
      dot[1] += qa[D + d] * kd;
    }
    float p[kPerWarp], alpha[kPerWarp];
#pragma unroll
    for (int e = 0; e < kPerWarp; ++e) {
      const float sc = (j < k1 && j <= pos[e]) ? dot[e] * a.scale_log2 : -INFINITY;
      const float m_new = fmaxf(m[e], WarpMax(sc));
      const float offset = MaxOffset(m_new);
      alpha[e] = exp2f(m[e] - offset);
      p[e] = exp2f(sc - offset);
      l[e] = l[e] * alpha[e] + WarpSum(p[e]);
      m[e] = m_new;
#pragma unroll
      for (int i = 0; i < kSlots; ++i) acc[e][i] *= alpha[e];
    }
#pragma unroll 4
    for (int jj = 0; jj < kGenericKeys; ++jj) {
      const float p0 = __shfl_sync(kFullMask, p[0], jj);
      const float p1 = __shfl_sync(kFullMask, p[1], jj);
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
        const int d = lane + 32 * i;
        if (d < D) {
          const float vv = v_s[jj * D + d];
          acc[0][i] += p0 * vv;
          acc[1][i] += p1 * vv;
        }
      }
    }
  }

  const int64_t split_base = static_cast<int64_t>(split) * a.num_tokens * a.num_q_heads;
#pragma unroll
  for (int e = 0; e < kPerWarp; ++e) {
    const int v = v_begin + warp * kPerWarp + e;
    if (v >= v_end) continue;
    const int64_t item =
        (static_cast<int64_t>(q0) + v / a.group) * a.num_q_heads + kv_head * a.group + v % a.group;
    const float inv = l[e] > 0.0f ? 1.0f / l[e] : 0.0f;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const int d = lane + 32 * i;
      if (d >= D) continue;
      if (a.num_splits == 1) {
        a.out[item * D + d] = acc[e][i] * inv;
      } else if (l[e] > 0.0f) {
        a.ws_acc[(split_base + item) * D + d] = acc[e][i];
      }
    }
    if (a.num_splits > 1 && lane == 0) a.ws_ml[split_base + item] = make_float2(m[e], l[e]);
  }
}

// Kernels over 48 KiB of dynamic shared memory must opt in (per device, so on
// every launch; not a stream operation, legal during graph capture).
template <typename Kernel>
absl::Status AllowSmem(Kernel kernel, int bytes) {
  if (bytes <= 48 * 1024) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  return absl::OkStatus();
}

}  // namespace

template <typename T, int D>
absl::Status LaunchPrefill(const KernelArgs& a, dim3 grid, cudaStream_t stream) {
  constexpr int kSmem = PrefillShape<D>::kSmemBytes;
  RETURN_IF_ERROR(AllowSmem(PrefillKernel<T, D>, kSmem));
  PrefillKernel<T, D><<<grid, kThreads, kSmem, stream>>>(a);
  return LaunchStatus("PagedAttention prefill");
}

template <typename T, int D>
absl::Status LaunchGeneric(const KernelArgs& a, dim3 grid, cudaStream_t stream) {
  constexpr int kSmem = GenericShape<D>::kSmemBytes;
  RETURN_IF_ERROR(AllowSmem(GenericKernel<T, D>, kSmem));
  GenericKernel<T, D><<<grid, kThreads, kSmem, stream>>>(a);
  return LaunchStatus("PagedAttention generic");
}

// The pairs of attention_common.cuh.
#define EPSERVE_INSTANTIATE_PREFILL(T, D)  \
  static_assert(kTensorCoreKernels<T, D>); \
  template absl::Status LaunchPrefill<T, D>(const KernelArgs&, dim3, cudaStream_t);
EPSERVE_ATTENTION_TENSOR_CORE_PAIRS(EPSERVE_INSTANTIATE_PREFILL)
#undef EPSERVE_INSTANTIATE_PREFILL

#define EPSERVE_INSTANTIATE_GENERIC(T, D)   \
  static_assert(!kTensorCoreKernels<T, D>); \
  template absl::Status LaunchGeneric<T, D>(const KernelArgs&, dim3, cudaStream_t);
EPSERVE_ATTENTION_GENERIC_PAIRS(EPSERVE_INSTANTIATE_GENERIC)
#undef EPSERVE_INSTANTIATE_GENERIC

}  // namespace epserve::kernels::cuda::attention_internal
