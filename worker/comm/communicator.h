// Collective communication between the workers of one group.
//
// Device-neutral: buffers may live in host memory (Gloo) or on a GPU (NCCL),
// and `stream` is the stream the work is enqueued on (cudaStream_t for NCCL;
// nullptr for host backends, which complete before returning).
//
// Every operation is collective: all ranks of the group call it, in the same
// order, with matching sizes. Every operation has a timeout; a timeout or a
// failed peer returns an error instead of hanging, and leaves the
// communicator broken (every later call fails at once) until the group is
// re-formed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/dtype.h"

namespace epserve::comm {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // "gloo", "nccl", "local".
  virtual std::string backend() const = 0;

  // All-to-all with per-rank sizes.
  //   send: [sum(send_counts)] elements; the first send_counts[0] go to
  //         rank 0, the next send_counts[1] to rank 1, ...
  //   recv: [sum(recv_counts)] elements, filled in rank order;
  //         recv_counts[r] must equal what rank r sends to this rank.
  // Counts are in elements of `element_size` bytes; both spans have
  // world_size() entries.
  virtual absl::Status AllToAllV(const void* send, absl::Span<const int64_t> send_counts,
                                 void* recv, absl::Span<const int64_t> recv_counts,
                                 size_t element_size, void* stream) = 0;

  // The same exchange over rank-major regions of a fixed stride: the
  // send_counts[r] elements for rank r start at element r * send_stride of
  // `send`, and rank r's elements land at element r * recv_stride of `recv`
  // (the slot layout of the expert-parallel exchange, worker/moe). Counts
  // must not exceed the strides. The default packs host buffers into
  // contiguous ones around AllToAllV; device communicators send each region
  // in place.
  virtual absl::Status AllToAllVStrided(const void* send, int64_t send_stride,
                                        absl::Span<const int64_t> send_counts, void* recv,
                                        int64_t recv_stride, absl::Span<const int64_t> recv_counts,
                                        size_t element_size, void* stream);

  // recv: [world_size * bytes_per_rank]; rank r's `send` lands at offset
  // r * bytes_per_rank.
  virtual absl::Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                 void* stream) = 0;

  // In-place element-wise sum over all ranks.
  virtual absl::Status AllReduceSum(void* data, size_t count, DataType type, void* stream) = 0;

  virtual absl::Status Barrier() = 0;

  // Whether buffers are device memory on the caller's GPU and operations
  // are enqueued on `stream` (NCCL), rather than host memory exchanged
  // before returning (Gloo, local).
  virtual bool device_buffers() const { return false; }

  // The first error of work that was enqueued and ran later (a device
  // communicator's watchdog found a timeout or a dead peer and aborted):
  // callers check it after synchronising the stream. OK when none, and
  // always OK for host communicators (their errors are returned directly).
  virtual absl::Status AsyncError() { return absl::OkStatus(); }

  // Hands the work enqueued on `stream` so far to the communicator's
  // watchdog, so that it is bounded by the collective timeout like a direct
  // call: device communicators need it after launching a CUDA graph that
  // contains their operations (captured operations are not watched). The
  // stream must not be capturing. A no-op for host communicators.
  virtual absl::Status WatchStream(void* /*stream*/) { return absl::OkStatus(); }
};

}  // namespace epserve::comm
