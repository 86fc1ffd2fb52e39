// The seam between a MoE layer's routing and its experts: Dispatch sends each
// token's rows to the rank owning each of its top-k experts, grouped by
// expert; Combine brings expert outputs back and sums them per token with the
// routing weights.
//
//   hidden [T,H], topk_ids [T,k]
//     ──Dispatch──► rows [R,H] grouped by expert, expert_offsets [E+1]
//                   (R = T·k on one rank; with expert parallelism, the rows
//                    routed to this rank's experts from every rank)
//     ── grouped expert GEMMs (caller) ──► expert_out [R,H]
//     ──Combine(topk_weights [T,k])──► out [T,H] = Σ_j w[t,j]·expert_out(t,j)
//
// LocalTokenDispatcher is world size 1 (every expert local: a permutation).
// AllToAllTokenDispatcher (alltoall_dispatcher.h) implements the same
// interface over worker/comm for expert parallelism.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace epserve::moe {

struct DispatchedTokens {
  kernels::Tensor rows;            // [R, H] float32, rows of expert e contiguous
  kernels::Tensor expert_offsets;  // [E + 1] int32 over global expert ids
};

class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;

  // Labels the following Dispatch/Combine (errors, stats) with the index of
  // the MoE layer among the model's MoE layers. Called before each Dispatch.
  virtual void SetLayer(int /*moe_layer_index*/) {}

  // Whether Dispatch/Combine only enqueue device work of this process (no
  // exchange with other ranks): then a step can be captured into a graph.
  virtual bool local() const { return false; }

  // Every Dispatch is followed by exactly one Combine before the next
  // Dispatch (the dispatcher keeps the routing of the call in between).
  virtual absl::StatusOr<DispatchedTokens> Dispatch(const kernels::Tensor& hidden,     // [T, H]
                                                    const kernels::Tensor& topk_ids) = 0;  // [T, k]
  virtual absl::Status Combine(const kernels::Tensor& expert_out,    // [R, H] float32
                               const kernels::Tensor& topk_weights,  // [T, k] float32
                               kernels::Tensor* out) = 0;            // [T, H] float32, overwritten
};

class LocalTokenDispatcher final : public TokenDispatcher {
 public:
  LocalTokenDispatcher(kernels::Backend& backend, int64_t num_experts)
      : backend_(backend), num_experts_(num_experts) {}

  absl::StatusOr<DispatchedTokens> Dispatch(const kernels::Tensor& hidden,
                                            const kernels::Tensor& topk_ids) override;
  absl::Status Combine(const kernels::Tensor& expert_out, const kernels::Tensor& topk_weights,
                       kernels::Tensor* out) override;
  bool local() const override { return true; }

 private:
  kernels::Backend& backend_;
  int64_t num_experts_;
  kernels::MoePermutation perm_;  // of the last Dispatch
  bool pending_ = false;
};

}  // namespace epserve::moe
