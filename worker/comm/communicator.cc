#include "worker/comm/communicator.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace epserve::comm {

absl::Status Communicator::AllToAllVStrided(const void* send, int64_t send_stride,
                                            absl::Span<const int64_t> send_counts, void* recv,
                                            int64_t recv_stride,
                                            absl::Span<const int64_t> recv_counts,
                                            size_t element_size, void* stream) {
  const int world = world_size();
  if (send_counts.size() != static_cast<size_t>(world) ||
      recv_counts.size() != static_cast<size_t>(world)) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllVStrided: expected ", world,
                                                   " counts per side, got ", send_counts.size(),
                                                   " send and ", recv_counts.size(), " recv"));
  }
  for (int r = 0; r < world; ++r) {
    if (send_counts[r] < 0 || send_counts[r] > send_stride || recv_counts[r] < 0 ||
        recv_counts[r] > recv_stride) {
      return absl::InvalidArgumentError(
          absl::StrCat("AllToAllVStrided: rank ", r, ": counts (send ", send_counts[r], ", recv ",
                       recv_counts[r], ") must lie in [0, stride] (send ", send_stride, ", recv ",
                       recv_stride, ")"));
    }
  }
  if (device_buffers()) {
    return absl::UnimplementedError(
        absl::StrCat("AllToAllVStrided: the ", backend(), " communicator must implement it"));
  }
  const auto* in = static_cast<const char*>(send);
  auto* out = static_cast<char*>(recv);
  int64_t total_send = 0, total_recv = 0;
  for (int r = 0; r < world; ++r) {
    total_send += send_counts[r];
    total_recv += recv_counts[r];
  }
  std::vector<char> packed(static_cast<size_t>(total_send) * element_size);
  std::vector<char> unpacked(static_cast<size_t>(total_recv) * element_size);
  size_t at = 0;
  for (int r = 0; r < world; ++r) {
    const size_t bytes = static_cast<size_t>(send_counts[r]) * element_size;
    if (bytes > 0) {
      std::memcpy(packed.data() + at, in + static_cast<size_t>(r * send_stride) * element_size,
                  bytes);
    }
    at += bytes;
  }
  absl::Status s =
      AllToAllV(packed.data(), send_counts, unpacked.data(), recv_counts, element_size, stream);
  if (!s.ok()) return s;
  at = 0;
  for (int r = 0; r < world; ++r) {
    const size_t bytes = static_cast<size_t>(recv_counts[r]) * element_size;
    if (bytes > 0) {
      std::memcpy(out + static_cast<size_t>(r * recv_stride) * element_size, unpacked.data() + at,
                  bytes);
    }
    at += bytes;
  }
  return absl::OkStatus();
}

}  // namespace epserve::comm
