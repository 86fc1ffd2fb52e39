#include "worker/control_client.h"

#include <grpcpp/grpcpp.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/rpc/auth.h"
#include "common/rpc/grpc_status.h"

namespace epserve::worker {
namespace {

constexpr auto kRpcTimeout = std::chrono::seconds(5);

void SetDeadline(grpc::ClientContext* ctx, std::chrono::milliseconds timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
}

bool Retryable(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kResourceExhausted;
}

}  // namespace

ControlClient::ControlClient(const std::string& router_address, const std::string& cluster_secret,
                             const std::shared_ptr<grpc::ChannelCredentials>& credentials)
    : router_address_(router_address),
      channel_(rpc::CreateChannelWithToken(router_address, credentials, cluster_secret)),
      stub_(control::v1::Control::NewStub(channel_)) {}

absl::StatusOr<control::v1::RegisterResponse> ControlClient::Register(
    const control::v1::RegisterRequest& request, std::chrono::milliseconds retry_for) {
  auto deadline = std::chrono::steady_clock::now() + retry_for;
  auto backoff = std::chrono::milliseconds(100);
  absl::Status last;
  int attempts = 0;
  while (true) {
    ++attempts;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, std::chrono::duration_cast<std::chrono::milliseconds>(kRpcTimeout));
    control::v1::RegisterResponse response;
    last = rpc::FromGrpc(stub_->Register(&ctx, request, &response));
    if (last.ok()) return response;
    if (!Retryable(last.code())) break;
    if (std::chrono::steady_clock::now() + backoff >= deadline) break;
    if (attempts == 1 || attempts % 10 == 0) {
      LOG_INFO("router {} not accepting registration yet ({}); retrying", router_address_,
               last.message());
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
  }
  if (Retryable(last.code())) {
    return absl::Status(last.code(),
                        absl::StrCat("could not register with router ", router_address_, " in ",
                                     retry_for.count() / 1000, " s (", attempts,
                                     " attempts); last error: ", last.message()));
  }
  return absl::Status(last.code(), absl::StrCat("router ", router_address_,
                                                " refused registration: ", last.message()));
}

absl::Status GrpcRendezvous::Set(const std::string& key, const std::string& value) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::chrono::duration_cast<std::chrono::milliseconds>(kRpcTimeout));
  control::v1::StoreSetRequest req;
  req.set_key(key);
  req.set_value(value);
  control::v1::StoreSetResponse resp;
  return rpc::FromGrpc(stub_->StoreSet(&ctx, req, &resp));
}

absl::StatusOr<std::optional<std::string>> GrpcRendezvous::TryGet(const std::string& key) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, std::chrono::duration_cast<std::chrono::milliseconds>(kRpcTimeout));
  control::v1::StoreGetRequest req;
  req.set_key(key);
  control::v1::StoreGetResponse resp;
  absl::Status s = rpc::FromGrpc(stub_->StoreGet(&ctx, req, &resp));
  if (!s.ok()) return s;
  if (!resp.found()) return std::optional<std::string>();
  return std::optional<std::string>(resp.value());
}

}  // namespace epserve::worker
