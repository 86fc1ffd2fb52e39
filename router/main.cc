// epserve-router: the client-facing process of an epserve cluster.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint/load_format.h"
#include "common/flags/flags_util.h"
#include "common/logging.h"
#include "common/shutdown.h"
#include "router/router_server.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json, weights, tokenizer)");
ABSL_FLAG(std::string, listen, "",
          "HOST:PORT for clients (gRPC). Default: 0.0.0.0:50051 when --api-key-file is given, "
          "else 127.0.0.1:50051 (this host only). Port 0 picks a free port");
ABSL_FLAG(std::string, control_listen, "",
          "HOST:PORT where workers register (the control plane; never the client port). "
          "Default: 127.0.0.1 on a free port with --local-workers, 0.0.0.0:50052 with --workers");
ABSL_FLAG(std::string, cluster_secret_file, "",
          "File holding the cluster secret (one line, >= 16 characters) every worker must present; "
          "empty: $EPSERVE_CLUSTER_SECRET. Required with --workers; --local-workers get a fresh "
          "random one when none is given");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain of the client port (TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA: clients must present a certificate it signed (mutual TLS)");
ABSL_FLAG(std::string, control_tls_cert, "",
          "PEM certificate chain of the control listener (TLS; with --workers)");
ABSL_FLAG(std::string, control_tls_key, "", "PEM private key of --control-tls-cert");
ABSL_FLAG(std::string, control_tls_client_ca, "",
          "PEM cluster CA: workers must present a certificate it signed (mutual TLS); the "
          "cluster secret is then optional");
ABSL_FLAG(std::string, api_key_file, "",
          "File of API keys, one per line; clients then present one as 'authorization: Bearer "
          "KEY' on every call (health and reflection stay open)");
ABSL_FLAG(std::string, chat_template, "",
          "A Jinja chat template file for /v1/chat/completions instead of the model's "
          "(tokenizer_config.json's chat_template or chat_template.jinja)");
ABSL_FLAG(std::string, http_listen, "",
          "OpenAI-compatible HTTP API (POST /v1/completions, GET /v1/models, /health, /version) "
          "on HOST:PORT (port 0: a free one, recorded under \"http\" in --ports-file); empty: off. "
          "--api-key-file keys are checked as \"Authorization: Bearer KEY\"");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9400",
          "HOST:PORT of the Prometheus /metrics endpoint; empty disables it");
ABSL_FLAG(int, local_workers, 0,
          "Spawn this many epserve-worker processes on this host (quick start / single node)");
ABSL_FLAG(int, workers, 0,
          "Wait for this many epserve-worker processes started elsewhere (--router=HOST:PORT)");
ABSL_FLAG(std::string, device, "cpu", "Device of local workers: cpu, or cuda (worker K on cuda:K)");
ABSL_FLAG(std::string, expert_placement, "linear", "Expert placement: linear or round-robin");
ABSL_FLAG(std::string, dtype, "auto",
          "Weight dtype: auto (config.json torch_dtype/dtype, else the checkpoint's), bfloat16, "
          "float16 or float32");
ABSL_FLAG(std::string, load_format, "auto",
          "auto: read the safetensors checkpoint; dummy: seeded random weights at the real "
          "shapes from config.json alone (benchmarks without downloading weights)");
ABSL_FLAG(uint64_t, seed, 0, "Seed of --load-format dummy weights");
ABSL_FLAG(int, worker_timeout_ms, 3000,
          "A worker silent for this long is declared lost and the cluster stops serving");
ABSL_FLAG(int, heartbeat_interval_ms, 500, "How often workers send heartbeats");
ABSL_FLAG(int, collective_timeout_ms, 10000,
          "Limit for forming the collective group and for every collective operation");
ABSL_FLAG(std::string, collective_backend, "auto",
          "Collective backend of the worker group: auto (nccl when every worker is a CUDA worker "
          "built with NCCL on a GPU of its own, else gloo), gloo or nccl (the group does not form "
          "when a worker cannot use it)");
ABSL_FLAG(int, drain_timeout_s, 30, "On SIGTERM, how long in-flight work may take before exit");
ABSL_FLAG(int, expert_parallel, 0,
          "N > 0: split the MoE experts across the N workers (--expert-placement; N must equal "
          "--local-workers / --workers); 0: every worker holds the whole model and serves its own "
          "requests (data parallel)");
ABSL_FLAG(int, worker_cpu_threads, 0,
          "CPU threads of each local worker (--device cpu); 0: the host's cores divided by the "
          "number of workers");
ABSL_FLAG(int, kv_block_size, 16, "Tokens per paged KV cache block");
ABSL_FLAG(int, kv_cache_blocks, 0,
          "KV cache blocks per worker; 0: each worker sizes its cache from --kv-cache-memory-mb");
ABSL_FLAG(int, kv_cache_memory_mb, 256, "KV cache memory per local worker, in MiB");
ABSL_FLAG(double, gpu_memory_utilization, 0.9,
          "Local GPU workers (--device cuda): share of each GPU's memory for weights, "
          "activations and KV cache; the KV cache gets the rest after the weights");
ABSL_FLAG(int, local_gpus, 0,
          "Local GPU workers (--device cuda): GPUs they spread over, worker K on cuda:(K mod N); "
          "0: one GPU per worker (cuda:K). Workers sharing a GPU split "
          "--gpu-memory-utilization and exchange MoE rows through host memory");
ABSL_FLAG(bool, enforce_eager, false, "Local GPU workers: run every step eagerly (no CUDA graphs)");
ABSL_FLAG(int, max_tokens_per_step, 2048,
          "Tokens one worker computes per step (prefill chunks + decodes)");
ABSL_FLAG(int, max_running_requests, 256, "Sequences one worker runs at once");
ABSL_FLAG(int, max_waiting_requests, 1024,
          "Requests queued for a worker; beyond it Generate answers RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_waiting_tokens, int64_t{1} << 22,
          "Prompt tokens of queued requests; beyond it Generate answers RESOURCE_EXHAUSTED");
ABSL_FLAG(int, step_timeout_ms, 0,
          "A step not answered by every worker within this long fails its requests; 0: "
          "--collective-timeout-ms + --worker-timeout-ms");
ABSL_FLAG(int, recovery_timeout_s, 60,
          "When a worker dies, stalls or fails a step, its requests (and those of the whole "
          "group) wait this long for the cluster to serve again, then resume where they were "
          "(recomputed; streams continue). Local workers are started again meanwhile. 0: they "
          "end with UNAVAILABLE at once");
ABSL_FLAG(int, survivor_grace_ms, 3000,
          "A worker lost and not replaced within this long: the surviving workers form a group "
          "of their own and serve (with --expert-parallel they take over the lost worker's "
          "experts, loading them unless --redundant-experts); the full group forms again when it "
          "is back. -1: the group waits for the replacement");
ABSL_FLAG(bool, redundant_experts, false,
          "With --expert-parallel: every worker also holds the experts it would take over if "
          "any one other worker were lost (about twice the expert memory), so the survivors "
          "serve again without loading weights");
ABSL_FLAG(std::string, ports_file, "",
          "Write the bound addresses here as JSON once listening (for scripts and tests)");
ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn or error (router and local workers)");

namespace {

constexpr char kUsage[] =
    "epserve-router: the router of an epserve cluster.\n\n"
    "  epserve-router --model DIR --local-workers N   # router + N workers on this host\n"
    "  epserve-router --model DIR --workers N         # wait for N epserve-worker processes\n\n"
    "Clients speak epserve.v1.Epserve (gRPC) on --listen; grpc.health.v1 and server\n"
    "reflection are served there too.";

std::optional<epserve::HostPort> ParseAddressFlag(const char* flag, const std::string& value,
                                                  bool optional) {
  if (optional && value.empty()) return std::nullopt;
  auto parsed = epserve::ParseHostPort(value, /*allow_port_zero=*/true);
  if (!parsed.ok()) epserve::Die(absl::StrCat("--", flag, ": ", parsed.status().message()), 2);
  return *parsed;
}

int PositiveFlag(const char* flag, int value) {
  if (value <= 0) epserve::Die(absl::StrCat("--", flag, " must be positive, got ", value), 2);
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  // NVLink multicast stays off in the router and the workers it starts
  // (they inherit the environment) unless the operator set it.
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
  std::vector<std::string> rest = epserve::ParseFlags(argc, argv, kUsage);
  if (rest.size() > 1) epserve::Die(absl::StrCat("unexpected argument '", rest[1], "'"), 2);
  if (!epserve::InitLogging("router", absl::GetFlag(FLAGS_log_level))) {
    epserve::Die(absl::StrCat("--log-level: unknown level '", absl::GetFlag(FLAGS_log_level),
                              "' (trace, debug, info, warn, error)"), 2);
  }

  epserve::router::RouterOptions options;
  options.model_dir = absl::GetFlag(FLAGS_model);
  if (options.model_dir.empty()) epserve::Die("--model is required", 2);
  options.metrics_listen =
      ParseAddressFlag("metrics-listen", absl::GetFlag(FLAGS_metrics_listen), true);
  options.http_listen = ParseAddressFlag("http-listen", absl::GetFlag(FLAGS_http_listen), true);
  options.chat_template = absl::GetFlag(FLAGS_chat_template);
  if (!options.chat_template.empty() && !options.http_listen) {
    epserve::Die("--chat-template needs --http-listen (chat completions are served over HTTP)", 2);
  }
  int local = absl::GetFlag(FLAGS_local_workers);
  int remote = absl::GetFlag(FLAGS_workers);
  if ((local > 0) == (remote > 0) || local < 0 || remote < 0) {
    epserve::Die("give exactly one of --local-workers N or --workers N (N >= 1)", 2);
  }
  options.api_key_file = absl::GetFlag(FLAGS_api_key_file);
  options.client_tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                        absl::GetFlag(FLAGS_tls_client_ca)};
  options.control_tls = {absl::GetFlag(FLAGS_control_tls_cert),
                         absl::GetFlag(FLAGS_control_tls_key),
                         absl::GetFlag(FLAGS_control_tls_client_ca)};
  // Clients are authenticated by an API key or a client certificate.
  const bool clients_authenticated =
      !options.api_key_file.empty() || !options.client_tls.ca.empty();
  options.cluster_secret_file = absl::GetFlag(FLAGS_cluster_secret_file);
  const std::string listen = absl::GetFlag(FLAGS_listen);
  std::string loopback_note;  // logged once serving
  if (!listen.empty()) {
    options.listen = *ParseAddressFlag("listen", listen, false);
  } else if (clients_authenticated) {
    options.listen = epserve::HostPort{"0.0.0.0", 50051};
  } else {
    options.listen = epserve::HostPort{"127.0.0.1", 50051};
    loopback_note =
        "clients: this host only (127.0.0.1:50051); to serve other hosts give --api-key-file "
        "FILE or --tls-client-ca FILE (then all interfaces), or --listen 0.0.0.0:50051 to open "
        "it without either";
  }
  const bool open_without_keys = !clients_authenticated && options.listen.host != "127.0.0.1" &&
                                 options.listen.host != "localhost" && options.listen.host != "::1";
  const std::string control_listen = absl::GetFlag(FLAGS_control_listen);
  if (!control_listen.empty()) {
    options.control_listen = *ParseAddressFlag("control-listen", control_listen, false);
  } else {
    options.control_listen =
        local > 0 ? epserve::HostPort{"127.0.0.1", 0} : epserve::HostPort{"0.0.0.0", 50052};
  }
  options.world_size = static_cast<uint32_t>(local > 0 ? local : remote);
  options.local_workers = local > 0;
  options.worker_device = absl::GetFlag(FLAGS_device);
  if (options.worker_device != "cpu" && options.worker_device != "cuda") {
    epserve::Die(absl::StrCat("--device: expected cpu or cuda, got '", options.worker_device, "'"),
                 2);
  }
  auto placement = epserve::ParsePlacementStrategy(absl::GetFlag(FLAGS_expert_placement));
  if (!placement.ok()) epserve::Die(absl::StrCat("--expert-placement: ", placement.status().message()), 2);
  options.placement = *placement;
  options.worker_timeout =
      std::chrono::milliseconds(PositiveFlag("worker-timeout-ms", absl::GetFlag(FLAGS_worker_timeout_ms)));
  options.heartbeat_interval = std::chrono::milliseconds(
      PositiveFlag("heartbeat-interval-ms", absl::GetFlag(FLAGS_heartbeat_interval_ms)));
  if (options.heartbeat_interval * 2 > options.worker_timeout) {
    epserve::Die("--heartbeat-interval-ms must be at most half of --worker-timeout-ms", 2);
  }
  options.collective_timeout = std::chrono::milliseconds(
      PositiveFlag("collective-timeout-ms", absl::GetFlag(FLAGS_collective_timeout_ms)));
  options.collective_backend = absl::GetFlag(FLAGS_collective_backend);
  if (options.collective_backend != "auto" && options.collective_backend != "gloo" &&
      options.collective_backend != "nccl") {
    epserve::Die(absl::StrCat("--collective-backend: expected auto, gloo or nccl, got '",
                              options.collective_backend, "'"),
                 2);
  }
  options.drain_timeout =
      std::chrono::seconds(PositiveFlag("drain-timeout-s", absl::GetFlag(FLAGS_drain_timeout_s)));
  options.ports_file = absl::GetFlag(FLAGS_ports_file);
  options.dtype = absl::GetFlag(FLAGS_dtype);
  options.load_format = absl::GetFlag(FLAGS_load_format);
  options.seed = absl::GetFlag(FLAGS_seed);
  if (auto format = epserve::checkpoint::ParseLoadFormat(options.load_format); !format.ok()) {
    epserve::Die(format.status().message(), 2);
  }
  options.worker_log_level = absl::GetFlag(FLAGS_log_level);
  const int expert_parallel = absl::GetFlag(FLAGS_expert_parallel);
  if (expert_parallel < 0 ||
      (expert_parallel > 0 && static_cast<uint32_t>(expert_parallel) != options.world_size)) {
    epserve::Die(absl::StrCat("--expert-parallel ", expert_parallel, ": expected 0 (data parallel) "
                              "or the number of workers (", options.world_size, ")"),
                 2);
  }
  options.expert_parallel = expert_parallel > 0;
  options.local_gpus = absl::GetFlag(FLAGS_local_gpus);
  if (options.local_gpus < 0) epserve::Die("--local-gpus must be >= 0", 2);
  options.worker_cpu_threads = absl::GetFlag(FLAGS_worker_cpu_threads);
  if (options.worker_cpu_threads < 0) epserve::Die("--worker-cpu-threads must be >= 0", 2);
  options.kv_block_size = PositiveFlag("kv-block-size", absl::GetFlag(FLAGS_kv_block_size));
  options.kv_cache_blocks = absl::GetFlag(FLAGS_kv_cache_blocks);
  if (options.kv_cache_blocks < 0) epserve::Die("--kv-cache-blocks must be >= 0", 2);
  options.kv_cache_memory_mb =
      PositiveFlag("kv-cache-memory-mb", absl::GetFlag(FLAGS_kv_cache_memory_mb));
  options.gpu_memory_utilization = absl::GetFlag(FLAGS_gpu_memory_utilization);
  if (!(options.gpu_memory_utilization > 0.0 && options.gpu_memory_utilization <= 1.0)) {
    epserve::Die(absl::StrCat("--gpu-memory-utilization must be in (0, 1], got ",
                              options.gpu_memory_utilization), 2);
  }
  options.enforce_eager = absl::GetFlag(FLAGS_enforce_eager);
  options.max_tokens_per_step =
      PositiveFlag("max-tokens-per-step", absl::GetFlag(FLAGS_max_tokens_per_step));
  options.max_running_requests =
      PositiveFlag("max-running-requests", absl::GetFlag(FLAGS_max_running_requests));
  options.max_waiting_requests =
      PositiveFlag("max-waiting-requests", absl::GetFlag(FLAGS_max_waiting_requests));
  options.max_waiting_tokens = absl::GetFlag(FLAGS_max_waiting_tokens);
  if (options.max_waiting_tokens <= 0) epserve::Die("--max-waiting-tokens must be positive", 2);
  int step_timeout = absl::GetFlag(FLAGS_step_timeout_ms);
  if (step_timeout < 0) epserve::Die("--step-timeout-ms must be >= 0", 2);
  options.step_timeout = step_timeout > 0
                             ? std::chrono::milliseconds(step_timeout)
                             : options.collective_timeout + options.worker_timeout;

  const int recovery = absl::GetFlag(FLAGS_recovery_timeout_s);
  if (recovery < 0) epserve::Die("--recovery-timeout-s must be >= 0", 2);
  options.recovery_timeout = std::chrono::seconds(recovery);
  const int survivor_grace = absl::GetFlag(FLAGS_survivor_grace_ms);
  if (survivor_grace < -1) epserve::Die("--survivor-grace-ms must be >= 0, or -1 (never)", 2);
  options.survivor_grace = std::chrono::milliseconds(survivor_grace);
  options.redundant_experts = absl::GetFlag(FLAGS_redundant_experts);
  if (options.redundant_experts && !options.expert_parallel) {
    epserve::Die(
        "--redundant-experts needs --expert-parallel (data-parallel workers hold every "
        "expert already)",
        2);
  }

  std::shared_ptr<epserve::router::RouterServer> server;
  std::mutex server_mu;
  epserve::InstallShutdownHandler([&](int sig) {
    static std::atomic<int> count{0};
    if (++count > 1) {
      std::fprintf(stderr, "epserve-router: second signal %d, exiting now\n", sig);
      std::_Exit(130);
    }
    std::shared_ptr<epserve::router::RouterServer> s;
    {
      std::lock_guard<std::mutex> lock(server_mu);
      s = server;
    }
    if (s) {
      s->Shutdown(absl::StrCat("received signal ", sig));
    } else {
      std::_Exit(130);  // still starting: nothing to drain
    }
  });

  auto started = epserve::router::RouterServer::Start(options);
  if (!started.ok()) epserve::Die(started.status().message());
  {
    std::lock_guard<std::mutex> lock(server_mu);
    server = std::move(*started);
  }
  if (!loopback_note.empty()) LOG_INFO("{}", loopback_note);
  if (open_without_keys) {
    LOG_WARN(
        "--listen {}: clients on other hosts reach the API without a key (give "
        "--api-key-file to require one)",
        options.listen.ToString());
  }
  const absl::Status stopped = server->Wait();
  if (!stopped.ok()) epserve::Die(stopped.message());
  LOG_INFO("router stopped");
  return 0;
}
