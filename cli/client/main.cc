// epserve: command-line client of an epserve router.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags/flags_util.h"
#include "common/net.h"
#include "epserve/v1/epserve.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, router, "127.0.0.1:50051", "HOST:PORT of the epserve-router");
ABSL_FLAG(int, timeout_s, 10, "Deadline of each call, in seconds");
ABSL_FLAG(int, wait_serving_s, 0,
          "health: keep asking until the router reports SERVING or this many seconds pass");

namespace {

constexpr char kUsage[] =
    "epserve: client of an epserve router.\n\n"
    "  epserve info     [--router HOST:PORT]   server topology and model, as JSON\n"
    "  epserve health   [--router HOST:PORT] [--wait-serving-s N]\n"
    "                   prints SERVING or NOT_SERVING; exit code 0 only when SERVING";

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s)));
  return ctx;
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

[[noreturn]] void RpcFailed(const char* what, const std::string& router, const grpc::Status& s) {
  epserve::Die(absl::StrCat(what, " at ", router, " failed: ", s.error_message(), " (code ",
                            static_cast<int>(s.error_code()), ")"));
}

int Info(const std::shared_ptr<grpc::Channel>& channel, const std::string& router) {
  auto stub = epserve::v1::Epserve::NewStub(channel);
  epserve::v1::GetServerInfoResponse server;
  grpc::Status s = stub->GetServerInfo(Context().get(), {}, &server);
  if (!s.ok()) RpcFailed("GetServerInfo", router, s);
  epserve::v1::GetModelInfoResponse model;
  s = stub->GetModelInfo(Context().get(), {}, &model);
  if (!s.ok()) RpcFailed("GetModelInfo", router, s);
  std::printf("{\"server\": %s,\n \"model\": %s}\n", ToJson(server).c_str(),
              ToJson(model).c_str());
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel, const std::string& router) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_wait_serving_s));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s;
  while (true) {
    s = stub->Check(Context().get(), {}, &response);
    bool serving = s.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    if (serving || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!s.ok()) RpcFailed("health check", router, s);
  std::printf("%s\n", grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
                          .c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args = epserve::ParseFlags(argc, argv, kUsage);
  if (args.size() != 2) epserve::Die("expected one command: info or health (see --help)", 2);
  std::string router = absl::GetFlag(FLAGS_router);
  auto addr = epserve::ParseHostPort(router, /*allow_port_zero=*/false);
  if (!addr.ok()) epserve::Die(absl::StrCat("--router: ", addr.status().message()), 2);
  if (absl::GetFlag(FLAGS_timeout_s) <= 0) epserve::Die("--timeout-s must be positive", 2);
  auto channel = grpc::CreateChannel(addr->ToString(), grpc::InsecureChannelCredentials());
  const std::string& command = args[1];
  if (command == "info") return Info(channel, router);
  if (command == "health") return Health(channel, router);
  epserve::Die(absl::StrCat("unknown command '", command, "' (expected info or health)"), 2);
}
