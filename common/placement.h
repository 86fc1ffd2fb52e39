// Expert placement: which rank holds each MoE expert.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve {

enum class PlacementStrategy {
  // Contiguous blocks: ranks hold experts [r*E/N, (r+1)*E/N).
  kLinear,
  // Expert e on rank e % N.
  kRoundRobin,
};

absl::StatusOr<PlacementStrategy> ParsePlacementStrategy(absl::string_view name);
const char* PlacementStrategyName(PlacementStrategy strategy);

// expert_to_rank[e] for `num_experts` experts on `world_size` ranks. Every
// rank gets floor(E/N) or ceil(E/N) experts. Fails when there are fewer
// experts than ranks (a rank would hold none) or either count is zero.
absl::StatusOr<std::vector<uint32_t>> PlaceExperts(uint32_t num_experts, uint32_t world_size,
                                                   PlacementStrategy strategy);

// The placement of a group formed by some of the ranks: members[g] is the
// rank (of `expert_to_rank`) that takes group rank g (ascending, distinct).
// A member keeps its experts (under its group rank); the experts of ranks
// that are not members go, in ascending id, each to the member holding the
// fewest experts so far (the lowest group rank on ties), so the group stays
// balanced and the same members always give the same table. Fails when
// `members` is empty or not ascending and distinct.
absl::StatusOr<std::vector<uint32_t>> PlaceOnMembers(const std::vector<uint32_t>& expert_to_rank,
                                                     const std::vector<uint32_t>& members);

// The experts `rank` must hold beyond its own so that the loss of any one
// other rank needs no loading: for each other rank L, the experts
// PlaceOnMembers(all ranks but L) gives `rank`'s group rank that L held.
// Ascending. Empty with fewer than 2 ranks.
std::vector<int> RedundantExperts(const std::vector<uint32_t>& expert_to_rank, uint32_t world_size,
                                  uint32_t rank);

}  // namespace epserve
