// Communicator over NCCL (GPU buffers, one GPU per rank). Built only with
// EPSERVE_WITH_NCCL; the factory refuses "nccl" otherwise.
//
// Forming the group:
//   rank 0: ncclGetUniqueId ─► Rendezvous::Set(key_prefix + "nccl/unique_id", hex)
//   others: poll TryGet(key) until it appears or `timeout` passes
//   all:    ncclCommInitRankConfig(blocking = 0), poll ncclCommGetAsyncError
//           until ncclSuccess; on an error or after `timeout`: ncclCommAbort
//
// Every operation is enqueue-only (no host synchronisation; Barrier is the
// exception) so that it can be captured into a CUDA graph. Outside capture,
// each operation records a cudaEvent on its stream after the NCCL work and
// hands it to a watchdog thread that polls cudaEventQuery and
// ncclCommGetAsyncError:
//
//   caller ──enqueue──► stream: [ncclSend/Recv ...][event] ──► watchdog
//                                                              │ event done: forget it
//                                                              │ not done after timeout,
//                                                              │ or NCCL async error:
//                                                              ▼ ncclCommAbort, record error
//
// ncclCommAbort makes NCCL kernels that wait on a dead or silent peer return,
// so the stream drains and the caller's synchronisation returns; the caller
// then reads AsyncError(). After a failure every call fails at once until the
// group is re-formed (a new communicator). Graph replays are not seen by the
// watchdog unless the caller calls WatchStream after launching them.
//
// Thread-safety: one caller thread per communicator (NCCL's rule); the
// watchdog runs beside it.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/comm/rendezvous.h"

namespace epserve::comm {

struct NcclOptions {
  int rank = 0;
  int world_size = 1;
  // CUDA device of this rank; -1: the calling thread's current device.
  int cuda_device = -1;
  // Scopes rendezvous keys, e.g. "epoch/3/": a re-formed group never sees
  // the keys of an earlier one.
  std::string key_prefix;
  // Limit for forming the group (rendezvous + init) and for every collective
  // (from enqueue to completion on the device).
  std::chrono::milliseconds timeout{10000};
  // Limit for forming the group when it should differ from `timeout` (many
  // ranks take longer to initialise than one collective may); 0: `timeout`.
  std::chrono::milliseconds init_timeout{0};
};

// Rendezvous key under which rank 0 publishes the NCCL unique id (hex).
std::string NcclUniqueIdKey(const std::string& key_prefix);

// The NCCL library version loaded at run time as (major, minor, patch), e.g.
// "2.28.3"; an error when ncclGetVersion fails.
absl::StatusOr<std::string> NcclRuntimeVersion();

class NcclCommunicator final : public Communicator {
 public:
  // Oldest NCCL the communicator runs on (non-blocking init and abort as used
  // here, ncclCommGetAsyncError during init).
  static constexpr int kMinNcclVersionCode = 21900;  // 2.19.0

  // Sets NCCL_NVLS_ENABLE=0 unless the environment already names it, checks
  // the NCCL version, forms the group. Blocks until every rank joined or
  // `options.timeout` passed. `rendezvous` is used only during Create.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const NcclOptions& options,
                                                                  Rendezvous& rendezvous);
  // Stops the watchdog; destroys the NCCL communicator (aborts it when
  // broken or when work is still pending).
  ~NcclCommunicator() override;

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "nccl"; }
  bool device_buffers() const override { return true; }
  int cuda_device() const { return device_; }

  // Buffers are device memory on cuda_device(); `stream` is a cudaStream_t
  // of that device (nullptr: the legacy default stream). Counts are checked
  // on this rank only: a peer whose counts do not match leaves the exchange
  // incomplete, which the watchdog turns into an error after the timeout.
  absl::Status AllToAllV(const void* send, absl::Span<const int64_t> send_counts, void* recv,
                         absl::Span<const int64_t> recv_counts, size_t element_size,
                         void* stream) override;
  // Each rank's region is sent and received in place at its stride offset;
  // zero counts move nothing.
  absl::Status AllToAllVStrided(const void* send, int64_t send_stride,
                                absl::Span<const int64_t> send_counts, void* recv,
                                int64_t recv_stride, absl::Span<const int64_t> recv_counts,
                                size_t element_size, void* stream) override;
  absl::Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                         void* stream) override;
  // float32, float16, bfloat16, float64, int32, int64, uint8 and int8.
  absl::Status AllReduceSum(void* data, size_t count, DataType type, void* stream) override;
  // A one-element all-reduce on an internal stream, waited for on the host
  // with the timeout.
  absl::Status Barrier() override;
  absl::Status AsyncError() override;
  // Records an event on `stream` (a cudaStream_t, not capturing) for the
  // watchdog: call after launching a graph that contains this
  // communicator's operations, so that a replay stuck on a peer is aborted
  // after the timeout too.
  absl::Status WatchStream(void* stream) override;

 private:
  struct Impl;
  explicit NcclCommunicator(std::unique_ptr<Impl> impl, int rank, int world_size, int device);

  std::unique_ptr<Impl> impl_;
  int rank_;
  int world_size_;
  int device_;
};

}  // namespace epserve::comm
