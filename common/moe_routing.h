// How a mixture-of-experts router turns its logits into each token's experts
// and their weights. Plain data, shared by the model description (which fills
// it per layer from config.json) and the MoeGate op (kernels/ops.h).
#pragma once

#include <optional>
#include <string>

namespace epserve {

enum class RoutingScoring {
  kSoftmax,  // softmax over all experts
  kSigmoid,  // sigmoid of each logit
};

const char* RoutingScoringName(RoutingScoring scoring);  // "softmax", "sigmoid"

// One router, on router logits [T, E] in fp32:
//
//   scores  = softmax(logits) | sigmoid(logits)                        (scoring)
//   choice  = scores (+ correction bias [E], selection only)           (correction_bias)
//   groups  = E experts in n_group equal groups; only the topk_group
//             best groups compete                                      (n_group, topk_group)
//   ids     = the top_k experts by choice (ties: lower id)
//   weights = their scores, / their sum iff renormalize, * routed_scaling_factor
struct RoutingParams {
  int top_k = 0;  // num_experts_per_tok, 1..E
  RoutingScoring scoring = RoutingScoring::kSoftmax;
  bool renormalize = false;      // norm_topk_prob
  bool correction_bias = false;  // the layer has an expert score correction bias
  int n_group = 1;               // 1: no expert groups
  int topk_group = 1;            // groups kept, 1..n_group
  double routed_scaling_factor = 1.0;
};

// A routing field outside what the backends run, for an error message:
// "<field>: expected <expected>, found <found>".
struct UnsupportedRoutingField {
  std::string field;     // "scoring", "correction_bias", "n_group", ...
  std::string expected;  // what is supported
  std::string found;     // the value given
};

// The first field of `routing` the backends do not run today (they run
// softmax scoring, no correction bias, no expert groups and a scaling factor
// of 1; top_k and renormalize are free), or nullopt when every field is
// supported.
std::optional<UnsupportedRoutingField> FindUnsupportedRouting(const RoutingParams& routing);

}  // namespace epserve
