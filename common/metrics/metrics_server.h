// The Prometheus /metrics endpoint of a process (prometheus-cpp pull).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/net.h"
#include "prometheus/registry.h"

namespace prometheus {
class Exposer;
}

namespace epserve {

// Connections served at once, and how long one request may take to arrive
// and be answered before its connection is closed.
inline constexpr int kMetricsThreads = 4;
inline constexpr int kMetricsRequestTimeoutMs = 5000;

class MetricsServer {
 public:
  // Serves `registry` at http://ADDRESS/metrics. Port 0 picks a free port.
  // Fails with a message naming the address when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const HostPort& address, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsServer();

  // The bound address, with the actual port.
  const HostPort& address() const { return address_; }

 private:
  MetricsServer() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;
  HostPort address_;
};

}  // namespace epserve
