#include "common/metrics/metrics_server.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace epserve {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const HostPort& address, std::shared_ptr<prometheus::Registry> registry) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(address.ToString(), 1);
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
