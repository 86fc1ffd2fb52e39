// epserve health: SERVING or NOT_SERVING; exit code 0 only when SERVING.
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/client/commands.h"
#include "common/flags/flags_util.h"

#include "epserve/v1/epserve.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(int, wait_serving_s, 0,
          "health: keep asking until the router reports SERVING or this many seconds pass");

namespace epserve::client {

std::string ExplainNotServing(const v1::GetServerInfoResponse& info) {
  std::string out =
      absl::StrCat("cluster ", v1::ClusterState_Name(info.state()), ": ",
                   info.state_reason().empty() ? "(no reason given)" : info.state_reason(), "\n");
  std::map<uint32_t, std::string> ranks;
  for (const v1::WorkerInfo& w : info.workers()) {
    std::string what;
    switch (w.state()) {
      case v1::WORKER_STATE_READY:
        what = "ready";
        break;
      case v1::WORKER_STATE_CONNECTED:
        what = w.weight_bytes() > 0 ? "weights loaded, waiting for the collective group"
                                    : "loading weights";
        break;
      default:
        what = "registered, step stream not open yet";
        break;
    }
    ranks[w.rank()] = absl::StrCat(what, " (worker ", w.worker_id(), " on ", w.hostname(), ", pid ",
                                   w.pid(), ", last heard ", w.last_seen_ms_ago(), " ms ago)");
  }
  for (const v1::MissingRank& m : info.missing_ranks()) {
    ranks[m.rank()] = m.reason().empty()
                          ? std::string("missing: no worker has registered for it")
                          : absl::StrCat("missing ", m.lost_ms_ago() / 1000, " s: ", m.reason());
  }
  for (const auto& [rank, what] : ranks) absl::StrAppend(&out, "  rank ", rank, ": ", what, "\n");
  return out;
}

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
  std::fflush(stdout);
  if (response.status() == grpc::health::v1::HealthCheckResponse::SERVING) return 0;
  // Why not: the cluster state and every rank's, on stderr.
  auto info_stub = v1::Epserve::NewStub(MakeChannel(server));
  v1::GetServerInfoResponse info;
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(timeout_s));
  const grpc::Status got = info_stub->GetServerInfo(&ctx, {}, &info);
  if (got.ok()) {
    std::fputs(ExplainNotServing(info).c_str(), stderr);
  } else {
    std::fprintf(stderr, "(GetServerInfo failed too: %s)\n", got.error_message().c_str());
  }
  return 1;
}

}  // namespace epserve::client
