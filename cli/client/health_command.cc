// epserve health: SERVING or NOT_SERVING; exit code 0 only when SERVING.
#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/client/commands.h"
#include "common/flags/flags_util.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(int, wait_serving_s, 0,
          "health: keep asking until the router reports SERVING or this many seconds pass");

namespace epserve::client {

int RunHealth(const ServerOptions& server) {
  constexpr int kDefaultTimeoutS = 10;
  const int timeout_s = server.timeout_s > 0 ? server.timeout_s : kDefaultTimeoutS;
  auto stub = grpc::health::v1::Health::NewStub(MakeChannel(server));
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_wait_serving_s));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s;
  while (true) {
    grpc::ClientContext ctx;
    ctx.set_deadline(DeadlineIn(timeout_s));
    s = stub->Check(&ctx, {}, &response);
    const bool serving =
        s.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    if (serving || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!s.ok()) {
    Die(absl::StrCat("health check at ", server.address, " failed: ", s.error_message(), " (code ",
                     static_cast<int>(s.error_code()), ")"));
  }
  std::printf("%s\n",
              grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace epserve::client
