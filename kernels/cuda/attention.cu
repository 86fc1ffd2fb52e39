// Paged attention kernels (contract: attention.cuh, kernels/ops.h; CPU
// reference: kernels/cpu/attention.cc).
//
// A "query vector" is one (query row, q head) pair. The G = Hq / Hkv heads
// of a kv head share every key/value row, so each kernel gives one CTA a set
// of query vectors of one sequence and one kv head and reads each K/V row of
// the range it covers once for all of them.
//
//   num_tokens == num_seqs (every q_len is 1), bf16/f16 cache, D >= 64:
//     DecodeKernel: CTA = (sequence, kv head, group of <= 8 heads, split).
//     The context is cut into `num_splits` ranges (flash-decoding); the 4
//     warps take 16-token tiles of the range in turn, each keeping its own
//     online softmax, merged through shared memory at the end. K/V rows go
//     straight from global memory (16-byte loads) into mma.sync fragments:
//       S^T[16 tok][8 heads] = K[16 tok][D] . Q^T          (mma m16n8k16)
//       O^T[D][8 heads]     += V^T[D][16 tok] . P^T        (V^T, P^T via movmatrix)
//     q and p are split into hi + lo 16-bit parts (two mma each), so scores
//     and weights keep ~16 mantissa bits: fp32-like accuracy on a 16-bit cache.
//   otherwise, bf16/f16 cache, D >= 64:
//     PrefillKernel: flash attention. CTA = 64 consecutive query vectors of
//     a sequence and kv head (16 per warp) x key tiles of 64 (32 for D=256),
//     cp.async double buffering, ldmatrix, mma.sync with q and p rounded to
//     the cache type, fp32 accumulation, online softmax; key tiles past the
//     CTA's last position are never loaded and warps skip tiles entirely
//     above their rows.
//   f32 cache or D in {16, 32}, any batch:
//     GenericKernel: the same work split in plain fp32 FMA, 8 query vectors
//     per CTA, key tiles of 32 in shared memory (split-K when decoding).
//   num_splits > 1: CombineKernel merges the partials of the workspace.
//
// Graph capture: grids depend on num_tokens, num_seqs, the head counts and
// max_blocks_per_seq * block_size only. CTAs of the prefill and generic
// kernels find their sequence by a warp scan over query_start.
//
// Metadata problems (query rows outside [0, num_tokens) or descending,
// context_len < q_len, a context needing more blocks than the table width, a
// block id outside [0, num_blocks) anywhere in the sequence's context) set
// kErrBlockTable and make every output row of the sequence zero. No address
// is formed from a value that has not been checked.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFullMask = 0xffffffffu;

constexpr int kThreads = 128;  // every kernel: 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kDecodeHeads = 8;      // heads per decode CTA (the mma n dimension)
constexpr int kDecodeTile = 16;      // tokens per warp step (the mma m dimension)
constexpr int kPrefillVectors = 64;  // query vectors per prefill CTA (16 per warp)
constexpr int kGenericVectors = 8;   // query vectors per generic CTA (2 per warp)
constexpr int kGenericKeys = 32;     // keys per generic tile (one per lane)
// Split-K policy for decode (a pure function of the sizes): enough CTAs to
// keep ~2 per SM busy, but no split shorter than kMinSplitTokens.
constexpr int64_t kTargetCtas = 256;
constexpr int64_t kMinSplitTokens = 64;
constexpr int64_t kMaxSplits = 64;

// Everything a kernel reads, sizes as int (checked to fit at the entry).
struct KernelArgs {
  const float* q;       // [T, Hq*D]
  const void* k_cache;  // [num_blocks, block_size, Hkv, D]
  const void* v_cache;
  const int32_t* query_start;   // [S + 1]
  const int32_t* context_lens;  // [S]
  const int32_t* block_tables;  // [S, max_blocks_per_seq]
  float* out;                   // [T, Hq*D]
  uint32_t* errors;
  float* ws_acc;  // [num_splits, T, Hq, D] unnormalised partial outputs
  float2* ws_ml;  // [num_splits, T, Hq] (running max (log2 units), sum); sum -1: bad
  int64_t num_blocks;
  int block_size;
  int num_kv_heads;
  int num_q_heads;
  int group;  // Hq / Hkv
  int max_blocks_per_seq;
  int num_seqs;
  int num_tokens;
  int num_splits;
  float scale_log2;  // scale * log2(e): softmax in exp2
};

// ---- small device helpers -------------------------------------------------

template <typename T>
__device__ __forceinline__ uint32_t Bits16(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat16_as_ushort(v);
  } else {
    return __half_as_ushort(v);
  }
}

// Two floats rounded to T, packed (first in the low half, as mma expects).
template <typename T>
__device__ __forceinline__ uint32_t Pack2(float lo, float hi) {
  return Bits16(FromF32<T>(lo)) | (Bits16(FromF32<T>(hi)) << 16);
}

// (a, b) = hi + lo with hi = round(a, b) to T and lo = round(remainder).
template <typename T>
__device__ __forceinline__ void Split2(float a, float b, uint32_t& hi, uint32_t& lo) {
  const T ha = FromF32<T>(a), hb = FromF32<T>(b);
  hi = Bits16(ha) | (Bits16(hb) << 16);
  lo = Pack2<T>(a - ToF32(ha), b - ToF32(hb));
}

// c += A(16x16, row) * B(16x8, col), fp32 accumulate.
template <typename T>
__device__ __forceinline__ void Mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                    uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}

// Transposes the 8x8 16-bit matrix whose row lane/4, columns 2*(lane%4)+{0,1}
// this lane holds.
__device__ __forceinline__ uint32_t MovTrans(uint32_t a) {
  uint32_t d;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(d) : "r"(a));
  return d;
}

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

// 16 bytes global -> shared; valid == false writes zeros and reads nothing.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
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

__device__ __forceinline__ int MinI(int x, int y) { return x < y ? x : y; }
__device__ __forceinline__ int MaxI(int x, int y) { return x > y ? x : y; }
__device__ __forceinline__ int64_t Min64(int64_t x, int64_t y) { return x < y ? x : y; }

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

// exp2 offset for a running max: 0 while nothing is unmasked yet, so that
// exp2(-inf - offset) is 0 instead of NaN.
__device__ __forceinline__ float MaxOffset(float m) { return m == -INFINITY ? 0.0f : m; }

// Sequence-level metadata: query rows [q0, q1) inside [0, T), ascending,
// ctx >= q_len, and the context fits the table width.
__device__ __forceinline__ bool SeqMetadataOk(const KernelArgs& a, int q0, int q1, int ctx) {
  if (q0 < 0 || q1 < q0 || q1 > a.num_tokens || ctx < q1 - q0) return false;
  const int64_t needed = (int64_t{ctx} + a.block_size - 1) / a.block_size;
  return needed <= a.max_blocks_per_seq;
}

// Whether the block ids of sequence s for context ctx (metadata already OK)
// are all inside the cache; this thread's share of the check.
__device__ __forceinline__ bool BlocksOk(const KernelArgs& a, int s, int ctx) {
  const int needed = static_cast<int>((int64_t{ctx} + a.block_size - 1) / a.block_size);
  const int32_t* table = a.block_tables + static_cast<int64_t>(s) * a.max_blocks_per_seq;
  bool ok = true;
  for (int b = threadIdx.x; b < needed; b += blockDim.x) {
    const int32_t id = table[b];
    ok = ok && id >= 0 && id < a.num_blocks;
  }
  return ok;
}

// Batch-level query layout (query_start[0] == 0, [S] == T, ascending); the
// rows of a batch that fails it may be left unwritten. One CTA calls it.
__device__ void CheckQueryLayout(const KernelArgs& a) {
  bool bad = false;
  if (threadIdx.x == 0) {
    bad = a.query_start[0] != 0 || a.query_start[a.num_seqs] != a.num_tokens;
  }
  for (int s = threadIdx.x; s < a.num_seqs; s += blockDim.x) {
    bad = bad || a.query_start[s + 1] < a.query_start[s];
  }
  if (bad) atomicOr(a.errors, kErrBlockTable);
}

// The sequence owning CTA tile `tile`, when the query vectors of each
// sequence (q_len * G of them) are cut into tiles of `tile_vectors`, the
// sequences' tiles following each other. Whole warp; false past the last.
__device__ bool FindTile(const KernelArgs& a, int tile_vectors, int tile, int* seq, int* seq_tile) {
  const int lane = threadIdx.x & 31;
  long long remaining = tile;
  for (int base = 0; base < a.num_seqs; base += 32) {
    const int s = base + lane;
    long long count = 0;
    if (s < a.num_seqs) {
      const long long q_len =
          Min64(static_cast<long long>(a.query_start[s + 1]) - a.query_start[s], a.num_tokens);
      if (q_len > 0) count = (q_len * a.group + tile_vectors - 1) / tile_vectors;
    }
    long long inclusive = count;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const long long n = __shfl_up_sync(kFullMask, inclusive, o);
      if (lane >= o) inclusive += n;
    }
    const unsigned hit = __ballot_sync(kFullMask, inclusive > remaining);
    if (hit != 0) {
      const int l = __ffs(hit) - 1;
      const long long before = __shfl_sync(kFullMask, inclusive - count, l);
      *seq = base + l;
      *seq_tile = static_cast<int>(remaining - before);
      return true;
    }
    remaining -= __shfl_sync(kFullMask, inclusive, 31);
  }
  return false;
}

// Context range of split `split` (all of it when there is one split). The
// same rule on every CTA of a sequence, so the splits tile [0, ctx) exactly.
__device__ __forceinline__ int SplitChunk(int ctx, int num_splits) {
  if (num_splits == 1) return ctx;
  const int per = (ctx + num_splits - 1) / num_splits;
  return MaxI(static_cast<int>(kMinSplitTokens), (per + 15) / 16 * 16);
}

// Zeros (one split) or the "bad" partial marker (several) for query vectors
// [v_begin, v_end) of a sequence whose rows start at q0.
__device__ void WriteBadVectors(const KernelArgs& a, int head_dim, int kv_head, int split, int q0,
                                int v_begin, int v_end) {
  const int64_t total = static_cast<int64_t>(v_end - v_begin) * head_dim;
  for (int64_t u = threadIdx.x; u < total; u += blockDim.x) {
    const int v = v_begin + static_cast<int>(u / head_dim);
    const int d = static_cast<int>(u % head_dim);
    const int64_t row = static_cast<int64_t>(q0) + v / a.group;
    if (row < 0 || row >= a.num_tokens) continue;
    const int64_t item = row * a.num_q_heads + kv_head * a.group + v % a.group;
    if (a.num_splits == 1) {
      a.out[item * head_dim + d] = 0.0f;
    } else if (d == 0) {
      a.ws_ml[static_cast<int64_t>(split) * a.num_tokens * a.num_q_heads + item] =
          make_float2(0.0f, -1.0f);
    }
  }
}

// The query vectors of a prefill / generic CTA: tile gridDim.x - 1 -
// blockIdx.x (last tiles first: they have the longest causal ranges, and
// idle CTAs past the real work exit at once) of `tile_vectors` vectors.
struct TileWork {
  int s;        // sequence
  int q0, ctx;  // its first query row and context length
  int q_len;    // its query rows
  int v_begin, v_end;  // this CTA's query vectors (row * group + head)
};

// Fills *w and returns true when the CTA has work. False when it has none,
// or when the sequence's metadata or block table is bad: then its vectors
// are written as WriteBadVectors does and kErrBlockTable is set. Every
// thread of the CTA must call it (a block-wide vote).
__device__ bool BeginTile(const KernelArgs& a, int tile_vectors, int head_dim, int kv_head,
                          int split, TileWork* w) {
  int s = 0, tile = 0;
  if (!FindTile(a, tile_vectors, gridDim.x - 1 - blockIdx.x, &s, &tile)) return false;
  const int q0 = a.query_start[s], q1 = a.query_start[s + 1], ctx = a.context_lens[s];
  bool ok = SeqMetadataOk(a, q0, q1, ctx);
  if (ok) ok = BlocksOk(a, s, ctx);
  const bool bad = __syncthreads_or(!ok) != 0;
  const int q_len = static_cast<int>(Min64(int64_t{q1} - q0, a.num_tokens));
  const int v_begin = tile * tile_vectors;
  const int v_end = MinI(q_len * a.group, v_begin + tile_vectors);
  if (bad) {
    WriteBadVectors(a, head_dim, kv_head, split, q0, v_begin, v_end);
    if (threadIdx.x == 0) atomicOr(a.errors, kErrBlockTable);
    return false;
  }
  *w = TileWork{s, q0, ctx, q_len, v_begin, v_end};
  return true;
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
  static constexpr int kKStride = D + 1;               // padded K rows: lane j reads row j
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

// ---- host side ----------------------------------------------------------------

// The one place head_dim becomes a template parameter.
template <typename F>
absl::Status DispatchHeadDim(int64_t head_dim, F&& f) {
  // Tensor-core kernels: 64, 128, 256; every other size (a multiple of 4)
  // takes the fp32 generic kernel.
  switch (head_dim) {
    case 8:
      return f(std::integral_constant<int, 8>{});
    case 12:
      return f(std::integral_constant<int, 12>{});
    case 16:
      return f(std::integral_constant<int, 16>{});
    case 24:
      return f(std::integral_constant<int, 24>{});
    case 48:
      return f(std::integral_constant<int, 48>{});
    case 80:
      return f(std::integral_constant<int, 80>{});
    case 96:
      return f(std::integral_constant<int, 96>{});
    case 32:
      return f(std::integral_constant<int, 32>{});
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    case 256:
      return f(std::integral_constant<int, 256>{});
  }
  return absl::UnimplementedError(absl::StrCat("PagedAttention: head_dim ", head_dim,
                                               " is not supported (8, 12, 16, 24, 32, 48, 64, 80, 96, 128, 256)"));
}

bool IsDecodeBatch(const PagedAttentionParams& p) {
  return p.num_tokens > 0 && p.num_tokens == p.num_seqs;
}

// Split-K factor: decode batches only (prefill rows never split), a pure
// function of the sizes so the workspace can be sized ahead of time.
int64_t NumSplits(const PagedAttentionParams& p) {
  if (!IsDecodeBatch(p) || p.num_kv_heads <= 0 || p.num_q_heads <= 0) return 1;
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  const int64_t ctas =
      p.num_seqs * p.num_kv_heads * CeilDiv(std::max<int64_t>(group, 1), kDecodeHeads);
  const int64_t by_context =
      CeilDiv(std::max<int64_t>(p.max_blocks_per_seq * p.block_size, 1), kMinSplitTokens);
  const int64_t wanted = CeilDiv(kTargetCtas, std::max<int64_t>(ctas, 1));
  return std::clamp<int64_t>(std::min(wanted, by_context), 1, kMaxSplits);
}

absl::Status CheckParams(const PagedAttentionParams& p) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: ", parts...));
  };
  if (p.q == nullptr || p.k_cache == nullptr || p.v_cache == nullptr || p.out == nullptr ||
      p.query_start == nullptr || p.context_lens == nullptr || p.errors == nullptr) {
    return bad("q, k_cache, v_cache, out, query_start, context_lens and errors must be set");
  }
  if (p.block_tables == nullptr && p.max_blocks_per_seq > 0) {
    return bad("block_tables is null with max_blocks_per_seq ", p.max_blocks_per_seq);
  }
  if (p.num_kv_heads <= 0 || p.num_q_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0) {
    return bad("num_q_heads (", p.num_q_heads, ") must be a positive multiple of num_kv_heads (",
               p.num_kv_heads, ")");
  }
  if (p.block_size <= 0 || p.num_blocks < 0 || p.max_blocks_per_seq < 0) {
    return bad("expected block_size > 0, num_blocks >= 0, max_blocks_per_seq >= 0; found ",
               p.block_size, ", ", p.num_blocks, ", ", p.max_blocks_per_seq);
  }
  if (p.num_seqs <= 0 || p.num_tokens < 0) {
    return bad("expected num_seqs > 0 and num_tokens >= 0 for ", p.num_tokens,
               " query rows; found num_seqs ", p.num_seqs);
  }
  RETURN_IF_ERROR(DispatchHeadDim(p.head_dim, [](auto) { return absl::OkStatus(); }));
  for (const void* ptr :
       {static_cast<const void*>(p.q), static_cast<const void*>(p.out), p.k_cache, p.v_cache}) {
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) {
      return bad("q, out, k_cache and v_cache must be 16-byte aligned");
    }
  }
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale))
    return bad("scale must be > 0, found ", p.scale);
  constexpr int64_t kIntMax = INT32_MAX;
  // Query vectors (rows x heads) and grid sizes are int on the device.
  if (p.num_tokens * p.num_q_heads >= kIntMax || p.num_seqs >= kIntMax / 64 ||
      p.block_size >= kIntMax || p.max_blocks_per_seq >= kIntMax ||
      p.max_blocks_per_seq * p.block_size >= kIntMax || p.num_kv_heads > 65535) {
    return bad("sizes exceed the kernel's int range (num_tokens ", p.num_tokens, ", num_q_heads ",
               p.num_q_heads, ", num_seqs ", p.num_seqs, ", block_size ", p.block_size,
               ", max_blocks_per_seq ", p.max_blocks_per_seq, ", num_kv_heads ", p.num_kv_heads,
               ")");
  }
  return absl::OkStatus();
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

template <typename T, int D>
absl::Status Launch(const KernelArgs& a, const PagedAttentionParams& p, cudaStream_t stream) {
  constexpr bool kTensorCores = !std::is_same_v<T, float> && (D == 64 || D == 128 || D == 256);
  const int64_t group = p.num_q_heads / p.num_kv_heads;
  if constexpr (kTensorCores) {
    if (IsDecodeBatch(p)) {
      const int64_t blocks = p.num_seqs * a.num_splits * CeilDiv(group, kDecodeHeads);
      const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.num_kv_heads));
      DecodeKernel<T, D><<<grid, kThreads, 0, stream>>>(a);
      RETURN_IF_ERROR(LaunchStatus("PagedAttention decode"));
    } else {
      constexpr int kSmem = PrefillShape<D>::kSmemBytes;
      RETURN_IF_ERROR(AllowSmem(PrefillKernel<T, D>, kSmem));
      const int64_t tiles = CeilDiv(p.num_tokens * group, kPrefillVectors) + p.num_seqs;
      const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.num_kv_heads));
      PrefillKernel<T, D><<<grid, kThreads, kSmem, stream>>>(a);
      RETURN_IF_ERROR(LaunchStatus("PagedAttention prefill"));
    }
  } else {
    constexpr int kSmem = GenericShape<D>::kSmemBytes;
    RETURN_IF_ERROR(AllowSmem(GenericKernel<T, D>, kSmem));
    const int64_t tiles = CeilDiv(p.num_tokens * group, kGenericVectors) + p.num_seqs;
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.num_kv_heads),
                    static_cast<unsigned>(a.num_splits));
    GenericKernel<T, D><<<grid, kThreads, kSmem, stream>>>(a);
    RETURN_IF_ERROR(LaunchStatus("PagedAttention generic"));
  }
  if (a.num_splits > 1) {
    const int64_t items = p.num_tokens * p.num_q_heads;
    CombineKernel<D><<<static_cast<unsigned>(CeilDiv(items, kWarps)), kThreads, 0, stream>>>(a);
    RETURN_IF_ERROR(LaunchStatus("PagedAttention combine"));
  }
  return absl::OkStatus();
}

}  // namespace

size_t PagedAttentionWorkspaceBytes(const PagedAttentionParams& p) {
  const int64_t splits = NumSplits(p);
  if (splits <= 1 || p.head_dim <= 0) return 0;
  // [splits, T, Hq, D] partial outputs, then [splits, T, Hq] (max, sum).
  return static_cast<size_t>(splits * p.num_tokens * p.num_q_heads * (p.head_dim + 2)) *
         sizeof(float);
}

absl::Status PagedAttention(const PagedAttentionParams& p, void* workspace, size_t workspace_bytes,
                            cudaStream_t stream) {
  if (p.num_tokens == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckParams(p));
  const size_t needed = PagedAttentionWorkspaceBytes(p);
  if (workspace_bytes < needed || (needed > 0 && workspace == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat("PagedAttention: workspace of ", needed,
                                                   " bytes needed, ", workspace_bytes, " given"));
  }
  if (needed > 0 && reinterpret_cast<uintptr_t>(workspace) % 16 != 0) {
    return absl::InvalidArgumentError("PagedAttention: workspace must be 16-byte aligned");
  }
  KernelArgs a{};
  a.q = p.q;
  a.k_cache = p.k_cache;
  a.v_cache = p.v_cache;
  a.query_start = p.query_start;
  a.context_lens = p.context_lens;
  a.block_tables = p.block_tables;
  a.out = p.out;
  a.errors = p.errors;
  a.num_blocks = p.num_blocks;
  a.block_size = static_cast<int>(p.block_size);
  a.num_kv_heads = static_cast<int>(p.num_kv_heads);
  a.num_q_heads = static_cast<int>(p.num_q_heads);
  a.group = static_cast<int>(p.num_q_heads / p.num_kv_heads);
  a.max_blocks_per_seq = static_cast<int>(p.max_blocks_per_seq);
  a.num_seqs = static_cast<int>(p.num_seqs);
  a.num_tokens = static_cast<int>(p.num_tokens);
  a.num_splits = static_cast<int>(NumSplits(p));
  a.scale_log2 = p.scale * kLog2e;
  if (a.num_splits > 1) {
    a.ws_acc = static_cast<float*>(workspace);
    a.ws_ml = reinterpret_cast<float2*>(a.ws_acc +
                                        a.num_splits * p.num_tokens * p.num_q_heads * p.head_dim);
  }
  return DispatchElem(p.cache_type, [&](auto elem) -> absl::Status {
    using T = decltype(elem);
    return DispatchHeadDim(p.head_dim, [&](auto dim) -> absl::Status {
      return Launch<T, decltype(dim)::value>(a, p, stream);
    });
  });
}

}  // namespace epserve::kernels::cuda
