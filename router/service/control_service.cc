#include "router/service/control_service.h"

#include <deque>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/rpc/grpc_status.h"

namespace epserve::router {
namespace {

using control::v1::RouterMessage;
using control::v1::WorkerMessage;

// One worker's step stream. Reads are handled one at a time; writes are
// queued and sent one at a time (the callback API allows one outstanding
// operation of each kind).
class WorkerStream final : public grpc::ServerBidiReactor<WorkerMessage, RouterMessage>,
                           public WorkerChannel {
 public:
  explicit WorkerStream(WorkerRegistry* registry) : registry_(registry) { StartRead(&in_); }

  void Send(const RouterMessage& message) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (finishing_) return;
    out_.push_back(message);
    if (!writing_) {
      writing_ = true;
      StartWrite(&out_.front());
    }
  }

  void Close(const absl::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    FinishLocked(rpc::ToGrpc(status));
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      SetEndReason("stream closed (worker exited or connection lost)");
      std::lock_guard<std::mutex> lock(mu_);
      FinishLocked(grpc::Status::OK);
      return;
    }
    auto now = Clock::now();
    if (worker_id_.empty()) {
      absl::Status status =
          in_.has_hello()
              ? registry_->Attach(in_.hello().worker_id(), this, now)
              : absl::InvalidArgumentError("the first message on the stream must be hello");
      if (!status.ok()) {
        LOG_WARN("refusing worker stream: {}", status.ToString());
        std::lock_guard<std::mutex> lock(mu_);
        FinishLocked(rpc::ToGrpc(status));
        return;
      }
      worker_id_ = in_.hello().worker_id();
    } else {
      registry_->Touch(worker_id_, now);
      if (in_.has_group_ready()) registry_->OnGroupReady(worker_id_, in_.group_ready(), now);
      if (in_.has_model_loaded()) registry_->OnModelLoaded(worker_id_, in_.model_loaded(), now);
      if (in_.has_fatal()) registry_->OnFatal(worker_id_, in_.fatal().error());
      if (in_.has_step_result()) registry_->OnStepResult(worker_id_, in_.step_result());
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    out_.pop_front();
    if (!ok) out_.clear();  // the read side sees the broken stream too
    if (finishing_) {
      writing_ = false;
      if (!finished_) {
        finished_ = true;
        Finish(pending_status_);
      }
      return;
    }
    if (out_.empty()) {
      writing_ = false;
    } else {
      StartWrite(&out_.front());
    }
  }

  void OnCancel() override { SetEndReason("stream cancelled"); }

  void OnDone() override {
    if (!worker_id_.empty()) {
      std::string reason;
      {
        std::lock_guard<std::mutex> lock(mu_);
        reason = end_reason_.empty() ? "stream ended" : end_reason_;
      }
      registry_->Detach(worker_id_, reason);
    }
    delete this;
  }

 private:
  // Finishes now, or after the write in flight completes.
  void FinishLocked(grpc::Status status) {
    if (finishing_) return;
    finishing_ = true;
    pending_status_ = std::move(status);
    if (writing_) {
      // out_.front() is being written and must stay alive; drop the rest.
      out_.erase(out_.begin() + 1, out_.end());
      return;
    }
    out_.clear();
    finished_ = true;
    Finish(pending_status_);
  }

  void SetEndReason(const char* reason) {
    std::lock_guard<std::mutex> lock(mu_);
    if (end_reason_.empty()) end_reason_ = reason;
  }

  WorkerRegistry* registry_;
  WorkerMessage in_;
  std::string worker_id_;
  std::string end_reason_;

  std::mutex mu_;
  std::deque<RouterMessage> out_;
  bool writing_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  grpc::Status pending_status_;
};

// A step stream refused before its first message.
class RefusedStream final : public grpc::ServerBidiReactor<WorkerMessage, RouterMessage> {
 public:
  explicit RefusedStream(const absl::Status& status) { Finish(rpc::ToGrpc(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

absl::Status ControlService::Authenticate(const grpc::CallbackServerContext* ctx,
                                          const char* method) const {
  absl::StatusOr<size_t> ok = secret_.Check(
      *ctx, "cluster secret",
      "start the worker with the router's --cluster-secret-file (or $EPSERVE_CLUSTER_SECRET)");
  if (ok.ok()) return absl::OkStatus();
  LOG_WARN("refused Control.{} from {}: {}", method, ctx->peer(), ok.status().message());
  return ok.status();
}

grpc::ServerUnaryReactor* ControlService::Register(grpc::CallbackServerContext* ctx,
                                                   const control::v1::RegisterRequest* req,
                                                   control::v1::RegisterResponse* resp) {
  if (absl::Status s = Authenticate(ctx, "Register"); !s.ok()) return rpc::FinishUnary(ctx, s);
  auto result = registry_->Register(*req, Clock::now());
  if (!result.ok()) {
    LOG_WARN("refused registration from {} pid {}: {}", req->hostname(), req->pid(),
             result.status().ToString());
    return rpc::FinishUnary(ctx, result.status());
  }
  *resp = std::move(*result);
  return rpc::FinishUnary(ctx, absl::OkStatus());
}

grpc::ServerBidiReactor<WorkerMessage, RouterMessage>* ControlService::Connect(
    grpc::CallbackServerContext* ctx) {
  if (absl::Status s = Authenticate(ctx, "Connect"); !s.ok()) return new RefusedStream(s);
  return new WorkerStream(registry_);
}

grpc::ServerUnaryReactor* ControlService::StoreSet(grpc::CallbackServerContext* ctx,
                                                   const control::v1::StoreSetRequest* req,
                                                   control::v1::StoreSetResponse* /*resp*/) {
  if (absl::Status s = Authenticate(ctx, "StoreSet"); !s.ok()) return rpc::FinishUnary(ctx, s);
  return rpc::FinishUnary(ctx, store_->Set(req->key(), req->value()));
}

grpc::ServerUnaryReactor* ControlService::StoreGet(grpc::CallbackServerContext* ctx,
                                                   const control::v1::StoreGetRequest* req,
                                                   control::v1::StoreGetResponse* resp) {
  if (absl::Status s = Authenticate(ctx, "StoreGet"); !s.ok()) return rpc::FinishUnary(ctx, s);
  if (auto value = store_->Get(req->key())) {
    resp->set_found(true);
    resp->set_value(std::move(*value));
  }
  return rpc::FinishUnary(ctx, absl::OkStatus());
}

}  // namespace epserve::router
