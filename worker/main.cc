// epserve-worker: one per device; joins the router's cluster.
#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/flags/flags_util.h"
#include "common/logging.h"
#include "common/net.h"
#include "common/rpc/auth.h"
#include "common/shutdown.h"
#include "common/version.h"
#include "worker/worker.h"

ABSL_FLAG(std::string, router, "",
          "HOST:PORT of the router's control listener (its --control-listen) to join (required)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that signed the router's control certificate (its --control-tls-cert): "
          "talk TLS to the control listener");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate of this worker, signed by the router's --control-tls-client-ca "
          "(mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, cluster_secret_file, "",
          "File holding the cluster secret the router was given (one line); empty: "
          "$EPSERVE_CLUSTER_SECRET");
ABSL_FLAG(std::string, device, "cpu", "Device to run on: cpu, cuda or cuda:K");
ABSL_FLAG(int, rank, -1,
          "Rank to ask for (e.g. a StatefulSet ordinal); -1 lets the router choose");
ABSL_FLAG(std::string, collective_host, "",
          "Address other workers reach this one on for collectives (default: host name)");
ABSL_FLAG(std::string, collective_interface, "",
          "Network interface whose IPv4 address other workers reach this one on for "
          "collectives, like GLOO_SOCKET_IFNAME (excludes --collective-host)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9401",
          "HOST:PORT of this worker's Prometheus /metrics endpoint; empty disables it");
ABSL_FLAG(int, connect_timeout_s, 30,
          "Keep trying to reach and register with the router for this long, then exit");
ABSL_FLAG(int, protocol_version, static_cast<int>(epserve::kProtocolVersion),
          "Control protocol version to announce (for compatibility testing)");
ABSL_FLAG(int64_t, kv_cache_memory_mb, 256,
          "Memory for the paged KV cache, in MiB, unless the router fixes the block count");
ABSL_FLAG(int, cpu_threads, 0, "CPU device: threads for the forward pass (0: all cores)");
ABSL_FLAG(double, gpu_memory_utilization, 0.9,
          "GPU device: share of the GPU's memory for weights, activations and KV cache; the KV "
          "cache gets what the weights and activations leave (unless the router fixes the "
          "block count); 0: the KV cache takes --kv-cache-memory-mb (workers sharing a GPU)");
ABSL_FLAG(bool, enforce_eager, false, "GPU device: run every step eagerly (no CUDA graphs)");
ABSL_FLAG(int, cuda_graph_max_batch, 256,
          "GPU device: decode batches up to this size replay CUDA graphs");
ABSL_FLAG(int, cuda_graph_max_context, 8192,
          "GPU device: contexts up to this many tokens replay CUDA graphs (longer: eager)");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn or error");

namespace {

constexpr char kUsage[] =
    "epserve-worker: a worker of an epserve cluster.\n\n"
    "  epserve-worker --router HOST:PORT [--device cuda:0]\n\n"
    "Registers with the router, receives its rank and plan, joins the collective group\n"
    "and executes steps. Exits when the router asks it to, or when the router is gone.";

}  // namespace

int main(int argc, char** argv) {
  // NVLink multicast stays off unless the operator set NCCL_NVLS_ENABLE.
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  std::vector<std::string> rest = epserve::ParseFlags(argc, argv, kUsage);
  if (rest.size() > 1) epserve::Die(absl::StrCat("unexpected argument '", rest[1], "'"), 2);
  if (!epserve::InitLogging("worker", absl::GetFlag(FLAGS_log_level))) {
    epserve::Die(absl::StrCat("--log-level: unknown level '", absl::GetFlag(FLAGS_log_level), "'"),
                 2);
  }
  epserve::worker::WorkerOptions options;
  std::string router = absl::GetFlag(FLAGS_router);
  if (router.empty()) epserve::Die("--router HOST:PORT is required", 2);
  auto router_addr = epserve::ParseHostPort(router, /*allow_port_zero=*/false);
  if (!router_addr.ok()) epserve::Die(absl::StrCat("--router: ", router_addr.status().message()), 2);
  options.router_address = router_addr->ToString();
  auto secret = epserve::rpc::LoadClusterSecret(absl::GetFlag(FLAGS_cluster_secret_file),
                                                "--cluster-secret-file");
  if (!secret.ok()) epserve::Die(secret.status().message(), 2);
  options.cluster_secret = secret->value_or("");
  options.control_tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                         absl::GetFlag(FLAGS_tls_ca)};
  auto device = epserve::kernels::ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) epserve::Die(absl::StrCat("--device: ", device.status().message()), 2);
  options.device = *device;
  options.requested_rank = absl::GetFlag(FLAGS_rank);
  if (options.requested_rank < -1) epserve::Die("--rank must be -1 or a rank >= 0", 2);
  options.collective_host = absl::GetFlag(FLAGS_collective_host);
  const std::string collective_interface = absl::GetFlag(FLAGS_collective_interface);
  if (!collective_interface.empty()) {
    if (!options.collective_host.empty()) {
      epserve::Die("--collective-interface and --collective-host are mutually exclusive", 2);
    }
    auto address = epserve::InterfaceIpv4Address(collective_interface);
    if (!address.ok()) {
      epserve::Die(absl::StrCat("--collective-interface: ", address.status().message()), 2);
    }
    options.collective_host = *address;
  }
  if (options.collective_host.empty()) options.collective_host = epserve::LocalHostName();
  std::string metrics = absl::GetFlag(FLAGS_metrics_listen);
  if (!metrics.empty()) {
    auto addr = epserve::ParseHostPort(metrics, /*allow_port_zero=*/true);
    if (!addr.ok()) epserve::Die(absl::StrCat("--metrics-listen: ", addr.status().message()), 2);
    options.metrics_listen = *addr;
  }
  int connect_timeout = absl::GetFlag(FLAGS_connect_timeout_s);
  if (connect_timeout <= 0) epserve::Die("--connect-timeout-s must be positive", 2);
  options.register_retry = std::chrono::seconds(connect_timeout);
  int64_t kv_mb = absl::GetFlag(FLAGS_kv_cache_memory_mb);
  if (kv_mb <= 0) epserve::Die("--kv-cache-memory-mb must be positive", 2);
  options.kv_cache_bytes = static_cast<uint64_t>(kv_mb) << 20;
  options.gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  if (!(options.gpu_memory_utilization >= 0.0 && options.gpu_memory_utilization <= 1.0)) {
    epserve::Die(absl::StrCat("--gpu-memory-utilization must be in [0, 1], got ",
                              options.gpu_memory_utilization),
                 2);
  }
  options.enforce_eager = absl::GetFlag(FLAGS_enforce_eager);
  options.cuda_graph_max_batch = absl::GetFlag(FLAGS_cuda_graph_max_batch);
  options.cuda_graph_max_context = absl::GetFlag(FLAGS_cuda_graph_max_context);
  if (options.cuda_graph_max_batch < 0 || options.cuda_graph_max_context <= 0) {
    epserve::Die("--cuda-graph-max-batch must be >= 0 and --cuda-graph-max-context > 0", 2);
  }
  options.cpu_threads = absl::GetFlag(FLAGS_cpu_threads);
  if (options.cpu_threads < 0) epserve::Die("--cpu-threads must be >= 0", 2);
  int protocol = absl::GetFlag(FLAGS_protocol_version);
  if (protocol < 0) epserve::Die("--protocol-version must be >= 0", 2);
  options.protocol_version = static_cast<unsigned>(protocol);

  // SIGTERM / SIGINT: Stop() the worker (a second one exits at once).
  static std::atomic<epserve::worker::Worker*> running{nullptr};
  epserve::InstallShutdownHandler([](int sig) {
    static std::atomic<int> count{0};
    epserve::worker::Worker* w = running.load();
    if (++count > 1 || w == nullptr) std::_Exit(128 + sig);
    w->Stop(absl::StrCat("received signal ", sig));
  });
  auto worker = epserve::worker::Worker::Create(options);
  if (!worker.ok()) epserve::Die(worker.status().message());
  running.store(worker->get());
  absl::Status status = (*worker)->Run();
  running.store(nullptr);
  if (!status.ok()) epserve::Die(status.message());
  return 0;
}
