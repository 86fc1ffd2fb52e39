// epserve.v1.Epserve: the client API. A gRPC adapter: Generate builds the
// request with the shared frontend::RequestBuilder (validate, tokenize,
// max_tokens; the call's deadline as a time point) and submits it to the
// Engine, whose per-request frontend::OutputProcessor makes the responses
// this service streams back. With API keys configured every method needs one
// (UNAUTHENTICATED otherwise); health and reflection stay open for probes.
#pragma once

#include <chrono>
#include <memory>

#include "common/rpc/auth.h"
#include "common/tokenizer/tokenizer.h"
#include "router/cluster/worker_registry.h"
#include "router/engine/engine.h"
#include "router/frontend/request_builder.h"
#include "router/validation/generate_validation.h"

#include "epserve/v1/epserve.grpc.pb.h"

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
  // Accepted API keys (--api-key-file); empty: calls need no key.
  rpc::TokenSet api_keys;
};

// Generate, Abort and Tokenize take client text: they receive the raw bytes
// and parse them with rpc::ParseClientMessage, so invalid UTF-8 is an
// INVALID_ARGUMENT naming the field instead of gRPC's bare UNIMPLEMENTED.
using ClientServiceBase =
    v1::Epserve::WithRawCallbackMethod_Generate<v1::Epserve::WithRawCallbackMethod_Abort<
        v1::Epserve::WithRawCallbackMethod_Tokenize<v1::Epserve::CallbackService>>>;

class ClientService final : public ClientServiceBase {
 public:
  // `registry`, `engine` and `metrics` (may be null) must outlive the service.
  ClientService(ClientServiceOptions options, WorkerRegistry* registry, Engine* engine,
                ServingMetrics* metrics);

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* ctx,
                                                       const grpc::ByteBuffer* raw) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw,
                                  grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw,
                                     grpc::ByteBuffer* resp) override;
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
  // Who calls: "key:<index>" of the API key presented, or without keys the
  // subject of its client certificate ("cert:<CN>", mutual TLS), else the
  // client's address without its port ("ipv4:10.0.0.7"); UNAUTHENTICATED
  // when a key is needed and missing or wrong. Requests belong to their
  // caller: only the same caller may Abort them.
  absl::StatusOr<std::string> Caller(const grpc::CallbackServerContext* ctx) const;

  const ClientServiceOptions options_;
  WorkerRegistry* registry_;
  Engine* engine_;
  ServingMetrics* metrics_;
  frontend::RequestBuilder builder_;
  const Clock::time_point start_;
};

}  // namespace epserve::router
