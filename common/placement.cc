#include "common/placement.h"

#include <algorithm>
#include <set>

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

absl::StatusOr<std::vector<uint32_t>> PlaceOnMembers(const std::vector<uint32_t>& expert_to_rank,
                                                     const std::vector<uint32_t>& members) {
  if (members.empty()) return absl::InvalidArgumentError("expert placement: a group of no ranks");
  for (size_t g = 1; g < members.size(); ++g) {
    if (members[g] <= members[g - 1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "expert placement: group members must be distinct ranks in ascending order, found ",
          members[g - 1], " before ", members[g]));
    }
  }
  const uint32_t group = static_cast<uint32_t>(members.size());
  std::vector<uint32_t> out(expert_to_rank.size(), group);  // group: not placed yet
  std::vector<size_t> held(group, 0);
  for (size_t e = 0; e < expert_to_rank.size(); ++e) {
    auto it = std::lower_bound(members.begin(), members.end(), expert_to_rank[e]);
    if (it != members.end() && *it == expert_to_rank[e]) {
      const auto g = static_cast<uint32_t>(it - members.begin());
      out[e] = g;
      ++held[g];
    }
  }
  for (size_t e = 0; e < expert_to_rank.size(); ++e) {
    if (out[e] != group) continue;
    const auto g = static_cast<uint32_t>(std::min_element(held.begin(), held.end()) - held.begin());
    out[e] = g;
    ++held[g];
  }
  return out;
}

std::vector<int> RedundantExperts(const std::vector<uint32_t>& expert_to_rank, uint32_t world_size,
                                  uint32_t rank) {
  std::set<int> extra;
  if (world_size < 2 || rank >= world_size) return {};
  for (uint32_t lost = 0; lost < world_size; ++lost) {
    if (lost == rank) continue;
    std::vector<uint32_t> members;
    for (uint32_t r = 0; r < world_size; ++r) {
      if (r != lost) members.push_back(r);
    }
    const uint32_t mine = rank < lost ? rank : rank - 1;  // rank's group rank
    absl::StatusOr<std::vector<uint32_t>> placed = PlaceOnMembers(expert_to_rank, members);
    if (!placed.ok()) continue;  // members are sorted and non-empty: not reached
    for (size_t e = 0; e < placed->size(); ++e) {
      if ((*placed)[e] == mine && expert_to_rank[e] == lost) extra.insert(static_cast<int>(e));
    }
  }
  return {extra.begin(), extra.end()};
}

}  // namespace epserve
