// Per-row logit statistics (see sampling.cuh). One block per row streams
// the row once (float4 loads when the rows allow it, several loads in
// flight per thread); per-thread partial results are merged with warp
// shuffles and then across warps in shared memory.
//
// Non-finite logits as the CPU reference (kernels/cpu/logits_stats.cc): NaN
// counts as -inf everywhere; a row whose maximum is not finite (+inf
// present, or nothing above -inf) gets that maximum as its logsumexp, and
// the caller hands such rows to the host sampler.
#include <math_constants.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/sampling.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr int64_t kMaxBlocks = 1 << 14;  // grid cap; rows beyond are grid-strided
constexpr int kUnroll = 4;               // loads in flight per thread
constexpr int32_t kNoId = INT32_MAX;     // "no entry yet": loses every tie

template <int W>
struct Pack {
  float v[W];
};

// Logits are read once: streaming loads (evict first).
template <int W>
__device__ __forceinline__ Pack<W> LoadStreaming(const float* p);
template <>
__device__ __forceinline__ Pack<1> LoadStreaming<1>(const float* p) {
  return {{__ldcs(p)}};
}
template <>
__device__ __forceinline__ Pack<4> LoadStreaming<4>(const float* p) {
  const float4 f = __ldcs(reinterpret_cast<const float4*>(p));
  return {{f.x, f.y, f.z, f.w}};
}

__device__ __forceinline__ float NanToNegInf(float x) { return x != x ? -CUDART_INF_F : x; }

// "a comes before b": larger value first, then lower id.
__device__ __forceinline__ bool Before(float av, int32_t ai, float bv, int32_t bi) {
  return av > bv || (av == bv && ai < bi);
}

bool IsAligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// ---- RowArgmaxLogsumexp -------------------------------------------------------

// Running statistics of a set of logits (NaN already -inf). Trivial, so it
// can live in shared memory; EmptyStats() is the empty set.
struct RowStats {
  float best;       // largest value (+inf included)...
  int32_t best_id;  // ...and its lowest id
  float max;        // largest finite value
  float sum;        // sum of exp(x - max) over the finite values
};

__device__ __forceinline__ RowStats EmptyStats() {
  return RowStats{-CUDART_INF_F, kNoId, -CUDART_INF_F, 0.0f};
}

__device__ __forceinline__ void Add(RowStats& s, float x, int32_t id) {
  x = NanToNegInf(x);
  if (Before(x, id, s.best, s.best_id)) {
    s.best = x;
    s.best_id = id;
  }
  if (x == CUDART_INF_F) return;  // only `best` sees +inf
  if (x > s.max) {  // online rescale; also the first finite value (max == -inf, sum == 0)
    s.sum = s.sum * expf(s.max - x) + 1.0f;
    s.max = x;
  } else if (x != -CUDART_INF_F) {
    s.sum += expf(x - s.max);
  }
}

__device__ __forceinline__ RowStats Merge(const RowStats& a, const RowStats& b) {
  RowStats out = EmptyStats();
  const bool take_b = Before(b.best, b.best_id, a.best, a.best_id);
  out.best = take_b ? b.best : a.best;
  out.best_id = take_b ? b.best_id : a.best_id;
  out.max = fmaxf(a.max, b.max);
  if (out.max == -CUDART_INF_F) {
    out.sum = 0.0f;
  } else {  // a side with no finite value has sum 0 and exp(-inf) = 0
    out.sum = a.sum * expf(a.max - out.max) + b.sum * expf(b.max - out.max);
  }
  return out;
}

__device__ __forceinline__ RowStats ShuffleXor(const RowStats& s, int offset) {
  RowStats o = EmptyStats();
  o.best = __shfl_xor_sync(0xffffffffu, s.best, offset);
  o.best_id = __shfl_xor_sync(0xffffffffu, s.best_id, offset);
  o.max = __shfl_xor_sync(0xffffffffu, s.max, offset);
  o.sum = __shfl_xor_sync(0xffffffffu, s.sum, offset);
  return o;
}

template <int kThreads, int W>
__global__ void __launch_bounds__(kThreads)
    ArgmaxLogsumexpKernel(const float* logits, int64_t rows, int64_t vocab, int32_t* argmax,
                          float* row_max, float* logsumexp) {
  constexpr int kWarps = kThreads / 32;
  __shared__ RowStats warp_stats[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t num_packs = vocab / W;  // vocab % W == 0
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* x = logits + row * vocab;
    RowStats s = EmptyStats();
    for (int64_t base = threadIdx.x; base < num_packs; base += kThreads * kUnroll) {
      Pack<W> buf[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t p = base + static_cast<int64_t>(u) * kThreads;
        if (p < num_packs) buf[u] = LoadStreaming<W>(x + p * W);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t p = base + static_cast<int64_t>(u) * kThreads;
        if (p < num_packs) {
#pragma unroll
          for (int j = 0; j < W; ++j) Add(s, buf[u].v[j], static_cast<int32_t>(p * W + j));
        }
      }
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) s = Merge(s, ShuffleXor(s, offset));
    if (lane == 0) warp_stats[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      RowStats t = warp_stats[0];
      for (int i = 1; i < kWarps; ++i) t = Merge(t, warp_stats[i]);
      // t.best is the row maximum, +inf included. Not finite (+inf, or
      // -inf: nothing above -inf): logsumexp is that value too.
      const float lse =
          t.best == CUDART_INF_F || t.best == -CUDART_INF_F ? t.best : t.max + logf(t.sum);
      if (argmax != nullptr) argmax[row] = t.best == -CUDART_INF_F ? 0 : t.best_id;
      if (row_max != nullptr) row_max[row] = t.best;
      if (logsumexp != nullptr) logsumexp[row] = lse;
    }
    __syncthreads();  // warp_stats is reused by the next row
  }
}

template <int kThreads, int W>
void LaunchArgmaxLogsumexp(const float* logits, int64_t rows, int64_t vocab, int32_t* argmax,
                           float* row_max, float* logsumexp, cudaStream_t stream) {
  ArgmaxLogsumexpKernel<kThreads, W>
      <<<static_cast<unsigned int>(std::min(rows, kMaxBlocks)), kThreads, 0, stream>>>(
          logits, rows, vocab, argmax, row_max, logsumexp);
}

// ---- RowTopN --------------------------------------------------------------------

constexpr int kTopNThreads = 512;

// A thread's best kCap entries, sorted by Before; empty slots are
// (-inf, kNoId), after every real entry.
template <int kCap>
struct TopList {
  float v[kCap];
  int32_t id[kCap];

  __device__ __forceinline__ void Clear() {
#pragma unroll
    for (int j = 0; j < kCap; ++j) {
      v[j] = -CUDART_INF_F;
      id[j] = kNoId;
    }
  }

  __device__ __forceinline__ void Insert(float x, int32_t i) {
    if (!Before(x, i, v[kCap - 1], id[kCap - 1])) return;  // the common case
    v[kCap - 1] = x;
    id[kCap - 1] = i;
#pragma unroll
    for (int j = kCap - 1; j > 0; --j) {  // one bubble pass restores the order
      if (Before(v[j], id[j], v[j - 1], id[j - 1])) {
        const float tv = v[j];
        v[j] = v[j - 1];
        v[j - 1] = tv;
        const int32_t ti = id[j];
        id[j] = id[j - 1];
        id[j - 1] = ti;
      }
    }
  }

  __device__ __forceinline__ void PopFront() {
#pragma unroll
    for (int j = 0; j + 1 < kCap; ++j) {
      v[j] = v[j + 1];
      id[j] = id[j + 1];
    }
    v[kCap - 1] = -CUDART_INF_F;
    id[kCap - 1] = kNoId;
  }
};

// Every thread keeps its own top kCap (>= n); then n rounds of a block-wide
// argmax over the threads' heads, the winner's thread popping its head. An
// entry of the row's top n is in its thread's top n, so the rounds find
// exactly the row's top n, in order.
template <int kCap, int W>
__global__ void __launch_bounds__(kTopNThreads)
    TopNKernel(const float* logits, int64_t rows, int64_t vocab, int n, int32_t* ids,
               float* values) {
  constexpr int kWarps = kTopNThreads / 32;
  __shared__ float warp_v[kWarps];
  __shared__ int32_t warp_id[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t num_packs = vocab / W;  // vocab % W == 0
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* x = logits + row * vocab;
    TopList<kCap> list;
    list.Clear();
    for (int64_t base = threadIdx.x; base < num_packs; base += kTopNThreads * kUnroll) {
      Pack<W> buf[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t p = base + static_cast<int64_t>(u) * kTopNThreads;
        if (p < num_packs) buf[u] = LoadStreaming<W>(x + p * W);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t p = base + static_cast<int64_t>(u) * kTopNThreads;
        if (p < num_packs) {
#pragma unroll
          for (int j = 0; j < W; ++j) {
            list.Insert(NanToNegInf(buf[u].v[j]), static_cast<int32_t>(p * W + j));
          }
        }
      }
    }

    for (int r = 0; r < n; ++r) {
      float v = list.v[0];
      int32_t id = list.id[0];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, offset);
        const int32_t oid = __shfl_xor_sync(0xffffffffu, id, offset);
        if (Before(ov, oid, v, id)) {
          v = ov;
          id = oid;
        }
      }
      if (lane == 0) {
        warp_v[warp] = v;
        warp_id[warp] = id;
      }
      __syncthreads();
      v = warp_v[0];
      id = warp_id[0];
      for (int i = 1; i < kWarps; ++i) {
        if (Before(warp_v[i], warp_id[i], v, id)) {
          v = warp_v[i];
          id = warp_id[i];
        }
      }
      if (id != kNoId && list.id[0] == id) list.PopFront();  // ids are unique
      if (threadIdx.x == 0) {
        ids[row * n + r] = id;
        values[row * n + r] = v;
      }
      __syncthreads();  // warp_v / warp_id are rewritten by the next round
    }
  }
}

template <int kCap, int W>
void LaunchTopN(const float* logits, int64_t rows, int64_t vocab, int n, int32_t* ids,
                float* values, cudaStream_t stream) {
  TopNKernel<kCap, W>
      <<<static_cast<unsigned int>(std::min(rows, kMaxBlocks)), kTopNThreads, 0, stream>>>(
          logits, rows, vocab, n, ids, values);
}

template <int W>
void DispatchTopN(const float* logits, int64_t rows, int64_t vocab, int n, int32_t* ids,
                  float* values, cudaStream_t stream) {
  if (n == 1) {
    LaunchTopN<1, W>(logits, rows, vocab, n, ids, values, stream);
  } else if (n <= 5) {
    LaunchTopN<5, W>(logits, rows, vocab, n, ids, values, stream);
  } else if (n <= 10) {
    LaunchTopN<10, W>(logits, rows, vocab, n, ids, values, stream);
  } else {
    LaunchTopN<kMaxTopLogprobs, W>(logits, rows, vocab, n, ids, values, stream);
  }
}

absl::Status CheckShape(const char* op, int64_t rows, int64_t vocab) {
  if (rows < 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": rows: expected >= 0, found ", rows));
  }
  if (vocab <= 0 || vocab > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": vocab: expected 1..", INT32_MAX, ", found ", vocab));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RowArgmaxLogsumexp(const float* logits, int64_t rows, int64_t vocab, int32_t* argmax,
                                float* row_max, float* logsumexp, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckShape("RowArgmaxLogsumexp", rows, vocab));
  if (argmax == nullptr && row_max == nullptr && logsumexp == nullptr) return absl::OkStatus();
  const bool vec = vocab % 4 == 0 && IsAligned(logits, 16);
  // Few rows: the widest blocks, for bytes in flight per row; many rows:
  // two blocks of 512 per SM.
  const bool few_rows = rows < 128;
  if (vec) {
    if (few_rows) {
      LaunchArgmaxLogsumexp<1024, 4>(logits, rows, vocab, argmax, row_max, logsumexp, stream);
    } else {
      LaunchArgmaxLogsumexp<512, 4>(logits, rows, vocab, argmax, row_max, logsumexp, stream);
    }
  } else {
    if (few_rows) {
      LaunchArgmaxLogsumexp<1024, 1>(logits, rows, vocab, argmax, row_max, logsumexp, stream);
    } else {
      LaunchArgmaxLogsumexp<512, 1>(logits, rows, vocab, argmax, row_max, logsumexp, stream);
    }
  }
  return LaunchStatus("RowArgmaxLogsumexp");
}

absl::Status RowTopN(const float* logits, int64_t rows, int64_t vocab, int n, int32_t* ids,
                     float* values, cudaStream_t stream) {
  if (rows == 0) return absl::OkStatus();
  RETURN_IF_ERROR(CheckShape("RowTopN", rows, vocab));
  if (n < 1 || n > kMaxTopLogprobs || n > vocab) {
    return absl::InvalidArgumentError(absl::StrCat("RowTopN: n: expected 1..",
                                                   std::min<int64_t>(kMaxTopLogprobs, vocab),
                                                   " (kMaxTopLogprobs, vocab), found ", n));
  }
  if (vocab % 4 == 0 && IsAligned(logits, 16)) {
    DispatchTopN<4>(logits, rows, vocab, n, ids, values, stream);
  } else {
    DispatchTopN<1>(logits, rows, vocab, n, ids, values, stream);
  }
  return LaunchStatus("RowTopN");
}

}  // namespace epserve::kernels::cuda
