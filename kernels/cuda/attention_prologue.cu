// The fused attention prologue (see attention_prologue.cuh for the contract).
//
// Grid: x over tokens (grid-stride beyond kMaxBlocks), y over groups of up to
// kMaxWarps heads. Warp w of block (t, g) owns head g * warps + w of token t,
// q heads first, then k heads; the warp of k head j also writes v head j.
// Per token a block
//   1. fills the rope table of the token's position ([cos | sin], shared),
//   2. per warp: NormRow of its head (global) into the warp's shared row
//      (skipped when that side has no norm weight: the rotation then reads
//      the head in place),
//   3. rotates the row with RopeStep, writing the head back to q / k and, for
//      a k head, to the token's slot of the k cache; copies the v head to
//      the v cache.
// The device code is that of HeadRmsNorm (NormRow<4, warp>), Rope
// (FillRopeTable, RopeStep) and WriteKvCache (Store<T>), so the results are
// those of the three kernels.
#include "kernels/cuda/attention_prologue.cuh"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/elementwise_device.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr int kMaxWarps = 8;             // heads per block
constexpr int64_t kMaxBlocks = 1 << 14;  // tokens per grid-stride step
constexpr int64_t kMaxGridY = 65535;
// NormRow keeps a warp's row in registers up to 32 lanes * kNormCache packs
// of 4; HeadRmsNorm also takes one warp per head up to there.
constexpr int64_t kMaxHeadDim = 32 * kNormCache * 4;

// At least 4 blocks per SM: 64 registers instead of 80, no spills; on an
// H200 that is ~20% faster for prefill-sized batches (4096 tokens) and the
// same for decode.
template <bool kNeox, typename T>
__global__ void __launch_bounds__(kMaxWarps * 32, 4)
    AttentionPrologueKernel(AttentionPrologueParams p) {
  constexpr int kPairs = kNeox ? 4 : 2;  // float4 accesses in RopeStep
  // [cos | sin] (D floats), then D floats per warp; float4 for alignment.
  extern __shared__ float4 smem_raw[];
  const int64_t d = p.head_dim, half = d / 2;
  float* cos_t = reinterpret_cast<float*>(smem_raw);
  float* sin_t = cos_t + half;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* normed = cos_t + d + warp * d;

  const int64_t head = static_cast<int64_t>(blockIdx.y) * (blockDim.x / 32) + warp;
  const bool active = head < p.q_heads + p.kv_heads;  // uniform over the warp
  const bool is_q = head < p.q_heads;
  const int64_t kv_head = head - p.q_heads;
  const float* w = is_q ? p.q_norm : p.k_norm;
  const int64_t width = p.kv_heads * d;  // a cache row
  T* k_cache = static_cast<T*>(p.k_cache);
  T* v_cache = static_cast<T*>(p.v_cache);
  const bool reporter = blockIdx.y == 0 && threadIdx.x == 0;  // one error report per token

  for (int64_t t = blockIdx.x; t < p.num_tokens; t += gridDim.x) {
    const int32_t pos = p.positions[t];
    if (pos < 0) {  // uniform over the block
      if (reporter) atomicOr(p.errors, kErrProloguePosition);
      continue;
    }
    const int32_t slot = p.slots[t];
    const bool cached = slot >= 0 && slot < p.num_slots;
    if (reporter && !cached && slot != -1) atomicOr(p.errors, kErrPrologueSlot);
    __syncthreads();  // the previous token's table and rows are no longer read
    FillRopeTable(pos, p.inv_freq, p.attention_factor, half, cos_t, sin_t);
    __syncthreads();
    if (!active) continue;

    float* h = is_q ? p.q + (t * p.q_heads + head) * d : p.k + (t * p.kv_heads + kv_head) * d;
    const float* src = h;
    if (w != nullptr) {
      NormRow<4, /*kWarp=*/true>(h, /*residual=*/nullptr, w, /*y=*/normed, d, p.eps, lane,
                                 /*group_size=*/32, /*smem=*/nullptr);
      __syncwarp();  // the rotation reads other lanes' elements
      src = normed;
    }
    const int64_t row = static_cast<int64_t>(slot) * width + kv_head * d;
    T* k_row = !is_q && cached ? k_cache + row : nullptr;
    for (int64_t i0 = static_cast<int64_t>(lane) * kPairs; i0 < half; i0 += 32 * kPairs) {
      RopeStep<kPairs, kNeox>(src, h, k_row, half, i0, cos_t, sin_t);
    }
    if (!is_q && cached) {
      const float* v_head = p.v + (t * p.kv_heads + kv_head) * d;
      for (int64_t c = static_cast<int64_t>(lane) * 4; c < d; c += 32 * 4) {
        Store<T, 4>(v_cache + row + c, Load<float, 4>(v_head + c));
      }
    }
  }
}

template <bool kNeox, typename T>
absl::Status Launch(const AttentionPrologueParams& p, cudaStream_t stream) {
  const int64_t heads = p.q_heads + p.kv_heads;
  const int warps = static_cast<int>(std::min<int64_t>(kMaxWarps, heads));
  const dim3 grid(static_cast<unsigned int>(std::min(p.num_tokens, kMaxBlocks)),
                  static_cast<unsigned int>(CeilDiv(heads, warps)));
  const size_t smem = static_cast<size_t>(p.head_dim) * (1 + warps) * sizeof(float);
  AttentionPrologueKernel<kNeox, T><<<grid, warps * 32, smem, stream>>>(p);
  return LaunchStatus("AttentionPrologue");
}

}  // namespace

bool AttentionPrologueFusable(const AttentionPrologueParams& p) {
  const int64_t d = p.head_dim;
  if (d <= 0 || d % (p.neox ? 8 : 4) != 0 || d > kMaxHeadDim) return false;
  if (p.q_heads < 0 || p.kv_heads < 0 || CeilDiv(p.q_heads + p.kv_heads, kMaxWarps) > kMaxGridY) {
    return false;
  }
  const size_t cache_align = 4 * (p.cache_type == Elem::kF32 ? sizeof(float) : sizeof(uint16_t));
  return IsAligned(p.q, 16) && IsAligned(p.k, 16) && IsAligned(p.v, 16) &&
         (p.q_norm == nullptr || IsAligned(p.q_norm, 16)) &&
         (p.k_norm == nullptr || IsAligned(p.k_norm, 16)) && IsAligned(p.k_cache, cache_align) &&
         IsAligned(p.v_cache, cache_align);
}

absl::Status AttentionPrologue(const AttentionPrologueParams& p, cudaStream_t stream) {
  if (p.num_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("AttentionPrologue: num_tokens: expected >= 0, found ", p.num_tokens));
  }
  if (!AttentionPrologueFusable(p)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "AttentionPrologue: the fused kernel takes head_dim a multiple of ", p.neox ? 8 : 4,
        " up to ", kMaxHeadDim, " and aligned tensors, found head_dim ", p.head_dim,
        " (run the separate kernels instead)"));
  }
  if (p.num_tokens == 0 || p.q_heads + p.kv_heads == 0) return absl::OkStatus();
  return DispatchElem(p.cache_type, [&](auto tag) {
    using T = decltype(tag);
    return p.neox ? Launch<true, T>(p, stream) : Launch<false, T>(p, stream);
  });
}

}  // namespace epserve::kernels::cuda
