#include "worker/moe/moe_block.h"

#include "common/status.h"
#include "worker/models/mlp_block.h"

namespace epserve::moe {

MoeShape MoeShapeOf(const FeedForwardSpec& spec) {
  MoeShape s;
  s.num_experts = spec.num_experts;
  s.routing = spec.routing;
  return s;
}

absl::Status MoeBlock::Forward(kernels::Backend& backend, TokenDispatcher& dispatcher,
                               const kernels::Tensor& x, kernels::Tensor* out) const {
  const int64_t t = x.shape[0];
  ASSIGN_OR_RETURN(kernels::Tensor logits,
                   backend.Empty(DataType::kFloat32, {t, shape_.num_experts}));
  RETURN_IF_ERROR(backend.MatMul(x, w_->router, /*bias=*/{}, &logits));
  ASSIGN_OR_RETURN(kernels::Tensor topk_ids,
                   backend.Empty(DataType::kInt32, {t, shape_.routing.top_k}));
  ASSIGN_OR_RETURN(kernels::Tensor topk_weights,
                   backend.Empty(DataType::kFloat32, {t, shape_.routing.top_k}));
  RETURN_IF_ERROR(backend.MoeGate(logits, shape_.routing, &topk_ids, &topk_weights));
  RETURN_IF_ERROR(RunExperts(backend, dispatcher, x, topk_ids, topk_weights, out));
  if (w_->shared_expert.gate_proj.defined()) {
    RETURN_IF_ERROR(AddSharedExpert(backend, x, out));
  }
  return absl::OkStatus();
}

absl::Status MoeBlock::ForwardNoTokens(kernels::Backend& backend, TokenDispatcher& dispatcher,
                                       int64_t hidden) const {
  ASSIGN_OR_RETURN(kernels::Tensor x, backend.Empty(DataType::kFloat32, {0, hidden}));
  ASSIGN_OR_RETURN(kernels::Tensor topk_ids,
                   backend.Empty(DataType::kInt32, {0, shape_.routing.top_k}));
  ASSIGN_OR_RETURN(kernels::Tensor topk_weights,
                   backend.Empty(DataType::kFloat32, {0, shape_.routing.top_k}));
  ASSIGN_OR_RETURN(kernels::Tensor out, backend.Empty(DataType::kFloat32, {0, hidden}));
  return RunExperts(backend, dispatcher, x, topk_ids, topk_weights, &out);
}

absl::Status MoeBlock::RunExperts(kernels::Backend& backend, TokenDispatcher& dispatcher,
                                  const kernels::Tensor& x, const kernels::Tensor& topk_ids,
                                  const kernels::Tensor& topk_weights,
                                  kernels::Tensor* out) const {
  const int64_t hidden = x.shape[1];
  ASSIGN_OR_RETURN(DispatchedTokens d, dispatcher.Dispatch(x, topk_ids, topk_weights));
  const int64_t rows = d.rows.shape[0];
  // Expert width from any held expert (all share it).
  int64_t width = 0;
  for (const kernels::LinearWeight& g : w_->expert_gate) {
    if (g.defined()) {
      width = g.out_features();
      break;
    }
  }
  ASSIGN_OR_RETURN(kernels::Tensor gate, backend.Empty(DataType::kFloat32, {rows, width}));
  ASSIGN_OR_RETURN(kernels::Tensor expert_out, backend.Empty(DataType::kFloat32, {rows, hidden}));
  // gate = silu(rows · gate^T) * (rows · up^T), then the down projection.
  absl::Status status = backend.GroupedExpertGateUp(d.rows, d.expert_offsets, w_->expert_gate,
                                                    w_->expert_up, &gate);
  if (status.ok()) {
    status = backend.GroupedExpertMatMul(gate, d.expert_offsets, w_->expert_down, &expert_out);
  }
  // Combine even after a failure so the dispatcher is ready for the next call.
  absl::Status combined = dispatcher.Combine(expert_out, out);
  RETURN_IF_ERROR(status);
  RETURN_IF_ERROR(combined);
  return absl::OkStatus();
}

absl::Status MoeBlock::AddSharedExpert(kernels::Backend& backend, const kernels::Tensor& x,
                                       kernels::Tensor* out) const {
  const int64_t t = x.shape[0];
  const int64_t hidden = x.shape[1];
  ASSIGN_OR_RETURN(kernels::Tensor shared, backend.Empty(DataType::kFloat32, {t, hidden}));
  RETURN_IF_ERROR(models::DenseMlpForward(backend, w_->shared_expert, x, &shared));
  if (w_->shared_expert_gate.defined()) {
    ASSIGN_OR_RETURN(kernels::Tensor gate_logit, backend.Empty(DataType::kFloat32, {t, 1}));
    RETURN_IF_ERROR(backend.MatMul(x, w_->shared_expert_gate, /*bias=*/{}, &gate_logit));
    return backend.SigmoidGateMulAdd(gate_logit, shared, out);
  }
  return backend.Add(*out, shared, out);
}

}  // namespace epserve::moe
