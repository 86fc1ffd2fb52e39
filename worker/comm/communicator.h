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

  // recv: [world_size * bytes_per_rank]; rank r's `send` lands at offset
  // r * bytes_per_rank.
  virtual absl::Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                 void* stream) = 0;

  // In-place element-wise sum over all ranks.
  virtual absl::Status AllReduceSum(void* data, size_t count, DataType type, void* stream) = 0;

  virtual absl::Status Barrier() = 0;
};

}  // namespace epserve::comm
