// The epserve-worker process: registers with the router, keeps a step
// stream open, joins the collective group whenever the router asks, and
// executes steps.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/metrics/metrics_server.h"
#include "common/net.h"
#include "common/rpc/tls.h"
#include "kernels/device.h"
#include "kernels/ops.h"
#include "worker/comm/communicator.h"
#include "worker/control_client.h"
#include "worker/step/step_executor.h"
#include "worker/weights/weight_loader.h"

#include "epserve/control/v1/control.grpc.pb.h"

namespace epserve::moe {
class SlotTokenDispatcher;
}  // namespace epserve::moe

namespace epserve::worker {

struct WorkerOptions {
  std::string router_address;  // HOST:PORT of the router's control listener
  std::string cluster_secret;  // presented on every control call; empty: none
  rpc::TlsFiles control_tls;   // TLS to the control listener; empty: plaintext
  kernels::DeviceSpec device;
  // Address other workers reach this one on for collectives.
  std::string collective_host;
  std::optional<HostPort> metrics_listen;
  int requested_rank = -1;
  unsigned protocol_version = 0;
  // How long to keep trying to register before giving up.
  std::chrono::milliseconds register_retry{30000};
  // Bytes for the paged KV cache when the router's plan does not fix the
  // number of blocks.
  uint64_t kv_cache_bytes = 256ull << 20;
  // CPU device: threads for the forward pass; 0 = all cores.
  int cpu_threads = 0;
  // GPU device: the share of the GPU's memory this worker may use (weights,
  // activations and KV cache); the KV cache gets what is left of it.
  double gpu_memory_utilization = 0.9;
  // GPU device: no CUDA graphs (every step eager).
  bool enforce_eager = false;
  // GPU device: decode batches up to this size replay CUDA graphs; contexts
  // up to cuda_graph_max_context tokens.
  int64_t cuda_graph_max_batch = 256;
  int64_t cuda_graph_max_context = 8192;
};

class WorkerMetrics;
class MoeMetrics;

class Worker {
 public:
  // Queries the device and starts the metrics endpoint.
  static absl::StatusOr<std::unique_ptr<Worker>> Create(const WorkerOptions& options);
  ~Worker();

  // Serves until the router sends Shutdown or Stop() is called (OK), or the
  // router refuses this worker or cannot be reached again (error naming the
  // router). A router that goes away (its step stream breaks) is waited for:
  // the worker registers again for --connect-timeout-s, asking for its rank,
  // and keeps its weights and KV cache when the new router's plan is the one
  // they were loaded for (a restarted router reloads nothing).
  absl::Status Run();
  // Ends Run() soon; callable from any thread.
  void Stop(const std::string& reason);

 private:
  explicit Worker(WorkerOptions options);
  control::v1::RegisterRequest MakeRegisterRequest(int requested_rank) const;
  // One registration and step stream. *router_lost: the stream broke while
  // nothing asked this worker to stop (the caller may register again).
  absl::Status RunSession(int requested_rank, bool* router_lost);
  // The loaded weights serve this registration (same plan, rank and world):
  // answers ModelLoaded again; else loads them (LoadModel).
  absl::Status EnsureModel();
  void Send(const control::v1::WorkerMessage& message);
  void HeartbeatLoop(std::chrono::milliseconds interval);
  void ExecutorLoop();
  // Loads this rank's weights as the plan says; answers ModelLoaded.
  absl::Status LoadModel();
  // KV blocks for a GPU from --gpu-memory-utilization and the memory left
  // after the weights (RESOURCE_EXHAUSTED with the numbers if not one fits).
  absl::StatusOr<int64_t> GpuKvBlocks(const ModelDescription& desc,
                                      const control::v1::KvCacheConfig& kv,
                                      const step::StepExecutorOptions& options) const;
  void JoinGroup(const control::v1::JoinGroup& join);
  // Expert parallelism: makes the executor serve the group's placement (its
  // group rank's experts), rebuilding it (and its KV cache) when the
  // placement, rank or size changed, loading the experts it lacks and
  // dropping those taken over earlier that the group no longer needs. Fills
  // `ready`'s KV blocks, local experts and experts loaded. Nothing for dense
  // models and data parallelism.
  absl::Status ApplyGroupPlacement(const control::v1::JoinGroup& join,
                                   control::v1::GroupReady* ready);
  void ExecuteStep(const control::v1::StepPlan& plan);
  // Builds the step executor and its KV cache over the loaded weights.
  absl::Status CreateExecutor(control::v1::ModelLoaded* loaded);
  // Releases the executor (KV cache, device weights), its dispatcher and
  // exchange metrics, and the placement it served; the weights stay.
  void DropExecutor();

  const WorkerOptions options_;
  kernels::DeviceProperties device_;
  std::shared_ptr<prometheus::Registry> metrics_registry_;
  std::unique_ptr<WorkerMetrics> metrics_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<ControlClient> control_;
  control::v1::RegisterResponse registration_;
  // What the loaded weights were loaded for, and the ModelLoaded answered.
  control::v1::RegisterResponse loaded_for_;
  control::v1::WorkerMessage loaded_message_;
  std::unique_ptr<comm::Communicator> comm_;
  std::unique_ptr<weights::ModelWeights> weights_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<MoeMetrics> moe_metrics_;  // expert parallelism only
  std::unique_ptr<step::StepExecutor> executor_;
  // Owned by executor_'s model; null without expert parallelism.
  moe::SlotTokenDispatcher* ep_dispatcher_ = nullptr;
  // Why steps cannot run (empty when executor_ is set).
  std::string no_executor_reason_;
  // What the executor serves: the group placement it was built for (empty:
  // dense or data parallel), its group rank and the group's size.
  std::vector<uint32_t> exec_placement_;
  uint32_t exec_rank_ = 0;
  uint32_t exec_world_ = 1;
  // The experts held since the load (the rank's own and its redundant
  // copies): never dropped, unlike experts taken over for a group.
  std::vector<int> base_experts_;
  weights::LoadOptions load_options_;  // of the load, for AddExperts

  // The step stream.
  std::mutex stream_mu_;
  grpc::ClientContext* stream_ctx_ = nullptr;
  grpc::ClientReaderWriter<control::v1::WorkerMessage, control::v1::RouterMessage>* stream_ =
      nullptr;

  // Messages for the executor thread, and the stop flag.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<control::v1::RouterMessage> inbox_;
  bool stopping_ = false;  // this session ends
  bool shutdown_ = false;  // Stop() was called: no new session
  std::string stop_reason_;
  // Set when the worker cannot go on (Run() then fails with it).
  std::string fatal_error_;
};

}  // namespace epserve::worker
