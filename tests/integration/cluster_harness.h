// Helpers for tests that run the real binaries as processes on loopback.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "epserve/v1/epserve.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace epserve::testing {

// Path of an epserve binary in the build tree.
std::string Binary(const std::string& name);

// The current test's scratch directory (emptied when the test first asks).
std::string ScratchDir();

std::string ReadFile(const std::string& path);

// A model directory in the scratch folder holding only the bundled tiny
// model's config.json (no weights, no tokenizer).
std::string ConfigOnlyModel();

// Polls `done` every 50 ms until it returns true or `timeout` passes.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// A process whose output goes to a log file.
struct Process {
  Subprocess proc;
  std::string log_path;
  std::string output() const { return ReadFile(log_path); }
};

Process Start(const std::string& binary, std::vector<std::string> args, const std::string& log);

// Runs a command to completion (bounded by `timeout`); returns exit code and
// output. Exit code -1 means it did not finish in time (it is killed).
struct RunResult {
  int exit_code;
  std::string output;
};
RunResult RunToExit(const std::string& binary, std::vector<std::string> args,
                    std::chrono::milliseconds timeout);

// A router started with --ports-file, plus gRPC stubs to it.
class RouterHandle {
 public:
  // Starts epserve-router with `args` (listen, control-listen, metrics,
  // ports-file and a cluster secret file are added) and waits until it has
  // written its ports file.
  static std::unique_ptr<RouterHandle> Start(std::vector<std::string> args);

  const std::string& grpc_address() const { return grpc_; }
  // Where workers join (--control-listen).
  const std::string& control_address() const { return control_; }
  // The cluster secret file the router was given (workers need it); empty
  // when the args authenticate workers by certificate (--control-tls-client-ca).
  const std::string& secret_file() const { return secret_file_; }
  // The arguments a worker needs to join: --router and --cluster-secret-file
  // (TLS flags are the test's).
  std::vector<std::string> WorkerJoinArgs() const;
  const std::string& metrics_address() const { return metrics_; }
  Process& process() { return process_; }

  // Health of the overall server ("" service); nullopt if the call failed.
  std::optional<grpc::health::v1::HealthCheckResponse::ServingStatus> Health();
  bool Serving() { return Health() == grpc::health::v1::HealthCheckResponse::SERVING; }
  v1::GetServerInfoResponse Info();

 private:
  Process process_;
  std::string grpc_;
  std::string control_;
  std::string secret_file_;
  std::string metrics_;
  std::unique_ptr<v1::Epserve::Stub> client_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// Writes a fresh random cluster secret to `path` (mode 0600); returns it.
std::string WriteSecretFile(const std::string& path);

// GET http://ADDRESS/metrics; empty on failure.
std::string ScrapeMetrics(const std::string& address);

// The value of the sample `series` (a name with its exact label set, e.g.
// `epserve_requests_total{finish_reason="stop",model="m"}`) in a scrape; 0
// when absent.
double MetricValue(const std::string& scraped, const std::string& series);
// The sum of every sample of metric `name`, whatever its labels.
double MetricSum(const std::string& scraped, const std::string& name);

// A client stub of the router at `address` (HOST:PORT).
std::unique_ptr<v1::Epserve::Stub> ClientStub(const std::string& address);

}  // namespace epserve::testing
