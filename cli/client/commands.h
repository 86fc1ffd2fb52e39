// The commands of the `epserve` client. Each reads its own flags (defined in
// its file), prints its result on stdout and diagnostics on stderr, and
// returns the exit code.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/rpc/tls.h"

namespace epserve::v1 {
class GetServerInfoResponse;
}  // namespace epserve::v1

namespace epserve::client {

// The router to talk to, from --server (or --router) and --timeout-s.
struct ServerOptions {
  std::string address;  // HOST:PORT as given, for messages
  std::string target;   // normalized gRPC target
  // Deadline of each call in seconds; 0: the command's default.
  int timeout_s = 0;
  // Sent as `authorization: Bearer <key>` on every call; empty: none.
  std::string api_key;
  // TLS: the CA of the router's certificate (--tls-ca), and this client's
  // certificate for mutual TLS. Empty: plaintext.
  rpc::TlsFiles tls;
};

ServerOptions ServerFlags();

// An insecure channel to `server.target`.
std::shared_ptr<grpc::Channel> MakeChannel(const ServerOptions& server);

// The deadline `timeout_s` seconds from now.
std::chrono::system_clock::time_point DeadlineIn(int timeout_s);

int RunInfo(const ServerOptions& server);
int RunHealth(const ServerOptions& server);
// What `epserve health` prints on stderr when the cluster is not serving: the
// cluster state and reason, then one line per rank (ready, loading, waiting
// for the group, or missing and why).
std::string ExplainNotServing(const v1::GetServerInfoResponse& info);
// `stop_occurrences`: the value of each --stop (a repeatable flag, taken out
// of argv before Abseil parses it).
int RunGenerate(const ServerOptions& server, const std::vector<std::string>& stop_occurrences);
int RunBench(const ServerOptions& server);

}  // namespace epserve::client
