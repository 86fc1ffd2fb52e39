// World size 1: every collective is a local copy. Lets single-worker runs use
// the same code path as multi-worker ones.
#pragma once

#include "worker/comm/communicator.h"

namespace epserve::comm {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend() const override { return "local"; }
  absl::Status AllToAllV(const void* send, absl::Span<const int64_t> send_counts, void* recv,
                         absl::Span<const int64_t> recv_counts, size_t element_size,
                         void* stream) override;
  absl::Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                         void* stream) override;
  absl::Status AllReduceSum(void* data, size_t count, DataType type, void* stream) override;
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace epserve::comm
