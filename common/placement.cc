#include "common/placement.h"

#include "absl/strings/str_cat.h"

namespace epserve {

absl::StatusOr<PlacementStrategy> ParsePlacementStrategy(absl::string_view name) {
  if (name == "linear") return PlacementStrategy::kLinear;
  if (name == "round-robin") return PlacementStrategy::kRoundRobin;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown expert placement '", name, "' (accepted: linear, round-robin)"));
}

const char* PlacementStrategyName(PlacementStrategy strategy) {
  return strategy == PlacementStrategy::kLinear ? "linear" : "round-robin";
}

absl::StatusOr<std::vector<uint32_t>> PlaceExperts(uint32_t num_experts, uint32_t world_size,
                                                   PlacementStrategy strategy) {
  if (world_size == 0) return absl::InvalidArgumentError("expert placement: world size is 0");
  if (num_experts < world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expert placement: ", num_experts, " experts cannot be spread over ", world_size,
        " ranks (every rank must hold at least one expert)"));
  }
  std::vector<uint32_t> owner(num_experts);
  for (uint32_t e = 0; e < num_experts; ++e) {
    owner[e] = strategy == PlacementStrategy::kLinear
                   ? static_cast<uint32_t>(uint64_t{e} * world_size / num_experts)
                   : e % world_size;
  }
  return owner;
}

}  // namespace epserve
