// Communicator over Gloo's TCP transport (CPU buffers). The group is formed
// through a Rendezvous: each rank publishes its listening addresses under
// `key_prefix` and connects to every other rank (full mesh).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/comm/rendezvous.h"

namespace gloo {
class Context;
}

namespace epserve::comm {

struct GlooOptions {
  int rank = 0;
  int world_size = 1;
  // Address other ranks reach this one on (IP or resolvable name).
  std::string hostname = "127.0.0.1";
  // Scopes rendezvous keys, e.g. "epoch/3/": a re-formed group never sees
  // the keys of an earlier one.
  std::string key_prefix;
  // Limit for forming the group and for every collective.
  std::chrono::milliseconds timeout{10000};
};

class GlooCommunicator final : public Communicator {
 public:
  // Blocks until all ranks joined or `options.timeout` passed.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(const GlooOptions& options,
                                                                  Rendezvous& rendezvous);
  ~GlooCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "gloo"; }
  absl::Status AllToAllV(const void* send, absl::Span<const int64_t> send_counts, void* recv,
                         absl::Span<const int64_t> recv_counts, size_t element_size,
                         void* stream) override;
  absl::Status AllGather(const void* send, void* recv, size_t bytes_per_rank,
                         void* stream) override;
  absl::Status AllReduceSum(void* data, size_t count, DataType type, void* stream) override;
  absl::Status Barrier() override;

 private:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, int rank, int world_size,
                   std::chrono::milliseconds timeout);
  // Runs a Gloo collective, turning its exceptions into a Status and marking
  // the communicator broken on failure.
  template <typename Fn>
  absl::Status Run(const char* op, Fn&& fn);
  absl::Status CheckUsable(const char* op, void* stream) const;

  std::shared_ptr<gloo::Context> context_;
  int rank_;
  int world_size_;
  std::chrono::milliseconds timeout_;
  uint32_t next_tag_ = 0;
  std::string broken_;  // non-empty after a failed collective
};

}  // namespace epserve::comm
