#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"
#include "common/logging.h"
#include "common/status.h"

namespace epserve::comm {
namespace {

using Clock = std::chrono::steady_clock;

// How often the watchdog looks at pending work, and at NCCL's async error
// when nothing is pending.
constexpr auto kPollPending = std::chrono::milliseconds(2);
constexpr auto kPollIdle = std::chrono::milliseconds(50);

// Makes `device` current for the scope and restores the previous device.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) : device_(device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device_) status_ = cudaSetDevice(device_);
  }
  ~ScopedDevice() {
    if (previous_ >= 0 && previous_ != device_) (void)cudaSetDevice(previous_);
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

  absl::Status status() const {
    if (status_ == cudaSuccess) return absl::OkStatus();
    return absl::InternalError(
        absl::StrCat("cudaSetDevice(", device_, ") failed: ", cudaGetErrorString(status_)));
  }

 private:
  int device_;
  int previous_ = -1;
  cudaError_t status_ = cudaSuccess;
};

std::string VersionString(int code) {
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9.
  return absl::StrCat(code / 10000, ".", (code / 100) % 100, ".", code % 100);
}

// NCCL's error name plus its last error text (of `comm` when not null).
std::string NcclText(ncclResult_t result, ncclComm_t comm) {
  const char* last = ncclGetLastError(comm);
  return absl::StrCat(ncclGetErrorString(result), (last != nullptr && *last != '\0')
                                                      ? absl::StrCat(" (", last, ")")
                                                      : std::string());
}

std::string ToHex(const char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

bool FromHex(const std::string& hex, char* out, size_t n) {
  if (hex.size() != 2 * n) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < n; ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return true;
}

absl::StatusOr<ncclDataType_t> NcclType(DataType type) {
  switch (type) {
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat16:
      return ncclFloat16;
    case DataType::kBFloat16:
      return ncclBfloat16;
    case DataType::kInt64:
      return ncclInt64;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kInt8:
      return ncclInt8;
    case DataType::kUInt8:
      return ncclUint8;
    default:
      return absl::UnimplementedError(
          absl::StrCat("AllReduceSum on NCCL supports float64, float32, float16, bfloat16, "
                       "int64, int32, int8 and uint8, not ",
                       DataTypeName(type)));
  }
}

absl::Status CheckCounts(const char* op, int world, absl::Span<const int64_t> send_counts,
                         absl::Span<const int64_t> recv_counts) {
  if (send_counts.size() != static_cast<size_t>(world) ||
      recv_counts.size() != static_cast<size_t>(world)) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": expected ", world,
                                                   " counts per side, got ", send_counts.size(),
                                                   " send and ", recv_counts.size(), " recv"));
  }
  for (int r = 0; r < world; ++r) {
    if (send_counts[r] < 0 || recv_counts[r] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(op, ": negative count for rank ", r, " (send ",
                                                     send_counts[r], ", recv ", recv_counts[r],
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string NcclUniqueIdKey(const std::string& key_prefix) {
  return absl::StrCat(key_prefix, "nccl/unique_id");
}

absl::StatusOr<std::string> NcclRuntimeVersion() {
  int code = 0;
  RETURN_IF_NCCL_ERROR(nullptr, ncclGetVersion(&code));
  return VersionString(code);
}

// The NCCL communicator, its watchdog and the state they share. Every call
// on `comm` happens under `mu`, so the watchdog's abort never races an
// enqueue.
struct NcclCommunicator::Impl {
  struct Pending {
    cudaEvent_t event;
    const char* op;
    Clock::time_point deadline;
  };

  ncclComm_t comm = nullptr;  // null once aborted or destroyed
  int rank = 0;
  int world = 1;
  int device = 0;
  std::chrono::milliseconds timeout{10000};
  cudaStream_t barrier_stream = nullptr;
  int32_t* barrier_value = nullptr;  // [1] device

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending> pending;
  std::vector<cudaEvent_t> free_events;
  absl::Status error;  // the first failure; OK while usable
  bool stop = false;
  std::thread watchdog;

  std::string Where() const {
    return absl::StrCat("rank ", rank, " of ", world, " (cuda:", device, ")");
  }

  // Records the failure (the first one wins) and aborts the NCCL
  // communicator, which makes its kernels on every stream return.
  void AbortLocked(absl::Status status) {
    if (error.ok()) {
      error = std::move(status);
      LOG_ERROR("NCCL communicator {}: {}", Where(), error.message());
    }
    if (comm != nullptr) {
      (void)ncclCommAbort(comm);
      comm = nullptr;
    }
  }

  // After a call returned ncclInProgress (non-blocking communicator): polls
  // until NCCL finished it, or aborts after the timeout.
  ncclResult_t WaitInProgressLocked(ncclResult_t result) {
    const auto deadline = Clock::now() + timeout;
    while (result == ncclInProgress && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
      ncclResult_t state = ncclSuccess;
      const ncclResult_t query = ncclCommGetAsyncError(comm, &state);
      result = query != ncclSuccess ? query : state;
    }
    return result;
  }

  absl::Status CheckUsableLocked(const char* op) const {
    if (!error.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          op, ": NCCL communicator unusable after an earlier failure: ", error.message()));
    }
    return absl::OkStatus();
  }

  absl::Status WatchLocked(const char* op, cudaStream_t stream) {
    cudaEvent_t event = nullptr;
    if (!free_events.empty()) {
      event = free_events.back();
      free_events.pop_back();
    } else {
      RETURN_IF_CUDA_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    }
    if (cudaError_t err = cudaEventRecord(event, stream); err != cudaSuccess) {
      free_events.push_back(event);
      return absl::InternalError(
          absl::StrCat(op, " on ", Where(), ": cudaEventRecord failed: ", cudaGetErrorString(err)));
    }
    pending.push_back(Pending{event, op, Clock::now() + timeout});
    cv.notify_one();
    return absl::OkStatus();
  }

  // Enqueues `enqueue(comm)` (NCCL calls on `stream`), then hands an event
  // after it to the watchdog unless the stream is capturing a graph.
  template <typename Fn>
  absl::Status Run(const char* op, cudaStream_t stream, Fn&& enqueue) {
    std::lock_guard<std::mutex> lock(mu);
    RETURN_IF_ERROR(CheckUsableLocked(op));
    ScopedDevice scoped(device);
    RETURN_IF_ERROR(scoped.status());
    ncclResult_t result = enqueue(comm);
    if (result == ncclInProgress) result = WaitInProgressLocked(result);
    if (result == ncclInProgress) {
      absl::Status status = absl::DeadlineExceededError(
          absl::StrCat(op, " on ", Where(), ": NCCL did not finish enqueueing within ",
                       timeout.count(), " ms (a peer did not connect); NCCL communicator aborted"));
      AbortLocked(status);
      return status;
    }
    if (result != ncclSuccess) {
      absl::Status status = absl::UnavailableError(absl::StrCat(
          op, " on ", Where(), " failed: ", NcclText(result, comm), "; NCCL communicator aborted"));
      AbortLocked(status);
      return status;
    }
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    RETURN_IF_CUDA_ERROR(cudaStreamIsCapturing(stream, &capture));
    if (capture == cudaStreamCaptureStatusNone) return WatchLocked(op, stream);
    return absl::OkStatus();
  }

  void ReleasePendingLocked() {
    for (const Pending& p : pending) (void)cudaEventDestroy(p.event);
    pending.clear();
  }

  void WatchdogLoop() {
    (void)cudaSetDevice(device);
    // Event queries from this thread must not invalidate a graph capture
    // that the caller runs in the global capture mode.
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    (void)cudaThreadExchangeStreamCaptureMode(&mode);
    std::unique_lock<std::mutex> lock(mu);
    while (!stop) {
      cv.wait_for(lock, pending.empty() ? kPollIdle : kPollPending);
      if (stop) break;
      if (comm == nullptr) {
        ReleasePendingLocked();
        continue;
      }
      ncclResult_t state = ncclSuccess;
      const ncclResult_t query = ncclCommGetAsyncError(comm, &state);
      if (query != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
        const ncclResult_t bad = query != ncclSuccess ? query : state;
        AbortLocked(absl::UnavailableError(
            absl::StrCat(pending.empty() ? "collective" : pending.front().op, " on ", Where(),
                         ": NCCL reported an asynchronous error: ", NcclText(bad, comm),
                         " (a peer failed or the network broke); NCCL communicator aborted")));
        ReleasePendingLocked();
        continue;
      }
      while (!pending.empty()) {
        const Pending& front = pending.front();
        const cudaError_t done = cudaEventQuery(front.event);
        if (done == cudaSuccess) {
          free_events.push_back(front.event);
          pending.pop_front();
          continue;
        }
        if (done == cudaErrorNotReady) {
          if (Clock::now() >= front.deadline) {
            AbortLocked(absl::DeadlineExceededError(absl::StrCat(
                front.op, " on ", Where(), " did not complete within ", timeout.count(),
                " ms (a peer is dead, hung, or did not call it); NCCL communicator aborted")));
            ReleasePendingLocked();
          }
          break;
        }
        AbortLocked(absl::InternalError(absl::StrCat(
            front.op, " on ", Where(), ": cudaEventQuery failed: ", cudaGetErrorString(done))));
        ReleasePendingLocked();
        break;
      }
    }
  }

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    if (watchdog.joinable()) watchdog.join();
    ScopedDevice scoped(device);
    // Work still pending gets the timeout to finish; a communicator with
    // unfinished work or an earlier failure is aborted, never finalized
    // (finalizing waits for peers that may be gone).
    const auto deadline = Clock::now() + timeout;
    while (!pending.empty() && Clock::now() < deadline) {
      if (cudaEventQuery(pending.front().event) == cudaErrorNotReady) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      free_events.push_back(pending.front().event);
      pending.pop_front();
    }
    if (comm != nullptr) {
      bool clean = pending.empty();
      if (clean) {
        ncclResult_t result = ncclCommFinalize(comm);
        if (result == ncclInProgress) result = WaitInProgressLocked(result);
        clean = result == ncclSuccess;
      }
      if (clean) {
        (void)ncclCommDestroy(comm);
      } else {
        (void)ncclCommAbort(comm);
      }
      comm = nullptr;
    }
    ReleasePendingLocked();
    for (cudaEvent_t event : free_events) (void)cudaEventDestroy(event);
    if (barrier_value != nullptr) (void)cudaFree(barrier_value);
    if (barrier_stream != nullptr) (void)cudaStreamDestroy(barrier_stream);
  }
};

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    const NcclOptions& options, Rendezvous& rendezvous) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("NcclCommunicator: rank ", options.rank,
                                                   " outside world size ", options.world_size));
  }
  if (options.timeout.count() <= 0 || options.init_timeout.count() < 0) {
    return absl::InvalidArgumentError(
        "NcclCommunicator: timeout must be positive and init_timeout non-negative");
  }
  const std::chrono::milliseconds init_timeout =
      options.init_timeout.count() > 0 ? options.init_timeout : options.timeout;
  // NVLink multicast (NVLS) stays off unless the operator asked for it. Once
  // per process, before any NCCL init reads the environment.
  static std::once_flag nvls_once;
  std::call_once(nvls_once, [] { setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0); });
  int version = 0;
  RETURN_IF_NCCL_ERROR(nullptr, ncclGetVersion(&version));
  if (version < kMinNcclVersionCode) {
    return absl::FailedPreconditionError(absl::StrCat(
        "NCCL ", VersionString(version), " is loaded, the NCCL communicator needs ",
        VersionString(kMinNcclVersionCode),
        " or newer (non-blocking init and abort); install a newer libnccl.so.2 or use the gloo "
        "collective backend"));
  }
  int device = options.cuda_device;
  if (device < 0) RETURN_IF_CUDA_ERROR(cudaGetDevice(&device));
  int num_devices = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDeviceCount(&num_devices));
  if (device >= num_devices) {
    return absl::InvalidArgumentError(absl::StrCat("NcclCommunicator: rank ", options.rank,
                                                   " asks for cuda:", device, ", but there are ",
                                                   num_devices, " CUDA device(s)"));
  }
  ScopedDevice scoped(device);
  RETURN_IF_ERROR(scoped.status());
  const std::string where =
      absl::StrCat("rank ", options.rank, " of ", options.world_size, " (cuda:", device, ")");
  LOG_INFO("NCCL {} (run time), forming group as {}", VersionString(version), where);
  const auto deadline = Clock::now() + init_timeout;

  ncclUniqueId id;
  const std::string key = NcclUniqueIdKey(options.key_prefix);
  if (options.rank == 0) {
    RETURN_IF_NCCL_ERROR(nullptr, ncclGetUniqueId(&id));
    RETURN_IF_ERROR(Annotate(rendezvous.Set(key, ToHex(id.internal, sizeof(id.internal))),
                             absl::StrCat("publishing NCCL unique id under ", key)));
  } else {
    auto backoff = std::chrono::milliseconds(1);
    while (true) {
      absl::StatusOr<std::optional<std::string>> value = rendezvous.TryGet(key);
      if (!value.ok()) return Annotate(value.status(), absl::StrCat("rendezvous get ", key));
      if (value->has_value()) {
        if (!FromHex(**value, id.internal, sizeof(id.internal))) {
          return absl::DataLossError(absl::StrCat("rendezvous key ", key, " holds ",
                                                  (*value)->size(), " characters, expected ",
                                                  2 * sizeof(id.internal), " hex digits"));
        }
        break;
      }
      if (Clock::now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat("forming NCCL group as ", where,
                                                        ": timed out after ", init_timeout.count(),
                                                        " ms waiting for rendezvous key ", key,
                                                        ", which rank 0 publishes (rank 0 did not "
                                                        "join)"));
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
    }
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t result =
      ncclCommInitRankConfig(&comm, options.world_size, id, options.rank, &config);
  while (result == ncclInProgress && comm != nullptr) {
    if (Clock::now() >= deadline) {
      (void)ncclCommAbort(comm);
      return absl::DeadlineExceededError(
          absl::StrCat("NCCL init of ", where, " did not complete within ", init_timeout.count(),
                       " ms (a rank did not join, or the ranks cannot reach each other: check "
                       "NCCL_SOCKET_IFNAME)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ncclResult_t state = ncclSuccess;
    const ncclResult_t query = ncclCommGetAsyncError(comm, &state);
    result = query != ncclSuccess ? query : state;
  }
  if (result != ncclSuccess) {
    const std::string text = NcclText(result, comm);
    if (comm != nullptr) (void)ncclCommAbort(comm);
    const bool shared_gpu = result == ncclInvalidUsage || absl::StrContains(text, "Duplicate GPU");
    return absl::UnavailableError(absl::StrCat(
        "NCCL init of ", where, " failed: ", text,
        shared_gpu ? "; NCCL needs one GPU per rank: GPU workers that share a GPU use the "
                     "gloo collective backend"
                   : ""));
  }

  auto impl = std::make_unique<Impl>();
  impl->comm = comm;
  impl->rank = options.rank;
  impl->world = options.world_size;
  impl->device = device;
  impl->timeout = options.timeout;
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&impl->barrier_stream, cudaStreamNonBlocking));
  RETURN_IF_CUDA_ERROR(cudaMalloc(&impl->barrier_value, sizeof(int32_t)));
  RETURN_IF_CUDA_ERROR(cudaMemset(impl->barrier_value, 0, sizeof(int32_t)));
  Impl* raw = impl.get();
  impl->watchdog = std::thread([raw] { raw->WatchdogLoop(); });
  return std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(std::move(impl), options.rank, options.world_size, device));
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl, int rank, int world_size, int device)
    : impl_(std::move(impl)), rank_(rank), world_size_(world_size), device_(device) {}

NcclCommunicator::~NcclCommunicator() = default;

absl::Status NcclCommunicator::AllToAllV(const void* send, absl::Span<const int64_t> send_counts,
                                         void* recv, absl::Span<const int64_t> recv_counts,
                                         size_t element_size, void* stream) {
  RETURN_IF_ERROR(CheckCounts("AllToAllV", world_size_, send_counts, recv_counts));
  const auto* in = static_cast<const char*>(send);
  auto* out = static_cast<char*>(recv);
  auto s = static_cast<cudaStream_t>(stream);
  return impl_->Run("AllToAllV", s, [&](ncclComm_t comm) {
    ncclResult_t r = ncclGroupStart();
    size_t send_at = 0, recv_at = 0;
    for (int peer = 0; peer < world_size_ && r == ncclSuccess; ++peer) {
      const size_t send_bytes = static_cast<size_t>(send_counts[peer]) * element_size;
      const size_t recv_bytes = static_cast<size_t>(recv_counts[peer]) * element_size;
      if (send_bytes > 0) r = ncclSend(in + send_at, send_bytes, ncclUint8, peer, comm, s);
      if (recv_bytes > 0 && r == ncclSuccess) {
        r = ncclRecv(out + recv_at, recv_bytes, ncclUint8, peer, comm, s);
      }
      send_at += send_bytes;
      recv_at += recv_bytes;
    }
    const ncclResult_t end = ncclGroupEnd();
    return r != ncclSuccess ? r : end;
  });
}

absl::Status NcclCommunicator::AllToAllVStrided(const void* send, int64_t send_stride,
                                                absl::Span<const int64_t> send_counts, void* recv,
                                                int64_t recv_stride,
                                                absl::Span<const int64_t> recv_counts,
                                                size_t element_size, void* stream) {
  RETURN_IF_ERROR(CheckCounts("AllToAllVStrided", world_size_, send_counts, recv_counts));
  for (int r = 0; r < world_size_; ++r) {
    if (send_counts[r] > send_stride || recv_counts[r] > recv_stride) {
      return absl::InvalidArgumentError(
          absl::StrCat("AllToAllVStrided: rank ", r, ": counts (send ", send_counts[r], ", recv ",
                       recv_counts[r], ") must lie in [0, stride] (send ", send_stride, ", recv ",
                       recv_stride, ")"));
    }
  }
  const auto* in = static_cast<const char*>(send);
  auto* out = static_cast<char*>(recv);
  auto s = static_cast<cudaStream_t>(stream);
  return impl_->Run("AllToAllVStrided", s, [&](ncclComm_t comm) {
    ncclResult_t r = ncclGroupStart();
    for (int peer = 0; peer < world_size_ && r == ncclSuccess; ++peer) {
      const size_t send_bytes = static_cast<size_t>(send_counts[peer]) * element_size;
      const size_t recv_bytes = static_cast<size_t>(recv_counts[peer]) * element_size;
      const size_t send_at =
          static_cast<size_t>(peer) * static_cast<size_t>(send_stride) * element_size;
      const size_t recv_at =
          static_cast<size_t>(peer) * static_cast<size_t>(recv_stride) * element_size;
      if (send_bytes > 0) r = ncclSend(in + send_at, send_bytes, ncclUint8, peer, comm, s);
      if (recv_bytes > 0 && r == ncclSuccess) {
        r = ncclRecv(out + recv_at, recv_bytes, ncclUint8, peer, comm, s);
      }
    }
    const ncclResult_t end = ncclGroupEnd();
    return r != ncclSuccess ? r : end;
  });
}

absl::Status NcclCommunicator::AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                         void* stream) {
  if (bytes_per_rank == 0) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    return impl_->CheckUsableLocked("AllGather");
  }
  auto s = static_cast<cudaStream_t>(stream);
  return impl_->Run("AllGather", s, [&](ncclComm_t comm) {
    return ncclAllGather(send, recv, bytes_per_rank, ncclUint8, comm, s);
  });
}

absl::Status NcclCommunicator::AllReduceSum(void* data, size_t count, DataType type, void* stream) {
  ASSIGN_OR_RETURN(ncclDataType_t nccl_type, NcclType(type));
  if (count == 0) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    return impl_->CheckUsableLocked("AllReduceSum");
  }
  auto s = static_cast<cudaStream_t>(stream);
  return impl_->Run("AllReduceSum", s, [&](ncclComm_t comm) {
    return ncclAllReduce(data, data, count, nccl_type, ncclSum, comm, s);
  });
}

absl::Status NcclCommunicator::Barrier() {
  cudaStream_t s = impl_->barrier_stream;
  RETURN_IF_ERROR(impl_->Run("Barrier", s, [&](ncclComm_t comm) {
    return ncclAllReduce(impl_->barrier_value, impl_->barrier_value, 1, ncclInt32, ncclSum, comm,
                         s);
  }));
  // The watchdog aborts a barrier stuck past the timeout, which drains the
  // stream; the extra second covers its polling.
  const auto deadline = Clock::now() + impl_->timeout + std::chrono::seconds(1);
  ScopedDevice scoped(impl_->device);
  RETURN_IF_ERROR(scoped.status());
  while (true) {
    const cudaError_t done = cudaStreamQuery(s);
    if (done == cudaSuccess) break;
    if (done != cudaErrorNotReady) RETURN_IF_CUDA_ERROR(done);
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("Barrier on rank ", rank_, " of ",
                                                      world_size_, " did not complete within ",
                                                      impl_->timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return AsyncError();
}

absl::Status NcclCommunicator::AsyncError() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->error.ok() && impl_->comm != nullptr) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t query = ncclCommGetAsyncError(impl_->comm, &state);
    if (query != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) {
      const ncclResult_t bad = query != ncclSuccess ? query : state;
      impl_->AbortLocked(absl::UnavailableError(
          absl::StrCat("collective on ", impl_->Where(), ": NCCL reported an asynchronous error: ",
                       NcclText(bad, impl_->comm), "; NCCL communicator aborted")));
    }
  }
  return impl_->error;
}

absl::Status NcclCommunicator::WatchStream(void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  std::lock_guard<std::mutex> lock(impl_->mu);
  RETURN_IF_ERROR(impl_->CheckUsableLocked("WatchStream"));
  ScopedDevice scoped(impl_->device);
  RETURN_IF_ERROR(scoped.status());
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  RETURN_IF_CUDA_ERROR(cudaStreamIsCapturing(s, &capture));
  if (capture != cudaStreamCaptureStatusNone) {
    return absl::InvalidArgumentError(
        "WatchStream: the stream is capturing a graph; call it after launching the graph");
  }
  return impl_->WatchLocked("graph replay", s);
}

}  // namespace epserve::comm
