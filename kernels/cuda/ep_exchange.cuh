// The expert-parallel exchange's local kernels on the GPU: packing token rows
// into rank-major send slots, grouping received slots by expert, the weighted
// partial sums sent back, and the final per-token sums. Semantics are
// kernels/ops.h's (EpDispatchPack, EpDispatchUnpack, EpCombinePack,
// EpCombineUnpack; the slot layout is in the "Expert-parallel exchange"
// section there) and match the CPU reference.
//
// Sizes: W ranks (`world`), C slots per rank (`capacity`), k route entries
// per slot (`top_k`), H columns (`hidden_size`). Wire rows are float32 or
// bfloat16 (`wire`).
//
// Graph capture: launch shapes depend only on these sizes, never on counts,
// ids or slots in device memory; nothing here reads device data on the host.
// Content errors set bits of the device error word (`errors`, never null) and
// the offending element is skipped (cuda_common.cuh).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// Most ranks EpDispatchPack takes (a token's destinations are a 64-bit mask).
inline constexpr int64_t kEpMaxRanks = 64;

// hidden [T, H] float32, topk_ids / topk_weights [T, k], expert_to_rank [E]
// -> send_rows [W*C, H] (wire), send_routes [W*C, 2k] int32, send_counts [W],
// token_slots [T, W] (C >= T). Slot of token t at rank r = the number of
// tokens before t sent to r: deterministic, the CPU's bits. An id outside
// [0, E) sets kErrEpPackExpertId, a rank outside [0, W) kErrEpPackRank; that
// pick is then dropped (the token may still go to its other picks' ranks).
// Up to 256 tokens one launch (a block per token, each counting the tokens
// before it per rank); beyond, two: the slot plan (one block), then a block
// per token. Each token's row is read once and written once per destination.
absl::Status EpDispatchPack(const float* hidden, const int32_t* topk_ids, const float* topk_weights,
                            int64_t num_tokens, int64_t top_k, int64_t hidden_size,
                            const int32_t* expert_to_rank, int64_t num_experts, int64_t world,
                            int64_t capacity, void* send_rows, Elem wire, int32_t* send_routes,
                            int32_t* send_counts, int32_t* token_slots, uint32_t* errors,
                            cudaStream_t stream);

// recv_rows [W*C, H] (wire), recv_routes [W*C, 2k], recv_counts [W] ->
// rows [M, H] float32 grouped by expert, expert_offsets [E + 1] and
// route_rows [W*C, k] (-1 where no row). Within an expert the row order
// depends on timing (the values do not). A count outside [0, C] sets
// kErrEpUnpackCount (clamped), a route id outside [-1, E) kErrEpUnpackExpertId
// (no row), more than M rows kErrEpUnpackRows (expert_offsets clamped to M,
// the rows past M dropped: route_rows -1). Two launches: the histogram,
// scan and row positions (one block, shared-memory cursors), then a block
// per slot and chunk of the hidden size copying the rows.
absl::Status EpDispatchUnpack(const void* recv_rows, Elem wire, const int32_t* recv_routes,
                              const int32_t* recv_counts, int64_t world, int64_t capacity,
                              int64_t top_k, int64_t hidden_size, float* rows, int64_t max_rows,
                              int32_t* expert_offsets, int64_t num_experts, int32_t* route_rows,
                              uint32_t* errors, cudaStream_t stream);

// expert_out [M, H] float32, recv_routes [W*C, 2k], recv_counts [W],
// route_rows [W*C, k] -> back_rows [W*C, H] (wire) for the valid slots:
// acc = fmaf(weight_j, expert_out[route_rows[s, j]], acc) over j ascending
// from 0.0f, rounded to the wire type. A count outside [0, C] (clamped) or a
// route row outside [-1, M) (term dropped) sets kErrEpCombineRoute. One
// launch, a warp per slot.
absl::Status EpCombinePack(const float* expert_out, int64_t expert_rows, const int32_t* recv_routes,
                           const int32_t* recv_counts, const int32_t* route_rows, int64_t world,
                           int64_t capacity, int64_t top_k, int64_t hidden_size, void* back_rows,
                           Elem wire, uint32_t* errors, cudaStream_t stream);

// returned_rows [W*C, H] (wire), token_slots [T, W] -> out [T, H] float32:
// the float32 sum, r ascending from 0.0f, of the rows of the ranks the token
// went to. A slot outside [-1, C) sets kErrEpCombineSlot (term dropped). One
// launch, a warp per token.
absl::Status EpCombineUnpack(const void* returned_rows, Elem wire, const int32_t* token_slots,
                             int64_t num_tokens, int64_t world, int64_t capacity,
                             int64_t hidden_size, float* out, uint32_t* errors,
                             cudaStream_t stream);

}  // namespace epserve::kernels::cuda
