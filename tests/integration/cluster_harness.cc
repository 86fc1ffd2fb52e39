#include "tests/integration/cluster_harness.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/net.h"
#include "common/secure_random.h"
#include "nlohmann/json.hpp"

namespace epserve::testing {

std::string Binary(const std::string& name) { return std::string(EPSERVE_BIN_DIR) + "/" + name; }

std::string ScratchDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  // The pid keeps two runs of the suite on one machine (two checkouts, a
  // developer's run beside CI's) out of each other's files.
  std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("epserve_", info->test_suite_name(), "_", info->name(), "_", getpid());
  // Cleared once per test, on first use.
  static std::string cleared;
  if (cleared != dir.string()) {
    std::filesystem::remove_all(dir);
    cleared = dir.string();
  }
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::string ConfigOnlyModel() {
  std::filesystem::path dir = std::filesystem::path(ScratchDir()) / "config_only_model";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe/config.json",
                             dir / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  return dir.string();
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Process Start(const std::string& binary, std::vector<std::string> args, const std::string& log) {
  args.insert(args.begin(), binary);
  auto proc = Subprocess::Spawn(args, SubprocessOptions{true, log});
  EXPECT_TRUE(proc.ok()) << proc.status();
  return Process{std::move(*proc), log};
}

RunResult RunToExit(const std::string& binary, std::vector<std::string> args,
                    std::chrono::milliseconds timeout) {
  static int counter = 0;
  std::string log = absl::StrCat(ScratchDir(), "/run_", ++counter, ".log");
  Process p = Start(binary, std::move(args), log);
  std::optional<int> code = p.proc.Wait(timeout);
  if (!code) p.proc.Terminate(std::chrono::seconds(1));
  return RunResult{code.value_or(-1), p.output()};
}

std::string WriteSecretFile(const std::string& path) {
  absl::StatusOr<std::string> secret = RandomHex(32);
  EXPECT_TRUE(secret.ok()) << secret.status();
  {
    std::ofstream out(path, std::ios::trunc);
    out << *secret << "\n";
  }
  std::filesystem::permissions(
      path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  return *secret;
}

std::vector<std::string> RouterHandle::WorkerJoinArgs() const {
  std::vector<std::string> args = {"--router=" + control_};
  if (!secret_file_.empty()) args.push_back("--cluster-secret-file=" + secret_file_);
  return args;
}

std::unique_ptr<RouterHandle> RouterHandle::Start(std::vector<std::string> args) {
  auto handle = std::make_unique<RouterHandle>();
  std::string dir = ScratchDir();
  // A test may start several routers: each gets files of its own.
  static int started = 0;
  const std::string n = std::to_string(started++);
  std::string ports = dir + "/router_ports_" + n + ".json";
  auto given = [&](const std::string& flag) -> std::optional<std::string> {
    for (const std::string& a : args) {
      if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
    }
    return std::nullopt;
  };
  // Workers authenticated by certificate (mutual TLS) need no secret; a test
  // may also bring its own secret file (a restarted router: the same one).
  if (std::optional<std::string> secret = given("--cluster-secret-file")) {
    handle->secret_file_ = *secret;
  } else if (!given("--control-tls-client-ca")) {
    handle->secret_file_ = dir + "/cluster_secret_" + n;
    WriteSecretFile(handle->secret_file_);
    args.push_back("--cluster-secret-file=" + handle->secret_file_);
  }
  if (!given("--control-listen")) args.push_back("--control-listen=127.0.0.1:0");
  args.push_back("--listen=127.0.0.1:0");
  args.push_back("--metrics-listen=127.0.0.1:0");
  args.push_back("--ports-file=" + ports);
  handle->process_ = testing::Start(Binary("epserve-router"), args, dir + "/router_" + n + ".log");
  bool up = WaitFor(
      [&] {
        return std::filesystem::exists(ports) ||
               handle->process_.proc.Wait(std::chrono::milliseconds(0)).has_value();
      },
      std::chrono::seconds(20));
  if (!up || !std::filesystem::exists(ports)) {
    ADD_FAILURE() << "router did not start; output:\n" << handle->process_.output();
    return nullptr;
  }
  auto json = nlohmann::json::parse(ReadFile(ports));
  handle->grpc_ = json["grpc"].get<std::string>();
  handle->control_ = json["control"].get<std::string>();
  handle->metrics_ = json["metrics"].get<std::string>();
  auto channel = grpc::CreateChannel(handle->grpc_, grpc::InsecureChannelCredentials());
  handle->client_ = v1::Epserve::NewStub(channel);
  handle->health_ = grpc::health::v1::Health::NewStub(channel);
  return handle;
}

std::optional<grpc::health::v1::HealthCheckResponse::ServingStatus> RouterHandle::Health() {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckResponse resp;
  if (!health_->Check(&ctx, {}, &resp).ok()) return std::nullopt;
  return resp.status();
}

v1::GetServerInfoResponse RouterHandle::Info() {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  v1::GetServerInfoResponse resp;
  grpc::Status s = client_->GetServerInfo(&ctx, {}, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp;
}

std::string ScrapeMetrics(const std::string& address) {
  auto hp = ParseHostPort(address, false);
  if (!hp.ok()) return "";
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(hp->port);
  inet_pton(AF_INET, hp->host.c_str(), &addr.sin_addr);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string req = absl::StrCat("GET /metrics HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
    if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return response;
}

double MetricValue(const std::string& scraped, const std::string& series) {
  size_t at = 0;
  while ((at = scraped.find(series, at)) != std::string::npos) {
    const bool line_start = at == 0 || scraped[at - 1] == '\n';
    const size_t after = at + series.size();
    if (line_start && after < scraped.size() && scraped[after] == ' ') {
      return std::stod(scraped.substr(after + 1, scraped.find('\n', after) - after - 1));
    }
    at = after;
  }
  return 0.0;
}

double MetricSum(const std::string& scraped, const std::string& name) {
  double sum = 0;
  size_t at = 0;
  while ((at = scraped.find(name, at)) != std::string::npos) {
    const bool line_start = at == 0 || scraped[at - 1] == '\n';
    const size_t after = at + name.size();
    if (line_start && after < scraped.size() && (scraped[after] == '{' || scraped[after] == ' ')) {
      const size_t end = scraped.find('\n', after);
      const size_t space = scraped.rfind(' ', end);
      sum += std::stod(scraped.substr(space + 1, end - space - 1));
    }
    at = after;
  }
  return sum;
}

std::unique_ptr<v1::Epserve::Stub> ClientStub(const std::string& address) {
  return v1::Epserve::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

}  // namespace epserve::testing
