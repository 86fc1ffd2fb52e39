// The expert-parallel exchange's local kernels (semantics: kernels/ops.h;
// launchers: ep_exchange.cuh). Around the communicator's exchange:
//
//   hidden [T,H], topk ─PackPlan (1 block)──► token_slots [T,W], send_counts [W]
//                      ─PackRows (block/token)► send rows (wire) + routes, rank-major
//                      (T <= 256: both in PackFused, a block per token)
//       ... exchange ...
//   recv routes, counts ─UnpackCount (1 block)► expert_offsets [E+1], route_rows
//   recv rows, route_rows ─UnpackRows (block/slot x H chunk)► rows [M,H] by expert
//       ... grouped expert GEMMs: expert_out [M,H] ...
//   expert_out ─CombinePack (block/slot x H chunk)► back rows (wire) = sum_j w_j * expert_out
//       ... exchange back ...
//   returned rows ─CombineUnpack (block/token x H chunk)► out [T,H] = sum over ranks
//
// The row kernels put one granule in each thread and split a row over
// blockIdx.y, so that even one token fills the GPU's memory pipes.
//
// Rows move in granules of 8 elements (two float4 of float32, one 16-byte
// word of bfloat16) where H % 8 == 0 and the buffers are 16-byte aligned,
// else element by element; every value is converted through float32 with
// round-to-nearest-even, as the CPU backend.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"
#include "common/status.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/ep_exchange.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
// expert_offsets histogram in shared memory (32 KiB at most).
constexpr int64_t kMaxExperts = 8192;
// Route entries of a slot, staged in shared memory by the row kernels.
constexpr int64_t kMaxTopK = 256;

absl::Status Bad(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ __forceinline__ int WarpInclusiveSum(int v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int o = __shfl_up_sync(kFullMask, v, d);
    if (lane >= d) v += o;
  }
  return v;
}

// ---- row granules ----------------------------------------------------------

// kN consecutive elements of a T row as float32 (kN = 8: 16-byte aligned).
template <typename T, int kN>
__device__ __forceinline__ void LoadGranule(const T* __restrict__ p, float (&v)[kN]) {
  if constexpr (kN == 1) {
    v[0] = ToF32<T>(p[0]);
  } else if constexpr (std::is_same_v<T, float>) {
    static_assert(kN == 8);
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
    v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    static_assert(kN == 8 && std::is_same_v<T, __nv_bfloat16>);
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // element 2i in the low half (little endian)
      v[2 * i] = __uint_as_float(w[i] << 16);
      v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
}

__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // round to nearest even
  return *reinterpret_cast<const uint32_t*>(&h);
}

template <typename T, int kN>
__device__ __forceinline__ void StoreGranule(T* __restrict__ p, const float (&v)[kN]) {
  if constexpr (kN == 1) {
    p[0] = FromF32<T>(v[0]);
  } else if constexpr (std::is_same_v<T, float>) {
    static_assert(kN == 8);
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  } else {
    static_assert(kN == 8 && std::is_same_v<T, __nv_bfloat16>);
    *reinterpret_cast<uint4*>(p) = make_uint4(PackBf16x2(v[0], v[1]), PackBf16x2(v[2], v[3]),
                                              PackBf16x2(v[4], v[5]), PackBf16x2(v[6], v[7]));
  }
}

// Calls f(wire tag, granule tag): float32 / bfloat16 rows, kN = 8 or 1.
template <typename F>
absl::Status DispatchRows(const char* op, Elem wire, bool vector, F&& f) {
  auto with_granule = [&](auto tag) -> absl::Status {
    if (vector) return f(tag, std::integral_constant<int, 8>{});
    return f(tag, std::integral_constant<int, 1>{});
  };
  switch (wire) {
    case Elem::kF32:
      return with_granule(float{});
    case Elem::kBF16:
      return with_granule(__nv_bfloat16{});
    default:
      break;
  }
  return Bad(op, "wire rows: expected float32 or bfloat16");
}

// ---- EpDispatchPack ------------------------------------------------------------

// Picks are read in batches of this many independent loads (ids, then their
// ranks), so a token's k picks cost two memory latencies, not 2k.
constexpr int kPickBatch = 8;

// Token t's destinations: bit r set when one of its picks is held by rank r.
// A pick with an id outside [0, E) or a rank outside [0, W) is dropped and
// its error bit added to *bad.
__device__ __forceinline__ uint64_t DestinationMask(const int32_t* __restrict__ topk_ids, int64_t t,
                                                    int top_k,
                                                    const int32_t* __restrict__ expert_to_rank,
                                                    int num_experts, int world, uint32_t* bad) {
  uint64_t mask = 0;
  const int32_t* ids = topk_ids + t * top_k;
  for (int j0 = 0; j0 < top_k; j0 += kPickBatch) {
    int id[kPickBatch];
#pragma unroll
    for (int u = 0; u < kPickBatch; ++u) id[u] = j0 + u < top_k ? __ldg(ids + j0 + u) : 0;
    int rank[kPickBatch];
#pragma unroll
    for (int u = 0; u < kPickBatch; ++u) {
      const bool pick = j0 + u < top_k;
      const bool known = id[u] >= 0 && id[u] < num_experts;
      if (pick && !known) *bad |= kErrEpPackExpertId;
      rank[u] = pick && known ? __ldg(expert_to_rank + id[u]) : -1;
    }
#pragma unroll
    for (int u = 0; u < kPickBatch; ++u) {
      const bool pick = j0 + u < top_k && id[u] >= 0 && id[u] < num_experts;
      if (!pick) continue;
      if (rank[u] < 0 || rank[u] >= world) {
        *bad |= kErrEpPackRank;
        continue;
      }
      mask |= uint64_t{1} << rank[u];
    }
  }
  return mask;
}

// Token t's picks for its route words, read by every block of the token
// before anything waits on them: s_rank[j] = the rank holding pick j (-1:
// an id or rank out of range, flagged by DestinationMask), s_id[j], s_weight
// bits[j]. Every thread of the block; visible after the next barrier.
__device__ __forceinline__ void LoadTokenPicks(const int32_t* __restrict__ topk_ids,
                                               const float* __restrict__ topk_weights, int64_t t,
                                               int top_k,
                                               const int32_t* __restrict__ expert_to_rank,
                                               int num_experts, int world, int* s_id, int* s_rank,
                                               int* s_weight) {
  for (int j = threadIdx.x; j < top_k; j += blockDim.x) {
    const int id = __ldg(topk_ids + t * top_k + j);
    const bool known = id >= 0 && id < num_experts;
    const int r = known ? __ldg(expert_to_rank + id) : -1;
    s_id[j] = id;
    s_rank[j] = r >= 0 && r < world ? r : -1;
    s_weight[j] = __float_as_int(__ldg(topk_weights + t * top_k + j));
  }
}

// Token t's route at each destination from its staged picks; s_row[r] = its
// slot row at rank r or -1 (shared memory, ready). Every thread of the block.
__device__ __forceinline__ void WriteTokenRoutes(int top_k, int world, const int64_t* s_row,
                                                 const int* s_id, const int* s_rank,
                                                 const int* s_weight,
                                                 int32_t* __restrict__ send_routes) {
  const int words = 2 * top_k;
  for (int i = threadIdx.x; i < world * words; i += blockDim.x) {
    const int r = i / words, w = i % words;
    const int64_t row = s_row[r];
    if (row < 0) continue;
    const int v = w < top_k ? (s_rank[w] == r ? s_id[w] : -1) : s_weight[w - top_k];
    send_routes[row * words + w] = v;
  }
}

// Token t's row written to every destination in the wire type, read once per
// granule; `first` holds the thread's first granule (at c = tid * kN), loaded
// by the caller before it waited for the slots. Every thread of the block.
template <typename Wire, int kN>
__device__ __forceinline__ void WriteTokenRows(const float* __restrict__ hidden, int64_t t,
                                               int hidden_size, int world, const int64_t* s_row,
                                               const float (&first)[kN],
                                               Wire* __restrict__ send_rows) {
  const int c0 = threadIdx.x * kN;
  if (c0 >= hidden_size) return;
  for (int r = 0; r < world; ++r) {
    const int64_t row = s_row[r];
    if (row >= 0) StoreGranule<Wire, kN>(send_rows + row * hidden_size + c0, first);
  }
  const float* src = hidden + t * hidden_size;
  for (int c = c0 + blockDim.x * kN; c < hidden_size; c += blockDim.x * kN) {
    float v[kN];
    LoadGranule<float, kN>(src + c, v);
    for (int r = 0; r < world; ++r) {
      const int64_t row = s_row[r];
      if (row >= 0) StoreGranule<Wire, kN>(send_rows + row * hidden_size + c, v);
    }
  }
}

// The thread's first granule of token t's row (c = tid * kN), if any.
template <int kN>
__device__ __forceinline__ void LoadFirstGranule(const float* __restrict__ hidden, int64_t t,
                                                 int hidden_size, float (&v)[kN]) {
  const int c0 = threadIdx.x * kN;
  if (c0 < hidden_size) LoadGranule<float, kN>(hidden + t * hidden_size + c0, v);
}

// Up to this many tokens EpDispatchPack is one kernel (EpPackFusedKernel).
constexpr int64_t kFusedPackMaxTokens = 256;

// One block per token t, one thread per token of the batch (blockDim >= T):
// every block builds all T destination masks, and the slot of t at rank r is
// __syncthreads_count(bit r of tokens before t). Block 0 also counts all
// tokens per rank (send_counts) and reports the content errors. Same slots
// as the plan kernel; one launch, no token_slots round trip.
template <typename Wire, int kN>
__global__ void __launch_bounds__(kFusedPackMaxTokens)
    EpPackFusedKernel(const float* __restrict__ hidden, const int32_t* __restrict__ topk_ids,
                      const float* __restrict__ topk_weights, int num_tokens, int top_k,
                      int hidden_size, const int32_t* __restrict__ expert_to_rank, int num_experts,
                      int world, int64_t capacity, int32_t* __restrict__ send_counts,
                      int32_t* __restrict__ token_slots, Wire* __restrict__ send_rows,
                      int32_t* __restrict__ send_routes, uint32_t* errors) {
  __shared__ int64_t s_row[kEpMaxRanks];
  __shared__ uint64_t s_mask;  // token t's
  __shared__ int s_id[kMaxTopK], s_rank[kMaxTopK], s_weight[kMaxTopK];
  const int tid = threadIdx.x;
  const int t = blockIdx.x;
  // Everything that does not wait on the slots is read first.
  float first[kN];
  LoadFirstGranule<kN>(hidden, t, hidden_size, first);
  LoadTokenPicks(topk_ids, topk_weights, t, top_k, expert_to_rank, num_experts, world, s_id, s_rank,
                 s_weight);
  uint32_t bad = 0;
  const uint64_t mask = tid < num_tokens ? DestinationMask(topk_ids, tid, top_k, expert_to_rank,
                                                           num_experts, world, &bad)
                                         : 0;
  if (tid == t) s_mask = mask;
  __syncthreads();
  const uint64_t mine = s_mask;
  for (int r = 0; r < world; ++r) {
    const bool bit = (mask >> r) & 1u;
    const int before = __syncthreads_count(bit && tid < t);
    if (tid == 0) {
      const int slot = (mine >> r) & 1u ? before : -1;
      s_row[r] = slot >= 0 ? r * capacity + slot : -1;
      token_slots[static_cast<int64_t>(t) * world + r] = slot;
    }
  }
  if (t == 0) {  // block-uniform
    for (int r = 0; r < world; ++r) {
      const int total = __syncthreads_count((mask >> r) & 1u);
      if (tid == 0) send_counts[r] = total;
    }
    if (bad != 0) atomicOr(errors, bad);
  }
  __syncthreads();
  WriteTokenRoutes(top_k, world, s_row, s_id, s_rank, s_weight, send_routes);
  WriteTokenRows<Wire, kN>(hidden, t, hidden_size, world, s_row, first, send_rows);
}

constexpr int kPlanMaxThreads = 1024;

// Above kFusedPackMaxTokens (and at T = 0), the slot plan in one block.
// Tokens in chunks of blockDim, one per thread: its destination mask, then
// per rank a ballot in each warp (count, and rank among the warp's lanes),
// the warps' counts scanned on top of the rank's running cursor. token t's
// slot at r = cursor before its chunk + tokens of earlier warps in the chunk
// + earlier lanes of its warp: the number of tokens before t sent to r.
__global__ void __launch_bounds__(kPlanMaxThreads)
    EpPackPlanKernel(const int32_t* __restrict__ topk_ids, int num_tokens, int top_k,
                     const int32_t* __restrict__ expert_to_rank, int num_experts, int world,
                     int32_t* __restrict__ send_counts, int32_t* __restrict__ token_slots,
                     uint32_t* errors) {
  __shared__ int s_warp_base[kPlanMaxThreads / 32][kEpMaxRanks];  // counts, then bases
  __shared__ int s_cursor[kEpMaxRanks];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int num_warps = blockDim.x >> 5;
  const unsigned lanes_below = (1u << lane) - 1u;
  for (int r = tid; r < world; r += blockDim.x) s_cursor[r] = 0;
  __syncthreads();

  uint32_t bad = 0;
  for (int base = 0; base < num_tokens; base += blockDim.x) {  // block-uniform
    const int t = base + tid;
    const uint64_t mask = t < num_tokens ? DestinationMask(topk_ids, t, top_k, expert_to_rank,
                                                           num_experts, world, &bad)
                                         : 0;
    for (int r = 0; r < world; ++r) {
      const unsigned b = __ballot_sync(kFullMask, (mask >> r) & 1u);
      if (lane == 0) s_warp_base[warp][r] = __popc(b);
    }
    __syncthreads();
    for (int r = tid; r < world; r += blockDim.x) {
      int run = s_cursor[r];
      for (int w = 0; w < num_warps; ++w) {
        const int c = s_warp_base[w][r];
        s_warp_base[w][r] = run;
        run += c;
      }
      s_cursor[r] = run;
    }
    __syncthreads();
    for (int r = 0; r < world; ++r) {
      const bool sent = (mask >> r) & 1u;
      const unsigned b = __ballot_sync(kFullMask, sent);
      if (t < num_tokens) {
        token_slots[static_cast<int64_t>(t) * world + r] =
            sent ? s_warp_base[warp][r] + __popc(b & lanes_below) : -1;
      }
    }
    __syncthreads();  // s_warp_base is rewritten by the next chunk
  }
  if (bad != 0) atomicOr(errors, bad);
  for (int r = tid; r < world; r += blockDim.x) send_counts[r] = s_cursor[r];
}

constexpr int kPackRowsMaxThreads = 256;

// After the plan kernel: one block per token, its slots from token_slots.
template <typename Wire, int kN>
__global__ void __launch_bounds__(kPackRowsMaxThreads)
    EpPackRowsKernel(const float* __restrict__ hidden, const int32_t* __restrict__ topk_ids,
                     const float* __restrict__ topk_weights, int top_k, int hidden_size,
                     const int32_t* __restrict__ expert_to_rank, int num_experts, int world,
                     int64_t capacity, const int32_t* __restrict__ token_slots,
                     Wire* __restrict__ send_rows, int32_t* __restrict__ send_routes) {
  __shared__ int64_t s_row[kEpMaxRanks];  // slot row at rank r, or -1
  __shared__ int s_id[kMaxTopK], s_rank[kMaxTopK], s_weight[kMaxTopK];
  const int64_t t = blockIdx.x;
  float first[kN];
  LoadFirstGranule<kN>(hidden, t, hidden_size, first);
  LoadTokenPicks(topk_ids, topk_weights, t, top_k, expert_to_rank, num_experts, world, s_id, s_rank,
                 s_weight);
  for (int r = threadIdx.x; r < world; r += blockDim.x) {
    const int slot = token_slots[t * world + r];
    s_row[r] = slot >= 0 ? r * capacity + slot : -1;
  }
  __syncthreads();
  WriteTokenRoutes(top_k, world, s_row, s_id, s_rank, s_weight, send_routes);
  WriteTokenRows<Wire, kN>(hidden, t, hidden_size, world, s_row, first, send_rows);
}

// ---- EpDispatchUnpack ----------------------------------------------------------

constexpr int kCountMaxThreads = 1024;
// Ranks EpDispatchUnpack takes (their entry prefix lives in shared memory).
constexpr int64_t kMaxUnpackRanks = 1024;

// Route ids of slot s in batches of kPickBatch independent loads: calls
// f(j, e) for each of its k entries (e as received).
template <typename F>
__device__ __forceinline__ void ForSlotIds(const int32_t* __restrict__ recv_routes, int64_t s,
                                           int top_k, F&& f) {
  const int32_t* ids = recv_routes + s * 2 * top_k;
  for (int j0 = 0; j0 < top_k; j0 += kPickBatch) {
    int e[kPickBatch];
#pragma unroll
    for (int u = 0; u < kPickBatch; ++u) e[u] = j0 + u < top_k ? __ldg(ids + j0 + u) : -1;
#pragma unroll
    for (int u = 0; u < kPickBatch; ++u) {
      if (j0 + u < top_k) f(j0 + u, e[u]);
    }
  }
}

// One block, a thread per slot (looping over W*C slots): the histogram of
// the valid slots' route entries per expert (shared atomics), a block scan
// -> expert_offsets (clamped to M), then every entry claims its row from its
// expert's cursor (route_rows; -1 for entries of no expert here and past M).
// A slot's k ids are independent loads, so each pass costs one memory
// latency per W*C / blockDim slots. Entries of empty slots (i >= count) are
// left to UnpackRows.
__global__ void __launch_bounds__(kCountMaxThreads)
    EpUnpackCountKernel(const int32_t* __restrict__ recv_routes,
                        const int32_t* __restrict__ recv_counts, int world, int capacity, int top_k,
                        int num_experts, int max_rows, int32_t* __restrict__ expert_offsets,
                        int32_t* __restrict__ route_rows, uint32_t* errors) {
  extern __shared__ int s_dyn[];
  int* s_hist = s_dyn;                 // [E]
  int* s_count = s_dyn + num_experts;  // [W], clamped
  __shared__ int s_warp[kCountMaxThreads / 32];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int num_warps = blockDim.x >> 5;
  uint32_t bad = 0;
  for (int e = tid; e < num_experts; e += blockDim.x) s_hist[e] = 0;
  for (int q = tid; q < world; q += blockDim.x) {
    const int count = recv_counts[q];
    if (count < 0 || count > capacity) bad |= kErrEpUnpackCount;
    s_count[q] = min(max(count, 0), capacity);
  }
  __syncthreads();

  const int num_slots = world * capacity;
  for (int s = tid; s < num_slots; s += blockDim.x) {
    const int q = s / capacity;
    if (s - q * capacity >= s_count[q]) continue;
    ForSlotIds(recv_routes, s, top_k, [&](int, int e) {
      if (e < -1 || e >= num_experts) {
        bad |= kErrEpUnpackExpertId;
      } else if (e >= 0) {
        atomicAdd(&s_hist[e], 1);
      }
    });
  }
  __syncthreads();

  // Thread tid owns experts [e0, e1); exclusive scan of the owners' sums.
  const int per = (num_experts + blockDim.x - 1) / blockDim.x;
  const int e0 = min(tid * per, num_experts), e1 = min(e0 + per, num_experts);
  int local = 0;
  for (int e = e0; e < e1; ++e) local += s_hist[e];
  const int incl = WarpInclusiveSum(local);
  if (lane == 31) s_warp[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int v = lane < num_warps ? s_warp[lane] : 0;
    const int wi = WarpInclusiveSum(v);
    if (lane < num_warps) s_warp[lane] = wi - v;
  }
  __syncthreads();
  int run = s_warp[warp] + incl - local;
  for (int e = e0; e < e1; ++e) {
    const int c = s_hist[e];
    s_hist[e] = run;  // from here on: expert e's cursor (unclamped)
    expert_offsets[e] = min(run, max_rows);
    run += c;
  }
  if (tid == blockDim.x - 1) {  // owns the last experts: run is the total
    expert_offsets[num_experts] = min(run, max_rows);
    if (run > max_rows) bad |= kErrEpUnpackRows;
  }
  __syncthreads();

  // Positions (the loads of this pass hit the L1 lines of the first).
  for (int s = tid; s < num_slots; s += blockDim.x) {
    const int q = s / capacity;
    if (s - q * capacity >= s_count[q]) continue;
    int32_t* out = route_rows + static_cast<int64_t>(s) * top_k;
    ForSlotIds(recv_routes, s, top_k, [&](int j, int e) {
      int pos = -1;
      if (e >= 0 && e < num_experts) {
        pos = atomicAdd(&s_hist[e], 1);
        if (pos >= max_rows) pos = -1;  // flagged above
      }
      out[j] = pos;
    });
  }
  if (bad != 0) atomicOr(errors, bad);
}

constexpr int kRowThreads = 256;  // granules per block of the row kernels

// Threads of a row kernel's block for rows of `hidden_size` in granules of kN.
int RowThreads(int64_t hidden_size, int kN) {
  const int64_t granules = (hidden_size + kN - 1) / kN;
  return static_cast<int>(std::clamp<int64_t>((granules + 31) / 32 * 32, 32, kRowThreads));
}

// The row kernels' grid: a block column per row (slot or token), enough
// blocks of `threads` granules along y to cover the hidden size.
dim3 RowGrid(int64_t num_rows, int64_t hidden_size, int kN, int threads) {
  return dim3(static_cast<unsigned>(num_rows), static_cast<unsigned>(std::max<int64_t>(
                                                   1, CeilDiv(CeilDiv(hidden_size, kN), threads))));
}

// Block (s, y): slot s, granules [y * blockDim, (y + 1) * blockDim) of its
// row, read once and written as float32 to every row route_rows[s] names.
// Empty slots (i >= count) get route_rows -1 (block y = 0). The count, the
// granule and the slot's positions are independent loads issued together
// (the granule and positions of an empty slot are read and dropped: every
// slot lies inside the buffers).
template <typename Wire, int kN>
__global__ void __launch_bounds__(kRowThreads)
    EpUnpackRowsKernel(const Wire* __restrict__ recv_rows, const int32_t* __restrict__ recv_counts,
                       int capacity, int top_k, int hidden_size, float* __restrict__ rows,
                       int32_t* __restrict__ route_rows) {
  const int tid = threadIdx.x;
  const int64_t s = blockIdx.x;
  const int64_t q = s / capacity;
  const int i = static_cast<int>(s - q * capacity);
  const int c = (static_cast<int>(blockIdx.y) * blockDim.x + tid) * kN;
  const int count = min(max(__ldg(recv_counts + q), 0), capacity);
  float v[kN];
  if (c < hidden_size) LoadGranule<Wire, kN>(recv_rows + s * hidden_size + c, v);
  int32_t* slot_rows = route_rows + s * top_k;
  int pos[kPickBatch];
#pragma unroll
  for (int u = 0; u < kPickBatch; ++u) pos[u] = u < top_k ? slot_rows[u] : -1;
  if (i >= count) {  // block-uniform
    if (blockIdx.y == 0) {
      for (int j = tid; j < top_k; j += blockDim.x) slot_rows[j] = -1;
    }
    return;
  }
  if (c >= hidden_size) return;
  for (int j0 = 0;;) {
#pragma unroll
    for (int u = 0; u < kPickBatch; ++u) {
      if (pos[u] >= 0)
        StoreGranule<float, kN>(rows + static_cast<int64_t>(pos[u]) * hidden_size + c, v);
    }
    j0 += kPickBatch;
    if (j0 >= top_k) break;
#pragma unroll
    for (int u = 0; u < kPickBatch; ++u) pos[u] = j0 + u < top_k ? slot_rows[j0 + u] : -1;
  }
}

// ---- EpCombinePack -------------------------------------------------------------

// Block (s, y) of slot s (valid: i < count), granules of block y:
// back_rows[s] = fmaf chain over j ascending of weight_j * expert_out[
// route_rows[s, j]], from 0.0f. Block y = 0's first warp checks the count
// and the route rows.
template <typename Wire, int kN>
__global__ void __launch_bounds__(kRowThreads)
    EpCombinePackKernel(const float* __restrict__ expert_out, int expert_rows,
                        const int32_t* __restrict__ recv_routes,
                        const int32_t* __restrict__ recv_counts,
                        const int32_t* __restrict__ route_rows, int capacity, int top_k,
                        int hidden_size, Wire* __restrict__ back_rows, uint32_t* errors) {
  __shared__ int s_row[kMaxTopK];
  __shared__ float s_weight[kMaxTopK];
  const int tid = threadIdx.x;
  const int64_t s = blockIdx.x;
  const int64_t q = s / capacity;
  const int i = static_cast<int>(s - q * capacity);
  int count = recv_counts[q];
  const bool bad_count = count < 0 || count > capacity;
  count = min(max(count, 0), capacity);
  if (blockIdx.y == 0 && tid < 32) {  // a whole warp: blockDim >= 32
    bool bad = bad_count;
    if (i < count) {
      for (int j = tid; j < top_k; j += 32) {
        const int r = route_rows[s * top_k + j];
        bad |= r < -1 || r >= expert_rows;
      }
    }
    if (__any_sync(kFullMask, bad) && tid == 0) atomicOr(errors, kErrEpCombineRoute);
  }
  if (i >= count) return;  // block-uniform
  for (int j = tid; j < top_k; j += blockDim.x) {
    const int r = route_rows[s * top_k + j];
    s_row[j] = r >= 0 && r < expert_rows ? r : -1;
    s_weight[j] = __int_as_float(recv_routes[s * 2 * top_k + top_k + j]);
  }
  __syncthreads();
  const int c = (static_cast<int>(blockIdx.y) * blockDim.x + tid) * kN;
  if (c >= hidden_size) return;
  float acc[kN];
#pragma unroll
  for (int x = 0; x < kN; ++x) acc[x] = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    const int r = s_row[j];
    if (r < 0) continue;
    const float w = s_weight[j];
    float y[kN];
    LoadGranule<float, kN>(expert_out + static_cast<int64_t>(r) * hidden_size + c, y);
#pragma unroll
    for (int x = 0; x < kN; ++x) acc[x] = fmaf(w, y[x], acc[x]);
  }
  StoreGranule<Wire, kN>(back_rows + s * hidden_size + c, acc);
}

// ---- EpCombineUnpack -----------------------------------------------------------

// Block (t, y) of token t, granules of block y: out[t] = sum over r
// ascending of its returned rows, from 0.0f, one rounding per add (no
// contraction). Block y = 0's first warp checks the slots.
template <typename Wire, int kN>
__global__ void __launch_bounds__(kRowThreads)
    EpCombineUnpackKernel(const Wire* __restrict__ returned_rows,
                          const int32_t* __restrict__ token_slots, int world, int capacity,
                          int hidden_size, float* __restrict__ out, uint32_t* errors) {
  __shared__ int s_slot[kEpMaxRanks];
  const int tid = threadIdx.x;
  const int64_t t = blockIdx.x;
  const int32_t* slots = token_slots + t * world;
  for (int r = tid; r < world; r += blockDim.x) {
    const int slot = slots[r];
    s_slot[r] = slot >= 0 && slot < capacity ? slot : -1;
  }
  if (blockIdx.y == 0 && tid < 32) {  // a whole warp: blockDim >= 32
    bool bad = false;
    for (int r = tid; r < world; r += 32) bad |= slots[r] < -1 || slots[r] >= capacity;
    if (__any_sync(kFullMask, bad) && tid == 0) atomicOr(errors, kErrEpCombineSlot);
  }
  __syncthreads();
  const int c = (static_cast<int>(blockIdx.y) * blockDim.x + tid) * kN;
  if (c >= hidden_size) return;
  float acc[kN];
#pragma unroll
  for (int x = 0; x < kN; ++x) acc[x] = 0.0f;
  for (int r = 0; r < world; ++r) {
    const int slot = s_slot[r];
    if (slot < 0) continue;
    float v[kN];
    LoadGranule<Wire, kN>(
        returned_rows + (static_cast<int64_t>(r) * capacity + slot) * hidden_size + c, v);
#pragma unroll
    for (int x = 0; x < kN; ++x) acc[x] = __fadd_rn(acc[x], v[x]);
  }
  StoreGranule<float, kN>(out + t * hidden_size + c, acc);
}

int RoundUp32(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

}  // namespace

absl::Status EpDispatchPack(const float* hidden, const int32_t* topk_ids, const float* topk_weights,
                            int64_t num_tokens, int64_t top_k, int64_t hidden_size,
                            const int32_t* expert_to_rank, int64_t num_experts, int64_t world,
                            int64_t capacity, void* send_rows, Elem wire, int32_t* send_routes,
                            int32_t* send_counts, int32_t* token_slots, uint32_t* errors,
                            cudaStream_t stream) {
  constexpr const char* kOp = "EpDispatchPack";
  if (world < 1 || world > kEpMaxRanks) {
    return absl::UnimplementedError(absl::StrCat(kOp, ": send_counts: the CUDA backend takes 1..",
                                                 kEpMaxRanks, " ranks, found ", world));
  }
  if (num_tokens < 0 || top_k < 1 || hidden_size < 0 || capacity < num_tokens || num_experts < 1) {
    return Bad(kOp, absl::StrCat("sizes: found T=", num_tokens, " k=", top_k, " H=", hidden_size,
                                 " C=", capacity, " E=", num_experts));
  }
  if (top_k > kMaxTopK) {
    return absl::UnimplementedError(absl::StrCat(kOp, ": topk_ids: the CUDA backend takes k in 1..",
                                                 kMaxTopK, ", found ", top_k));
  }
  if (num_tokens * top_k > INT_MAX || num_tokens * world > INT_MAX || hidden_size > INT_MAX ||
      num_experts > INT_MAX || 2 * top_k > INT_MAX / world) {
    return Bad(kOp, absl::StrCat("T=", num_tokens, " k=", top_k, " H=", hidden_size, " W=", world,
                                 ": expected T*k, T*W, H and 2k*W to fit in int32"));
  }
  const bool vector = hidden_size % 8 == 0 && Aligned16(hidden) && Aligned16(send_rows);
  if (num_tokens >= 1 && num_tokens <= kFusedPackMaxTokens) {
    return DispatchRows(kOp, wire, vector, [&](auto wire_tag, auto granule) -> absl::Status {
      using Wire = decltype(wire_tag);
      constexpr int kN = decltype(granule)::value;
      // A thread per token (the masks), at least a granule per thread of a row.
      const int threads = static_cast<int>(std::clamp<int64_t>(
          RoundUp32(std::max(num_tokens, CeilDiv(hidden_size, kN))), 32, kFusedPackMaxTokens));
      EpPackFusedKernel<Wire, kN><<<static_cast<unsigned>(num_tokens), threads, 0, stream>>>(
          hidden, topk_ids, topk_weights, static_cast<int>(num_tokens), static_cast<int>(top_k),
          static_cast<int>(hidden_size), expert_to_rank, static_cast<int>(num_experts),
          static_cast<int>(world), capacity, send_counts, token_slots,
          static_cast<Wire*>(send_rows), send_routes, errors);
      return LaunchStatus("EpPackFusedKernel");
    });
  }
  const int threads =
      static_cast<int>(std::clamp<int64_t>(RoundUp32(num_tokens), 32, kPlanMaxThreads));
  EpPackPlanKernel<<<1, threads, 0, stream>>>(
      topk_ids, static_cast<int>(num_tokens), static_cast<int>(top_k), expert_to_rank,
      static_cast<int>(num_experts), static_cast<int>(world), send_counts, token_slots, errors);
  RETURN_IF_ERROR(LaunchStatus("EpPackPlanKernel"));
  if (num_tokens == 0) return absl::OkStatus();
  return DispatchRows(kOp, wire, vector, [&](auto wire_tag, auto granule) -> absl::Status {
    using Wire = decltype(wire_tag);
    constexpr int kN = decltype(granule)::value;
    const int rows_threads = static_cast<int>(
        std::clamp<int64_t>(RoundUp32(CeilDiv(hidden_size, kN)), 32, kPackRowsMaxThreads));
    EpPackRowsKernel<Wire, kN><<<static_cast<unsigned>(num_tokens), rows_threads, 0, stream>>>(
        hidden, topk_ids, topk_weights, static_cast<int>(top_k), static_cast<int>(hidden_size),
        expert_to_rank, static_cast<int>(num_experts), static_cast<int>(world), capacity,
        token_slots, static_cast<Wire*>(send_rows), send_routes);
    return LaunchStatus("EpPackRowsKernel");
  });
}

absl::Status EpDispatchUnpack(const void* recv_rows, Elem wire, const int32_t* recv_routes,
                              const int32_t* recv_counts, int64_t world, int64_t capacity,
                              int64_t top_k, int64_t hidden_size, float* rows, int64_t max_rows,
                              int32_t* expert_offsets, int64_t num_experts, int32_t* route_rows,
                              uint32_t* errors, cudaStream_t stream) {
  constexpr const char* kOp = "EpDispatchUnpack";
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return absl::UnimplementedError(absl::StrCat(kOp,
                                                 ": expert_offsets: the CUDA backend takes 1..",
                                                 kMaxExperts, " experts, found ", num_experts));
  }
  if (top_k < 1 || top_k > kMaxTopK) {
    return absl::UnimplementedError(absl::StrCat(
        kOp, ": recv_routes: the CUDA backend takes k in 1..", kMaxTopK, ", found ", top_k));
  }
  if (world > kMaxUnpackRanks) {
    return absl::UnimplementedError(absl::StrCat(kOp, ": recv_counts: the CUDA backend takes 1..",
                                                 kMaxUnpackRanks, " ranks, found ", world));
  }
  if (world < 1 || capacity < 0 || hidden_size < 0 || max_rows < 0) {
    return Bad(kOp, absl::StrCat("sizes: found W=", world, " C=", capacity, " H=", hidden_size,
                                 " M=", max_rows));
  }
  const int64_t num_slots = world * capacity;
  if (num_slots * 2 * top_k > INT_MAX || max_rows > INT_MAX || hidden_size > INT_MAX) {
    return Bad(kOp, absl::StrCat("W*C=", num_slots, " k=", top_k, " M=", max_rows,
                                 " H=", hidden_size, ": expected W*C*2k, M and H to fit in int32"));
  }
  const int count_threads =
      static_cast<int>(std::clamp<int64_t>(RoundUp32(num_slots), 128, kCountMaxThreads));
  // The histogram and the ranks' counts: <= 36 KiB.
  const size_t smem = sizeof(int) * static_cast<size_t>(num_experts + world);
  EpUnpackCountKernel<<<1, count_threads, smem, stream>>>(
      recv_routes, recv_counts, static_cast<int>(world), static_cast<int>(capacity),
      static_cast<int>(top_k), static_cast<int>(num_experts), static_cast<int>(max_rows),
      expert_offsets, route_rows, errors);
  RETURN_IF_ERROR(LaunchStatus("EpUnpackCountKernel"));
  if (num_slots == 0) return absl::OkStatus();
  if (num_slots > INT_MAX) return Bad(kOp, absl::StrCat("W*C=", num_slots, " is too large"));

  const bool vector = hidden_size % 8 == 0 && Aligned16(recv_rows) && Aligned16(rows);
  return DispatchRows(kOp, wire, vector, [&](auto wire_tag, auto granule) -> absl::Status {
    using Wire = decltype(wire_tag);
    constexpr int kN = decltype(granule)::value;
    const int threads = RowThreads(hidden_size, kN);
    const dim3 grid = RowGrid(num_slots, hidden_size, kN, threads);
    EpUnpackRowsKernel<Wire, kN><<<grid, threads, 0, stream>>>(
        static_cast<const Wire*>(recv_rows), recv_counts, static_cast<int>(capacity),
        static_cast<int>(top_k), static_cast<int>(hidden_size), rows, route_rows);
    return LaunchStatus("EpUnpackRowsKernel");
  });
}

absl::Status EpCombinePack(const float* expert_out, int64_t expert_rows, const int32_t* recv_routes,
                           const int32_t* recv_counts, const int32_t* route_rows, int64_t world,
                           int64_t capacity, int64_t top_k, int64_t hidden_size, void* back_rows,
                           Elem wire, uint32_t* errors, cudaStream_t stream) {
  constexpr const char* kOp = "EpCombinePack";
  if (world < 1 || capacity < 0 || top_k < 1 || hidden_size < 0 || expert_rows < 0) {
    return Bad(kOp, absl::StrCat("sizes: found W=", world, " C=", capacity, " k=", top_k,
                                 " H=", hidden_size, " M=", expert_rows));
  }
  const int64_t num_slots = world * capacity;
  if (num_slots == 0) return absl::OkStatus();
  if (capacity > INT_MAX || expert_rows > INT_MAX || hidden_size > INT_MAX || top_k > INT_MAX) {
    return Bad(kOp, absl::StrCat("C=", capacity, " M=", expert_rows, " H=", hidden_size,
                                 ": expected int32 sizes"));
  }
  if (num_slots > INT_MAX) return Bad(kOp, absl::StrCat("W*C=", num_slots, " is too large"));
  if (top_k > kMaxTopK) {
    return absl::UnimplementedError(absl::StrCat(
        kOp, ": route_rows: the CUDA backend takes k in 1..", kMaxTopK, ", found ", top_k));
  }
  const bool vector = hidden_size % 8 == 0 && Aligned16(expert_out) && Aligned16(back_rows);
  return DispatchRows(kOp, wire, vector, [&](auto wire_tag, auto granule) -> absl::Status {
    using Wire = decltype(wire_tag);
    constexpr int kN = decltype(granule)::value;
    const int threads = RowThreads(hidden_size, kN);
    const dim3 grid = RowGrid(num_slots, hidden_size, kN, threads);
    EpCombinePackKernel<Wire, kN><<<grid, threads, 0, stream>>>(
        expert_out, static_cast<int>(expert_rows), recv_routes, recv_counts, route_rows,
        static_cast<int>(capacity), static_cast<int>(top_k), static_cast<int>(hidden_size),
        static_cast<Wire*>(back_rows), errors);
    return LaunchStatus("EpCombinePackKernel");
  });
}

absl::Status EpCombineUnpack(const void* returned_rows, Elem wire, const int32_t* token_slots,
                             int64_t num_tokens, int64_t world, int64_t capacity,
                             int64_t hidden_size, float* out, uint32_t* errors,
                             cudaStream_t stream) {
  constexpr const char* kOp = "EpCombineUnpack";
  if (num_tokens < 0 || world < 1 || capacity < 0 || hidden_size < 0) {
    return Bad(kOp, absl::StrCat("sizes: found T=", num_tokens, " W=", world, " C=", capacity,
                                 " H=", hidden_size));
  }
  if (num_tokens == 0 || hidden_size == 0) return absl::OkStatus();
  if (num_tokens > INT_MAX || world > INT_MAX || capacity > INT_MAX || hidden_size > INT_MAX) {
    return Bad(kOp, absl::StrCat("T=", num_tokens, " W=", world, " C=", capacity,
                                 " H=", hidden_size, ": expected int32 sizes"));
  }
  if (world > kEpMaxRanks) {
    return absl::UnimplementedError(absl::StrCat(kOp, ": token_slots: the CUDA backend takes 1..",
                                                 kEpMaxRanks, " ranks, found ", world));
  }
  const bool vector = hidden_size % 8 == 0 && Aligned16(returned_rows) && Aligned16(out);
  return DispatchRows(kOp, wire, vector, [&](auto wire_tag, auto granule) -> absl::Status {
    using Wire = decltype(wire_tag);
    constexpr int kN = decltype(granule)::value;
    const int threads = RowThreads(hidden_size, kN);
    const dim3 grid = RowGrid(num_tokens, hidden_size, kN, threads);
    EpCombineUnpackKernel<Wire, kN><<<grid, threads, 0, stream>>>(
        static_cast<const Wire*>(returned_rows), token_slots, static_cast<int>(world),
        static_cast<int>(capacity), static_cast<int>(hidden_size), out, errors);
    return LaunchStatus("EpCombineUnpackKernel");
  });
}

}  // namespace epserve::kernels::cuda
