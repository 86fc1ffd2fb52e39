// Control.* for workers: registration, the step stream, rendezvous.
#pragma once

#include "epserve/control/v1/control.grpc.pb.h"
#include "router/cluster/rendezvous_store.h"
#include "router/cluster/worker_registry.h"

namespace epserve::router {

class ControlService final : public control::v1::Control::CallbackService {
 public:
  ControlService(WorkerRegistry* registry, RendezvousStore* store)
      : registry_(registry), store_(store) {}

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
  WorkerRegistry* registry_;
  RendezvousStore* store_;
};

}  // namespace epserve::router
