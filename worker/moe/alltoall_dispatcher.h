// Expert-parallel TokenDispatcher: each rank holds some experts
// (expert_to_rank); token rows travel to the ranks of their experts and the
// expert outputs travel back, over two all-to-all-v exchanges per layer.
//
//   rank s, T_s tokens
//   hidden [T_s,H] ──MoePermute──► perm.rows [T_s·k,H]  expert-major, global ids
//   counts: AllGather of every rank's rows per expert ──► C [world][E] everywhere
//     ──PlanExchange (exchange_plan.h, host)──► counts and row blocks
//   perm.rows ──CopyRows(send blocks)──► send [T_s·k,H] = | to rank 0 | to rank 1 | ... |
//                                                (expert ascending within a rank)
//   AllToAllV(rows) ──► recv [R,H] = | from rank 0 | from rank 1 | ... |
//                                    (expert ascending within a rank)
//     ──CopyRows(recv blocks)──► rows [R,H] expert-major over global ids,
//        expert_offsets [E+1] (zero rows for experts held elsewhere)  ══► Dispatch
//
//   Combine: expert_out [R,H] ──CopyRows(recv blocks backwards)──► AllToAllV
//     (counts swapped) ──► send order ──CopyRows(send blocks backwards)──►
//     perm positions ──MoeUnpermute(topk_weights)──► out [T_s,H]
//
// Rows move only through backend ops; on the wire they have the wire dtype
// (float32, or bfloat16: converted by the CopyRows around the exchange). A
// CopyRows whose blocks leave every row in place is skipped when no
// conversion is needed, and tensors in host memory are handed to the
// communicator as they are; others would be staged through host memory
// (AllocateStagingHost, CopyToHost / CopyFromHost).
//
// Rows routed to the same expert meet in one GEMM batch, and the weighted sum
// is the one LocalTokenDispatcher runs, so the result equals the
// single-process one up to the batching of the expert GEMMs.
//
// Every Dispatch and Combine is collective: each rank of the group calls
// them for every MoE layer in the same order, also with T = 0 tokens. The
// staging buffers grow to the largest step seen and are reused after that;
// tensors returned by Dispatch are views into them, valid until the next
// Dispatch. An argument error returns before any exchange (the peers then
// fail with their communicator's timeout). CPU backends only for now (the
// exchange between GPUs is not built).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kernels/ops.h"
#include "worker/comm/communicator.h"
#include "worker/moe/exchange_plan.h"
#include "worker/moe/token_dispatcher.h"

namespace epserve::moe {

// One MoE layer's exchange on one rank, reported after its Combine.
struct MoeExchangeStats {
  int layer = 0;  // the last SetLayer value
  // Seconds of each side: host time where the host waited for the exchange
  // (counts first), the stream's time between marks where it only enqueued
  // it (fixed capacity). `timed` is false where no time was taken (marks
  // missing): then they are not meaningful.
  bool timed = true;
  double dispatch_seconds = 0.0;
  double combine_seconds = 0.0;
  // Bytes that crossed to / from other ranks: token rows both ways and the
  // count all-gather. Traffic to this rank itself is not counted.
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  // [E]: rows this rank's experts received from all ranks; 0 for experts
  // held elsewhere. Summed over ranks: every token-expert assignment once.
  absl::Span<const int64_t> rows_per_expert;
  // [world]: rows each rank's experts received in this layer (the same on
  // every rank: the column sums of the gathered count matrix).
  absl::Span<const int64_t> rows_per_rank;
};

class MoeExchangeObserver {
 public:
  virtual ~MoeExchangeObserver() = default;
  // Called on the forward thread after each successful Combine; the spans
  // are valid only during the call. Must be cheap and must not call back
  // into the dispatcher.
  virtual void OnMoeExchange(const MoeExchangeStats& stats) = 0;
};

class AllToAllTokenDispatcher final : public TokenDispatcher {
 public:
  // expert_to_rank[e]: the rank holding expert e (common/placement.h).
  // InvalidArgument when it does not have num_experts entries, names a rank
  // outside `comm`'s group, a size is out of range, or `wire_dtype` (the
  // dtype token rows cross between ranks in) is neither float32 nor
  // bfloat16; Unimplemented for a backend that is not the CPU's. `comm` is
  // not owned and must outlive its use (see SetCommunicator); null leaves the
  // dispatcher unbound until SetCommunicator (Dispatch fails until then).
  static absl::StatusOr<std::unique_ptr<AllToAllTokenDispatcher>> Create(
      kernels::Backend& backend, int64_t num_experts, int64_t top_k, int64_t hidden,
      std::vector<uint32_t> expert_to_rank, comm::Communicator* comm,
      DataType wire_dtype = DataType::kFloat32);

  // Replaces the group (a re-formed one after a failure); nullptr detaches,
  // after which Dispatch fails until a group is set. Drops a pending
  // Dispatch. InvalidArgument when expert_to_rank names a rank outside the
  // new group (the old one is kept then).
  absl::Status SetCommunicator(comm::Communicator* comm);
  // Not owned; nullptr turns reporting off.
  void SetObserver(MoeExchangeObserver* observer) { observer_ = observer; }
  void SetLayer(int moe_layer_index) override { layer_ = moe_layer_index; }

  absl::StatusOr<DispatchedTokens> Dispatch(
      const kernels::Tensor& hidden,                       // [T, H] float32
      const kernels::Tensor& topk_ids,                     // [T, k] int32
      const kernels::Tensor& topk_weights) override;       // [T, k] float32
  absl::Status Combine(const kernels::Tensor& expert_out,  // [R, H] float32
                       kernels::Tensor* out) override;     // [T, H] float32

  // How often a staging buffer was allocated or grown; stays constant once
  // no step is larger than an earlier one.
  int64_t num_buffer_allocations() const { return num_buffer_allocations_; }

 private:
  // Device memory reused across calls: grows to the largest request.
  struct Arena {
    std::shared_ptr<kernels::Storage> storage;
    int64_t capacity = 0;  // elements (bytes for host staging)
  };

  AllToAllTokenDispatcher(kernels::Backend& backend, int64_t num_experts, int64_t top_k,
                          int64_t hidden, std::vector<uint32_t> expert_to_rank,
                          DataType wire_dtype);

  absl::Status Reserve(DataType dtype, int64_t elements, Arena* arena);
  // A [rows, H] view of `dtype` at the start of `arena`, grown to fit.
  absl::StatusOr<kernels::Tensor> RowsIn(DataType dtype, int64_t rows, Arena* arena);
  // Uploads the plan's four block lists (send, send backwards, recv, recv
  // backwards) and its expert offsets.
  absl::Status UploadPlan();
  // One all-to-all-v of `send`'s rows into `recv` (both [*, H] of the wire
  // dtype) with the given per-rank row counts, through host memory.
  absl::Status Exchange(const kernels::Tensor& send, absl::Span<const int64_t> send_counts,
                        kernels::Tensor* recv, absl::Span<const int64_t> recv_counts);
  absl::Status CommError(const char* phase, const absl::Status& status) const;

  kernels::Backend& backend_;
  const int64_t num_experts_;
  const int64_t top_k_;
  const int64_t hidden_;
  const std::vector<uint32_t> expert_to_rank_;
  const DataType wire_dtype_;

  comm::Communicator* comm_ = nullptr;
  int rank_ = 0;
  int world_ = 0;
  MoeExchangeObserver* observer_ = nullptr;
  int layer_ = 0;
  bool pending_ = false;

  // Staging, sized by the largest step so far.
  Arena perm_rows_, perm_p2a_, perm_a2p_, perm_offsets_;
  Arena send_rows_, recv_rows_, out_rows_, out_offsets_, blocks_;
  Arena host_send_, host_recv_;   // host copies of non-host tensors (bytes)
  kernels::MoePermutation perm_;  // views into perm_*, of the pending Dispatch
  kernels::Tensor topk_weights_;  // of the pending Dispatch
  kernels::Tensor out_rows_view_, out_offsets_view_;
  // Views into blocks_: [B, 3] int32 (src row, dst row, rows).
  kernels::Tensor send_blocks_, send_blocks_back_, recv_blocks_, recv_blocks_back_;
  kernels::Tensor send_view_, recv_view_;  // wire rows of the pending Dispatch
  int64_t num_buffer_allocations_ = 0;

  // Routing of the pending Dispatch.
  std::vector<int32_t> perm_offsets_host_;  // [E + 1]
  std::vector<int64_t> my_counts_;          // [E] rows this rank sends per expert
  std::vector<int64_t> count_matrix_;       // [world][E] gathered my_counts_
  std::vector<int32_t> blocks_host_;        // the four block lists, uploaded
  ExchangePlan plan_;
  MoeExchangeStats stats_;
};

}  // namespace epserve::moe
