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

}  // namespace epserve
