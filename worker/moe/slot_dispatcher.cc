#include "worker/moe/slot_dispatcher.h"

#include <algorithm>
#include <chrono>
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

absl::Status BadArgument(const std::string& what, const std::string& expected,
                         const std::string& found) {
  return absl::InvalidArgumentError(
      absl::StrCat("SlotTokenDispatcher: ", what, ": expected ", expected, ", found ", found));
}

bool HasShape(const kernels::Tensor& t, int64_t rows, int64_t cols) {
  return t.shape.size() == 2 && t.shape[0] == rows && t.shape[1] == cols;
}

// Rows [first, first + count) of a 2-D tensor, as a view.
kernels::Tensor RowRange(const kernels::Tensor& t, int64_t first, int64_t count) {
  kernels::Tensor v = t;
  const size_t row_bytes = static_cast<size_t>(t.shape[1]) * DataTypeSize(t.dtype);
  v.byte_offset = t.byte_offset + static_cast<size_t>(first) * row_bytes;
  v.shape = {count, t.shape[1]};
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SlotTokenDispatcher>> SlotTokenDispatcher::Create(
    kernels::Backend& backend, SlotDispatcherOptions options, comm::Communicator* comm) {
  const int64_t e = options.num_experts;
  if (e < 1 || e > std::numeric_limits<int32_t>::max()) {
    return BadArgument("num_experts", "at least 1", absl::StrCat(e));
  }
  if (options.top_k < 1 || options.top_k > e) {
    return BadArgument("top_k", absl::StrCat("in [1, ", e, "]"), absl::StrCat(options.top_k));
  }
  if (options.hidden < 1) return BadArgument("hidden", "at least 1", absl::StrCat(options.hidden));
  if (static_cast<int64_t>(options.expert_to_rank.size()) != e) {
    return BadArgument("expert_to_rank", absl::StrCat(e, " entries (one per expert)"),
                       absl::StrCat(options.expert_to_rank.size()));
  }
  if (options.wire_dtype != DataType::kFloat32 && options.wire_dtype != DataType::kBFloat16) {
    return BadArgument("wire_dtype", "float32 or bfloat16",
                       std::string(DataTypeName(options.wire_dtype)));
  }
  if (options.decode_capacity < 0) {
    return BadArgument("decode_capacity", "0 (off) or more slots",
                       absl::StrCat(options.decode_capacity));
  }
  std::unique_ptr<SlotTokenDispatcher> d(new SlotTokenDispatcher(backend, std::move(options)));
  std::vector<int32_t> owners(d->options_.expert_to_rank.begin(), d->options_.expert_to_rank.end());
  ASSIGN_OR_RETURN(d->expert_to_rank_, backend.Empty(DataType::kInt32, {e}));
  RETURN_IF_ERROR(
      backend.CopyFromHost(owners.data(), owners.size() * sizeof(int32_t), &d->expert_to_rank_));
  RETURN_IF_ERROR(d->SetCommunicator(comm));
  return d;
}

SlotTokenDispatcher::SlotTokenDispatcher(kernels::Backend& backend, SlotDispatcherOptions options)
    : backend_(backend),
      options_(std::move(options)),
      offsets_host_(options_.num_experts + 1, 0),
      rows_per_expert_(options_.num_experts, 0) {}

absl::Status SlotTokenDispatcher::SetCommunicator(comm::Communicator* comm) {
  pending_ = false;
  if (comm == nullptr) {
    comm_ = nullptr;
    return absl::OkStatus();
  }
  const int world = comm->world_size();
  for (size_t e = 0; e < options_.expert_to_rank.size(); ++e) {
    if (options_.expert_to_rank[e] >= static_cast<uint32_t>(world)) {
      return BadArgument(absl::StrCat("expert_to_rank[", e, "]"),
                         absl::StrCat("a rank in [0, ", world, ")"),
                         absl::StrCat(options_.expert_to_rank[e]));
    }
  }
  const bool world_changed = world != world_;
  {
    std::lock_guard<std::mutex> lock(async_mu_);
    async_error_ = absl::OkStatus();
  }
  comm_ = comm;
  rank_ = comm->rank();
  world_ = world;
  send_counts_host_.assign(world_, 0);
  recv_counts_host_.assign(world_, 0);
  fixed_counts_.assign(world_, options_.decode_capacity);
  ones_.assign(world_, 1);
  counts32_.assign(static_cast<size_t>(world_) * world_, 0);
  rows_per_rank_.assign(world_, 0);
  if (options_.decode_capacity > 0 && world_changed) {
    // Allocated once per world size: graphs captured with these addresses
    // stay valid when a group of the same size re-forms.
    fixed_ = Buffers{};
    const int64_t c = options_.decode_capacity;
    Slots probe;
    RETURN_IF_ERROR(LayoutSend(&fixed_, c, c, &probe));
    RETURN_IF_ERROR(LayoutRecv(&fixed_, c, &probe));
  }
  if (options_.decode_capacity > 0 && !direct()) RETURN_IF_ERROR(ReserveStaged());
  if (options_.decode_capacity > 0 && options_.num_layers > 0) {
    RETURN_IF_ERROR(ReserveHost(
        static_cast<size_t>(options_.num_layers) * (options_.num_experts + 1) * sizeof(int32_t),
        &fixed_offsets_));
    if (marks_ == nullptr) {
      ASSIGN_OR_RETURN(marks_, backend_.CreateTimestamps(4 * options_.num_layers));
    }
  }
  return absl::OkStatus();
}

absl::Status SlotTokenDispatcher::Mark(int which) {
  if (!fixed_step_ || marks_ == nullptr || layer_ >= options_.num_layers) return absl::OkStatus();
  return marks_->Record(4 * layer_ + which);
}

void SlotTokenDispatcher::FixedStepBytes() {
  const uint64_t row_bytes =
      static_cast<uint64_t>(options_.hidden) * DataTypeSize(options_.wire_dtype);
  const uint64_t route_bytes = 2 * static_cast<uint64_t>(options_.top_k) * sizeof(int32_t);
  const uint64_t region = static_cast<uint64_t>(options_.decode_capacity);
  const uint64_t peers = static_cast<uint64_t>(world_ - 1);
  // Whole regions cross: counts, routes and rows out, rows back.
  stats_.bytes_sent = peers * (sizeof(int32_t) + region * (2 * row_bytes + route_bytes));
  stats_.bytes_received = stats_.bytes_sent;
}

bool SlotTokenDispatcher::direct() const {
  if (options_.force_host_staging) return false;
  return comm_->device_buffers() || backend_.device().type == kernels::DeviceType::kCpu;
}

void SlotTokenDispatcher::BeginStep(int64_t max_tokens_any_rank) {
  fixed_step_ = options_.decode_capacity > 0 && comm_ != nullptr && max_tokens_any_rank > 0 &&
                max_tokens_any_rank <= options_.decode_capacity;
  dispatched_this_step_.assign(static_cast<size_t>(std::max(options_.num_layers, 0)), false);
}

absl::Status SlotTokenDispatcher::EndStep() {
  {
    std::lock_guard<std::mutex> lock(async_mu_);
    if (!async_error_.ok()) return async_error_;
  }
  if (comm_ == nullptr) return absl::OkStatus();
  absl::Status s = comm_->AsyncError();
  if (!s.ok()) return Annotate(s, "MoE exchange");
  if (fixed_step_ && observer_ != nullptr && fixed_offsets_.storage != nullptr) {
    // Every MoE layer ran (eagerly or from a graph); once the stream is
    // drained its offsets are in page-locked memory and its marks are taken.
    RETURN_IF_ERROR(backend_.Synchronize());
    const auto* all = static_cast<const int32_t*>(fixed_offsets_.storage->data());
    const int64_t e = options_.num_experts;
    stats_.rows_per_rank = {};
    FixedStepBytes();
    const bool from_graph = std::find(dispatched_this_step_.begin(), dispatched_this_step_.end(),
                                      true) == dispatched_this_step_.end();
    for (int layer = 0; layer < std::min(layers_seen_, options_.num_layers); ++layer) {
      if (!from_graph && !dispatched_this_step_[layer]) continue;
      const int32_t* off = all + layer * (e + 1);
      for (int64_t x = 0; x < e; ++x) rows_per_expert_[x] = off[x + 1] - off[x];
      stats_.layer = layer;
      stats_.rows_per_expert = rows_per_expert_;
      // Stream time from the first to the last op of each side (a layer
      // whose marks are missing is reported untimed).
      stats_.timed = false;
      if (marks_ != nullptr) {
        absl::StatusOr<double> d = marks_->Seconds(4 * layer, 4 * layer + 1);
        absl::StatusOr<double> c = marks_->Seconds(4 * layer + 2, 4 * layer + 3);
        if (d.ok() && c.ok()) {
          stats_.timed = true;
          stats_.dispatch_seconds = *d;
          stats_.combine_seconds = *c;
        }
      }
      observer_->OnMoeExchange(stats_);
    }
  }
  return absl::OkStatus();
}

absl::Status SlotTokenDispatcher::AfterGraphLaunch() {
  if (comm_ == nullptr) return absl::OkStatus();
  return comm_->WatchStream(backend_.stream());
}

void SlotTokenDispatcher::SetAsyncError(const absl::Status& status) {
  std::lock_guard<std::mutex> lock(async_mu_);
  if (async_error_.ok()) async_error_ = status;
}

absl::Status SlotTokenDispatcher::ReserveStaged() {
  const size_t w = static_cast<size_t>(world_), c = static_cast<size_t>(options_.decode_capacity);
  const size_t routes = w * c * 2 * options_.top_k * sizeof(int32_t);
  const size_t rows = w * c * options_.hidden * DataTypeSize(options_.wire_dtype);
  RETURN_IF_ERROR(ReserveHost(w * sizeof(int32_t), &staged_send_counts_));
  RETURN_IF_ERROR(ReserveHost(w * sizeof(int32_t), &staged_recv_counts_));
  RETURN_IF_ERROR(ReserveHost(routes, &staged_send_routes_));
  RETURN_IF_ERROR(ReserveHost(routes, &staged_recv_routes_));
  RETURN_IF_ERROR(ReserveHost(rows, &staged_send_rows_));
  RETURN_IF_ERROR(ReserveHost(rows, &staged_recv_rows_));
  staged_send_counts_host_.assign(w, 0);
  staged_recv_counts_host_.assign(w, 0);
  return absl::OkStatus();
}

void SlotTokenDispatcher::DispatchHostCall(void* self_ptr) {
  auto* self = static_cast<SlotTokenDispatcher*>(self_ptr);
  {
    std::lock_guard<std::mutex> lock(self->async_mu_);
    if (!self->async_error_.ok()) return;  // the group failed earlier in the step
  }
  const int64_t w = self->world_, c = self->options_.decode_capacity;
  const auto* send_counts = static_cast<const int32_t*>(self->staged_send_counts_.storage->data());
  auto* recv_counts = static_cast<int32_t*>(self->staged_recv_counts_.storage->mutable_data());
  absl::Status s = self->comm_->AllToAllV(send_counts, self->ones_, recv_counts, self->ones_,
                                          sizeof(int32_t), nullptr);
  for (int64_t r = 0; s.ok() && r < w; ++r) {
    if (send_counts[r] < 0 || send_counts[r] > c || recv_counts[r] < 0 || recv_counts[r] > c) {
      s = absl::InternalError(absl::StrCat("slot counts outside [0, ", c, "]: to rank ", r, " ",
                                           send_counts[r], ", from it ", recv_counts[r]));
    }
    self->staged_send_counts_host_[r] = send_counts[r];
    self->staged_recv_counts_host_[r] = recv_counts[r];
  }
  const size_t route_bytes = 2 * self->options_.top_k * sizeof(int32_t);
  const size_t row_bytes = self->options_.hidden * DataTypeSize(self->options_.wire_dtype);
  if (s.ok()) {
    s = self->comm_->AllToAllVStrided(self->staged_send_routes_.storage->data(), c,
                                      self->staged_send_counts_host_,
                                      self->staged_recv_routes_.storage->mutable_data(), c,
                                      self->staged_recv_counts_host_, route_bytes, nullptr);
  }
  if (s.ok()) {
    s = self->comm_->AllToAllVStrided(self->staged_send_rows_.storage->data(), c,
                                      self->staged_send_counts_host_,
                                      self->staged_recv_rows_.storage->mutable_data(), c,
                                      self->staged_recv_counts_host_, row_bytes, nullptr);
  }
  if (!s.ok()) {
    // The peers time out as well; this step's results are discarded.
    std::fill_n(recv_counts, w, 0);
    self->SetAsyncError(
        Annotate(s, absl::StrCat("MoE layer ", self->layer_in_flight_, " dispatch")));
  }
}

void SlotTokenDispatcher::CombineHostCall(void* self_ptr) {
  auto* self = static_cast<SlotTokenDispatcher*>(self_ptr);
  {
    std::lock_guard<std::mutex> lock(self->async_mu_);
    if (!self->async_error_.ok()) return;
  }
  const int64_t c = self->options_.decode_capacity;
  const size_t row_bytes = self->options_.hidden * DataTypeSize(self->options_.wire_dtype);
  // The partial sums went into the receive staging; they come home into the
  // send staging.
  absl::Status s = self->comm_->AllToAllVStrided(
      self->staged_recv_rows_.storage->data(), c, self->staged_recv_counts_host_,
      self->staged_send_rows_.storage->mutable_data(), c, self->staged_send_counts_host_, row_bytes,
      nullptr);
  if (!s.ok()) {
    self->SetAsyncError(
        Annotate(s, absl::StrCat("MoE layer ", self->layer_in_flight_, " combine")));
  }
}

absl::Status SlotTokenDispatcher::StagedDispatch() {
  RETURN_IF_ERROR(
      backend_.CopyToStagingAsync(slots_.send_counts, staged_send_counts_.storage->mutable_data()));
  RETURN_IF_ERROR(
      backend_.CopyToStagingAsync(slots_.send_routes, staged_send_routes_.storage->mutable_data()));
  RETURN_IF_ERROR(
      backend_.CopyToStagingAsync(slots_.send_rows, staged_send_rows_.storage->mutable_data()));
  layer_in_flight_ = layer_;
  RETURN_IF_ERROR(backend_.EnqueueHostCall(&SlotTokenDispatcher::DispatchHostCall, this));
  RETURN_IF_ERROR(
      backend_.CopyFromStagingAsync(staged_recv_counts_.storage->data(), &slots_.recv_counts));
  RETURN_IF_ERROR(
      backend_.CopyFromStagingAsync(staged_recv_routes_.storage->data(), &slots_.recv_routes));
  return backend_.CopyFromStagingAsync(staged_recv_rows_.storage->data(), &slots_.recv_rows);
}

absl::Status SlotTokenDispatcher::StagedCombine(const kernels::Tensor& back,
                                                kernels::Tensor* returned) {
  RETURN_IF_ERROR(backend_.CopyToStagingAsync(back, staged_recv_rows_.storage->mutable_data()));
  RETURN_IF_ERROR(backend_.EnqueueHostCall(&SlotTokenDispatcher::CombineHostCall, this));
  return backend_.CopyFromStagingAsync(staged_send_rows_.storage->data(), returned);
}

absl::Status SlotTokenDispatcher::Reserve(DataType dtype, int64_t elements, Arena* arena) {
  if (arena->storage != nullptr && arena->capacity >= elements) return absl::OkStatus();
  const int64_t capacity = std::max({elements, arena->capacity + arena->capacity / 2, int64_t{1}});
  ASSIGN_OR_RETURN(kernels::Tensor t, backend_.Empty(dtype, {capacity}));
  arena->storage = std::move(t.storage);
  arena->capacity = capacity;
  ++num_buffer_allocations_;
  return absl::OkStatus();
}

absl::StatusOr<kernels::Tensor> SlotTokenDispatcher::View(Arena* arena, DataType dtype,
                                                          std::vector<int64_t> shape) {
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;
  RETURN_IF_ERROR(Reserve(dtype, elements, arena));
  kernels::Tensor v;
  v.dtype = dtype;
  v.storage = arena->storage;
  v.byte_offset = 0;
  v.shape = std::move(shape);
  return v;
}

absl::Status SlotTokenDispatcher::ReserveHost(size_t bytes, Arena* arena) {
  if (arena->storage != nullptr && arena->capacity >= static_cast<int64_t>(bytes)) {
    return absl::OkStatus();
  }
  const size_t capacity =
      std::max<size_t>({bytes, static_cast<size_t>(arena->capacity) * 3 / 2, 1});
  ASSIGN_OR_RETURN(arena->storage, backend_.AllocateStagingHost(capacity));
  arena->capacity = static_cast<int64_t>(capacity);
  ++num_buffer_allocations_;
  return absl::OkStatus();
}

int64_t SlotTokenDispatcher::MaxRows(int64_t recv_slots) const {
  // Every pick of every received token may name an expert held here (picks
  // need not be distinct).
  return recv_slots * options_.top_k;
}

absl::Status SlotTokenDispatcher::LayoutSend(Buffers* b, int64_t tokens, int64_t send_capacity,
                                             Slots* s) {
  const int64_t w = world_, h = options_.hidden, k = options_.top_k;
  s->send_capacity = send_capacity;
  ASSIGN_OR_RETURN(s->send_rows, View(&b->send_rows, options_.wire_dtype, {w * send_capacity, h}));
  ASSIGN_OR_RETURN(s->send_routes,
                   View(&b->send_routes, DataType::kInt32, {w * send_capacity, 2 * k}));
  ASSIGN_OR_RETURN(s->send_counts, View(&b->send_counts, DataType::kInt32, {w}));
  ASSIGN_OR_RETURN(s->recv_counts, View(&b->recv_counts, DataType::kInt32, {w}));
  ASSIGN_OR_RETURN(s->token_slots, View(&b->token_slots, DataType::kInt32, {tokens, w}));
  return absl::OkStatus();
}

absl::Status SlotTokenDispatcher::LayoutRecv(Buffers* b, int64_t recv_capacity, Slots* s) {
  const int64_t w = world_, h = options_.hidden, k = options_.top_k;
  s->recv_capacity = recv_capacity;
  ASSIGN_OR_RETURN(s->recv_rows, View(&b->recv_rows, options_.wire_dtype, {w * recv_capacity, h}));
  ASSIGN_OR_RETURN(s->recv_routes,
                   View(&b->recv_routes, DataType::kInt32, {w * recv_capacity, 2 * k}));
  ASSIGN_OR_RETURN(s->rows, View(&b->rows, DataType::kFloat32, {MaxRows(w * recv_capacity), h}));
  ASSIGN_OR_RETURN(s->expert_offsets,
                   View(&b->expert_offsets, DataType::kInt32, {options_.num_experts + 1}));
  ASSIGN_OR_RETURN(s->route_rows, View(&b->route_rows, DataType::kInt32, {w * recv_capacity, k}));
  return absl::OkStatus();
}

absl::Status SlotTokenDispatcher::CommError(const char* phase, const absl::Status& status) const {
  return Annotate(status, absl::StrCat("MoE layer ", layer_, " ", phase));
}

absl::Status SlotTokenDispatcher::Exchange(const kernels::Tensor& send, int64_t send_stride,
                                           absl::Span<const int64_t> send_counts,
                                           kernels::Tensor* recv, int64_t recv_stride,
                                           absl::Span<const int64_t> recv_counts) {
  const size_t row_bytes = static_cast<size_t>(send.shape[1]) * DataTypeSize(send.dtype);
  if (direct()) {
    return comm_->AllToAllVStrided(send.data(), send_stride, send_counts, recv->mutable_data(),
                                   recv_stride, recv_counts, row_bytes, backend_.stream());
  }
  // A host communicator between device tensors: the used part of each region
  // through page-locked host memory, at the same offsets.
  RETURN_IF_ERROR(ReserveHost(send.nbytes(), &host_send_));
  RETURN_IF_ERROR(ReserveHost(recv->nbytes(), &host_recv_));
  char* host_send = static_cast<char*>(host_send_.storage->mutable_data());
  char* host_recv = static_cast<char*>(host_recv_.storage->mutable_data());
  for (int r = 0; r < world_; ++r) {
    if (send_counts[r] == 0) continue;
    kernels::Tensor region = RowRange(send, r * send_stride, send_counts[r]);
    RETURN_IF_ERROR(
        backend_.CopyToHost(region, host_send + r * send_stride * row_bytes, region.nbytes()));
  }
  RETURN_IF_ERROR(comm_->AllToAllVStrided(host_send, send_stride, send_counts, host_recv,
                                          recv_stride, recv_counts, row_bytes, nullptr));
  for (int r = 0; r < world_; ++r) {
    if (recv_counts[r] == 0) continue;
    kernels::Tensor region = RowRange(*recv, r * recv_stride, recv_counts[r]);
    RETURN_IF_ERROR(
        backend_.CopyFromHost(host_recv + r * recv_stride * row_bytes, region.nbytes(), &region));
  }
  // Copies from page-locked memory may still be in flight; the staging is
  // rewritten by the next exchange.
  return backend_.Synchronize();
}

absl::Status SlotTokenDispatcher::ExchangeCounts() {
  const size_t bytes = static_cast<size_t>(world_) * sizeof(int32_t);
  if (direct()) {
    ASSIGN_OR_RETURN(kernels::Tensor matrix,
                     View(&grown_.count_matrix, DataType::kInt32, {int64_t{world_} * world_}));
    RETURN_IF_ERROR(comm_->AllGather(slots_.send_counts.data(), matrix.mutable_data(), bytes,
                                     backend_.stream()));
    RETURN_IF_ERROR(backend_.CopyToHost(matrix, counts32_.data(), matrix.nbytes()));
  } else {
    RETURN_IF_ERROR(
        backend_.CopyToHost(slots_.send_counts, counts32_.data() + rank_ * world_, bytes));
    std::vector<int32_t> mine(counts32_.begin() + rank_ * world_,
                              counts32_.begin() + (rank_ + 1) * world_);
    RETURN_IF_ERROR(comm_->AllGather(mine.data(), counts32_.data(), bytes, nullptr));
  }
  // Row q of the matrix: what rank q sends to each rank.
  std::vector<int32_t> recv(world_);
  std::fill(rows_per_rank_.begin(), rows_per_rank_.end(), 0);
  for (int q = 0; q < world_; ++q) {
    for (int r = 0; r < world_; ++r) {
      const int32_t c = counts32_[static_cast<size_t>(q) * world_ + r];
      if (c < 0) {
        return absl::InternalError(
            absl::StrCat("rank ", q, " reported a negative count ", c, " for rank ", r));
      }
      rows_per_rank_[r] += c;
      if (q == rank_) send_counts_host_[r] = c;
      if (r == rank_) recv_counts_host_[q] = c;
    }
  }
  for (int q = 0; q < world_; ++q) recv[q] = static_cast<int32_t>(recv_counts_host_[q]);
  return backend_.CopyFromHost(recv.data(), bytes, &slots_.recv_counts);
}

absl::StatusOr<DispatchedTokens> SlotTokenDispatcher::Dispatch(
    const kernels::Tensor& hidden, const kernels::Tensor& topk_ids,
    const kernels::Tensor& topk_weights) {
  const Clock::time_point start = Clock::now();
  if (pending_) {
    return absl::FailedPreconditionError(absl::StrCat("TokenDispatcher: MoE layer ", layer_,
                                                      ": Dispatch called twice without Combine"));
  }
  if (comm_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("SlotTokenDispatcher: MoE layer ", layer_,
                                                      ": no communicator (group not formed)"));
  }
  const int64_t h = options_.hidden, k = options_.top_k;
  if (hidden.shape.size() != 2 || hidden.shape[1] != h || hidden.dtype != DataType::kFloat32) {
    return BadArgument("hidden", absl::StrCat("[T, ", h, "] float32"), hidden.DebugString());
  }
  const int64_t t = hidden.shape[0];
  if (!HasShape(topk_ids, t, k) || topk_ids.dtype != DataType::kInt32) {
    return BadArgument("topk_ids", absl::StrCat("[", t, ", ", k, "] int32"),
                       topk_ids.DebugString());
  }
  if (!HasShape(topk_weights, t, k) || topk_weights.dtype != DataType::kFloat32) {
    return BadArgument("topk_weights", absl::StrCat("[", t, ", ", k, "] float32"),
                       topk_weights.DebugString());
  }
  if (fixed_step_ && t > options_.decode_capacity) {
    return BadArgument(
        "hidden",
        absl::StrCat("at most ", options_.decode_capacity, " tokens in a fixed-capacity step"),
        absl::StrCat(t));
  }
  const int64_t row_bytes = h * static_cast<int64_t>(DataTypeSize(options_.wire_dtype));
  const int64_t route_bytes = 2 * k * static_cast<int64_t>(sizeof(int32_t));
  Buffers* buffers = fixed_step_ ? &fixed_ : &grown_;
  const int64_t send_capacity = fixed_step_ ? options_.decode_capacity : std::max<int64_t>(t, 1);
  RETURN_IF_ERROR(LayoutSend(buffers, t, send_capacity, &slots_));
  RETURN_IF_ERROR(Mark(0));
  RETURN_IF_ERROR(backend_.EpDispatchPack(hidden, topk_ids, topk_weights, expert_to_rank_,
                                          &slots_.send_rows, &slots_.send_routes,
                                          &slots_.send_counts, &slots_.token_slots));
  absl::Status s;
  if (fixed_step_) {
    const int64_t c = options_.decode_capacity;
    RETURN_IF_ERROR(LayoutRecv(buffers, c, &slots_));
    if (!direct()) {
      RETURN_IF_ERROR(StagedDispatch());
    } else {
      s = comm_->AllToAllVStrided(slots_.send_counts.data(), 1, ones_,
                                  slots_.recv_counts.mutable_data(), 1, ones_, sizeof(int32_t),
                                  backend_.stream());
      if (s.ok()) {
        s = Exchange(slots_.send_routes, c, fixed_counts_, &slots_.recv_routes, c, fixed_counts_);
      }
      if (s.ok()) {
        s = Exchange(slots_.send_rows, c, fixed_counts_, &slots_.recv_rows, c, fixed_counts_);
      }
      if (!s.ok()) return CommError("dispatch", s);
    }
  } else {
    s = ExchangeCounts();
    if (!s.ok()) return CommError("dispatch", s);
    int64_t most = 1;
    for (int64_t c : recv_counts_host_) most = std::max(most, c);
    RETURN_IF_ERROR(LayoutRecv(buffers, most, &slots_));
    s = Exchange(slots_.send_routes, send_capacity, send_counts_host_, &slots_.recv_routes, most,
                 recv_counts_host_);
    if (s.ok()) {
      s = Exchange(slots_.send_rows, send_capacity, send_counts_host_, &slots_.recv_rows, most,
                   recv_counts_host_);
    }
    if (!s.ok()) return CommError("dispatch", s);
  }
  RETURN_IF_ERROR(backend_.EpDispatchUnpack(slots_.recv_rows, slots_.recv_routes,
                                            slots_.recv_counts, &slots_.rows,
                                            &slots_.expert_offsets, &slots_.route_rows));
  RETURN_IF_ERROR(Mark(1));
  if (fixed_step_ && fixed_offsets_.storage != nullptr && layer_ < options_.num_layers) {
    auto* record = static_cast<char*>(fixed_offsets_.storage->mutable_data()) +
                   static_cast<size_t>(layer_) * slots_.expert_offsets.nbytes();
    RETURN_IF_ERROR(backend_.CopyToStagingAsync(slots_.expert_offsets, record));
    if (static_cast<size_t>(layer_) < dispatched_this_step_.size()) {
      dispatched_this_step_[layer_] = true;
    }
  }
  topk_weights_ = topk_weights;
  tokens_ = t;
  pending_ = true;
  stats_.dispatch_seconds = SecondsSince(start);
  if (!fixed_step_) {
    uint64_t out = 0, in = 0;
    for (int r = 0; r < world_; ++r) {
      if (r == rank_) continue;
      out += static_cast<uint64_t>(send_counts_host_[r]);
      in += static_cast<uint64_t>(recv_counts_host_[r]);
    }
    const uint64_t count_bytes = static_cast<uint64_t>(world_ - 1) * world_ * sizeof(int32_t);
    // Dispatch: rows and routes out; combine: one row back per received slot.
    stats_.bytes_sent = count_bytes + out * (row_bytes + route_bytes) + in * row_bytes;
    stats_.bytes_received = count_bytes + in * (row_bytes + route_bytes) + out * row_bytes;
  }
  return DispatchedTokens{slots_.rows, slots_.expert_offsets};
}

absl::Status SlotTokenDispatcher::Combine(const kernels::Tensor& expert_out, kernels::Tensor* out) {
  const Clock::time_point start = Clock::now();
  if (!pending_) {
    return absl::FailedPreconditionError(
        absl::StrCat("TokenDispatcher: MoE layer ", layer_, ": Combine called without Dispatch"));
  }
  pending_ = false;
  const int64_t h = options_.hidden;
  if (!expert_out.defined() || !HasShape(expert_out, slots_.rows.shape[0], h) ||
      expert_out.dtype != DataType::kFloat32) {
    return BadArgument("expert_out", absl::StrCat("[", slots_.rows.shape[0], ", ", h, "] float32"),
                       expert_out.DebugString());
  }
  if (out == nullptr || !HasShape(*out, tokens_, h)) {
    return BadArgument("out", absl::StrCat("[", tokens_, ", ", h, "] float32"),
                       out == nullptr ? "nullptr" : out->DebugString());
  }
  // The partial sums go back in the receive buffers' rows, and come home in
  // the send buffers' rows (both free by now).
  kernels::Tensor& back = slots_.recv_rows;
  kernels::Tensor& returned = slots_.send_rows;
  RETURN_IF_ERROR(Mark(2));
  RETURN_IF_ERROR(backend_.EpCombinePack(expert_out, slots_.recv_routes, slots_.recv_counts,
                                         slots_.route_rows, &back));
  absl::Status s;
  if (fixed_step_ && !direct()) {
    s = StagedCombine(back, &returned);
  } else if (fixed_step_) {
    s = Exchange(back, slots_.recv_capacity, fixed_counts_, &returned, slots_.send_capacity,
                 fixed_counts_);
  } else {
    s = Exchange(back, slots_.recv_capacity, recv_counts_host_, &returned, slots_.send_capacity,
                 send_counts_host_);
  }
  if (!s.ok()) return CommError("combine", s);
  RETURN_IF_ERROR(backend_.EpCombineUnpack(returned, slots_.token_slots, out));
  RETURN_IF_ERROR(Mark(3));
  topk_weights_ = {};

  if (observer_ != nullptr && !fixed_step_) {
    RETURN_IF_ERROR(backend_.CopyToHost(slots_.expert_offsets, offsets_host_.data(),
                                        offsets_host_.size() * sizeof(int32_t)));
    for (int64_t e = 0; e < options_.num_experts; ++e) {
      rows_per_expert_[e] = offsets_host_[e + 1] - offsets_host_[e];
    }
    stats_.layer = layer_;
    stats_.timed = true;
    stats_.rows_per_expert = rows_per_expert_;
    stats_.rows_per_rank = rows_per_rank_;
    stats_.combine_seconds = SecondsSince(start);
    observer_->OnMoeExchange(stats_);
  }
  return absl::OkStatus();
}

}  // namespace epserve::moe
