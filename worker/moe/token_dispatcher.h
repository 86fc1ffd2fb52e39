// The seam between a MoE layer's routing and its experts: Dispatch sends each
// token's rows to the rank owning each of its top-k experts, grouped by
// expert; Combine brings expert outputs back and sums them per token with the
// routing weights.
//
//   hidden [T,H], topk_ids [T,k], topk_weights [T,k]
//     ──Dispatch──► rows [R,H] grouped by expert, expert_offsets [E+1]
//                   (R = T·k on one rank; with expert parallelism, the rows
//                    routed to this rank's experts from every rank; rows
//                    past expert_offsets[E] are padding of a fixed-capacity
//                    buffer)
//     ── grouped expert GEMMs (caller) ──► expert_out [R,H]
//     ──Combine──► out [T,H] = Σ_j w[t,j]·expert_out(t,j)
//
// LocalTokenDispatcher is world size 1 (every expert local: a permutation).
// SlotTokenDispatcher (slot_dispatcher.h) implements the same interface over
// worker/comm for expert parallelism, with routing computed on the device;
// AllToAllTokenDispatcher (alltoall_dispatcher.h) is its host-planned
// reference.
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
  // exchange with other ranks).
  virtual bool local() const { return false; }
  // Whether decode steps may be captured into graphs at all (the model's
  // graphs are created only then), and whether this step's Dispatch/Combine
  // only enqueue device work (an exchange included) so that it may run from
  // one.
  virtual bool supports_graphs() const { return local(); }
  virtual bool step_capturable() const { return local(); }

  // Brackets one step of the worker. `max_tokens_any_rank`: the most tokens
  // any rank of the group computes in the step (the router's plan; 0 when
  // unknown), from which every rank picks the same exchange. EndStep runs
  // after the step's device work finished (the results were read): it
  // reports errors found by then (a device communicator's watchdog).
  virtual void BeginStep(int64_t /*max_tokens_any_rank*/) {}
  virtual absl::Status EndStep() { return absl::OkStatus(); }
  // Called right after a graph holding this step's Dispatch/Combine was
  // launched: a device communicator's watchdog then bounds it like eager
  // work.
  virtual absl::Status AfterGraphLaunch() { return absl::OkStatus(); }

  // Every Dispatch is followed by exactly one Combine before the next
  // Dispatch (the dispatcher keeps the routing of the call in between).
  virtual absl::StatusOr<DispatchedTokens> Dispatch(
      const kernels::Tensor& hidden,                               // [T, H] float32
      const kernels::Tensor& topk_ids,                             // [T, k] int32
      const kernels::Tensor& topk_weights) = 0;                    // [T, k] float32
  virtual absl::Status Combine(const kernels::Tensor& expert_out,  // [R, H] float32
                               kernels::Tensor* out) = 0;          // [T, H] float32, overwritten
};

class LocalTokenDispatcher final : public TokenDispatcher {
 public:
  LocalTokenDispatcher(kernels::Backend& backend, int64_t num_experts)
      : backend_(backend), num_experts_(num_experts) {}

  absl::StatusOr<DispatchedTokens> Dispatch(const kernels::Tensor& hidden,
                                            const kernels::Tensor& topk_ids,
                                            const kernels::Tensor& topk_weights) override;
  absl::Status Combine(const kernels::Tensor& expert_out, kernels::Tensor* out) override;
  bool local() const override { return true; }

 private:
  kernels::Backend& backend_;
  int64_t num_experts_;
  kernels::MoePermutation perm_;  // of the last Dispatch
  kernels::Tensor topk_weights_;  // of the last Dispatch
  bool pending_ = false;
};

}  // namespace epserve::moe
