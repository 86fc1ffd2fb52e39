// Flags every command shares: which router, and the call deadline.
#include <chrono>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/client/commands.h"
#include "common/flags/flags_util.h"
#include "common/net.h"
#include "common/rpc/auth.h"
#include "common/rpc/tls.h"

ABSL_FLAG(std::string, server, "", "HOST:PORT of the epserve-router (default 127.0.0.1:50051)");
ABSL_FLAG(std::string, router, "", "Another name for --server");
ABSL_FLAG(std::string, api_key_file, "",
          "File holding the API key to present (the router's --api-key-file); empty: "
          "$EPSERVE_API_KEY, else none");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that signed the router's certificate (its --tls-cert): talk TLS");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate, for a router with --tls-client-ca (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
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
  std::string api_key;
  if (const std::string file = absl::GetFlag(FLAGS_api_key_file); !file.empty()) {
    auto key = rpc::ReadSingleToken(file, "--api-key-file", "keys", "a client presents one");
    if (!key.ok()) Die(key.status().message(), 2);
    api_key = std::move(*key);
  } else if (const char* env = std::getenv("EPSERVE_API_KEY"); env != nullptr) {
    api_key = env;
  }
  rpc::TlsFiles tls{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                    absl::GetFlag(FLAGS_tls_ca)};
  // Checked here, so that a bad file is a usage error (exit 2), not a call's.
  // The credentials are made again in MakeChannel and not kept from here: a
  // live credentials object keeps gRPC (and its threads) running, and those
  // threads must start after a command's InterruptWatcher blocks SIGINT.
  if (auto credentials = rpc::MakeChannelCredentials(tls, "--tls"); !credentials.ok()) {
    Die(credentials.status().message(), 2);
  }
  return ServerOptions{server, addr->ToString(), timeout_s, api_key, tls};
}

std::shared_ptr<grpc::Channel> MakeChannel(const ServerOptions& server) {
  auto credentials = rpc::MakeChannelCredentials(server.tls, "--tls");
  if (!credentials.ok()) Die(credentials.status().message(), 2);
  return rpc::CreateChannelWithToken(server.target, *credentials, server.api_key);
}

std::chrono::system_clock::time_point DeadlineIn(int timeout_s) {
  return std::chrono::system_clock::now() + std::chrono::seconds(timeout_s);
}

}  // namespace epserve::client
