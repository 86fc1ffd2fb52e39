// Shared by the paged attention kernels (attention_decode.cu,
// attention_prefill.cu) and their host entry (attention.cu): tile constants,
// the kernel arguments, device helpers, the prologue of the prefill and
// generic CTAs (BeginTile), the one place head_dim becomes a template
// parameter, and the per-family launchers with the (cache type, head_dim)
// pairs they are instantiated for.
//
// Metadata problems (query rows outside [0, num_tokens) or descending,
// context_len < q_len, a context needing more blocks than the table width, a
// block id outside [0, num_blocks) anywhere in the sequence's context) set
// kErrBlockTable and make every output row of the sequence zero. No address
// is formed from a value that has not been checked.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda::attention_internal {

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

__device__ __forceinline__ int MinI(int x, int y) { return x < y ? x : y; }
__device__ __forceinline__ int MaxI(int x, int y) { return x > y ? x : y; }
__device__ __forceinline__ int64_t Min64(int64_t x, int64_t y) { return x < y ? x : y; }

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

// Context range of split `split` (all of it when there is one split). The
// same rule on every CTA of a sequence, so the splits tile [0, ctx) exactly.
__device__ __forceinline__ int SplitChunk(int ctx, int num_splits) {
  if (num_splits == 1) return ctx;
  const int per = (ctx + num_splits - 1) / num_splits;
  return MaxI(static_cast<int>(kMinSplitTokens), (per + 15) / 16 * 16);
}

// ---- prologue of the prefill and generic CTAs -------------------------------

// Batch-level query layout (query_start[0] == 0, [S] == T, ascending); the
// rows of a batch that fails it may be left unwritten. One CTA calls it.
inline __device__ void CheckQueryLayout(const KernelArgs& a) {
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
inline __device__ bool FindTile(const KernelArgs& a, int tile_vectors, int tile, int* seq,
                                int* seq_tile) {
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

// Zeros (one split) or the "bad" partial marker (several) for query vectors
// [v_begin, v_end) of a sequence whose rows start at q0.
inline __device__ void WriteBadVectors(const KernelArgs& a, int head_dim, int kv_head, int split,
                                       int q0, int v_begin, int v_end) {
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
  int s;               // sequence
  int q0, ctx;         // its first query row and context length
  int q_len;           // its query rows
  int v_begin, v_end;  // this CTA's query vectors (row * group + head)
};

// Fills *w and returns true when the CTA has work. False when it has none,
// or when the sequence's metadata or block table is bad: then its vectors
// are written as WriteBadVectors does and kErrBlockTable is set. Every
// thread of the CTA must call it (a block-wide vote).
inline __device__ bool BeginTile(const KernelArgs& a, int tile_vectors, int head_dim, int kv_head,
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

// ---- host side --------------------------------------------------------------

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
  return absl::UnimplementedError(
      absl::StrCat("PagedAttention: head_dim ", head_dim,
                   " is not supported (8, 12, 16, 24, 32, 48, 64, 80, 96, 128, 256)"));
}

// Whether cache type T with head size D runs on the tensor-core kernels
// (DecodeKernel for decode batches, PrefillKernel otherwise); every other
// pair runs GenericKernel.
template <typename T, int D>
inline constexpr bool kTensorCoreKernels =
    !std::is_same_v<T, float> && (D == 64 || D == 128 || D == 256);

// Per-family launchers: the kernel on `stream` with the grid attention.cu's
// Launch computes from the sizes, then the launch status. One split per
// grid.z of GenericKernel; CombineKernel takes one warp per (row, q head).
// Decode and combine: attention_decode.cu; prefill and generic:
// attention_prefill.cu.
template <typename T, int D>
absl::Status LaunchDecode(const KernelArgs& a, dim3 grid, cudaStream_t stream);
template <typename T, int D>
absl::Status LaunchPrefill(const KernelArgs& a, dim3 grid, cudaStream_t stream);
template <typename T, int D>
absl::Status LaunchGeneric(const KernelArgs& a, dim3 grid, cudaStream_t stream);
template <int D>
absl::Status LaunchCombine(const KernelArgs& a, dim3 grid, cudaStream_t stream);

// The (cache type, head_dim) pairs Launch reaches (DispatchElem's types x
// DispatchHeadDim's sizes, split by kTensorCoreKernels), the one list the
// kernel files instantiate their launchers from: X(T, D) per pair. A pair
// missing here fails at link time, one in the wrong list at compile time.
// clang-format off
#define EPSERVE_ATTENTION_TENSOR_CORE_DIMS(X, T) X(T, 64) X(T, 128) X(T, 256)
#define EPSERVE_ATTENTION_FMA_DIMS(X, T) \
  X(T, 8) X(T, 12) X(T, 16) X(T, 24) X(T, 32) X(T, 48) X(T, 80) X(T, 96)
// DecodeKernel and PrefillKernel.
#define EPSERVE_ATTENTION_TENSOR_CORE_PAIRS(X)         \
  EPSERVE_ATTENTION_TENSOR_CORE_DIMS(X, __nv_bfloat16) \
  EPSERVE_ATTENTION_TENSOR_CORE_DIMS(X, __half)
// GenericKernel.
#define EPSERVE_ATTENTION_GENERIC_PAIRS(X)           \
  EPSERVE_ATTENTION_FMA_DIMS(X, float)               \
  EPSERVE_ATTENTION_TENSOR_CORE_DIMS(X, float)       \
  EPSERVE_ATTENTION_FMA_DIMS(X, __nv_bfloat16)       \
  EPSERVE_ATTENTION_FMA_DIMS(X, __half)
// CombineKernel (every head size; the type argument is unused).
#define EPSERVE_ATTENTION_ALL_DIMS(X)        \
  EPSERVE_ATTENTION_FMA_DIMS(X, float)       \
  EPSERVE_ATTENTION_TENSOR_CORE_DIMS(X, float)
// clang-format on

}  // namespace epserve::kernels::cuda::attention_internal
