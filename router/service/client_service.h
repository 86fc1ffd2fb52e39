// epserve.v1.Epserve: the client API. A gRPC adapter: Generate builds the
// request with the shared frontend::RequestBuilder (validate, tokenize,
// max_tokens; the call's deadline as a time point) and submits it to the
// Engine, whose per-request frontend::OutputProcessor makes the responses
// this service streams back.
#pragma once

#include <chrono>
#include <memory>

#include "common/tokenizer/tokenizer.h"
#include "epserve/v1/epserve.grpc.pb.h"
#include "router/cluster/worker_registry.h"
#include "router/engine/engine.h"
#include "router/frontend/request_builder.h"
#include "router/validation/generate_validation.h"

namespace epserve::router {

struct ClientServiceOptions {
  v1::GetModelInfoResponse model_info;
  v1::ExpertPlacement expert_placement;
  // The model's tokenizer; null when the model directory has none.
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer;
  // "data" or "expert" (GetServerInfo.parallelism).
  std::string parallelism = "data";
  // Request limits; vocab_size, max_context_length and has_tokenizer are
  // filled from the model.
  GenerateLimits limits;
  // Generate is refused with this reason when non-empty.
  std::string generate_unavailable;
};

class ClientService final : public v1::Epserve::CallbackService {
 public:
  // `registry`, `engine` and `metrics` (may be null) must outlive the service.
  ClientService(ClientServiceOptions options, WorkerRegistry* registry, Engine* engine,
                ServingMetrics* metrics);

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
  Engine* engine_;
  ServingMetrics* metrics_;
  frontend::RequestBuilder builder_;
  const Clock::time_point start_;
};

}  // namespace epserve::router
