// Expert-parallel TokenDispatcher with the routing computed on the device:
// counts, slots and expert offsets never pass through the host in the
// fixed-capacity exchange, so a decode step with expert parallelism can run
// from a graph.
//
//   rank s: hidden [T,H], topk ids/weights [T,k]
//     ─EpDispatchPack─► send slots: W regions of C slots, one per
//        destination rank; a token goes at most once to each rank (its picks
//        held by that rank ride along in the slot's route), in the wire dtype
//   exchange: region r ──► rank r (counts [W], routes, rows)
//     ─EpDispatchUnpack─► rows [M,H] grouped by expert, expert_offsets [E+1]
//   ══► the caller's grouped expert GEMMs ══► expert_out [M,H]
//   Combine: ─EpCombinePack─► one weighted partial sum per received slot
//     (the slot's picks on this rank), in the wire dtype
//   exchange back (the same regions, counts swapped)
//     ─EpCombineUnpack─► out [T,H] = Σ over ranks of the partial sums
//
// Two exchanges, chosen per step from the router's BeginStep value so that
// every rank runs the same one:
//  * fixed capacity (decode): C = `decode_capacity` slots per rank on both
//    sides, used when every rank has at most C tokens in the step. Nothing
//    is read on the host thread, so the step is graph-capturable on a GPU.
//    A communicator that works on the backend's memory in place (NCCL on a
//    GPU; any communicator on the CPU) moves whole regions (counts travel
//    with the rows); a host communicator between GPU workers (Gloo) runs in
//    stream order: whole regions are copied to page-locked memory, a host
//    call exchanges exactly the used slots (it reads the counts there), and
//    the regions are copied back — host nodes of the graph when captured.
//  * counts first (prefill, and host-staged exchanges): the counts cross
//    first and are read on the host, then exactly the used slots move; send
//    capacity = T, receive capacity = the largest count received. Device
//    tensors of a host communicator (Gloo between GPU workers) are staged
//    through page-locked host memory region by region.
//
// Wire dtype float32 or bfloat16 (rows in both directions). The combine sums
// each rank's picks into one row before sending it back, so the sum over a
// token's k experts is associated by rank: equal to the single-process sum
// up to float rounding.
//
// Every Dispatch and Combine is collective (all ranks, every MoE layer, also
// with T = 0). Fixed-capacity buffers are allocated when a group is bound
// and keep their addresses while the world size stays the same (graphs
// captured with them stay valid across re-formed groups); counts-first
// buffers grow to the largest step seen. Tensors returned by Dispatch are
// valid until the next Dispatch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "kernels/ops.h"
#include "worker/comm/communicator.h"
#include "worker/moe/alltoall_dispatcher.h"
#include "worker/moe/token_dispatcher.h"

namespace epserve::moe {

struct SlotDispatcherOptions {
  int64_t num_experts = 0;
  int64_t top_k = 0;
  int64_t hidden = 0;
  // expert_to_rank[e]: the rank holding expert e (common/placement.h).
  std::vector<uint32_t> expert_to_rank;
  // The dtype rows cross between ranks in: float32 or bfloat16.
  DataType wire_dtype = DataType::kBFloat16;
  // Slots per rank of the fixed-capacity exchange (the largest decode batch
  // a rank runs, graph padding included); 0: always counts first.
  int64_t decode_capacity = 0;
  // MoE layers of the model (SetLayer values are below it): sizes the
  // page-locked record of each fixed-capacity layer's expert offsets, read
  // at EndStep for the statistics. 0: fixed-capacity steps report none.
  int num_layers = 0;
  // Exchange through host staging even where the communicator could work on
  // the backend's memory in place (the CPU): runs the path of GPU workers
  // over a host communicator on any backend.
  bool force_host_staging = false;
};

class SlotTokenDispatcher final : public TokenDispatcher {
 public:
  // InvalidArgument when a size is out of range, expert_to_rank does not
  // have num_experts entries or names a rank outside `comm`'s group, or the
  // wire dtype is neither float32 nor bfloat16. `comm` is not owned and must
  // outlive its use; null leaves the dispatcher unbound (Dispatch fails
  // until SetCommunicator).
  static absl::StatusOr<std::unique_ptr<SlotTokenDispatcher>> Create(kernels::Backend& backend,
                                                                     SlotDispatcherOptions options,
                                                                     comm::Communicator* comm);

  // Binds a (re-formed) group; nullptr detaches. Drops a pending Dispatch.
  // InvalidArgument when expert_to_rank names a rank outside the group (the
  // old binding is kept then).
  absl::Status SetCommunicator(comm::Communicator* comm);
  // Not owned; nullptr turns reporting off. Counts-first layers are reported
  // after their Combine, timed on the host; fixed-capacity steps at EndStep,
  // every layer from the expert offsets the step copied to page-locked
  // memory (also when it ran from a graph), timed by stream marks (device
  // time of each side, CUDA events on a GPU) and without per-rank counts.
  void SetObserver(MoeExchangeObserver* observer) { observer_ = observer; }
  void SetLayer(int moe_layer_index) override {
    layer_ = moe_layer_index;
    layers_seen_ = std::max(layers_seen_, moe_layer_index + 1);
  }

  bool supports_graphs() const override { return options_.decode_capacity > 0; }
  bool step_capturable() const override { return fixed_step_ && comm_ != nullptr; }
  void BeginStep(int64_t max_tokens_any_rank) override;
  absl::Status EndStep() override;
  absl::Status AfterGraphLaunch() override;

  absl::StatusOr<DispatchedTokens> Dispatch(const kernels::Tensor& hidden,
                                            const kernels::Tensor& topk_ids,
                                            const kernels::Tensor& topk_weights) override;
  absl::Status Combine(const kernels::Tensor& expert_out, kernels::Tensor* out) override;

  // Whether this step uses the fixed-capacity exchange (after BeginStep).
  bool fixed_capacity_step() const { return fixed_step_; }
  // How often a buffer was allocated or grown.
  int64_t num_buffer_allocations() const { return num_buffer_allocations_; }

 private:
  struct Arena {
    std::shared_ptr<kernels::Storage> storage;
    int64_t capacity = 0;  // elements of the arena's dtype (bytes for host staging)
  };
  // The tensors of one exchange layout (views into arenas).
  struct Slots {
    int64_t send_capacity = 0, recv_capacity = 0;
    kernels::Tensor send_rows, send_routes, send_counts, token_slots;
    kernels::Tensor recv_rows, recv_routes, recv_counts;
    kernels::Tensor rows, expert_offsets, route_rows;
  };
  struct Buffers {
    Arena send_rows, send_routes, send_counts, token_slots;
    Arena recv_rows, recv_routes, recv_counts;
    Arena rows, expert_offsets, route_rows;
    Arena count_matrix;  // [W * W] int32: gathered send counts (counts first)
  };

  SlotTokenDispatcher(kernels::Backend& backend, SlotDispatcherOptions options);

  absl::Status Reserve(DataType dtype, int64_t elements, Arena* arena);
  absl::Status ReserveHost(size_t bytes, Arena* arena);  // page-locked on a GPU
  absl::StatusOr<kernels::Tensor> View(Arena* arena, DataType dtype, std::vector<int64_t> shape);
  // Points the send side (send_capacity slots per rank, T tokens) and the
  // receive side (recv_capacity) of `slots` into `buffers`, growing them.
  absl::Status LayoutSend(Buffers* buffers, int64_t tokens, int64_t send_capacity, Slots* slots);
  absl::Status LayoutRecv(Buffers* buffers, int64_t recv_capacity, Slots* slots);
  // Counts first: every rank's send counts gathered; fills the host counts
  // and the device recv_counts.
  absl::Status ExchangeCounts();
  // Rows a receive side of `recv_slots` slots can produce (k per slot).
  int64_t MaxRows(int64_t recv_slots) const;
  // One strided exchange of `send` regions into `recv` regions (element =
  // one row of the tensors), directly or staged through host memory.
  absl::Status Exchange(const kernels::Tensor& send, int64_t send_stride,
                        absl::Span<const int64_t> send_counts, kernels::Tensor* recv,
                        int64_t recv_stride, absl::Span<const int64_t> recv_counts);
  // Whether the communicator reads and writes this backend's tensors in
  // place (no staging).
  bool direct() const;
  absl::Status CommError(const char* phase, const absl::Status& status) const;
  // The host-communicator exchange of a fixed-capacity step, in stream
  // order: page-locked buffers of whole regions, the exchange in a host call.
  absl::Status ReserveStaged();
  absl::Status StagedDispatch();
  absl::Status StagedCombine(const kernels::Tensor& back, kernels::Tensor* returned);
  static void DispatchHostCall(void* self);
  static void CombineHostCall(void* self);
  void SetAsyncError(const absl::Status& status);
  // Stream mark `which` (0/1: dispatch begin/end, 2/3: combine begin/end) of
  // the current layer in a fixed-capacity step; nothing otherwise.
  absl::Status Mark(int which);
  // stats_ bytes of one fixed-capacity layer (whole regions).
  void FixedStepBytes();

  kernels::Backend& backend_;
  const SlotDispatcherOptions options_;

  comm::Communicator* comm_ = nullptr;
  int rank_ = 0;
  int world_ = 0;
  MoeExchangeObserver* observer_ = nullptr;
  int layer_ = 0;
  bool pending_ = false;
  bool fixed_step_ = false;

  kernels::Tensor expert_to_rank_;  // [E] int32 on the device
  Buffers fixed_;                   // the fixed-capacity layout, allocated with the group
  Buffers grown_;                   // counts-first, grown to the largest step
  Arena host_send_, host_recv_;     // staging for host communicators (bytes)
  // Page-locked whole regions of the staged fixed-capacity exchange: counts
  // [W], routes [W*C, 2k], rows [W*C, H] in the wire dtype, each way.
  Arena staged_send_counts_, staged_recv_counts_, staged_send_routes_, staged_recv_routes_;
  Arena staged_send_rows_, staged_recv_rows_;
  // Counts read by the dispatch host call, used again by the combine's.
  std::vector<int64_t> staged_send_counts_host_, staged_recv_counts_host_;
  int layer_in_flight_ = 0;  // layer of the enqueued host calls (errors)
  Arena fixed_offsets_;      // page-locked [num_layers][E + 1]: each layer's offsets
  std::unique_ptr<kernels::Backend::Timestamps> marks_;  // [num_layers][4]
  int layers_seen_ = 0;                                  // 1 + the largest SetLayer value so far
  // Layers this step dispatched from the host (none: the step ran from a
  // graph, which runs them all).
  std::vector<bool> dispatched_this_step_;
  std::mutex async_mu_;
  absl::Status async_error_;      // first failure of a host call since the group formed
  Slots slots_;                   // of the pending Dispatch
  kernels::Tensor topk_weights_;  // of the pending Dispatch
  int64_t tokens_ = 0;            // T of the pending Dispatch
  std::vector<int64_t> send_counts_host_, recv_counts_host_;  // [W], counts first
  std::vector<int64_t> fixed_counts_;                         // [W] all C
  std::vector<int64_t> ones_;                                 // [W] all 1
  std::vector<int32_t> counts32_;                             // [W * W] staging
  std::vector<int32_t> offsets_host_;                         // [E + 1]
  std::vector<int64_t> rows_per_expert_, rows_per_rank_;      // stats
  int64_t num_buffer_allocations_ = 0;
  MoeExchangeStats stats_;
};

}  // namespace epserve::moe
