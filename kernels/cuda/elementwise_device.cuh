// Device building blocks of the row kernels, shared by elementwise.cu
// (RmsNorm, HeadRmsNorm, Rope, ...) and attention_prologue.cu (the fused
// q/k norm + rope + KV cache write), so that the fused kernel rounds
// exactly as the separate ones do:
//   * vector access: W values as float32 (Pack), loaded from / stored to W
//     storage elements in one access (Load / Store);
//   * warp and block sums;
//   * NormRow: one RMSNorm row by a warp or a block;
//   * rope: the per-position cos/sin table and one rotation step.
// Private to kernels/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// ---- Vector access --------------------------------------------------------

// W values, as float32.
template <int W>
struct Pack {
  float v[W];
};

// W storage elements, aligned so that one access moves them all.
template <typename T, int W>
struct alignas(sizeof(T) * W) Raw {
  T e[W];
};

// p aligned to sizeof(T) * W bytes.
template <typename T, int W>
__device__ __forceinline__ Pack<W> Load(const T* p) {
  const Raw<T, W> raw = *reinterpret_cast<const Raw<T, W>*>(p);
  Pack<W> out;
#pragma unroll
  for (int j = 0; j < W; ++j) out.v[j] = ToF32<T>(raw.e[j]);
  return out;
}

template <typename T, int W>
__device__ __forceinline__ void Store(T* p, const Pack<W>& x) {
  Raw<T, W> raw;
#pragma unroll
  for (int j = 0; j < W; ++j) raw.e[j] = FromF32<T>(x.v[j]);
  *reinterpret_cast<Raw<T, W>*>(p) = raw;
}

template <int W>
__device__ __forceinline__ Pack<W> Zeros() {
  Pack<W> out;
#pragma unroll
  for (int j = 0; j < W; ++j) out.v[j] = 0.0f;
  return out;
}

inline bool IsAligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// ---- Reductions -----------------------------------------------------------

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32), returned to every
// thread; every thread of the block must call it. smem: 32 floats.
__device__ __forceinline__ float BlockSum(float v, float* smem) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  v = WarpSum(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  float total = 0.0f;
  const int num_warps = blockDim.x / 32;
  // The same order in every thread, so every thread gets the same sum.
  for (int i = 0; i < num_warps; ++i) total += smem[i];
  __syncthreads();  // smem may be reused right after
  return total;
}

// ---- RMSNorm ------------------------------------------------------------------

constexpr int kNormCache = 4;  // packs per thread kept in registers between the passes

// y = w * (r * inv), inv = 1 / sqrt(mean(r^2) + eps), with r = x, or
// r = residual + x (written back to residual) when residual != nullptr.
// The `group_size` threads with ids `lane` = 0.. share the row; kWarp: the
// group is one warp, else the whole block (smem: 32 floats, unused for a
// warp). y may alias x: every element is read and written by the same
// thread, reads first. x, y, w (and residual) aligned to W floats.
template <int W, bool kWarp>
__device__ __forceinline__ void NormRow(const float* x, float* residual, const float* w, float* y,
                                        int64_t hidden, float eps, int lane, int group_size,
                                        float* smem) {
  const int64_t num_packs = hidden / W;
  Pack<W> cache[kNormCache];
  float sum = 0.0f;
  // Pack p of r (residual + x written back to residual), added squared to sum.
  auto load_and_square = [&](int64_t p) {
    Pack<W> a = Load<float, W>(x + p * W);
    if (residual != nullptr) {
      const Pack<W> r = Load<float, W>(residual + p * W);
#pragma unroll
      for (int j = 0; j < W; ++j) a.v[j] = r.v[j] + a.v[j];
      Store<float, W>(residual + p * W, a);
    }
#pragma unroll
    for (int j = 0; j < W; ++j) sum += a.v[j] * a.v[j];
    return a;
  };
#pragma unroll
  for (int k = 0; k < kNormCache; ++k) {
    const int64_t p = lane + static_cast<int64_t>(k) * group_size;
    if (p < num_packs) cache[k] = load_and_square(p);
  }
  // Rows wider than the register cache: the rest is read again in pass 2.
  for (int64_t p = lane + static_cast<int64_t>(kNormCache) * group_size; p < num_packs;
       p += group_size) {
    (void)load_and_square(p);
  }
  sum = kWarp ? WarpSum(sum) : BlockSum(sum, smem);
  const float mean = sum / static_cast<float>(hidden);
  const float inv = 1.0f / sqrtf(mean + eps);

  auto write = [&](int64_t p, const Pack<W>& a) {
    const Pack<W> wv = Load<float, W>(w + p * W);
    Pack<W> o;
#pragma unroll
    for (int j = 0; j < W; ++j) o.v[j] = wv.v[j] * (a.v[j] * inv);
    Store<float, W>(y + p * W, o);
  };
#pragma unroll
  for (int k = 0; k < kNormCache; ++k) {
    const int64_t p = lane + static_cast<int64_t>(k) * group_size;
    if (p < num_packs) write(p, cache[k]);
  }
  const float* src = residual != nullptr ? residual : x;
  for (int64_t p = lane + static_cast<int64_t>(kNormCache) * group_size; p < num_packs;
       p += group_size) {
    write(p, Load<float, W>(src + p * W));
  }
}

// ---- Rope ---------------------------------------------------------------------

// The rope table of position `pos` >= 0: cos_t[i], sin_t[i] for the `half`
// = head_dim/2 frequencies, filled by the threads of the block (the caller
// synchronises before reading it). As the CPU reference: the angle
// float(pos) * inv_freq[i] in float32, cos/sin of it in double rounded to
// float32 (bit-identical to the CPU), then times attention_factor in float32.
__device__ __forceinline__ void FillRopeTable(int32_t pos, const float* inv_freq,
                                              float attention_factor, int64_t half, float* cos_t,
                                              float* sin_t) {
  const float p = static_cast<float>(pos);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = __fmul_rn(p, inv_freq[i]);
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    cos_t[i] = __fmul_rn(static_cast<float>(c), attention_factor);
    sin_t[i] = __fmul_rn(static_cast<float>(s), attention_factor);
  }
}

// One rotation step of a head: the kPairs rope pairs from pair i0 on (neox:
// elements (i, i + half); interleaved: (2i, 2i + 1)) are read from `src`,
// rotated by the table and written to `dst` (may be `src`) and, unless
// `cache` is null, to `cache` rounded to T (round to nearest even). The
// rotation a' = a cos - b sin, b' = b cos + a sin rounds every product and
// sum on its own (no fma), as the CPU does. Accesses: neox kPairs floats at
// i0 and half + i0; interleaved 2 * kPairs at 2 * i0 (kPairs == 1: scalar,
// for rows only 4-byte aligned), so the pointers must be aligned to that.
template <int kPairs, bool kNeox, typename T>
__device__ __forceinline__ void RopeStep(const float* src, float* dst, T* cache, int64_t half,
                                         int64_t i0, const float* cos_t, const float* sin_t) {
  auto rotate = [&](float& a, float& b, int64_t i) {
    const float c = cos_t[i], s = sin_t[i];
    const float na = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    const float nb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    a = na;
    b = nb;
  };
  if constexpr (kNeox) {  // pairs (i, i + half)
    Pack<kPairs> a = Load<float, kPairs>(src + i0);
    Pack<kPairs> b = Load<float, kPairs>(src + half + i0);
#pragma unroll
    for (int j = 0; j < kPairs; ++j) rotate(a.v[j], b.v[j], i0 + j);
    Store<float, kPairs>(dst + i0, a);
    Store<float, kPairs>(dst + half + i0, b);
    if (cache != nullptr) {
      Store<T, kPairs>(cache + i0, a);
      Store<T, kPairs>(cache + half + i0, b);
    }
  } else if constexpr (kPairs == 1) {  // pair (2i, 2i + 1), 4-byte aligned only
    float a = src[2 * i0], b = src[2 * i0 + 1];
    rotate(a, b, i0);
    dst[2 * i0] = a;
    dst[2 * i0 + 1] = b;
    if (cache != nullptr) {
      cache[2 * i0] = FromF32<T>(a);
      cache[2 * i0 + 1] = FromF32<T>(b);
    }
  } else {
    Pack<2 * kPairs> ab = Load<float, 2 * kPairs>(src + 2 * i0);
#pragma unroll
    for (int j = 0; j < kPairs; ++j) rotate(ab.v[2 * j], ab.v[2 * j + 1], i0 + j);
    Store<float, 2 * kPairs>(dst + 2 * i0, ab);
    if (cache != nullptr) Store<T, 2 * kPairs>(cache + 2 * i0, ab);
  }
}

}  // namespace epserve::kernels::cuda
