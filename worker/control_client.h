// The worker's side of the control plane: registration with bounded retry,
// and the router's rendezvous store as a comm::Rendezvous.
#pragma once

#include <grpcpp/security/credentials.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/comm/rendezvous.h"

#include "epserve/control/v1/control.grpc.pb.h"

namespace epserve::worker {

class ControlClient {
 public:
  // `cluster_secret`: presented on every call of the channel (empty: none);
  // `credentials`: plaintext or TLS (rpc::MakeChannelCredentials).
  ControlClient(const std::string& router_address, const std::string& cluster_secret,
                const std::shared_ptr<grpc::ChannelCredentials>& credentials);

  // Registers, retrying transient failures (router not up yet, rank still
  // held by a lost worker, cluster full) until `retry_for` has passed. A
  // protocol mismatch or invalid request fails at once. The error says
  // what was tried and the last answer.
  absl::StatusOr<control::v1::RegisterResponse> Register(
      const control::v1::RegisterRequest& request, std::chrono::milliseconds retry_for);

  control::v1::Control::Stub& stub() { return *stub_; }
  const std::string& router_address() const { return router_address_; }

 private:
  std::string router_address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<control::v1::Control::Stub> stub_;
};

// comm::Rendezvous over Control.StoreSet / StoreGet.
class GrpcRendezvous final : public comm::Rendezvous {
 public:
  explicit GrpcRendezvous(control::v1::Control::Stub* stub) : stub_(stub) {}
  absl::Status Set(const std::string& key, const std::string& value) override;
  absl::StatusOr<std::optional<std::string>> TryGet(const std::string& key) override;

 private:
  control::v1::Control::Stub* stub_;
};

}  // namespace epserve::worker
