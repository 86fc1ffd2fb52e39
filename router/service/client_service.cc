#include "router/service/client_service.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/grpc_status.h"
#include "common/version.h"

namespace epserve::router {
namespace {

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(rpc::ToGrpc(status));
  return reactor;
}

// A Generate stream that ends at once with a status.
class RefusedGenerate final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit RefusedGenerate(const absl::Status& status) { Finish(rpc::ToGrpc(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

ClientService::ClientService(ClientServiceOptions options, WorkerRegistry* registry)
    : options_(std::move(options)), registry_(registry), start_(Clock::now()) {}

grpc::ServerWriteReactor<v1::GenerateResponse>* ClientService::Generate(
    grpc::CallbackServerContext* /*ctx*/, const v1::GenerateRequest* /*req*/) {
  if (!registry_->serving()) {
    v1::GetServerInfoResponse info;
    registry_->FillServerInfo(&info, Clock::now());
    return new RefusedGenerate(
        absl::UnavailableError(absl::StrCat("cluster is not serving: ", info.state_reason())));
  }
  return new RefusedGenerate(absl::UnimplementedError(
      "Generate is not available in this build: the workers have no forward pass yet"));
}

grpc::ServerUnaryReactor* ClientService::Abort(grpc::CallbackServerContext* ctx,
                                               const v1::AbortRequest* req,
                                               v1::AbortResponse* /*resp*/) {
  if (req->request_id().empty()) {
    return Done(ctx, absl::InvalidArgumentError("request_id: must not be empty"));
  }
  // No request can be running until Generate exists.
  return Done(ctx, absl::NotFoundError(
                       absl::StrCat("request_id: no running request '", req->request_id(), "'")));
}

grpc::ServerUnaryReactor* ClientService::Tokenize(grpc::CallbackServerContext* ctx,
                                                  const v1::TokenizeRequest* /*req*/,
                                                  v1::TokenizeResponse* /*resp*/) {
  return Done(ctx, absl::UnimplementedError("Tokenize: this build has no tokenizer"));
}

grpc::ServerUnaryReactor* ClientService::Detokenize(grpc::CallbackServerContext* ctx,
                                                    const v1::DetokenizeRequest* /*req*/,
                                                    v1::DetokenizeResponse* /*resp*/) {
  return Done(ctx, absl::UnimplementedError("Detokenize: this build has no tokenizer"));
}

grpc::ServerUnaryReactor* ClientService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                      const v1::GetModelInfoRequest* /*req*/,
                                                      v1::GetModelInfoResponse* resp) {
  *resp = options_.model_info;
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ClientService::GetServerInfo(grpc::CallbackServerContext* ctx,
                                                       const v1::GetServerInfoRequest* /*req*/,
                                                       v1::GetServerInfoResponse* resp) {
  auto now = Clock::now();
  resp->set_version(kVersion);
  resp->set_protocol_version(kProtocolVersion);
  registry_->FillServerInfo(resp, now);
  *resp->mutable_expert_placement() = options_.expert_placement;
  resp->set_uptime_seconds(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(now - start_).count()));
  return Done(ctx, absl::OkStatus());
}

}  // namespace epserve::router
