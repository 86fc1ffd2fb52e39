// The cross-host path on one machine: a router in the current network
// namespace and two workers, each in its own network namespace joined to the
// router's by a bridge (see netns_topology.h). The workers find their
// collective address with --collective-interface; their only way to each
// other is the bridge, so a formed group and a served request show that the
// router's rendezvous and the Gloo collectives work across hosts.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"
#include "tests/netns/netns_topology.h"

namespace epserve::testing {
namespace {

using std::chrono::seconds;
using ::testing::HasSubstr;

constexpr char kModel[] = EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe";
constexpr char kPrompt[] = "Hello world";
constexpr int kMaxTokens = 8;
constexpr int kNumWorkers = 2;

// Greedy continuation of kPrompt by the single-process runner.
std::vector<uint32_t> OfflineReference() {
  RunResult r = RunToExit(Binary("epserve-run"),
                          {"generate", "--model", kModel, "--prompt", kPrompt, "--max-tokens",
                           absl::StrCat(kMaxTokens)},
                          seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (r.exit_code != 0 || r.output.rfind('{') == std::string::npos) return {};
  // The JSON object is the last line of the output.
  auto json = nlohmann::json::parse(r.output.substr(r.output.rfind('{')));
  return json["generated_ids"].get<std::vector<uint32_t>>();
}

struct Generated {
  grpc::Status status;
  std::vector<uint32_t> ids;         // over all chunks
  std::vector<uint32_t> output_ids;  // of the final GenerateComplete
};

Generated GenerateGreedy(v1::Epserve::Stub& stub) {
  v1::GenerateRequest req;
  req.set_text(kPrompt);
  req.mutable_sampling_params()->set_temperature(0.0f);
  req.mutable_sampling_params()->set_max_tokens(kMaxTokens);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(120));
  Generated out;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (resp.has_chunk()) {
      out.ids.insert(out.ids.end(), resp.chunk().token_ids().begin(),
                     resp.chunk().token_ids().end());
    }
    if (resp.has_complete()) {
      out.output_ids.assign(resp.complete().output_ids().begin(),
                            resp.complete().output_ids().end());
    }
  }
  out.status = reader->Finish();
  return out;
}

TEST(NetnsCluster, WorkersInSeparateNamespacesServeAcrossTheBridge) {
  // Declared first, destroyed last: the processes inside are gone by then.
  auto created = NetnsTopology::Create(kNumWorkers);
  if (absl::IsFailedPrecondition(created.status())) {
    std::cerr << "skipping: " << created.status().message() << "\n";
    GTEST_SKIP() << created.status().message();
  }
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<NetnsTopology> net = std::move(*created);
  const std::vector<uint32_t> reference = OfflineReference();
  ASSERT_EQ(reference.size(), static_cast<size_t>(kMaxTokens));

  const std::string dir = ScratchDir();
  const std::string ports = dir + "/router_ports.json";
  const std::string secret = dir + "/cluster_secret";
  WriteSecretFile(secret);
  Process router = Start(
      Binary("epserve-router"),
      {"--model", kModel, "--workers", absl::StrCat(kNumWorkers), "--listen",
       net->bridge_address() + ":0", "--control-listen", net->bridge_address() + ":0",
       "--cluster-secret-file", secret, "--metrics-listen", "127.0.0.1:0", "--ports-file", ports},
      dir + "/router.log");
  std::vector<Process> workers;
  auto logs = [&] {
    std::string all = absl::StrCat("\n--- router ---\n", router.output());
    for (size_t i = 0; i < workers.size(); ++i) {
      absl::StrAppend(&all, "\n--- worker in ", net->peers()[i].netns, " ---\n",
                      workers[i].output());
    }
    return all;
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        return std::filesystem::exists(ports) ||
               router.proc.Wait(std::chrono::milliseconds(0)).has_value();
      },
      seconds(20)));
  ASSERT_TRUE(std::filesystem::exists(ports)) << "router did not start" << logs();
  const nlohmann::json bound = nlohmann::json::parse(ReadFile(ports));
  const std::string grpc_address = bound["grpc"].get<std::string>();
  const std::string control_address = bound["control"].get<std::string>();
  ASSERT_THAT(grpc_address, HasSubstr(net->bridge_address() + ":"));
  ASSERT_THAT(control_address, HasSubstr(net->bridge_address() + ":"));

  for (int i = 0; i < kNumWorkers; ++i) {
    const NetnsTopology::Peer& peer = net->peers()[i];
    std::vector<std::string> argv =
        net->InPeer(i, {Binary("epserve-worker"), "--router", control_address,
                        "--cluster-secret-file", secret, "--collective-interface", peer.interface,
                        "--metrics-listen", "127.0.0.1:0", "--cpu-threads", "1"});
    std::string binary = argv.front();
    argv.erase(argv.begin());
    workers.push_back(Start(binary, argv, absl::StrCat(dir, "/worker_", i, ".log")));
  }

  auto channel = grpc::CreateChannel(grpc_address, grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto client = v1::Epserve::NewStub(channel);
  const bool serving = WaitFor(
      [&] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + seconds(2));
        grpc::health::v1::HealthCheckResponse resp;
        return health->Check(&ctx, {}, &resp).ok() &&
               resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
      },
      seconds(90));
  ASSERT_TRUE(serving) << "cluster not SERVING (if the workers cannot reach each other, "
                          "br_netfilter with an iptables FORWARD policy of DROP may be "
                          "filtering the bridge)"
                       << logs();

  grpc::ClientContext info_ctx;
  info_ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
  v1::GetServerInfoResponse info;
  grpc::Status info_status = client->GetServerInfo(&info_ctx, {}, &info);
  ASSERT_TRUE(info_status.ok()) << info_status.error_message();
  ASSERT_EQ(info.workers_size(), kNumWorkers) << info.DebugString();
  for (const v1::WorkerInfo& w : info.workers()) {
    EXPECT_EQ(w.state(), v1::WORKER_STATE_READY) << w.DebugString();
    EXPECT_GT(w.warmup_alltoall_bytes(), 0u) << w.DebugString();
    EXPECT_EQ(w.collective_backend(), "gloo") << w.DebugString();
  }

  Generated out = GenerateGreedy(*client);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message() << logs();
  EXPECT_EQ(out.ids, reference);
  EXPECT_EQ(out.output_ids, reference);

  // Inside a namespace, an interface that does not exist there is refused
  // before the worker contacts anyone, and the message lists what exists.
  std::vector<std::string> argv =
      net->InPeer(0, {Binary("epserve-worker"), "--router", control_address,
                      "--collective-interface", "nosuchif"});
  std::string binary = argv.front();
  argv.erase(argv.begin());
  RunResult bad = RunToExit(binary, argv, seconds(20));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_THAT(bad.output, HasSubstr("--collective-interface"));
  EXPECT_THAT(bad.output, HasSubstr("nosuchif"));
  EXPECT_THAT(bad.output, HasSubstr("lo (127.0.0.1"));
  EXPECT_THAT(bad.output,
              HasSubstr(absl::StrCat(net->peers()[0].interface, " (", net->peers()[0].address)));
  // The group is intact: the refused worker never registered.
  EXPECT_EQ(GenerateGreedy(*client).ids, reference);
}

TEST(CollectiveInterfaceFlag, UnknownInterfaceExits2NamingTheFlag) {
  RunResult r =
      RunToExit(Binary("epserve-worker"),
                {"--router", "127.0.0.1:1", "--collective-interface", "nosuchif"}, seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--collective-interface"));
  EXPECT_THAT(r.output, HasSubstr("no network interface named 'nosuchif'"));
  EXPECT_THAT(r.output, HasSubstr("lo (127.0.0.1"));
}

TEST(CollectiveInterfaceFlag, ExcludesCollectiveHost) {
  RunResult r = RunToExit(
      Binary("epserve-worker"),
      {"--router", "127.0.0.1:1", "--collective-interface", "lo", "--collective-host", "127.0.0.1"},
      seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--collective-interface"));
  EXPECT_THAT(r.output, HasSubstr("--collective-host"));
}

}  // namespace
}  // namespace epserve::testing
