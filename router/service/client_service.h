// epserve.v1.Epserve: the client API.
#pragma once

#include <chrono>

#include <memory>

#include "common/tokenizer/tokenizer.h"
#include "epserve/v1/epserve.grpc.pb.h"
#include "router/cluster/worker_registry.h"

namespace epserve::router {

struct ClientServiceOptions {
  v1::GetModelInfoResponse model_info;
  v1::ExpertPlacement expert_placement;
  // The model's tokenizer; null when the model directory has none.
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
};

class ClientService final : public v1::Epserve::CallbackService {
 public:
  ClientService(ClientServiceOptions options, WorkerRegistry* registry);

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx, const v1::AbortRequest* req,
                                  v1::AbortResponse* resp) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const v1::TokenizeRequest* req,
                                     v1::TokenizeResponse* resp) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx,
                                       const v1::DetokenizeRequest* req,
                                       v1::DetokenizeResponse* resp) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx,
                                         const v1::GetModelInfoRequest* req,
                                         v1::GetModelInfoResponse* resp) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx,
                                          const v1::GetServerInfoRequest* req,
                                          v1::GetServerInfoResponse* resp) override;

 private:
  absl::Status NeedTokenizer() const;

  const ClientServiceOptions options_;
  WorkerRegistry* registry_;
  const Clock::time_point start_;
};

}  // namespace epserve::router
