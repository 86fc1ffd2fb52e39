#include "common/moe_routing.h"

#include "absl/strings/str_cat.h"

namespace epserve {

const char* RoutingScoringName(RoutingScoring scoring) {
  switch (scoring) {
    case RoutingScoring::kSoftmax:
      return "softmax";
    case RoutingScoring::kSigmoid:
      return "sigmoid";
  }
  return "?";
}

std::optional<UnsupportedRoutingField> FindUnsupportedRouting(const RoutingParams& r) {
  if (r.scoring != RoutingScoring::kSoftmax) {
    return UnsupportedRoutingField{"scoring", "softmax", RoutingScoringName(r.scoring)};
  }
  if (r.correction_bias) return UnsupportedRoutingField{"correction_bias", "false", "true"};
  if (r.n_group != 1) {
    return UnsupportedRoutingField{"n_group", "1 (no expert groups)", absl::StrCat(r.n_group)};
  }
  if (r.topk_group != 1) {
    return UnsupportedRoutingField{"topk_group", "1 (no expert groups)",
                                   absl::StrCat(r.topk_group)};
  }
  if (r.routed_scaling_factor != 1.0) {
    return UnsupportedRoutingField{"routed_scaling_factor", "1",
                                   absl::StrCat(r.routed_scaling_factor)};
  }
  return std::nullopt;
}

}  // namespace epserve
