#include "worker/moe/token_dispatcher.h"

#include "common/status.h"

namespace epserve::moe {

absl::StatusOr<DispatchedTokens> LocalTokenDispatcher::Dispatch(
    const kernels::Tensor& hidden, const kernels::Tensor& topk_ids,
    const kernels::Tensor& topk_weights) {
  if (pending_) {
    return absl::FailedPreconditionError("TokenDispatcher: Dispatch called twice without Combine");
  }
  if (hidden.shape.size() != 2 || topk_ids.shape.size() != 2) {
    return absl::InvalidArgumentError("TokenDispatcher: expected hidden [T, H] and topk_ids [T, k]");
  }
  ASSIGN_OR_RETURN(perm_, kernels::EmptyMoePermutation(backend_, hidden.shape[0],
                                                       topk_ids.shape[1], hidden.shape[1],
                                                       num_experts_));
  RETURN_IF_ERROR(backend_.MoePermute(hidden, topk_ids, &perm_));
  topk_weights_ = topk_weights;
  pending_ = true;
  return DispatchedTokens{perm_.rows, perm_.expert_offsets};
}

absl::Status LocalTokenDispatcher::Combine(const kernels::Tensor& expert_out,
                                           kernels::Tensor* out) {
  if (!pending_) {
    return absl::FailedPreconditionError("TokenDispatcher: Combine called without Dispatch");
  }
  pending_ = false;
  absl::Status status = backend_.MoeUnpermute(expert_out, topk_weights_, perm_, out);
  perm_ = {};
  topk_weights_ = {};
  return status;
}

}  // namespace epserve::moe
