// MoE routing kernels: gate (softmax + top-k), permutation into expert-major
// order and the weighted un-permutation. The grouped expert GEMM between the
// two is in grouped_gemm.cu.
//
//   router_logits [T,E] ─MoeGate─► topk_ids [T,k], topk_weights [T,k]
//   hidden [T,H], topk_ids ─MoePermute─► rows [T*k,H]: expert 0's rows | expert 1's | ...
//                                        expert_offsets [E+1], both index maps
//   expert_out [T*k,H] ─MoeUnpermute(topk_weights)─► out [T,H] in token order
//
// Launch shapes depend only on T, k, E and H (graph capture); nothing here
// reads routing results on the host.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/moe.cuh"

namespace epserve::kernels::cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
// Shared memory of the gate and permutation kernels grows with E.
constexpr int64_t kMaxExperts = 4096;
constexpr int64_t kMaxTopK = 32;  // MoeGate keeps selection j in lane j

absl::Status Bad(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

__device__ __forceinline__ int WarpInclusiveSum(int v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int o = __shfl_up_sync(kFullMask, v, d);
    if (lane >= d) v += o;
  }
  return v;
}

// ---- MoeGate -------------------------------------------------------------
//
// One warp per token row, in either of two kernels with bit-identical
// results: for E <= kGateRegMaxExperts (every MoE model in use) the row's
// logits stay in registers and each top-k round is two warp reductions
// (redux.sync); beyond, they live in shared memory and each round is a
// shuffle butterfly. Both mirror kernels/cpu/moe_gate.cc.

constexpr int kGateMaxWarps = 4;
// Most logits per lane of MoeGateWarpKernel (E <= 32 * this).
constexpr int kGateMaxPerLane = 16;
constexpr int64_t kGateRegMaxExperts = 32 * kGateMaxPerLane;

// The gate's softmax over one row, shared by both kernels. `each(f)` calls
// f(float& p) for every entry the lane owns, in ascending id (lane l owns
// l, l + 32, ...), so the per-lane sums run in the same order in both. The
// non-finite rule of kernels/cpu/moe_gate.cc: NaN counts as absent; any
// +inf shares the mass equally; all absent or -inf: uniform.
template <typename Each>
__device__ __forceinline__ void GateSoftmax(Each each, int num_experts) {
  int num_pos_inf = 0;
  float mx = -INFINITY;
  each([&](float& v) {
    if (isnan(v)) return;
    if (v == INFINITY) ++num_pos_inf;
    mx = fmaxf(mx, v);
  });
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) {
    num_pos_inf += __shfl_xor_sync(kFullMask, num_pos_inf, d);
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, d));
  }
  if (num_pos_inf > 0) {
    const float share = 1.0f / static_cast<float>(num_pos_inf);
    each([&](float& v) { v = v == INFINITY ? share : 0.0f; });
  } else if (mx == -INFINITY) {  // all -inf or NaN
    const float uniform = 1.0f / static_cast<float>(num_experts);
    each([&](float& v) { v = uniform; });
  } else {
    float sum = 0.0f;
    each([&](float& v) {
      v = isnan(v) ? 0.0f : expf(v - mx);
      sum += v;
    });
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) sum += __shfl_xor_sync(kFullMask, sum, d);
    each([&](float& v) { v = v / sum; });  // sum >= 1
  }
}

// Lane j < top_k holds the row's j-th pick (my_id, my_prob): writes them,
// renormalised by their sum over j ascending, as the CPU reference.
__device__ __forceinline__ void WriteGateRow(int row, int top_k, bool renormalize, int my_id,
                                             float my_prob, int32_t* __restrict__ topk_ids,
                                             float* __restrict__ topk_weights) {
  const int lane = threadIdx.x & 31;
  float sum = 0.0f;
  for (int j = 0; j < top_k; ++j) sum += __shfl_sync(kFullMask, my_prob, j);
  if (lane < top_k) {
    const int64_t o = static_cast<int64_t>(row) * top_k + lane;
    topk_ids[o] = my_id;
    // sum > 0: the most probable expert has probability >= 1/E.
    topk_weights[o] = renormalize ? my_prob / sum : my_prob;
  }
}

// One warp per token row, logits in registers: lane l owns experts l + 32 q,
// q < kPerLane, the ownership of MoeGateKernel's loops, so every sum (per
// lane in ascending q, then the same xor butterfly) and every result is the
// same bits. Top-k round: each lane's best untaken entry (strict > in
// ascending id keeps the lower id), then the warp's largest probability by
// an int max over the float bits (probabilities are +0 or positive and
// finite, taken / absent entries -1.0f, and on those the int order of the
// bits is the float order) and the lowest id holding it by an int min: the
// (prob desc, id asc) winner of the butterfly.
template <int kPerLane>
__global__ void __launch_bounds__(kGateMaxWarps * 32)
    MoeGateWarpKernel(const float* __restrict__ logits, int num_tokens, int num_experts, int top_k,
                      bool renormalize, int32_t* __restrict__ topk_ids,
                      float* __restrict__ topk_weights) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;
  if (row >= num_tokens) return;  // whole warps: the rest of the warp stays
  const int e = num_experts;
  const float* x = logits + static_cast<int64_t>(row) * e;

  float p[kPerLane];
#pragma unroll
  for (int q = 0; q < kPerLane; ++q) {
    const int i = lane + 32 * q;
    p[q] = i < e ? __ldg(x + i) : 0.0f;
  }

  GateSoftmax(
      [&](auto f) {
#pragma unroll
        for (int q = 0; q < kPerLane; ++q) {
          if (lane + 32 * q < e) f(p[q]);
        }
      },
      e);
#pragma unroll
  for (int q = 0; q < kPerLane; ++q) {
    if (lane + 32 * q >= e) p[q] = -1.0f;  // never selected
  }

  // k rounds; a taken entry becomes -1. k <= E, so each round finds an
  // untaken entry (the winning key is >= 0).
  int my_id = 0;
  float my_prob = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    float best = -1.0f;
    int best_id = INT_MAX;
#pragma unroll
    for (int q = 0; q < kPerLane; ++q) {
      if (p[q] > best) {
        best = p[q];
        best_id = lane + 32 * q;
      }
    }
    const int key = __reduce_max_sync(kFullMask, __float_as_int(best));
    const int win = __reduce_min_sync(kFullMask, __float_as_int(best) == key ? best_id : INT_MAX);
#pragma unroll
    for (int q = 0; q < kPerLane; ++q) {
      if (lane + 32 * q == win) p[q] = -1.0f;
    }
    if (lane == j) {
      my_id = win;
      my_prob = __int_as_float(key);
    }
  }
  WriteGateRow(row, top_k, renormalize, my_id, my_prob, topk_ids, topk_weights);
}

// E > kGateRegMaxExperts: one warp per token row. probs live in shared
// memory, lane l owning entries
// l, l+32, ... in every pass, so the warp needs no barriers. Mirrors
// kernels/cpu/moe_gate.cc: the non-finite rule, softmax in fp32 with IEEE
// division, top-k by (prob desc, id asc), the renormalising sum over j
// ascending.
__global__ void __launch_bounds__(kGateMaxWarps * 32)
    MoeGateKernel(const float* __restrict__ logits, int num_tokens, int num_experts, int top_k,
                  bool renormalize, int32_t* __restrict__ topk_ids,
                  float* __restrict__ topk_weights) {
  extern __shared__ float gate_smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x >> 5) + warp;
  if (row >= num_tokens) return;
  const int e = num_experts;
  float* p = gate_smem + warp * e;
  const float* x = logits + static_cast<int64_t>(row) * e;
  for (int i = lane; i < e; i += 32) p[i] = x[i];
  GateSoftmax(
      [&](auto f) {
        for (int i = lane; i < e; i += 32) f(p[i]);
      },
      e);

  // k rounds of warp argmax; a taken entry becomes -1 (every prob is >= 0).
  // k <= E, so each round finds an untaken entry.
  int my_id = 0;
  float my_prob = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    float best = -1.0f;
    int best_id = INT_MAX;
    for (int i = lane; i < e; i += 32) {  // ascending: strict > keeps the lower id
      if (p[i] > best) {
        best = p[i];
        best_id = i;
      }
    }
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) {
      const float o = __shfl_xor_sync(kFullMask, best, d);
      const int oid = __shfl_xor_sync(kFullMask, best_id, d);
      if (o > best || (o == best && oid < best_id)) {
        best = o;
        best_id = oid;
      }
    }
    if (lane == (best_id & 31)) p[best_id] = -1.0f;
    if (lane == j) {
      my_id = best_id;
      my_prob = best;
    }
  }
  WriteGateRow(row, top_k, renormalize, my_id, my_prob, topk_ids, topk_weights);
}

// ---- MoePermute ----------------------------------------------------------
//
// A stable counting sort. Up to kWarpSortMaxAssignments assignments (decode:
// R = T*k), one warp (MoePermuteSortWarpKernel below) with __syncwarp only.
// Beyond, in one block (R = T*k is at most a few ten thousand, E at most
// kMaxExperts):
//   1. histogram of expert ids (warp-aggregated shared atomics);
//   2. exclusive scan -> expert_offsets; cursor[e] = offsets[e];
//   3. chunks of blockDim assignments in ascending order: rank within the
//      warp by __match_any_sync, per-(warp, expert) counts scanned across
//      warps (one lane per warp) on top of cursor[e] -> each assignment's
//      permuted row; cursor[e] advances by the chunk's count.
// Then a gather kernel copies hidden rows into permuted order.

// Expert of assignment a, or -1 past the end; bad ids count as E-1.
__device__ __forceinline__ int ExpertOf(const int32_t* ids, int a, int num_assignments,
                                        int num_experts, bool* bad) {
  if (a >= num_assignments) return -1;
  const int id = ids[a];
  if (id < 0 || id >= num_experts) {
    *bad = true;
    return num_experts - 1;
  }
  return id;
}

__global__ void MoePermuteSortKernel(const int32_t* __restrict__ ids, int num_assignments,
                                     int num_experts, int32_t* __restrict__ expert_offsets,
                                     int32_t* __restrict__ permuted_to_assignment,
                                     int32_t* __restrict__ assignment_to_permuted,
                                     uint32_t* errors) {
  extern __shared__ int sort_smem[];
  const int e_count = num_experts;
  const int num_warps = blockDim.x >> 5;
  int* cursor = sort_smem;                 // [E]
  int* warp_counts = sort_smem + e_count;  // [num_warps][E]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const unsigned lanes_below = (1u << lane) - 1u;

  for (int i = tid; i < e_count; i += blockDim.x) cursor[i] = 0;
  __syncthreads();

  bool bad = false;
  for (int base = 0; base < num_assignments; base += blockDim.x) {
    const int e = ExpertOf(ids, base + tid, num_assignments, e_count, &bad);
    const unsigned peers = __match_any_sync(kFullMask, e);
    if (e >= 0 && (peers & lanes_below) == 0) atomicAdd(&cursor[e], __popc(peers));
  }
  if (bad) atomicOr(errors, kErrExpertId);
  __syncthreads();

  if (warp == 0) {
    int carry = 0;
    for (int base = 0; base < e_count; base += 32) {
      const int e = base + lane;
      const int v = e < e_count ? cursor[e] : 0;
      const int incl = WarpInclusiveSum(v);
      if (e < e_count) {
        cursor[e] = carry + incl - v;
        expert_offsets[e] = carry + incl - v;
      }
      carry += __shfl_sync(kFullMask, incl, 31);
    }
    if (lane == 0) expert_offsets[e_count] = carry;
  }
  __syncthreads();

  for (int base = 0; base < num_assignments; base += blockDim.x) {
    const int a = base + tid;
    const int e = ExpertOf(ids, a, num_assignments, e_count, &bad);
    const unsigned peers = __match_any_sync(kFullMask, e);
    const int rank = __popc(peers & lanes_below);
    for (int i = tid; i < num_warps * e_count; i += blockDim.x) warp_counts[i] = 0;
    __syncthreads();
    if (e >= 0 && rank == 0) warp_counts[warp * e_count + e] = __popc(peers);
    __syncthreads();
    // Warp w scans experts w, w + num_warps, ...; lane l holds warp l's count.
    for (int ex = warp; ex < e_count; ex += num_warps) {
      const int start = cursor[ex];
      const int v = lane < num_warps ? warp_counts[lane * e_count + ex] : 0;
      const int incl = WarpInclusiveSum(v);
      if (lane < num_warps) warp_counts[lane * e_count + ex] = start + incl - v;
      __syncwarp();
      if (lane == 31) cursor[ex] = start + incl;
    }
    __syncthreads();
    if (e >= 0) {
      const int pos = warp_counts[warp * e_count + e] + rank;
      assignment_to_permuted[a] = pos;
      permuted_to_assignment[pos] = a;
    }
    __syncthreads();
  }
}

// Most assignments MoePermuteSortWarpKernel takes: kWarpSortChunks per lane,
// held in registers.
constexpr int kWarpSortChunks = 8;
constexpr int64_t kWarpSortMaxAssignments = 32 * kWarpSortChunks;

// The block sort's result in one warp, for R <= kWarpSortMaxAssignments:
//   1. ids into registers (assignment 32 c + lane in chunk c); histogram in
//      shared memory (one shared atomic per (chunk, expert), by the lowest
//      lane of __match_any_sync's group);
//   2. exclusive scan -> expert_offsets and cursor[e] = offsets[e]: lane l
//      sums experts [l * per, (l + 1) * per) (per = ceil(E / 32)), one warp
//      scan of the 32 sums, then lane l writes its experts' offsets;
//   3. chunks in ascending order: permuted row = cursor[e] + rank within the
//      chunk among the lanes of the same expert (lower lanes are lower
//      assignments); then the group's lowest lane advances cursor[e].
// Assignment a of expert e so lands at offsets[e] + #{a' < a of expert e}:
// the CPU backend's (and the block sort's) order. Bad ids count as E-1 and
// set kErrExpertId, as in the block sort.
__global__ void __launch_bounds__(32)
    MoePermuteSortWarpKernel(const int32_t* __restrict__ ids, int num_assignments, int num_experts,
                             int32_t* __restrict__ expert_offsets,
                             int32_t* __restrict__ permuted_to_assignment,
                             int32_t* __restrict__ assignment_to_permuted, uint32_t* errors) {
  extern __shared__ int warp_sort_smem[];
  int* cursor = warp_sort_smem;  // [E]: counts, then next free row
  const int e_count = num_experts;
  const int lane = threadIdx.x & 31;
  const unsigned lanes_below = (1u << lane) - 1u;

  bool bad = false;
  int expert[kWarpSortChunks];  // -1 past the end
#pragma unroll
  for (int c = 0; c < kWarpSortChunks; ++c) {
    expert[c] = ExpertOf(ids, 32 * c + lane, num_assignments, e_count, &bad);
  }
  if (bad) atomicOr(errors, kErrExpertId);
  for (int i = lane; i < e_count; i += 32) cursor[i] = 0;
  __syncwarp();

#pragma unroll
  for (int c = 0; c < kWarpSortChunks; ++c) {
    if (32 * c >= num_assignments) break;  // warp-uniform
    const unsigned peers = __match_any_sync(kFullMask, expert[c]);
    if (expert[c] >= 0 && (peers & lanes_below) == 0) {
      atomicAdd(&cursor[expert[c]], __popc(peers));
    }
  }
  __syncwarp();

  const int per = (e_count + 31) / 32;
  const int e0 = min(lane * per, e_count), e1 = min(e0 + per, e_count);
  int local = 0;
  for (int i = e0; i < e1; ++i) local += cursor[i];
  const int incl = WarpInclusiveSum(local);
  int run = incl - local;
  for (int i = e0; i < e1; ++i) {
    const int count = cursor[i];
    cursor[i] = run;
    expert_offsets[i] = run;
    run += count;
  }
  if (lane == 31) expert_offsets[e_count] = incl;  // == R
  __syncwarp();

#pragma unroll
  for (int c = 0; c < kWarpSortChunks; ++c) {
    if (32 * c >= num_assignments) break;  // warp-uniform
    const int e = expert[c];
    const unsigned peers = __match_any_sync(kFullMask, e);
    if (e >= 0) {
      const int a = 32 * c + lane;
      const int pos = cursor[e] + __popc(peers & lanes_below);
      assignment_to_permuted[a] = pos;
      permuted_to_assignment[pos] = a;
    }
    __syncwarp();
    if (e >= 0 && (peers & lanes_below) == 0) cursor[e] += __popc(peers);
    __syncwarp();
  }
}

constexpr int kGatherWarps = 8;

// rows[r] = hidden[permuted_to_assignment[r] / k]; one warp per row.
template <bool kVec4>
__global__ void __launch_bounds__(kGatherWarps * 32)
    MoeGatherRowsKernel(const float* __restrict__ hidden,
                        const int32_t* __restrict__ permuted_to_assignment, int num_rows, int top_k,
                        int hidden_size, float* __restrict__ rows) {
  const int r = blockIdx.x * kGatherWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= num_rows) return;
  const int64_t token = permuted_to_assignment[r] / top_k;
  if constexpr (kVec4) {
    const int n4 = hidden_size / 4;
    const float4* src = reinterpret_cast<const float4*>(hidden + token * hidden_size);
    float4* dst = reinterpret_cast<float4*>(rows + static_cast<int64_t>(r) * hidden_size);
#pragma unroll 4
    for (int i = lane; i < n4; i += 32) dst[i] = __ldg(src + i);
  } else {
    const float* src = hidden + token * hidden_size;
    float* dst = rows + static_cast<int64_t>(r) * hidden_size;
    for (int i = lane; i < hidden_size; i += 32) dst[i] = __ldg(src + i);
  }
}

// ---- MoeUnpermute --------------------------------------------------------

constexpr int kUnpermuteThreads = 128;

// out[t, c] = sum_j w[t, j] * expert_out[a2p[t*k + j], c]: block (t, column
// chunk), one float4 (or float) column per thread. Multiply and add are kept
// separate (no FMA) to round like the CPU reference's o += w * x.
template <bool kVec4>
__global__ void __launch_bounds__(kUnpermuteThreads)
    MoeUnpermuteKernel(const float* __restrict__ expert_out, const float* __restrict__ topk_weights,
                       const int32_t* __restrict__ assignment_to_permuted, int top_k,
                       int num_assignments, int hidden_size, float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const int c = blockIdx.y * kUnpermuteThreads + threadIdx.x;
  const int width = kVec4 ? hidden_size / 4 : hidden_size;
  if (c >= width) return;
  using V = std::conditional_t<kVec4, float4, float>;
  const V* src = reinterpret_cast<const V*>(expert_out);
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  for (int j = 0; j < top_k; ++j) {
    const float w = topk_weights[t * top_k + j];
    const int p = assignment_to_permuted[t * top_k + j];
    // Out of range only if the permutation was corrupted; the term is dropped.
    if (p < 0 || p >= num_assignments) continue;
    const V v = __ldg(src + static_cast<int64_t>(p) * width + c);
    if constexpr (kVec4) {
      acc.x = __fadd_rn(acc.x, __fmul_rn(w, v.x));
      acc.y = __fadd_rn(acc.y, __fmul_rn(w, v.y));
      acc.z = __fadd_rn(acc.z, __fmul_rn(w, v.z));
      acc.w = __fadd_rn(acc.w, __fmul_rn(w, v.w));
    } else {
      acc.x = __fadd_rn(acc.x, __fmul_rn(w, v));
    }
  }
  if constexpr (kVec4) {
    reinterpret_cast<float4*>(out)[t * width + c] = acc;
  } else {
    out[t * width + c] = acc.x;
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

absl::Status MoeGate(const float* router_logits, int64_t num_tokens, int64_t num_experts,
                     int64_t top_k, bool renormalize, int32_t* topk_ids, float* topk_weights,
                     cudaStream_t stream) {
  constexpr const char* kOp = "MoeGate";
  if (num_tokens < 0 || num_tokens > INT_MAX) {
    return Bad(kOp, absl::StrCat("num_tokens: expected 0..", INT_MAX, ", found ", num_tokens));
  }
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return Bad(kOp,
               absl::StrCat("num_experts: expected 1..", kMaxExperts, ", found ", num_experts));
  }
  if (top_k < 1 || top_k > num_experts || top_k > kMaxTopK) {
    return Bad(kOp, absl::StrCat("top_k: expected 1..", std::min(num_experts, kMaxTopK), ", found ",
                                 top_k));
  }
  if (num_tokens == 0) return absl::OkStatus();
  if (num_experts <= kGateRegMaxExperts) {
    // Logits in registers: kPerLane = ceil(E / 32) rounded up to a power of
    // two. No shared memory; as many warps as rows, up to kGateMaxWarps.
    const int warps = static_cast<int>(std::min<int64_t>(kGateMaxWarps, num_tokens));
    const unsigned blocks = static_cast<unsigned>(CeilDiv(num_tokens, warps));
    const int64_t per_lane = CeilDiv(num_experts, 32);
    const int t = static_cast<int>(num_tokens), e = static_cast<int>(num_experts),
              k = static_cast<int>(top_k);
    if (per_lane <= 1) {
      MoeGateWarpKernel<1><<<blocks, warps * 32, 0, stream>>>(router_logits, t, e, k, renormalize,
                                                              topk_ids, topk_weights);
    } else if (per_lane <= 2) {
      MoeGateWarpKernel<2><<<blocks, warps * 32, 0, stream>>>(router_logits, t, e, k, renormalize,
                                                              topk_ids, topk_weights);
    } else if (per_lane <= 4) {
      MoeGateWarpKernel<4><<<blocks, warps * 32, 0, stream>>>(router_logits, t, e, k, renormalize,
                                                              topk_ids, topk_weights);
    } else if (per_lane <= 8) {
      MoeGateWarpKernel<8><<<blocks, warps * 32, 0, stream>>>(router_logits, t, e, k, renormalize,
                                                              topk_ids, topk_weights);
    } else {
      static_assert(kGateMaxPerLane == 16);
      MoeGateWarpKernel<16><<<blocks, warps * 32, 0, stream>>>(router_logits, t, e, k, renormalize,
                                                               topk_ids, topk_weights);
    }
    return LaunchStatus("MoeGateWarpKernel");
  }
  // warps * E floats of shared memory, at most 48 KiB.
  const int warps = static_cast<int>(std::clamp<int64_t>(12288 / num_experts, 1, kGateMaxWarps));
  const size_t smem = sizeof(float) * warps * static_cast<size_t>(num_experts);
  const unsigned blocks = static_cast<unsigned>(CeilDiv(num_tokens, warps));
  MoeGateKernel<<<blocks, warps * 32, smem, stream>>>(
      router_logits, static_cast<int>(num_tokens), static_cast<int>(num_experts),
      static_cast<int>(top_k), renormalize, topk_ids, topk_weights);
  return LaunchStatus("MoeGateKernel");
}

size_t MoePermuteWorkspaceBytes(int64_t /*num_assignments*/, int64_t /*num_experts*/) {
  return 0;  // the sort runs in shared memory
}

absl::Status MoePermute(const float* hidden, const int32_t* topk_ids, int64_t num_tokens,
                        int64_t top_k, int64_t hidden_size, int64_t num_experts, float* rows,
                        int32_t* expert_offsets, int32_t* permuted_to_assignment,
                        int32_t* assignment_to_permuted, void* /*workspace*/,
                        size_t /*workspace_bytes*/, uint32_t* errors, cudaStream_t stream) {
  constexpr const char* kOp = "MoePermute";
  if (num_tokens < 0 || top_k < 0 || hidden_size < 0) {
    return Bad(kOp, absl::StrCat("sizes: expected >= 0, found num_tokens=", num_tokens,
                                 " top_k=", top_k, " hidden_size=", hidden_size));
  }
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return Bad(kOp,
               absl::StrCat("num_experts: expected 1..", kMaxExperts, ", found ", num_experts));
  }
  if (num_tokens > INT_MAX || top_k > INT_MAX || hidden_size > INT_MAX ||
      num_tokens * top_k > INT_MAX) {
    return Bad(
        kOp, absl::StrCat("num_tokens=", num_tokens, " top_k=", top_k, " hidden_size=", hidden_size,
                          ": expected num_tokens * top_k and hidden_size "
                          "to fit in int32"));
  }
  const int64_t r = num_tokens * top_k;
  if (r == 0) {
    RETURN_IF_CUDA_ERROR(cudaMemsetAsync(
        expert_offsets, 0, sizeof(int32_t) * static_cast<size_t>(num_experts + 1), stream));
    return absl::OkStatus();
  }

  const int e = static_cast<int>(num_experts);
  if (r <= kWarpSortMaxAssignments) {
    // Decode: one warp, no block barriers (E ints of shared memory, <= 16 KiB).
    MoePermuteSortWarpKernel<<<1, 32, sizeof(int) * static_cast<size_t>(e), stream>>>(
        topk_ids, static_cast<int>(r), e, expert_offsets, permuted_to_assignment,
        assignment_to_permuted, errors);
    RETURN_IF_ERROR(LaunchStatus("MoePermuteSortWarpKernel"));
  } else {
    // num_warps * E <= 8192 keeps the shared memory at most 48 KiB.
    const int num_warps = std::max(1, std::min(32, 8192 / e));
    const size_t smem = sizeof(int) * static_cast<size_t>(e) * (1 + num_warps);
    MoePermuteSortKernel<<<1, num_warps * 32, smem, stream>>>(
        topk_ids, static_cast<int>(r), e, expert_offsets, permuted_to_assignment,
        assignment_to_permuted, errors);
    RETURN_IF_ERROR(LaunchStatus("MoePermuteSortKernel"));
  }

  if (hidden_size == 0) return absl::OkStatus();
  const unsigned blocks = static_cast<unsigned>(CeilDiv(r, kGatherWarps));
  const bool vec4 = hidden_size % 4 == 0 && Aligned16(hidden) && Aligned16(rows);
  if (vec4) {
    MoeGatherRowsKernel<true><<<blocks, kGatherWarps * 32, 0, stream>>>(
        hidden, permuted_to_assignment, static_cast<int>(r), static_cast<int>(top_k),
        static_cast<int>(hidden_size), rows);
  } else {
    MoeGatherRowsKernel<false><<<blocks, kGatherWarps * 32, 0, stream>>>(
        hidden, permuted_to_assignment, static_cast<int>(r), static_cast<int>(top_k),
        static_cast<int>(hidden_size), rows);
  }
  return LaunchStatus("MoeGatherRowsKernel");
}

absl::Status MoeUnpermute(const float* expert_out, const float* topk_weights,
                          const int32_t* assignment_to_permuted, int64_t num_tokens, int64_t top_k,
                          int64_t hidden_size, float* out, cudaStream_t stream) {
  constexpr const char* kOp = "MoeUnpermute";
  if (num_tokens < 0 || top_k < 0 || hidden_size < 0) {
    return Bad(kOp, absl::StrCat("sizes: expected >= 0, found num_tokens=", num_tokens,
                                 " top_k=", top_k, " hidden_size=", hidden_size));
  }
  if (num_tokens > INT_MAX || top_k > INT_MAX || hidden_size > INT_MAX ||
      num_tokens * top_k > INT_MAX) {
    return Bad(
        kOp, absl::StrCat("num_tokens=", num_tokens, " top_k=", top_k, " hidden_size=", hidden_size,
                          ": expected num_tokens * top_k and hidden_size "
                          "to fit in int32"));
  }
  const int64_t r = num_tokens * top_k;
  if (num_tokens == 0 || hidden_size == 0) return absl::OkStatus();
  const bool vec4 = hidden_size % 4 == 0 && Aligned16(expert_out) && Aligned16(out);
  const int64_t width = vec4 ? hidden_size / 4 : hidden_size;
  const int64_t chunks = CeilDiv(width, kUnpermuteThreads);
  if (chunks > 65535) {
    return Bad(kOp, absl::StrCat("hidden_size ", hidden_size, " is too large"));
  }
  const dim3 grid(static_cast<unsigned>(num_tokens), static_cast<unsigned>(chunks));
  if (vec4) {
    MoeUnpermuteKernel<true><<<grid, kUnpermuteThreads, 0, stream>>>(
        expert_out, topk_weights, assignment_to_permuted, static_cast<int>(top_k),
        static_cast<int>(r), static_cast<int>(hidden_size), out);
  } else {
    MoeUnpermuteKernel<false><<<grid, kUnpermuteThreads, 0, stream>>>(
        expert_out, topk_weights, assignment_to_permuted, static_cast<int>(top_k),
        static_cast<int>(r), static_cast<int>(hidden_size), out);
  }
  return LaunchStatus("MoeUnpermuteKernel");
}

}  // namespace epserve::kernels::cuda
