#include "router/service/client_service.h"

#include "absl/strings/str_cat.h"
#include "common/rpc/grpc_status.h"
#include "common/status.h"
#include "common/version.h"

namespace epserve::router {
namespace {

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
      "Generate is not available in this build: the router does not schedule steps yet"));
}

grpc::ServerUnaryReactor* ClientService::Abort(grpc::CallbackServerContext* ctx,
                                               const v1::AbortRequest* req,
                                               v1::AbortResponse* /*resp*/) {
  if (req->request_id().empty()) {
    return rpc::FinishUnary(ctx, absl::InvalidArgumentError("request_id: must not be empty"));
  }
  // No request can be running until Generate exists.
  return rpc::FinishUnary(ctx, absl::NotFoundError(
                       absl::StrCat("request_id: no running request '", req->request_id(), "'")));
}

absl::Status ClientService::NeedTokenizer() const {
  if (options_.tokenizer) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "model directory ", options_.model_info.model_path(), " has no tokenizer.json"));
}

grpc::ServerUnaryReactor* ClientService::Tokenize(grpc::CallbackServerContext* ctx,
                                                  const v1::TokenizeRequest* req,
                                                  v1::TokenizeResponse* resp) {
  if (absl::Status s = NeedTokenizer(); !s.ok()) return rpc::FinishUnary(ctx, s);
  tokenizer::EncodeOptions options;
  options.add_special_tokens = !req->has_add_special_tokens() || req->add_special_tokens();
  absl::StatusOr<std::vector<int32_t>> ids = options_.tokenizer->Encode(req->text(), options);
  if (!ids.ok()) return rpc::FinishUnary(ctx, Annotate(ids.status(), "text"));
  for (int32_t id : *ids) resp->add_token_ids(static_cast<uint32_t>(id));
  return rpc::FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ClientService::Detokenize(grpc::CallbackServerContext* ctx,
                                                    const v1::DetokenizeRequest* req,
                                                    v1::DetokenizeResponse* resp) {
  if (absl::Status s = NeedTokenizer(); !s.ok()) return rpc::FinishUnary(ctx, s);
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(req->token_ids_size()));
  for (int i = 0; i < req->token_ids_size(); ++i) {
    uint32_t id = req->token_ids(i);
    if (id > static_cast<uint32_t>(INT32_MAX)) {
      return rpc::FinishUnary(ctx, absl::InvalidArgumentError(absl::StrCat(
                           "token_ids[", i, "]: id ", id, " is outside the vocabulary")));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  tokenizer::DecodeOptions options;
  options.skip_special_tokens = !req->has_skip_special_tokens() || req->skip_special_tokens();
  absl::StatusOr<std::string> text = options_.tokenizer->Decode(ids, options);
  if (!text.ok()) return rpc::FinishUnary(ctx, Annotate(text.status(), "token_ids"));
  resp->set_text(std::move(*text));
  return rpc::FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ClientService::GetModelInfo(grpc::CallbackServerContext* ctx,
                                                      const v1::GetModelInfoRequest* /*req*/,
                                                      v1::GetModelInfoResponse* resp) {
  *resp = options_.model_info;
  return rpc::FinishUnary(ctx, absl::OkStatus());
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
  return rpc::FinishUnary(ctx, absl::OkStatus());
}

}  // namespace epserve::router
