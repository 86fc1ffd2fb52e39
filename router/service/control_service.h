// Control.* for workers: registration, the step stream, rendezvous. Served
// on the router's control listener only (never the client port). Every call
// must carry the cluster secret (rpc/auth.h) when the router has one.
#pragma once

#include "common/rpc/auth.h"
#include "router/cluster/rendezvous_store.h"
#include "router/cluster/worker_registry.h"

#include "epserve/control/v1/control.grpc.pb.h"

namespace epserve::router {

class ControlService final : public control::v1::Control::CallbackService {
 public:
  // `secret`: the accepted cluster secret; an empty set accepts any caller.
  ControlService(WorkerRegistry* registry, RendezvousStore* store, rpc::TokenSet secret)
      : registry_(registry), store_(store), secret_(std::move(secret)) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* ctx,
                                     const control::v1::RegisterRequest* req,
                                     control::v1::RegisterResponse* resp) override;
  grpc::ServerBidiReactor<control::v1::WorkerMessage, control::v1::RouterMessage>* Connect(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* StoreSet(grpc::CallbackServerContext* ctx,
                                     const control::v1::StoreSetRequest* req,
                                     control::v1::StoreSetResponse* resp) override;
  grpc::ServerUnaryReactor* StoreGet(grpc::CallbackServerContext* ctx,
                                     const control::v1::StoreGetRequest* req,
                                     control::v1::StoreGetResponse* resp) override;

 private:
  // OK, or UNAUTHENTICATED (logged with the caller's address).
  absl::Status Authenticate(const grpc::CallbackServerContext* ctx, const char* method) const;

  WorkerRegistry* registry_;
  RendezvousStore* store_;
  rpc::TokenSet secret_;
};

}  // namespace epserve::router
