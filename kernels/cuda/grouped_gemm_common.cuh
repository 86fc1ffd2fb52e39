// Shared by the grouped expert GEMM kernels (grouped_gemm.cu: TcKernel,
// F32Kernel and the host dispatch; grouped_gemm_gemv.cu: GemvKernel): the
// kernel arguments, the row tiles (file comment of grouped_gemm.cu), the
// tensor-core primitives and the host pieces both files launch with.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda::grouped_gemm_internal {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxExperts = 1024;  // expert_offsets staged in shared memory
constexpr int kMaxDevices = 64;    // per-device caches

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
inline int64_t RowTileBound(int64_t num_rows, int64_t num_experts, int64_t bm) {
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
inline __device__ RowTile FindRowTile(const Problem& p, int bm, int tile, int* s_off,
                                      RowTile* s_tile) {
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
inline __device__ void MissingExpert(const RowTile& rt, int n0, int bn, const Problem& p) {
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

// ---- host ---------------------------------------------------------------------

// Device index for the per-device caches (< kMaxDevices).
absl::StatusOr<int> CurrentDevice();

// `kernel` over the row tiles of height `bm` (RowTileBound) x N tiles of
// width `bn`, then the launch status under `name`.
absl::Status Launch(void (*kernel)(Problem), const char* name, int64_t bm, int64_t bn, int threads,
                    int smem, const Problem& p, cudaStream_t stream);

// GemvKernel for T = bf16 / fp16 weights, 8 * kMi token rows per CTA, gate
// and up in one pass when kFused (p.weights2 set), on the narrowest weight
// tile whose grid fits the device's `num_sms` in one wave. Instantiated in
// grouped_gemm_gemv.cu for the cases Dispatch (grouped_gemm.cu) launches:
// kMi in {1, 2, 4}, both kFused.
template <typename T, int kMi, bool kFused>
absl::Status LaunchGemv(const Problem& p, int num_sms, cudaStream_t stream);

}  // namespace epserve::kernels::cuda::grouped_gemm_internal
