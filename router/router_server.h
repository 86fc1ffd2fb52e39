// The epserve-router process: the client gRPC server (client API, health,
// reflection), the control server (workers: registration, step streams,
// rendezvous; authenticated by the cluster secret), worker registry,
// metrics, and (--local-workers) the worker processes it spawns on this host.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/metrics_server.h"
#include "common/net.h"
#include "common/placement.h"
#include "common/rpc/tls.h"
#include "common/subprocess.h"
#include "router/http/http_frontend.h"

namespace grpc {
class Server;
}

namespace epserve::router {

class WorkerRegistry;
class RendezvousStore;
class ClientService;
class ControlService;
class RouterMetrics;
class Engine;
class ServingMetrics;
class RegistryTransport;

struct RouterOptions {
  std::string model_dir;
  HostPort listen{"127.0.0.1", 50051};
  // The control plane (worker registration, step streams, rendezvous store):
  // a listener of its own, never the client port.
  HostPort control_listen{"127.0.0.1", 50052};
  // File holding the cluster secret workers present; empty: the
  // EPSERVE_CLUSTER_SECRET environment variable, else (local workers only)
  // a fresh random one handed to the spawned workers.
  std::string cluster_secret_file;
  // File of API keys (one per line) clients present as
  // `authorization: Bearer <key>`; empty: the client API needs no key.
  std::string api_key_file;
  // TLS of the client port (--tls-cert/--tls-key, --tls-client-ca for mutual
  // TLS) and of the control plane (--control-tls-*; with a client CA, a
  // worker's certificate authenticates it and the cluster secret becomes
  // optional). Empty: plaintext.
  rpc::TlsFiles client_tls;
  rpc::TlsFiles control_tls;
  std::optional<HostPort> metrics_listen;  // nullopt: no metrics endpoint
  // The OpenAI-compatible HTTP API (router/http); nullopt: off.
  std::optional<HostPort> http_listen;
  // --chat-template: a file with the chat template for /v1/chat/completions
  // instead of the model's (empty: the model's, if any).
  std::string chat_template;
  uint32_t world_size = 1;
  // Spawn `world_size` workers on this host instead of waiting for them.
  bool local_workers = false;
  std::string worker_device = "cpu";  // for local workers: cpu | cuda
  std::string worker_log_level = "info";
  std::chrono::milliseconds worker_timeout{3000};
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds collective_timeout{10000};
  // auto | gloo | nccl: the collective backend of worker groups
  // (router/cluster/collective_choice.h).
  std::string collective_backend = "auto";
  std::chrono::seconds drain_timeout{30};
  PlacementStrategy placement = PlacementStrategy::kLinear;
  // Weights: --dtype policy, --load-format (auto | dummy), dummy seed.
  std::string dtype = "auto";
  std::string load_format = "auto";
  uint64_t seed = 0;
  // false: every worker holds the whole model (data parallel); true: the
  // experts are split by `placement`.
  bool expert_parallel = false;
  // Serving: KV cache geometry, scheduler budget, admission limits.
  int kv_block_size = 16;
  int kv_cache_blocks = 0;  // 0: workers size their cache from memory
  int kv_cache_memory_mb = 256;  // local workers
  double gpu_memory_utilization = 0.9;  // local GPU workers
  // Local GPU workers: worker K on cuda:(K mod local_gpus); 0: cuda:K.
  int local_gpus = 0;
  bool enforce_eager = false;           // local GPU workers: no CUDA graphs
  int worker_cpu_threads = 0;    // local CPU workers; 0: cores / workers
  int max_tokens_per_step = 2048;
  int max_running_requests = 256;
  int max_waiting_requests = 1024;
  int64_t max_waiting_tokens = int64_t{1} << 22;
  std::chrono::milliseconds step_timeout{13000};
  // Requests of a lost worker group wait this long for the cluster to serve
  // again and then resume (0: they end at once). Local workers that exit
  // are started again meanwhile.
  std::chrono::milliseconds recovery_timeout{60000};
  // A lost worker not replaced within this long: the survivors form a group
  // without it (negative: never). With expert parallelism they take over its
  // experts; `redundant_experts`: every worker holds those it would take over.
  std::chrono::milliseconds survivor_grace{3000};
  bool redundant_experts = false;
  // If set, the bound addresses are written here as JSON once listening.
  std::string ports_file;
};

class RouterServer {
 public:
  // Validates the model directory, binds the ports, starts the services and
  // spawns local workers. Errors name the flag or address at fault.
  static absl::StatusOr<std::unique_ptr<RouterServer>> Start(const RouterOptions& options);
  ~RouterServer();

  // Blocks until Shutdown() has completed. Returns why the router stopped
  // on its own (e.g. a local worker failed during start-up), else OK.
  absl::Status Wait();
  // Drains: health NOT_SERVING, Shutdown to every worker, waits for local
  // workers (up to drain_timeout), stops the server. Idempotent; any thread.
  void Shutdown(const std::string& reason);

  const HostPort& grpc_address() const { return grpc_address_; }
  const HostPort& control_address() const { return control_address_; }

 private:
  RouterServer() = default;
  absl::Status SpawnLocalWorkers();
  absl::Status WritePortsFile() const;
  void SweepLoop();

  RouterOptions options_;
  std::unique_ptr<RendezvousStore> store_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::shared_ptr<prometheus::Registry> metrics_registry_;
  std::unique_ptr<ServingMetrics> serving_metrics_;
  std::unique_ptr<RegistryTransport> transport_;
  // Declared before server_: destroyed after it (calls in flight use it).
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ClientService> client_service_;
  std::unique_ptr<http::HttpFrontend> http_;  // before engine_ in destruction
  std::unique_ptr<ControlService> control_service_;
  std::unique_ptr<grpc::Server> server_;
  HostPort grpc_address_;
  std::unique_ptr<grpc::Server> control_server_;
  HostPort control_address_;
  std::string cluster_secret_;
  std::unique_ptr<RouterMetrics> metrics_;
  std::unique_ptr<MetricsServer> metrics_server_;
  // Local workers: the process, how to start it again, and when.
  struct LocalWorker {
    Subprocess process;
    std::vector<std::string> argv;
    uint32_t rank = 0;
    std::string device;
    // Where the worker writes its fatal error (EPSERVE_ERROR_FILE).
    std::string error_file;
    int restarts = 0;  // in a row: reset once a start lives kLocalWorkerStableRun
    std::chrono::steady_clock::time_point started;
    std::optional<std::chrono::steady_clock::time_point> restart_at;
  };
  absl::StatusOr<Subprocess> SpawnLocalWorker(const LocalWorker& worker) const;
  // A local worker that exited is started again, unless the router is
  // shutting down: at once after a run of kLocalWorkerStableRun or more,
  // else after a backoff (kLocalWorkerFirstBackoff, doubling up to
  // kLocalWorkerMaxBackoff) that keeps a worker that cannot start from
  // spinning.
  static constexpr std::chrono::seconds kLocalWorkerStableRun{10};
  static constexpr std::chrono::milliseconds kLocalWorkerFirstBackoff{500};
  static constexpr std::chrono::milliseconds kLocalWorkerMaxBackoff{30000};
  void RestartExitedLocalWorkers();
  // A local worker that exits before the cluster first served stops the
  // router (from a thread of its own: Shutdown joins the sweeper) with the
  // worker's error, instead of restarting it forever.
  void FailStartup(const std::string& error);
  std::vector<LocalWorker> local_workers_;
  std::string local_worker_dir_;  // error files of the local workers
  std::thread startup_failure_thread_;
  absl::Status exit_status_;  // under mu_

  std::thread sweeper_;
  // --api-key-file, re-read when it changes (key rotation without a
  // restart): the set the gRPC and HTTP front ends share, and the file's
  // last modification seen.
  rpc::TokenSet api_keys_;
  std::filesystem::file_time_type api_keys_mtime_;
  std::chrono::steady_clock::time_point api_keys_checked_;
  void ReloadApiKeysIfChanged();
  std::mutex mu_;
  std::condition_variable cv_;
  bool shutdown_started_ = false;
  bool sweeper_stop_ = false;
  bool shutdown_done_ = false;
};

}  // namespace epserve::router
