#include "common/metrics/metrics_server.h"

#include <exception>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace epserve {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const HostPort& address, std::shared_ptr<prometheus::Registry> registry) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  try {
    // Several threads and a request timeout: one slow or half-open client
    // must not hold the scrapes of everybody else.
    server->exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", address.ToString(), "num_threads", absl::StrCat(kMetricsThreads),
        "request_timeout_ms", absl::StrCat(kMetricsRequestTimeoutMs)});
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address.ToString(),
                                               ": ", e.what(),
                                               " (port in use or address not local?)"));
  }
  server->registry_ = std::move(registry);
  server->exposer_->RegisterCollectable(server->registry_);
  server->address_ = address;
  std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (!ports.empty()) server->address_.port = static_cast<uint16_t>(ports.front());
  return server;
}

MetricsServer::~MetricsServer() = default;

}  // namespace epserve
