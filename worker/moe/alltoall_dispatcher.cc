#include "worker/moe/alltoall_dispatcher.h"

#include <algorithm>
#include <chrono>
#include <initializer_list>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::moe {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

absl::Status BadArgument(const char* what, const std::string& expected, const std::string& found) {
  return absl::InvalidArgumentError(
      absl::StrCat("AllToAllTokenDispatcher: ", what, ": expected ", expected, ", found ", found));
}

bool HasShape(const kernels::Tensor& t, int64_t rows, int64_t cols) {
  return t.shape.size() == 2 && t.shape[0] == rows && t.shape[1] == cols;
}

// Points `view` at the start of `storage` with `shape`. Reuses the shape's
// vector, so a view of unchanged rank costs no allocation.
void PointView(const std::shared_ptr<kernels::Storage>& storage, DataType dtype,
               std::initializer_list<int64_t> shape, kernels::Tensor* view,
               size_t byte_offset = 0) {
  view->dtype = dtype;
  view->storage = storage;
  view->byte_offset = byte_offset;
  view->shape.assign(shape);
}

// Whether the communicator can read and write `t`'s memory as it is.
bool InHostMemory(const kernels::Tensor& t) {
  return t.storage->device().type == kernels::DeviceType::kCpu;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AllToAllTokenDispatcher>> AllToAllTokenDispatcher::Create(
    kernels::Backend& backend, int64_t num_experts, int64_t top_k, int64_t hidden,
    std::vector<uint32_t> expert_to_rank, comm::Communicator* comm, DataType wire_dtype) {
  if (backend.device().type != kernels::DeviceType::kCpu) {
    return absl::UnimplementedError(absl::StrCat(
        "expert parallelism on ", backend.device().ToString(),
        " workers is not supported yet: the all-to-all exchange runs over Gloo on host "
        "tensors (the NCCL exchange between GPUs is not built); run GPU workers data "
        "parallel (without --expert-parallel) or expert-parallel workers on --device cpu"));
  }
  if (num_experts < 1 || num_experts > std::numeric_limits<int32_t>::max()) {
    return BadArgument("num_experts", "at least 1", absl::StrCat(num_experts));
  }
  if (top_k < 1 || top_k > num_experts) {
    return BadArgument("top_k", absl::StrCat("in [1, ", num_experts, "]"), absl::StrCat(top_k));
  }
  if (hidden < 1) return BadArgument("hidden", "at least 1", absl::StrCat(hidden));
  if (static_cast<int64_t>(expert_to_rank.size()) != num_experts) {
    return BadArgument("expert_to_rank", absl::StrCat(num_experts, " entries (one per expert)"),
                       absl::StrCat(expert_to_rank.size()));
  }
  if (wire_dtype != DataType::kFloat32 && wire_dtype != DataType::kBFloat16) {
    return BadArgument("wire_dtype", "float32 or bfloat16", std::string(DataTypeName(wire_dtype)));
  }
  // comm may be null: the worker binds its group once it has formed.
  std::unique_ptr<AllToAllTokenDispatcher> d(new AllToAllTokenDispatcher(
      backend, num_experts, top_k, hidden, std::move(expert_to_rank), wire_dtype));
  RETURN_IF_ERROR(d->SetCommunicator(comm));
  RETURN_IF_ERROR(d->Reserve(DataType::kInt32, num_experts + 1, &d->perm_offsets_));
  RETURN_IF_ERROR(d->Reserve(DataType::kInt32, num_experts + 1, &d->out_offsets_));
  PointView(d->perm_offsets_.storage, DataType::kInt32, {num_experts + 1},
            &d->perm_.expert_offsets);
  PointView(d->out_offsets_.storage, DataType::kInt32, {num_experts + 1}, &d->out_offsets_view_);
  return d;
}

AllToAllTokenDispatcher::AllToAllTokenDispatcher(kernels::Backend& backend, int64_t num_experts,
                                                 int64_t top_k, int64_t hidden,
                                                 std::vector<uint32_t> expert_to_rank,
                                                 DataType wire_dtype)
    : backend_(backend),
      num_experts_(num_experts),
      top_k_(top_k),
      hidden_(hidden),
      expert_to_rank_(std::move(expert_to_rank)),
      wire_dtype_(wire_dtype),
      perm_offsets_host_(num_experts + 1, 0),
      my_counts_(num_experts, 0) {}

absl::Status AllToAllTokenDispatcher::SetCommunicator(comm::Communicator* comm) {
  if (comm == nullptr) {
    pending_ = false;
    comm_ = nullptr;
    return absl::OkStatus();
  }
  const int world = comm->world_size();
  for (int64_t e = 0; e < num_experts_; ++e) {
    if (expert_to_rank_[e] >= static_cast<uint32_t>(world)) {
      return BadArgument(absl::StrCat("expert_to_rank[", e, "]").c_str(),
                         absl::StrCat("a rank in [0, ", world, ")"),
                         absl::StrCat(expert_to_rank_[e]));
    }
  }
  pending_ = false;
  comm_ = comm;
  rank_ = comm->rank();
  world_ = world;
  count_matrix_.assign(static_cast<size_t>(world_) * num_experts_, 0);
  // The most blocks a plan has: one per expert to send, one per (source,
  // expert) to receive, each list also backwards, 3 int32 per block.
  return Reserve(DataType::kInt32, 6 * (num_experts_ + int64_t{world_} * num_experts_), &blocks_);
}

absl::Status AllToAllTokenDispatcher::Reserve(DataType dtype, int64_t elements, Arena* arena) {
  if (arena->storage != nullptr && arena->capacity >= elements) return absl::OkStatus();
  // Grow by at least half so that slowly rising step sizes reallocate rarely.
  const int64_t capacity = std::max({elements, arena->capacity + arena->capacity / 2, int64_t{1}});
  ASSIGN_OR_RETURN(kernels::Tensor t, backend_.Empty(dtype, {capacity}));
  arena->storage = std::move(t.storage);
  arena->capacity = capacity;
  ++num_buffer_allocations_;
  return absl::OkStatus();
}

absl::StatusOr<kernels::Tensor> AllToAllTokenDispatcher::RowsIn(DataType dtype, int64_t rows,
                                                                Arena* arena) {
  kernels::Tensor view;
  RETURN_IF_ERROR(Reserve(dtype, rows * hidden_, arena));
  PointView(arena->storage, dtype, {rows, hidden_}, &view);
  return view;
}

absl::Status AllToAllTokenDispatcher::CommError(const char* phase,
                                                const absl::Status& status) const {
  return Annotate(status, absl::StrCat("MoE layer ", layer_, " ", phase));
}

absl::Status AllToAllTokenDispatcher::UploadPlan() {
  RETURN_IF_ERROR(backend_.CopyFromHost(plan_.expert_offsets.data(),
                                        plan_.expert_offsets.size() * sizeof(int32_t),
                                        &out_offsets_view_));
  const int64_t num_send = static_cast<int64_t>(plan_.send_blocks.size());
  const int64_t num_recv = static_cast<int64_t>(plan_.recv_blocks.size());
  blocks_host_.clear();
  auto append = [this](const std::vector<RowBlock>& blocks, bool backwards) {
    for (const RowBlock& b : blocks) {
      blocks_host_.push_back(static_cast<int32_t>(backwards ? b.dst : b.src));
      blocks_host_.push_back(static_cast<int32_t>(backwards ? b.src : b.dst));
      blocks_host_.push_back(static_cast<int32_t>(b.rows));
    }
  };
  append(plan_.send_blocks, /*backwards=*/false);
  append(plan_.send_blocks, /*backwards=*/true);
  append(plan_.recv_blocks, /*backwards=*/false);
  append(plan_.recv_blocks, /*backwards=*/true);
  const int64_t elements = static_cast<int64_t>(blocks_host_.size());
  RETURN_IF_ERROR(Reserve(DataType::kInt32, elements, &blocks_));
  const size_t row = 3 * sizeof(int32_t);
  PointView(blocks_.storage, DataType::kInt32, {num_send, 3}, &send_blocks_);
  PointView(blocks_.storage, DataType::kInt32, {num_send, 3}, &send_blocks_back_, num_send * row);
  PointView(blocks_.storage, DataType::kInt32, {num_recv, 3}, &recv_blocks_, 2 * num_send * row);
  PointView(blocks_.storage, DataType::kInt32, {num_recv, 3}, &recv_blocks_back_,
            (2 * num_send + num_recv) * row);
  if (elements == 0) return absl::OkStatus();
  kernels::Tensor all;
  PointView(blocks_.storage, DataType::kInt32, {elements}, &all);
  return backend_.CopyFromHost(blocks_host_.data(), elements * sizeof(int32_t), &all);
}

absl::Status AllToAllTokenDispatcher::Exchange(const kernels::Tensor& send,
                                               absl::Span<const int64_t> send_counts,
                                               kernels::Tensor* recv,
                                               absl::Span<const int64_t> recv_counts) {
  const size_t row_bytes = static_cast<size_t>(hidden_) * DataTypeSize(wire_dtype_);
  // Host tensors go to the communicator as they are; device tensors through
  // staging host memory.
  const void* send_host = send.data();
  if (!InHostMemory(send)) {
    RETURN_IF_ERROR(Reserve(DataType::kUInt8, static_cast<int64_t>(send.nbytes()), &host_send_));
    RETURN_IF_ERROR(backend_.CopyToHost(send, host_send_.storage->mutable_data(), send.nbytes()));
    send_host = host_send_.storage->data();
  }
  void* recv_host = recv->mutable_data();
  if (!InHostMemory(*recv)) {
    RETURN_IF_ERROR(Reserve(DataType::kUInt8, static_cast<int64_t>(recv->nbytes()), &host_recv_));
    recv_host = host_recv_.storage->mutable_data();
  }
  RETURN_IF_ERROR(comm_->AllToAllV(send_host, send_counts, recv_host, recv_counts, row_bytes,
                                   backend_.stream()));
  if (recv_host != recv->mutable_data()) {
    return backend_.CopyFromHost(recv_host, recv->nbytes(), recv);
  }
  return absl::OkStatus();
}

absl::StatusOr<DispatchedTokens> AllToAllTokenDispatcher::Dispatch(
    const kernels::Tensor& hidden, const kernels::Tensor& topk_ids,
    const kernels::Tensor& topk_weights) {
  const Clock::time_point start = Clock::now();
  if (pending_) {
    return absl::FailedPreconditionError(absl::StrCat("TokenDispatcher: MoE layer ", layer_,
                                                      ": Dispatch called twice without Combine"));
  }
  if (comm_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("AllToAllTokenDispatcher: MoE layer ", layer_,
                                                      ": no communicator (group not formed)"));
  }
  if (hidden.shape.size() != 2 || hidden.shape[1] != hidden_ ||
      hidden.dtype != DataType::kFloat32) {
    return BadArgument("hidden", absl::StrCat("[T, ", hidden_, "] float32"), hidden.DebugString());
  }
  const int64_t t = hidden.shape[0];
  if (!HasShape(topk_ids, t, top_k_) || topk_ids.dtype != DataType::kInt32) {
    return BadArgument("topk_ids", absl::StrCat("[", t, ", ", top_k_, "] int32"),
                       topk_ids.DebugString());
  }
  const int64_t assignments = t * top_k_;
  if (assignments > std::numeric_limits<int32_t>::max()) {
    return BadArgument("hidden", "at most 2^31 - 1 token-expert assignments",
                       absl::StrCat(assignments));
  }

  // Local permutation, expert-major over global ids.
  RETURN_IF_ERROR(Reserve(DataType::kFloat32, assignments * hidden_, &perm_rows_));
  RETURN_IF_ERROR(Reserve(DataType::kInt32, assignments, &perm_p2a_));
  RETURN_IF_ERROR(Reserve(DataType::kInt32, assignments, &perm_a2p_));
  PointView(perm_rows_.storage, DataType::kFloat32, {assignments, hidden_}, &perm_.rows);
  PointView(perm_p2a_.storage, DataType::kInt32, {assignments}, &perm_.permuted_to_assignment);
  PointView(perm_a2p_.storage, DataType::kInt32, {assignments}, &perm_.assignment_to_permuted);
  RETURN_IF_ERROR(backend_.MoePermute(hidden, topk_ids, &perm_));

  // Counts: every rank learns the full [world][E] matrix.
  RETURN_IF_ERROR(backend_.CopyToHost(perm_.expert_offsets, perm_offsets_host_.data(),
                                      perm_offsets_host_.size() * sizeof(int32_t)));
  for (int64_t e = 0; e < num_experts_; ++e) {
    my_counts_[e] = perm_offsets_host_[e + 1] - perm_offsets_host_[e];
  }
  absl::Status s =
      comm_->AllGather(my_counts_.data(), count_matrix_.data(),
                       static_cast<size_t>(num_experts_) * sizeof(int64_t), backend_.stream());
  if (!s.ok()) return CommError("dispatch", s);
  RETURN_IF_ERROR(PlanExchange(count_matrix_, expert_to_rank_, rank_, &plan_));
  RETURN_IF_ERROR(UploadPlan());
  const int64_t received = plan_.num_received;

  // Rows: perm order -> send order (wire dtype) -> peers -> recv order ->
  // expert-major float32. A copy that moves nothing and converts nothing is
  // skipped.
  const bool convert = wire_dtype_ != DataType::kFloat32;
  RETURN_IF_ERROR(Reserve(wire_dtype_, assignments * hidden_, &send_rows_));
  if (plan_.send_identity && !convert) {
    send_view_ = perm_.rows;
  } else {
    ASSIGN_OR_RETURN(send_view_, RowsIn(wire_dtype_, assignments, &send_rows_));
    RETURN_IF_ERROR(backend_.CopyRows(perm_.rows, send_blocks_, &send_view_));
  }
  ASSIGN_OR_RETURN(recv_view_, RowsIn(wire_dtype_, received, &recv_rows_));
  s = Exchange(send_view_, plan_.send_counts, &recv_view_, plan_.recv_counts);
  if (!s.ok()) return CommError("dispatch", s);
  if (plan_.recv_identity && !convert) {
    out_rows_view_ = recv_view_;
  } else {
    ASSIGN_OR_RETURN(out_rows_view_, RowsIn(DataType::kFloat32, received, &out_rows_));
    RETURN_IF_ERROR(backend_.CopyRows(recv_view_, recv_blocks_, &out_rows_view_));
  }

  topk_weights_ = topk_weights;
  pending_ = true;
  stats_.dispatch_seconds = SecondsSince(start);
  return DispatchedTokens{out_rows_view_, out_offsets_view_};
}

absl::Status AllToAllTokenDispatcher::Combine(const kernels::Tensor& expert_out,
                                              kernels::Tensor* out) {
  const kernels::Tensor topk_weights = std::move(topk_weights_);
  topk_weights_ = {};
  const Clock::time_point start = Clock::now();
  if (!pending_) {
    return absl::FailedPreconditionError(
        absl::StrCat("TokenDispatcher: MoE layer ", layer_, ": Combine called without Dispatch"));
  }
  pending_ = false;
  if (!HasShape(expert_out, plan_.num_received, hidden_) ||
      expert_out.dtype != DataType::kFloat32 || !expert_out.defined()) {
    return BadArgument("expert_out",
                       absl::StrCat("[", plan_.num_received, ", ", hidden_, "] float32"),
                       expert_out.DebugString());
  }
  const int64_t t = plan_.num_sent / top_k_;
  if (!HasShape(topk_weights, t, top_k_)) {
    return BadArgument("topk_weights", absl::StrCat("[", t, ", ", top_k_, "] float32"),
                       topk_weights.DebugString());
  }

  // expert-major -> recv order (wire dtype) -> back to the senders -> send
  // order -> perm order (float32).
  const bool convert = wire_dtype_ != DataType::kFloat32;
  const kernels::Tensor* back = &expert_out;
  if (!plan_.recv_identity || convert) {
    RETURN_IF_ERROR(backend_.CopyRows(expert_out, recv_blocks_back_, &recv_view_));
    back = &recv_view_;
  }
  kernels::Tensor* returned = plan_.send_identity && !convert ? &perm_.rows : &send_view_;
  absl::Status s = Exchange(*back, plan_.recv_counts, returned, plan_.send_counts);
  if (!s.ok()) return CommError("combine", s);
  if (returned != &perm_.rows) {
    RETURN_IF_ERROR(backend_.CopyRows(*returned, send_blocks_back_, &perm_.rows));
  }
  RETURN_IF_ERROR(backend_.MoeUnpermute(perm_.rows, topk_weights, perm_, out));

  if (observer_ != nullptr) {
    const uint64_t row_bytes = static_cast<uint64_t>(hidden_) * DataTypeSize(wire_dtype_);
    uint64_t peer_rows = 0;  // rows out to peers in dispatch plus rows back in combine
    for (int r = 0; r < world_; ++r) {
      if (r != rank_) peer_rows += plan_.send_counts[r] + plan_.recv_counts[r];
    }
    const uint64_t count_bytes = static_cast<uint64_t>(world_ - 1) * num_experts_ * sizeof(int64_t);
    stats_.layer = layer_;
    stats_.combine_seconds = SecondsSince(start);
    // Each row that leaves in dispatch comes back in combine and vice versa,
    // so both directions carry the same bytes over a layer.
    stats_.bytes_sent = count_bytes + peer_rows * row_bytes;
    stats_.bytes_received = count_bytes + peer_rows * row_bytes;
    stats_.rows_per_expert = plan_.rows_per_expert;
    stats_.rows_per_rank = plan_.rows_per_rank;
    observer_->OnMoeExchange(stats_);
  }
  return absl::OkStatus();
}

}  // namespace epserve::moe
