// Who sends which token rows to whom in one MoE layer's all-to-all exchange,
// computed on the host from the gathered counts alone (no device, no
// communicator), the same on every rank for the same counts.
//
//   counts [world][E]: rows rank s routes to expert e (the all-gathered
//                      per-rank expert histograms)
//   rank s's permuted rows (expert-major over global ids, MoePermute)
//     ──send_blocks──► send order = | to rank 0 | to rank 1 | ... |
//                      (expert ascending within a destination)
//   AllToAllV(send_counts, recv_counts)
//     ──► receive order = | from rank 0 | from rank 1 | ... |
//                         (this rank's experts ascending within a source)
//     ──recv_blocks──► expert-major rows over global ids, expert_offsets [E+1]
//                      (source ascending within an expert; experts held
//                       elsewhere get zero rows)
//
// The combine runs the same blocks backwards (src and dst swapped) with the
// counts swapped.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace epserve::moe {

// A run of `rows` contiguous rows copied from row `src` to row `dst`.
struct RowBlock {
  int64_t src = 0;
  int64_t dst = 0;
  int64_t rows = 0;

  friend bool operator==(const RowBlock&, const RowBlock&) = default;
};

struct ExchangePlan {
  std::vector<int64_t> send_counts;  // [world] rows this rank sends to each rank
  std::vector<int64_t> recv_counts;  // [world] rows this rank receives from each rank
  // Permuted order -> send order, in send order; empty blocks are left out.
  std::vector<RowBlock> send_blocks;
  // Receive order -> expert-major rows, in expert-major order.
  std::vector<RowBlock> recv_blocks;
  // Whether every block of send_blocks / recv_blocks has src == dst (the
  // rows are already in the order the next stage wants).
  bool send_identity = true;
  bool recv_identity = true;
  std::vector<int32_t> expert_offsets;   // [E + 1] of the expert-major rows
  std::vector<int64_t> rows_per_expert;  // [E] rows this rank's experts get; 0 elsewhere
  std::vector<int64_t> rows_per_rank;    // [world] rows each rank's experts get
  int64_t num_sent = 0;                  // sum of send_counts (this rank's T·k)
  int64_t num_received = 0;              // sum of recv_counts (R)
  std::vector<int64_t> recv_cursor;      // [world] working space of PlanExchange
};

// Plans rank `rank`'s side of the exchange into `plan`, reusing its vectors'
// capacity (no allocation once they have grown). `counts` holds world * E
// entries, row s = rank s's rows per expert; expert_to_rank[e] is the rank
// holding expert e (E entries). InvalidArgument when the sizes disagree, a
// count is negative, or a rank is out of [0, world); ResourceExhausted when
// this rank would receive more than 2^31 - 1 rows (offsets are int32).
absl::Status PlanExchange(absl::Span<const int64_t> counts,
                          absl::Span<const uint32_t> expert_to_rank, int rank, ExchangePlan* plan);

// The same, returning a new plan.
absl::StatusOr<ExchangePlan> PlanExchange(absl::Span<const int64_t> counts,
                                          absl::Span<const uint32_t> expert_to_rank, int rank);

}  // namespace epserve::moe
