#include "worker/comm/local_communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace epserve::comm {

absl::Status LocalCommunicator::AllToAllV(const void* send, absl::Span<const int64_t> send_counts,
                                          void* recv, absl::Span<const int64_t> recv_counts,
                                          size_t element_size, void* /*stream*/) {
  if (send_counts.size() != 1 || recv_counts.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV: expected 1 count per side, got ",
                                                   send_counts.size(), " send and ",
                                                   recv_counts.size(), " recv"));
  }
  if (send_counts[0] != recv_counts[0] || send_counts[0] < 0) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV: send count ", send_counts[0],
                                                   " != recv count ", recv_counts[0]));
  }
  if (send_counts[0] > 0 && send != recv) {
    std::memmove(recv, send, static_cast<size_t>(send_counts[0]) * element_size);
  }
  return absl::OkStatus();
}

absl::Status LocalCommunicator::AllGather(const void* send, void* recv, size_t bytes_per_rank,
                                          void* /*stream*/) {
  if (bytes_per_rank > 0 && send != recv) std::memmove(recv, send, bytes_per_rank);
  return absl::OkStatus();
}

absl::Status LocalCommunicator::AllReduceSum(void* /*data*/, size_t /*count*/, DataType /*type*/,
                                             void* /*stream*/) {
  return absl::OkStatus();
}

}  // namespace epserve::comm
