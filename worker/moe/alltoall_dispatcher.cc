#include "worker/moe/alltoall_dispatcher.h"

#include <algorithm>
#include <chrono>
#include <cstring>
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
               std::initializer_list<int64_t> shape, kernels::Tensor* view) {
  view->dtype = dtype;
  view->storage = storage;
  view->byte_offset = 0;
  view->shape.assign(shape);
}

}  // namespace

absl::StatusOr<std::unique_ptr<AllToAllTokenDispatcher>> AllToAllTokenDispatcher::Create(
    kernels::Backend& backend, int64_t num_experts, int64_t top_k, int64_t hidden,
    std::vector<uint32_t> expert_to_rank, comm::Communicator* comm) {
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
  // comm may be null: the worker binds its group once it has formed.
  std::unique_ptr<AllToAllTokenDispatcher> d(
      new AllToAllTokenDispatcher(backend, num_experts, top_k, hidden, std::move(expert_to_rank)));
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
                                                 std::vector<uint32_t> expert_to_rank)
    : backend_(backend),
      num_experts_(num_experts),
      top_k_(top_k),
      hidden_(hidden),
      expert_to_rank_(std::move(expert_to_rank)),
      my_counts_(num_experts, 0),
      rows_per_expert_(num_experts, 0) {
  experts_by_owner_.resize(num_experts_);
  for (int64_t e = 0; e < num_experts_; ++e) experts_by_owner_[e] = e;
  std::stable_sort(
      experts_by_owner_.begin(), experts_by_owner_.end(),
      [this](int64_t a, int64_t b) { return expert_to_rank_[a] < expert_to_rank_[b]; });
  send_plan_.reserve(num_experts_);
}

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
  send_counts_.assign(world_, 0);
  recv_counts_.assign(world_, 0);
  recv_cursor_.assign(world_, 0);
  rows_per_rank_.assign(world_, 0);
  recv_plan_.reserve(static_cast<size_t>(world_) * num_experts_);
  return absl::OkStatus();
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

absl::Status AllToAllTokenDispatcher::CommError(const char* phase,
                                                const absl::Status& status) const {
  return Annotate(status, absl::StrCat("MoE layer ", layer_, " ", phase));
}

const float* AllToAllTokenDispatcher::Regroup(const std::vector<RowBlock>& plan, bool identity,
                                              bool inverse, const float* src, float* dst) const {
  if (identity) return src;
  for (const RowBlock& b : plan) {
    const int64_t from = inverse ? b.dst : b.src;
    const int64_t to = inverse ? b.src : b.dst;
    std::memcpy(dst + to * hidden_, src + from * hidden_,
                static_cast<size_t>(b.rows * hidden_) * sizeof(float));
  }
  return dst;
}

absl::StatusOr<int64_t> AllToAllTokenDispatcher::PlanExchange() {
  const int64_t e_count = num_experts_;
  const int64_t* c = count_matrix_.data();  // c[s * E + e]: rows rank s sends to expert e
  std::fill(send_counts_.begin(), send_counts_.end(), 0);
  std::fill(recv_counts_.begin(), recv_counts_.end(), 0);
  std::fill(rows_per_rank_.begin(), rows_per_rank_.end(), 0);
  for (int64_t e = 0; e < e_count; ++e) {
    const int owner = static_cast<int>(expert_to_rank_[e]);
    send_counts_[owner] += c[rank_ * e_count + e];
    int64_t total = 0;
    for (int s = 0; s < world_; ++s) {
      total += c[s * e_count + e];
      if (owner == rank_) recv_counts_[s] += c[s * e_count + e];
    }
    rows_per_rank_[owner] += total;
    rows_per_expert_[e] = owner == rank_ ? total : 0;
  }

  // Send order: owner ascending, expert ascending within an owner; the
  // source rows are expert e's block of the local permutation.
  const int32_t* perm_offsets = perm_.expert_offsets.data_as<int32_t>();
  send_plan_.clear();
  send_identity_ = true;
  int64_t pos = 0;
  for (int64_t e : experts_by_owner_) {
    const int64_t rows = c[rank_ * e_count + e];
    if (rows == 0) continue;
    send_plan_.push_back({perm_offsets[e], pos, rows});
    send_identity_ = send_identity_ && perm_offsets[e] == pos;
    pos += rows;
  }

  // Received: source ascending, this rank's experts ascending within a
  // source. Returned: expert ascending, source ascending within an expert.
  int64_t start = 0;
  for (int s = 0; s < world_; ++s) {
    recv_cursor_[s] = start;
    start += recv_counts_[s];
  }
  const int64_t received = start;
  if (received > std::numeric_limits<int32_t>::max()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("AllToAllTokenDispatcher: rank ", rank_, " received ", received,
                     " rows in one layer; expert offsets are int32"));
  }
  recv_plan_.clear();
  recv_identity_ = true;
  int32_t* out_offsets = out_offsets_view_.mutable_data_as<int32_t>();
  pos = 0;
  for (int64_t e = 0; e < e_count; ++e) {
    out_offsets[e] = static_cast<int32_t>(pos);
    if (static_cast<int>(expert_to_rank_[e]) != rank_) continue;
    for (int s = 0; s < world_; ++s) {
      const int64_t rows = c[s * e_count + e];
      if (rows == 0) continue;
      recv_plan_.push_back({recv_cursor_[s], pos, rows});
      recv_identity_ = recv_identity_ && recv_cursor_[s] == pos;
      recv_cursor_[s] += rows;
      pos += rows;
    }
  }
  out_offsets[e_count] = static_cast<int32_t>(pos);
  return received;
}

absl::StatusOr<DispatchedTokens> AllToAllTokenDispatcher::Dispatch(
    const kernels::Tensor& hidden, const kernels::Tensor& topk_ids) {
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
  RETURN_IF_ERROR(Reserve(DataType::kFloat32, assignments * hidden_, &send_rows_));
  PointView(perm_rows_.storage, DataType::kFloat32, {assignments, hidden_}, &perm_.rows);
  PointView(perm_p2a_.storage, DataType::kInt32, {assignments}, &perm_.permuted_to_assignment);
  PointView(perm_a2p_.storage, DataType::kInt32, {assignments}, &perm_.assignment_to_permuted);
  RETURN_IF_ERROR(backend_.MoePermute(hidden, topk_ids, &perm_));

  // Counts: every rank learns the full [world][E] matrix.
  const int32_t* perm_offsets = perm_.expert_offsets.data_as<int32_t>();
  for (int64_t e = 0; e < num_experts_; ++e) my_counts_[e] = perm_offsets[e + 1] - perm_offsets[e];
  absl::Status s =
      comm_->AllGather(my_counts_.data(), count_matrix_.data(),
                       static_cast<size_t>(num_experts_) * sizeof(int64_t), backend_.stream());
  if (!s.ok()) return CommError("dispatch", s);
  ASSIGN_OR_RETURN(const int64_t received, PlanExchange());
  num_sent_ = assignments;
  num_received_ = received;

  // Rows: perm order -> send order -> peers -> recv order -> expert-major.
  RETURN_IF_ERROR(Reserve(DataType::kFloat32, received * hidden_, &recv_rows_));
  float* recv = static_cast<float*>(recv_rows_.storage->mutable_data());
  const float* send =
      Regroup(send_plan_, send_identity_, /*inverse=*/false, perm_.rows.data_as<float>(),
              static_cast<float*>(send_rows_.storage->mutable_data()));
  s = comm_->AllToAllV(send, send_counts_, recv, recv_counts_, hidden_ * sizeof(float),
                       backend_.stream());
  if (!s.ok()) return CommError("dispatch", s);
  if (recv_identity_) {
    PointView(recv_rows_.storage, DataType::kFloat32, {received, hidden_}, &out_rows_view_);
  } else {
    RETURN_IF_ERROR(Reserve(DataType::kFloat32, received * hidden_, &out_rows_));
    Regroup(recv_plan_, /*identity=*/false, /*inverse=*/false, recv,
            static_cast<float*>(out_rows_.storage->mutable_data()));
    PointView(out_rows_.storage, DataType::kFloat32, {received, hidden_}, &out_rows_view_);
  }

  pending_ = true;
  stats_.dispatch_seconds = SecondsSince(start);
  return DispatchedTokens{out_rows_view_, out_offsets_view_};
}

absl::Status AllToAllTokenDispatcher::Combine(const kernels::Tensor& expert_out,
                                              const kernels::Tensor& topk_weights,
                                              kernels::Tensor* out) {
  const Clock::time_point start = Clock::now();
  if (!pending_) {
    return absl::FailedPreconditionError(
        absl::StrCat("TokenDispatcher: MoE layer ", layer_, ": Combine called without Dispatch"));
  }
  pending_ = false;
  if (!HasShape(expert_out, num_received_, hidden_) || expert_out.dtype != DataType::kFloat32 ||
      !expert_out.defined()) {
    return BadArgument("expert_out", absl::StrCat("[", num_received_, ", ", hidden_, "] float32"),
                       expert_out.DebugString());
  }
  const int64_t t = num_sent_ / top_k_;
  if (!HasShape(topk_weights, t, top_k_)) {
    return BadArgument("topk_weights", absl::StrCat("[", t, ", ", top_k_, "] float32"),
                       topk_weights.DebugString());
  }

  // expert-major -> recv order -> back to the senders -> send order -> perm order.
  const float* send =
      Regroup(recv_plan_, recv_identity_, /*inverse=*/true, expert_out.data_as<float>(),
              static_cast<float*>(recv_rows_.storage->mutable_data()));
  float* perm_rows = perm_.rows.mutable_data_as<float>();
  float* returned =
      send_identity_ ? perm_rows : static_cast<float*>(send_rows_.storage->mutable_data());
  absl::Status s = comm_->AllToAllV(send, recv_counts_, returned, send_counts_,
                                    hidden_ * sizeof(float), backend_.stream());
  if (!s.ok()) return CommError("combine", s);
  Regroup(send_plan_, send_identity_, /*inverse=*/true, returned, perm_rows);
  RETURN_IF_ERROR(backend_.MoeUnpermute(perm_.rows, topk_weights, perm_, out));

  if (observer_ != nullptr) {
    const uint64_t row_bytes = static_cast<uint64_t>(hidden_) * sizeof(float);
    uint64_t peer_rows = 0;  // rows out to peers in dispatch plus rows back in combine
    for (int r = 0; r < world_; ++r) {
      if (r != rank_) peer_rows += send_counts_[r] + recv_counts_[r];
    }
    const uint64_t count_bytes = static_cast<uint64_t>(world_ - 1) * num_experts_ * sizeof(int64_t);
    stats_.layer = layer_;
    stats_.combine_seconds = SecondsSince(start);
    // Each row that leaves in dispatch comes back in combine and vice versa,
    // so both directions carry the same bytes over a layer.
    stats_.bytes_sent = count_bytes + peer_rows * row_bytes;
    stats_.bytes_received = count_bytes + peer_rows * row_bytes;
    stats_.rows_per_expert = rows_per_expert_;
    stats_.rows_per_rank = rows_per_rank_;
    observer_->OnMoeExchange(stats_);
  }
  return absl::OkStatus();
}

}  // namespace epserve::moe
