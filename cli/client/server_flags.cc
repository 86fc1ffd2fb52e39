// Flags every command shares: which router, and the call deadline.
#include <chrono>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/client/commands.h"
#include "common/flags/flags_util.h"
#include "common/net.h"

ABSL_FLAG(std::string, server, "", "HOST:PORT of the epserve-router (default 127.0.0.1:50051)");
ABSL_FLAG(std::string, router, "", "Another name for --server");
ABSL_FLAG(int, timeout_s, 0,
          "Deadline of each call, in seconds; 0: 10 s for info and health, none for generate "
          "and bench");

namespace epserve::client {

ServerOptions ServerFlags() {
  std::string server = absl::GetFlag(FLAGS_server);
  const std::string router = absl::GetFlag(FLAGS_router);
  if (!server.empty() && !router.empty() && server != router) {
    Die(absl::StrCat("--server ", server, " and --router ", router,
                     " disagree (they are one flag; give one)"),
        2);
  }
  // Errors name the flag the user gave.
  const char* flag = "--server";
  if (server.empty() && !router.empty()) flag = "--router";
  if (server.empty()) server = router.empty() ? "127.0.0.1:50051" : router;
  auto addr = ParseHostPort(server, /*allow_port_zero=*/false);
  if (!addr.ok()) Die(absl::StrCat(flag, ": ", addr.status().message()), 2);
  const int timeout_s = absl::GetFlag(FLAGS_timeout_s);
  if (timeout_s < 0) Die(absl::StrCat("--timeout-s: expected >= 0, found ", timeout_s), 2);
  return ServerOptions{server, addr->ToString(), timeout_s};
}

std::shared_ptr<grpc::Channel> MakeChannel(const ServerOptions& server) {
  return grpc::CreateChannel(server.target, grpc::InsecureChannelCredentials());
}

std::chrono::system_clock::time_point DeadlineIn(int timeout_s) {
  return std::chrono::system_clock::now() + std::chrono::seconds(timeout_s);
}

}  // namespace epserve::client
