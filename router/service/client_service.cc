#include "router/service/client_service.h"

#include <deque>
#include <mutex>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/rpc/client_message.h"
#include "common/rpc/grpc_status.h"
#include "common/status.h"
#include "common/version.h"

namespace epserve::router {
namespace {

// One Generate stream. The engine writes to it from its step loop; gRPC
// allows one write in flight, so responses queue here, and chunks that pile
// up behind a slow client merge into one (nothing is lost, fewer messages).
// Owned by itself until gRPC calls OnDone, and by the engine while the
// request is live, so neither outlives the other's use.
class GenerateCall final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                           public GenerateStream {
 public:
  static std::shared_ptr<GenerateCall> Create(Engine* engine, std::string id) {
    std::shared_ptr<GenerateCall> call(new GenerateCall(engine, std::move(id)));
    call->self_ = call;
    return call;
  }

  void Write(v1::GenerateResponse response) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (done_ || finish_requested_) return;
    if (queue_.size() >= 2 && response.has_chunk() && queue_.back().has_chunk()) {
      v1::GenerateChunk* into = queue_.back().mutable_chunk();
      const v1::GenerateChunk& from = response.chunk();
      into->mutable_token_ids()->MergeFrom(from.token_ids());
      into->mutable_text()->append(from.text());
      into->mutable_logprobs()->MergeFrom(from.logprobs());
    } else {
      queue_.push_back(std::move(response));
    }
    Pump(lock);
  }

  void Finish(const absl::Status& status) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (done_ || finish_requested_) return;
    finish_requested_ = true;
    final_ = rpc::ToGrpc(status);
    Pump(lock);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    queue_.pop_front();
    if (!ok) {
      // The client is gone: nothing more can be written.
      queue_.clear();
      finish_requested_ = true;
      final_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
      Pump(lock);
      engine_->Cancel(id_, absl::CancelledError("the client went away"));
      return;
    }
    Pump(lock);
  }

  void OnCancel() override {
    engine_->Cancel(id_, absl::CancelledError("the client cancelled the call or its deadline "
                                              "passed"));
  }

  void OnDone() override {
    std::shared_ptr<GenerateCall> keep;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      keep = std::move(self_);
    }
    // `keep` may hold the last reference: nothing touches members after this.
  }

 private:
  GenerateCall(Engine* engine, std::string id) : engine_(engine), id_(std::move(id)) {}

  // Starts the next write or the finish; releases the lock before calling
  // into gRPC.
  void Pump(std::unique_lock<std::mutex>& lock) {
    if (writing_ || finish_called_) return;
    if (!queue_.empty()) {
      writing_ = true;
      rpc::SerializeToByteBuffer(queue_.front(), &wire_);  // stable until the write is done
      lock.unlock();
      StartWrite(&wire_);
      return;
    }
    if (finish_requested_) {
      finish_called_ = true;
      grpc::Status status = final_;
      lock.unlock();
      grpc::ServerWriteReactor<grpc::ByteBuffer>::Finish(status);
    }
  }

  Engine* const engine_;
  const std::string id_;
  std::mutex mu_;
  std::deque<v1::GenerateResponse> queue_;  // front() is in flight while writing_
  grpc::ByteBuffer wire_;                   // front() serialized, while writing_
  bool writing_ = false;
  bool finish_requested_ = false;
  bool finish_called_ = false;
  bool done_ = false;
  grpc::Status final_;
  std::shared_ptr<GenerateCall> self_;
};

// A Generate stream that ends at once with a status.
class RefusedGenerate final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  explicit RefusedGenerate(const absl::Status& status) { Finish(rpc::ToGrpc(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

absl::StatusOr<std::string> ClientService::Caller(const grpc::CallbackServerContext* ctx) const {
  if (!options_.api_keys.empty()) {
    absl::StatusOr<size_t> key = options_.api_keys.Check(
        *ctx, "API key", "the router's operator hands them out (--api-key-file)");
    if (!key.ok()) return key.status();
    return absl::StrCat("key:", *key);
  }
  // Mutual TLS: the client certificate's subject.
  if (std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
      auth != nullptr && auth->IsPeerAuthenticated()) {
    std::vector<grpc::string_ref> names = auth->FindPropertyValues("x509_common_name");
    if (!names.empty()) return absl::StrCat("cert:", std::string(names[0].data(), names[0].size()));
  }
  // "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000": the port changes per
  // connection, the host does not.
  std::string peer = ctx->peer();
  const size_t colon = peer.rfind(':');
  const size_t scheme = peer.find(':');
  if (colon != std::string::npos && colon != scheme) peer.resize(colon);
  return peer;
}

ClientService::ClientService(ClientServiceOptions options, WorkerRegistry* registry,
                             Engine* engine, ServingMetrics* metrics)
    : options_(std::move(options)),
      registry_(registry),
      engine_(engine),
      metrics_(metrics),
      builder_(options_.limits, options_.tokenizer),
      start_(Clock::now()) {}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ClientService::Generate(
    grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw) {
  auto refuse = [&](const char* reason, const absl::Status& status) {
    if (metrics_ != nullptr) metrics_->RequestRejected(reason);
    return new RefusedGenerate(status);
  };
  absl::StatusOr<std::string> caller = Caller(ctx);
  if (!caller.ok()) return refuse("unauthenticated", caller.status());
  v1::GenerateRequest parsed;
  if (absl::Status s = rpc::ParseClientMessage(*raw, &parsed); !s.ok()) {
    return refuse("invalid", s);
  }
  const v1::GenerateRequest* req = &parsed;
  if (!options_.generate_unavailable.empty()) {
    return refuse("unavailable", absl::UnimplementedError(options_.generate_unavailable));
  }
  if (engine_->draining()) {
    return refuse("draining", absl::UnavailableError(
                                  "the router is draining (shutting down); not accepting new "
                                  "requests"));
  }
  // While a lost group is being replaced, requests wait with the ones it
  // had (up to --recovery-timeout-s) instead of being refused.
  if (!registry_->serving() && !engine_->recovering()) {
    v1::GetServerInfoResponse info;
    registry_->FillServerInfo(&info, Clock::now());
    return refuse("unavailable", absl::UnavailableError(absl::StrCat(
                                     "cluster is not serving: ", info.state_reason())));
  }
  const EngineClock::time_point arrival = EngineClock::now();
  std::optional<EngineClock::time_point> deadline;
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
    deadline = arrival + std::chrono::duration_cast<EngineClock::duration>(
                             ctx->deadline() - std::chrono::system_clock::now());
  }
  absl::StatusOr<frontend::GenerationRequest> built = builder_.Build(*req, arrival, deadline);
  if (!built.ok()) return refuse("invalid", built.status());
  NewRequest request;
  static_cast<frontend::GenerationRequest&>(request) = std::move(*built);
  request.owner = std::move(*caller);
  std::shared_ptr<GenerateCall> call = GenerateCall::Create(engine_, request.id);
  request.stream = call;
  // Submit counts its own rejections.
  if (absl::Status s = engine_->Submit(std::move(request)); !s.ok()) call->Finish(s);
  return call.get();
}

grpc::ServerUnaryReactor* ClientService::Abort(grpc::CallbackServerContext* ctx,
                                               const grpc::ByteBuffer* raw,
                                               grpc::ByteBuffer* resp) {
  absl::StatusOr<std::string> caller = Caller(ctx);
  if (!caller.ok()) return rpc::FinishUnary(ctx, caller.status());
  v1::AbortRequest parsed;
  if (absl::Status s = rpc::ParseClientMessage(*raw, &parsed); !s.ok()) {
    return rpc::FinishUnary(ctx, s);
  }
  const v1::AbortRequest* req = &parsed;
  rpc::SerializeToByteBuffer(v1::AbortResponse(), resp);
  if (req->request_id().empty()) {
    return rpc::FinishUnary(ctx, absl::InvalidArgumentError("request_id: must not be empty"));
  }
  return rpc::FinishUnary(ctx, engine_->Abort(req->request_id(), *caller));
}

absl::Status ClientService::NeedTokenizer() const {
  if (options_.tokenizer) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "model directory ", options_.model_info.model_path(), " has no tokenizer.json"));
}

grpc::ServerUnaryReactor* ClientService::Tokenize(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* raw,
                                                  grpc::ByteBuffer* wire) {
  if (auto caller = Caller(ctx); !caller.ok()) return rpc::FinishUnary(ctx, caller.status());
  v1::TokenizeRequest parsed;
  if (absl::Status s = rpc::ParseClientMessage(*raw, &parsed); !s.ok()) {
    return rpc::FinishUnary(ctx, s);
  }
  const v1::TokenizeRequest* req = &parsed;
  v1::TokenizeResponse response;
  v1::TokenizeResponse* resp = &response;
  if (absl::Status s = NeedTokenizer(); !s.ok()) return rpc::FinishUnary(ctx, s);
  // The same bound as a Generate prompt: tokenizing costs time and memory.
  if (req->text().size() > options_.limits.max_prompt_text_bytes) {
    return rpc::FinishUnary(
        ctx, absl::InvalidArgumentError(
                 absl::StrCat("text: ", req->text().size(), " bytes exceeds the limit of ",
                              options_.limits.max_prompt_text_bytes, " bytes (the prompt limit)")));
  }
  tokenizer::EncodeOptions options;
  options.add_special_tokens = !req->has_add_special_tokens() || req->add_special_tokens();
  absl::StatusOr<std::vector<int32_t>> ids = options_.tokenizer->Encode(req->text(), options);
  if (!ids.ok()) return rpc::FinishUnary(ctx, Annotate(ids.status(), "text"));
  for (int32_t id : *ids) resp->add_token_ids(static_cast<uint32_t>(id));
  rpc::SerializeToByteBuffer(response, wire);
  return rpc::FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ClientService::Detokenize(grpc::CallbackServerContext* ctx,
                                                    const v1::DetokenizeRequest* req,
                                                    v1::DetokenizeResponse* resp) {
  if (auto caller = Caller(ctx); !caller.ok()) return rpc::FinishUnary(ctx, caller.status());
  if (absl::Status s = NeedTokenizer(); !s.ok()) return rpc::FinishUnary(ctx, s);
  if (static_cast<uint64_t>(req->token_ids_size()) > options_.limits.max_prompt_token_ids) {
    return rpc::FinishUnary(
        ctx, absl::InvalidArgumentError(
                 absl::StrCat("token_ids: ", req->token_ids_size(), " ids exceeds the limit of ",
                              options_.limits.max_prompt_token_ids, " ids (the prompt limit)")));
  }
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
  if (auto caller = Caller(ctx); !caller.ok()) return rpc::FinishUnary(ctx, caller.status());
  *resp = options_.model_info;
  return rpc::FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ClientService::GetServerInfo(grpc::CallbackServerContext* ctx,
                                                       const v1::GetServerInfoRequest* /*req*/,
                                                       v1::GetServerInfoResponse* resp) {
  if (auto caller = Caller(ctx); !caller.ok()) return rpc::FinishUnary(ctx, caller.status());
  auto now = Clock::now();
  resp->set_version(kVersion);
  resp->set_protocol_version(kProtocolVersion);
  registry_->FillServerInfo(resp, now);
  *resp->mutable_expert_placement() = options_.expert_placement;
  resp->set_parallelism(options_.parallelism);
  EngineStats stats = engine_->Stats();
  resp->set_requests_running(static_cast<uint32_t>(stats.running));
  resp->set_requests_waiting(static_cast<uint32_t>(stats.waiting));
  if (stats.draining) {
    resp->set_state(v1::CLUSTER_STATE_DRAINING);
    resp->set_state_reason("draining: in-flight requests finish, new ones are refused");
  }
  for (v1::WorkerInfo& w : *resp->mutable_workers()) {
    if (w.rank() < stats.workers.size()) {
      w.set_kv_blocks_used(static_cast<uint32_t>(stats.workers[w.rank()].kv_blocks_used));
      w.set_requests_running(static_cast<uint32_t>(stats.workers[w.rank()].requests_running));
    }
  }
  resp->set_uptime_seconds(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(now - start_).count()));
  return rpc::FinishUnary(ctx, absl::OkStatus());
}

}  // namespace epserve::router
