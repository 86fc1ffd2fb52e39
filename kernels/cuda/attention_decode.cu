// Paged attention for decode batches (num_tokens == num_seqs, every q_len is
// 1) with a bf16/f16 cache and D in {64, 128, 256}, and the split-K combine
// (contract: attention.cuh; launch choice: attention.cu).
//
//   DecodeKernel: CTA = (sequence, kv head, group of <= 8 heads, split).
//     The context is cut into `num_splits` ranges (flash-decoding); the 4
//     warps take 16-token tiles of the range in turn, each keeping its own
//     online softmax, merged through shared memory at the end. K/V rows go
//     straight from global memory (16-byte loads) into mma.sync fragments:
//       S^T[16 tok][8 heads] = K[16 tok][D] . Q^T          (mma m16n8k16)
//       O^T[D][8 heads]     += V^T[D][16 tok] . P^T        (V^T, P^T via movmatrix)
//     q and p are split into hi + lo 16-bit parts (two mma each), so scores
//     and weights keep ~16 mantissa bits: fp32-like accuracy on a 16-bit cache.
//   CombineKernel (num_splits > 1, after DecodeKernel or GenericKernel):
//     merges the partials of the workspace.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>

#include "common/status.h"
#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda::attention_internal {
namespace {

// Transposes the 8x8 16-bit matrix whose row lane/4, columns 2*(lane%4)+{0,1}
// this lane holds.
__device__ __forceinline__ uint32_t MovTrans(uint32_t a) {
  uint32_t d;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(a));
  return d;
}

// ---- decode: tensor cores, split-K ---------------------------------------

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) DecodeKernel(const KernelArgs a) {
  constexpr int kChunks = D / 32;     // 16-byte pieces per lane of a token row
  constexpr bool kEarlyV = D <= 128;  // V loads issued with K (registers permitting)
  __shared__ float sm_o[kWarps][kDecodeHeads][D];
  __shared__ float sm_m[kWarps][kDecodeHeads];
  __shared__ float sm_l[kWarps][kDecodeHeads];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int r = lane >> 2, c = lane & 3;
  const int num_groups = (a.group + kDecodeHeads - 1) / kDecodeHeads;
  const int head_group = blockIdx.x % num_groups;
  const int split = (blockIdx.x / num_groups) % a.num_splits;
  const int s = blockIdx.x / num_groups / a.num_splits;
  const int kv_head = blockIdx.y;
  if (s >= a.num_seqs) return;
  const int head0 = head_group * kDecodeHeads;
  const int num_heads = MinI(kDecodeHeads, a.group - head0);

  // Row s is sequence s's only query row (num_tokens == num_seqs).
  const int q0 = a.query_start[s], q1 = a.query_start[s + 1], ctx = a.context_lens[s];
  const bool bad_meta = q0 != s || q1 != s + 1 || !SeqMetadataOk(a, q0, q1, ctx) || ctx < 1;
  int c0 = 0, c1 = 0;
  if (!bad_meta) {
    const int chunk = SplitChunk(ctx, a.num_splits);
    c0 = static_cast<int>(Min64(static_cast<int64_t>(split) * chunk, ctx));
    c1 = static_cast<int>(Min64(static_cast<int64_t>(c0) + chunk, ctx));
  }

  float m[2] = {-INFINITY, -INFINITY};  // heads 2c, 2c+1 (log2 units)
  float l[2] = {0.0f, 0.0f};            // this lane's partial sums
  // O^T accumulators: [32-wide d chunk i][half jp][mma c-fragment]; lane holds
  // heads 2c (e = 0, 2) and 2c+1 (e = 1, 3) at d = 32i + 8(r/2) + 4jp + (r%2)
  // (+2 for e = 2, 3).
  float o[kChunks][2][4];
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
#pragma unroll
    for (int jp = 0; jp < 2; ++jp) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[i][jp][e] = 0.0f;
    }
  }
  bool bad_block = false;

  if (!bad_meta && c0 < c1) {
    // Q^T B-fragments (head r), hi and lo parts. Within each 32-wide chunk
    // the lane's k slots 2c+{0,1}, 2c+8+{0,1} of the two k16 steps map to
    // d = 32i + 8c + [0, 8): the same 8 elements one 16-byte K load gives.
    uint32_t qh[kChunks][4], ql[kChunks][4];
    {
      const bool head_ok = r < num_heads;
      const float* qp = a.q + static_cast<int64_t>(s) * a.num_q_heads * D +
                        static_cast<int64_t>(kv_head * a.group + head0 + r) * D + 8 * c;
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        float4 x0 = make_float4(0.f, 0.f, 0.f, 0.f), x1 = x0;
        if (head_ok) {
          x0 = __ldg(reinterpret_cast<const float4*>(qp + 32 * i));
          x1 = __ldg(reinterpret_cast<const float4*>(qp + 32 * i + 4));
        }
        Split2<T>(x0.x, x0.y, qh[i][0], ql[i][0]);
        Split2<T>(x0.z, x0.w, qh[i][1], ql[i][1]);
        Split2<T>(x1.x, x1.y, qh[i][2], ql[i][2]);
        Split2<T>(x1.z, x1.w, qh[i][3], ql[i][3]);
      }
    }
    const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;
    const int64_t row_stride = static_cast<int64_t>(a.num_kv_heads) * D;
    const T* kc = static_cast<const T*>(a.k_cache) + static_cast<int64_t>(kv_head) * D + 8 * c;
    const T* vc = static_cast<const T*>(a.v_cache) + static_cast<int64_t>(kv_head) * D + 8 * c;
    const int num_tiles = (c1 - c0 + kDecodeTile - 1) / kDecodeTile;

    // Block id of token j (-1 when j is past the range); prefetched a tile ahead.
    auto block_of = [&](int j) -> int { return j < c1 ? table[j / a.block_size] : -1; };
    int next_id[2] = {block_of(c0 + warp * kDecodeTile + r),
                      block_of(c0 + warp * kDecodeTile + r + 8)};

    for (int t = warp; t < num_tiles; t += kWarps) {
      const int j0 = c0 + t * kDecodeTile;
      bool ok[2];
      int64_t off[2];
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int j = j0 + r + 8 * rr;
        const int id = next_id[rr];
        const bool in_range = j < c1;
        const bool id_ok = id >= 0 && id < a.num_blocks;
        bad_block = bad_block || (in_range && !id_ok);
        ok[rr] = in_range && id_ok;
        off[rr] =
            ok[rr] ? (static_cast<int64_t>(id) * a.block_size + j % a.block_size) * row_stride : 0;
      }
      uint4 kr[2][kChunks], vr[2][kChunks];
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
#pragma unroll
        for (int i = 0; i < kChunks; ++i) {
          kr[rr][i] = ok[rr] ? __ldg(reinterpret_cast<const uint4*>(kc + off[rr] + 32 * i)) : zero;
          if constexpr (kEarlyV) {
            vr[rr][i] =
                ok[rr] ? __ldg(reinterpret_cast<const uint4*>(vc + off[rr] + 32 * i)) : zero;
          }
        }
      }
      if (t + kWarps < num_tiles) {
        next_id[0] = block_of(j0 + kWarps * kDecodeTile + r);
        next_id[1] = block_of(j0 + kWarps * kDecodeTile + r + 8);
      }

      // S^T[tok][head]: sc[0], sc[1] token r heads 2c, 2c+1; sc[2], sc[3] token r+8.
      float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        Mma<T>(sc, kr[0][i].x, kr[1][i].x, kr[0][i].y, kr[1][i].y, qh[i][0], qh[i][1]);
        Mma<T>(sc, kr[0][i].x, kr[1][i].x, kr[0][i].y, kr[1][i].y, ql[i][0], ql[i][1]);
        Mma<T>(sc, kr[0][i].z, kr[1][i].z, kr[0][i].w, kr[1][i].w, qh[i][2], qh[i][3]);
        Mma<T>(sc, kr[0][i].z, kr[1][i].z, kr[0][i].w, kr[1][i].w, ql[i][2], ql[i][3]);
      }
      if constexpr (!kEarlyV) {
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
#pragma unroll
          for (int i = 0; i < kChunks; ++i) {
            vr[rr][i] =
                ok[rr] ? __ldg(reinterpret_cast<const uint4*>(vc + off[rr] + 32 * i)) : zero;
          }
        }
      }

      // Online softmax per head over the 16 tokens (lanes sharing c).
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[e] = ok[e >> 1] ? sc[e] * a.scale_log2 : -INFINITY;
      float tile_max[2] = {fmaxf(sc[0], sc[2]), fmaxf(sc[1], sc[3])};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int x = 4; x < 32; x <<= 1) {
          tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(kFullMask, tile_max[h], x));
        }
      }
      float alpha[2], offset[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float m_new = fmaxf(m[h], tile_max[h]);
        offset[h] = MaxOffset(m_new);
        alpha[h] = exp2f(m[h] - offset[h]);
        m[h] = m_new;
      }
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) p[e] = exp2f(sc[e] - offset[e & 1]);
#pragma unroll
      for (int h = 0; h < 2; ++h) l[h] = l[h] * alpha[h] + p[h] + p[h + 2];
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
#pragma unroll
        for (int jp = 0; jp < 2; ++jp) {
#pragma unroll
          for (int e = 0; e < 4; ++e) o[i][jp][e] *= alpha[e & 1];
        }
      }

      // P^T B-fragments (k = token, n = head): transpose the packed S^T layout.
      uint32_t p_hi0, p_lo0, p_hi1, p_lo1;
      Split2<T>(p[0], p[1], p_hi0, p_lo0);
      Split2<T>(p[2], p[3], p_hi1, p_lo1);
      const uint32_t bh0 = MovTrans(p_hi0), bh1 = MovTrans(p_hi1);
      const uint32_t bl0 = MovTrans(p_lo0), bl1 = MovTrans(p_lo1);

      // O^T += V^T P^T. The 8x8 matrix (token rows 8rr.., register j of
      // chunk i) transposed gives rows d = 32i + 8(q/2) + 2j + (q%2), q = 0..7.
#pragma unroll
      for (int i = 0; i < kChunks; ++i) {
        uint32_t tv[2][4];
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          tv[rr][0] = MovTrans(vr[rr][i].x);
          tv[rr][1] = MovTrans(vr[rr][i].y);
          tv[rr][2] = MovTrans(vr[rr][i].z);
          tv[rr][3] = MovTrans(vr[rr][i].w);
        }
#pragma unroll
        for (int jp = 0; jp < 2; ++jp) {
          Mma<T>(o[i][jp], tv[0][2 * jp], tv[0][2 * jp + 1], tv[1][2 * jp], tv[1][2 * jp + 1], bh0,
                 bh1);
          Mma<T>(o[i][jp], tv[0][2 * jp], tv[0][2 * jp + 1], tv[1][2 * jp], tv[1][2 * jp + 1], bl0,
                 bl1);
        }
      }
    }
  }

  // Merge the 4 warps' states.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int x = 4; x < 32; x <<= 1) l[h] += __shfl_xor_sync(kFullMask, l[h], x);
  }
  if (r == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      sm_m[warp][2 * c + h] = m[h];
      sm_l[warp][2 * c + h] = l[h];
    }
  }
#pragma unroll
  for (int i = 0; i < kChunks; ++i) {
#pragma unroll
    for (int jp = 0; jp < 2; ++jp) {
      const int d = 32 * i + 8 * (r >> 1) + 4 * jp + (r & 1);
      sm_o[warp][2 * c][d] = o[i][jp][0];
      sm_o[warp][2 * c + 1][d] = o[i][jp][1];
      sm_o[warp][2 * c][d + 2] = o[i][jp][2];
      sm_o[warp][2 * c + 1][d + 2] = o[i][jp][3];
    }
  }
  const bool bad = __syncthreads_or(bad_meta || bad_block) != 0;

  const int64_t split_base = static_cast<int64_t>(split) * a.num_tokens * a.num_q_heads;
  for (int u = threadIdx.x; u < kDecodeHeads * (D / 4); u += kThreads) {
    const int n = u / (D / 4), d = (u % (D / 4)) * 4;
    if (n >= num_heads) continue;
    const int64_t item = static_cast<int64_t>(s) * a.num_q_heads + kv_head * a.group + head0 + n;
    if (bad) {
      if (a.num_splits == 1) {
        *reinterpret_cast<float4*>(a.out + item * D + d) = make_float4(0.f, 0.f, 0.f, 0.f);
      } else if (d == 0) {
        a.ws_ml[split_base + item] = make_float2(0.0f, -1.0f);
      }
      continue;
    }
    float m_all = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, sm_m[w][n]);
    float l_all = 0.0f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = sm_m[w][n] == -INFINITY ? 0.0f : exp2f(sm_m[w][n] - m_all);
      const float4 x = *reinterpret_cast<const float4*>(&sm_o[w][n][d]);
      l_all += f * sm_l[w][n];
      acc.x += f * x.x;
      acc.y += f * x.y;
      acc.z += f * x.z;
      acc.w += f * x.w;
    }
    if (a.num_splits == 1) {
      const float inv = l_all > 0.0f ? 1.0f / l_all : 0.0f;
      *reinterpret_cast<float4*>(a.out + item * D + d) =
          make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
    } else {
      // The combine reads acc only where l > 0 (empty splits write no acc).
      if (l_all > 0.0f) *reinterpret_cast<float4*>(a.ws_acc + (split_base + item) * D + d) = acc;
      if (d == 0) a.ws_ml[split_base + item] = make_float2(m_all, l_all);
    }
  }
  if (bad && threadIdx.x == 0) atomicOr(a.errors, kErrBlockTable);
}

// ---- split-K combine ---------------------------------------------------------

// One warp per (row, q head): out = sum_k 2^(m_k - M) acc_k / sum_k 2^(m_k - M) l_k
// over the splits with l_k > 0; zeros when any split marked the row bad.
template <int D>
__global__ void __launch_bounds__(kThreads) CombineKernel(const KernelArgs a) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t items = static_cast<int64_t>(a.num_tokens) * a.num_q_heads;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  if (item >= items) return;
  float m_all = -INFINITY;
  bool bad = false;
  for (int k = 0; k < a.num_splits; ++k) {
    const float2 ml = a.ws_ml[k * items + item];
    bad = bad || ml.y < 0.0f;
    if (ml.y > 0.0f) m_all = fmaxf(m_all, ml.x);
  }
  for (int d = lane * 4; d < D; d += 128) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    float l_all = 0.0f;
    if (!bad) {
      for (int k = 0; k < a.num_splits; ++k) {
        const float2 ml = a.ws_ml[k * items + item];
        if (ml.y <= 0.0f) continue;
        const float f = exp2f(ml.x - m_all);
        const float4 x = *reinterpret_cast<const float4*>(a.ws_acc + (k * items + item) * D + d);
        l_all += f * ml.y;
        acc.x += f * x.x;
        acc.y += f * x.y;
        acc.z += f * x.z;
        acc.w += f * x.w;
      }
    }
    const float inv = l_all > 0.0f ? 1.0f / l_all : 0.0f;
    *reinterpret_cast<float4*>(a.out + item * D + d) =
        make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
  }
}

}  // namespace

template <typename T, int D>
absl::Status LaunchDecode(const KernelArgs& a, dim3 grid, cudaStream_t stream) {
  DecodeKernel<T, D><<<grid, kThreads, 0, stream>>>(a);
  return LaunchStatus("PagedAttention decode");
}

template <int D>
absl::Status LaunchCombine(const KernelArgs& a, dim3 grid, cudaStream_t stream) {
  CombineKernel<D><<<grid, kThreads, 0, stream>>>(a);
  return LaunchStatus("PagedAttention combine");
}

// The pairs of attention_common.cuh.
#define EPSERVE_INSTANTIATE_DECODE(T, D)   \
  static_assert(kTensorCoreKernels<T, D>); \
  template absl::Status LaunchDecode<T, D>(const KernelArgs&, dim3, cudaStream_t);
EPSERVE_ATTENTION_TENSOR_CORE_PAIRS(EPSERVE_INSTANTIATE_DECODE)
#undef EPSERVE_INSTANTIATE_DECODE

#define EPSERVE_INSTANTIATE_COMBINE(T, D) \
  template absl::Status LaunchCombine<D>(const KernelArgs&, dim3, cudaStream_t);
EPSERVE_ATTENTION_ALL_DIMS(EPSERVE_INSTANTIATE_COMBINE)
#undef EPSERVE_INSTANTIATE_COMBINE

}  // namespace epserve::kernels::cuda::attention_internal
