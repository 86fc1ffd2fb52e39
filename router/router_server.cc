#include "router/router_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/checkpoint_binding.h"
#include "common/checkpoint/dtype_policy.h"
#include "common/checkpoint/load_format.h"
#include "common/checkpoint/quantization.h"
#include "common/dtype_convert.h"
#include "common/flags/flags_util.h"
#include "common/logging.h"
#include "common/model_config/model_config.h"
#include "common/rpc/auth.h"
#include "common/safetensors/checkpoint.h"
#include "common/secure_random.h"
#include "common/status.h"
#include "common/version.h"
#include "router/cluster/collective_choice.h"
#include "router/cluster/rendezvous_store.h"
#include "router/cluster/worker_registry.h"
#include "router/engine/engine.h"
#include "router/engine/serving_metrics.h"
#include "router/router_metrics.h"
#include "router/service/client_service.h"
#include "router/service/control_service.h"
#include "router/service/model_info.h"

namespace epserve::router {
namespace {

constexpr char kClientServiceName[] = "epserve.v1.Epserve";

absl::StatusOr<v1::ExpertPlacement> MakePlacement(const v1::GetModelInfoResponse& model,
                                                 const RouterOptions& options) {
  v1::ExpertPlacement placement;
  placement.set_strategy(PlacementStrategyName(options.placement));
  if (model.num_experts() == 0) return placement;  // dense: nothing to place
  ASSIGN_OR_RETURN(std::vector<uint32_t> owners,
                   PlaceExperts(model.num_experts(), options.world_size, options.placement));
  for (uint32_t r : owners) placement.add_expert_to_rank(r);
  return placement;
}

// Everything about the model that can be checked without the workers:
// config.json through the registry, quantization support, and (when the
// weights are visible here) every tensor the architecture expects, by
// header. Returns the dtype the workers will run in.
absl::StatusOr<std::string> CheckModel(const RouterOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_directory(options.model_dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("--model: model directory '", options.model_dir, "' does not exist"));
  }
  absl::StatusOr<ModelDescription> desc = LoadModelConfig(options.model_dir);
  if (!desc.ok()) return Annotate(desc.status(), "--model");
  std::string backend = options.local_workers ? options.worker_device : "cpu";
  RETURN_IF_ERROR(Annotate(checkpoint::CheckQuantizationSupported(*desc, backend), "--model"));
  ASSIGN_OR_RETURN(checkpoint::LoadFormat format, checkpoint::ParseLoadFormat(options.load_format));
  std::map<DataType, uint64_t> checkpoint_bytes;
  const std::vector<TensorSpec> specs = ExpectedTensors(*desc);
  std::optional<checkpoint::CheckpointBinding> bound;
  if (format == checkpoint::LoadFormat::kSafetensors) {
    auto checkpoint = safetensors::SafetensorsCheckpoint::Open(options.model_dir);
    if (checkpoint.ok()) {
      bound = checkpoint::BindCheckpoint(*desc, specs, **checkpoint);
      RETURN_IF_ERROR(Annotate(bound->ToStatus(*desc, options.model_dir), "--model"));
      checkpoint_bytes = bound->bytes_by_dtype;
    } else if (absl::IsNotFound(checkpoint.status())) {
      LOG_WARN("{}; the workers will look for the weights themselves (--load-format dummy "
               "runs without weight files)",
               checkpoint.status().message());
    } else {
      return Annotate(checkpoint.status(), "--model");
    }
  }
  ASSIGN_OR_RETURN(DataType dtype, checkpoint::ResolveWeightDtype(options.dtype, *desc, checkpoint_bytes));
  // Every tensor must convert to the dtype the workers hold it in (integer
  // weights of an unquantized model would fail on every worker instead).
  if (bound.has_value()) {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (!bound->found[i]) continue;
      const checkpoint::TensorSource& src = bound->sources[i];
      const DataType target =
          specs[i].fixed_dtype.value_or(checkpoint::StorageDtype(specs[i].role, dtype));
      if (!CanConvert(src.dtype, target)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--model: ", options.model_dir, ": ", src.checkpoint_name, ": ",
                         DataTypeName(src.dtype), " cannot be converted to ", DataTypeName(target),
                         " (unquantized weights must be float32, bfloat16 or float16)"));
      }
    }
  }
  return std::string(DataTypeName(dtype));
}

// A gRPC server for `service` on `address`; the address with the port bound
// (port 0 picks one) in *bound. `flag` names the address in the error.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    const char* flag, const HostPort& address,
    const std::shared_ptr<grpc::ServerCredentials>& credentials, grpc::Service* service,
    HostPort* bound) {
  grpc::ServerBuilder builder;
  // gRPC enables SO_REUSEPORT by default, which would let a second router
  // bind the same port silently; a port in use must be an error.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(64 << 20);
  int port = 0;
  builder.AddListeningPort(address.ToString(), credentials, &port);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(flag, " ", address.ToString(),
                                               ": cannot listen (port in use, or the address "
                                               "is not local)"));
  }
  *bound = address;
  bound->port = static_cast<uint16_t>(port);
  return server;
}

}  // namespace

// The engine's StepTransport over the worker registry.
class RegistryTransport final : public StepTransport {
 public:
  explicit RegistryTransport(WorkerRegistry* registry) : registry_(registry) {}

  std::optional<GroupView> ServingGroup(std::string* reason) override {
    std::optional<WorkerRegistry::ServingGroupInfo> g = registry_->ServingGroup(reason);
    if (!g) return std::nullopt;
    return GroupView{g->epoch, static_cast<int>(g->kv_block_size), g->kv_blocks};
  }

  absl::Status SendStep(uint64_t epoch,
                        const std::vector<control::v1::StepPlan>& plans) override {
    return registry_->SendStep(epoch, plans);
  }

 private:
  WorkerRegistry* registry_;
};

absl::StatusOr<std::unique_ptr<RouterServer>> RouterServer::Start(const RouterOptions& options) {
  std::unique_ptr<RouterServer> self(new RouterServer());
  self->options_ = options;
  if (options.world_size == 0) {
    return absl::InvalidArgumentError("--workers / --local-workers must be at least 1");
  }
  ASSIGN_OR_RETURN(std::string weight_dtype, CheckModel(options));
  absl::StatusOr<v1::GetModelInfoResponse> read = ReadModelInfo(options.model_dir, weight_dtype);
  if (!read.ok()) return Annotate(read.status(), "--model");
  const v1::GetModelInfoResponse& model = *read;
  absl::StatusOr<v1::ExpertPlacement> placement = MakePlacement(model, options);
  if (!placement.ok()) return Annotate(placement.status(), "--model");
  // Data parallel: every worker holds every expert (an empty table).
  v1::ExpertPlacement plan_placement = *placement;
  if (!options.expert_parallel) {
    plan_placement.set_strategy("replicated");
    plan_placement.clear_expert_to_rank();
  }

  RegistryOptions reg;
  reg.world_size = options.world_size;
  reg.protocol_version = kProtocolVersion;
  reg.worker_timeout = options.worker_timeout;
  reg.heartbeat_interval = options.heartbeat_interval;
  reg.collective_timeout = options.collective_timeout;
  reg.survivor_grace = options.survivor_grace;
  RETURN_IF_ERROR(
      Annotate(ValidateCollectiveBackend(options.collective_backend), "--collective-backend"));
  reg.collective_backend = options.collective_backend;
  reg.plan.set_model_path(model.model_path());
  reg.plan.set_dtype(weight_dtype);
  reg.plan.set_load_format(options.load_format);
  reg.plan.set_seed(options.seed);
  reg.plan.set_redundant_experts(options.redundant_experts && options.expert_parallel);
  *reg.plan.mutable_expert_placement() = plan_placement;
  reg.plan.mutable_kv_cache()->set_block_size(static_cast<uint32_t>(options.kv_block_size));
  reg.plan.mutable_kv_cache()->set_num_blocks(static_cast<uint32_t>(options.kv_cache_blocks));
  reg.plan.mutable_kv_cache()->set_max_tokens_per_step(
      static_cast<uint32_t>(options.max_tokens_per_step));
  reg.plan.mutable_kv_cache()->set_max_running_requests(
      static_cast<uint32_t>(options.max_running_requests));
  self->store_ = std::make_unique<RendezvousStore>();
  self->registry_ = std::make_unique<WorkerRegistry>(reg, self->store_.get());

  self->metrics_registry_ = std::make_shared<prometheus::Registry>();
  self->metrics_ = std::make_unique<RouterMetrics>(*self->metrics_registry_);
  std::string model_label = std::filesystem::path(model.model_path()).filename().string();
  if (model_label.empty()) model_label = model.model_path();
  self->serving_metrics_ =
      std::make_unique<ServingMetrics>(*self->metrics_registry_, model_label);

  ClientServiceOptions client_options;
  client_options.model_info = model;
  client_options.expert_placement = plan_placement;
  client_options.parallelism = options.expert_parallel ? "expert" : "data";
  if (std::filesystem::exists(std::filesystem::path(options.model_dir) / "tokenizer.json")) {
    absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tok =
        tokenizer::Tokenizer::FromPath(options.model_dir);
    if (!tok.ok()) return Annotate(tok.status(), "--model tokenizer");
    client_options.tokenizer = std::move(*tok);
  } else {
    LOG_WARN("{} has no tokenizer.json: Tokenize/Detokenize and text prompts are unavailable",
             options.model_dir);
  }
  client_options.limits.vocab_size = model.vocab_size();
  client_options.limits.max_context_length = model.max_context_length();
  client_options.limits.has_tokenizer = client_options.tokenizer != nullptr;
  if (!options.api_key_file.empty()) {
    ASSIGN_OR_RETURN(std::vector<std::string> keys,
                     rpc::ReadTokenFile(options.api_key_file, "--api-key-file"));
    LOG_INFO("client API: {} API key(s) from {}", keys.size(), options.api_key_file);
    client_options.api_keys = rpc::TokenSet(std::move(keys));
    self->api_keys_ = client_options.api_keys;  // shares the set: rotation reaches both
    std::error_code ec;
    self->api_keys_mtime_ = std::filesystem::last_write_time(options.api_key_file, ec);
  }

  EngineOptions engine_options;
  engine_options.scheduler.max_tokens_per_step = options.max_tokens_per_step;
  engine_options.scheduler.max_running_per_worker = options.max_running_requests;
  engine_options.max_waiting_requests = options.max_waiting_requests;
  engine_options.max_waiting_tokens = options.max_waiting_tokens;
  engine_options.step_timeout = options.step_timeout;
  engine_options.recovery_timeout = options.recovery_timeout;
  engine_options.eos_token_ids.assign(model.eos_token_ids().begin(), model.eos_token_ids().end());
  self->transport_ = std::make_unique<RegistryTransport>(self->registry_.get());
  self->engine_ = std::make_unique<Engine>(engine_options, self->transport_.get(),
                                           client_options.tokenizer, self->serving_metrics_.get());
  self->registry_->SetStepResultListener(
      [engine = self->engine_.get()](uint32_t rank, uint64_t epoch,
                                     const control::v1::StepResult& result) {
        engine->OnStepResult(rank, epoch, result);
      });
  self->client_service_ = std::make_unique<ClientService>(
      client_options, self->registry_.get(), self->engine_.get(), self->serving_metrics_.get());
  ASSIGN_OR_RETURN(std::optional<std::string> secret,
                   rpc::LoadClusterSecret(options.cluster_secret_file, "--cluster-secret-file"));
  const bool control_mtls = !options.control_tls.ca.empty();
  if (options.local_workers && !options.control_tls.empty()) {
    return absl::InvalidArgumentError(
        "--control-tls-*: local workers reach the control plane on loopback with a generated "
        "secret; control-plane TLS is for --workers");
  }
  if (!secret) {
    if (!options.local_workers && !control_mtls) {
      return absl::InvalidArgumentError(
          "--workers: workers started elsewhere must present the cluster secret; give the "
          "router and every worker --cluster-secret-file FILE (or set $EPSERVE_CLUSTER_SECRET), "
          "e.g. made with: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE (or "
          "authenticate them by certificate: --control-tls-cert/-key/-client-ca)");
    }
    if (options.local_workers) {
      ASSIGN_OR_RETURN(secret, RandomHex(32));
    }
  }
  self->cluster_secret_ = secret.value_or("");
  self->control_service_ = std::make_unique<ControlService>(
      self->registry_.get(), self->store_.get(),
      secret ? rpc::TokenSet({self->cluster_secret_}) : rpc::TokenSet());
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> control_credentials,
                   rpc::MakeServerCredentials(options.control_tls, "--control-tls"));
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> client_credentials,
                   rpc::MakeServerCredentials(options.client_tls, "--tls"));

  grpc::EnableDefaultHealthCheckService(true);
  // Built before reflection is enabled: the control server lists nothing.
  ASSIGN_OR_RETURN(self->control_server_,
                   StartServer("--control-listen", options.control_listen, control_credentials,
                               self->control_service_.get(), &self->control_address_));
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  ASSIGN_OR_RETURN(self->server_, StartServer("--listen", options.listen, client_credentials,
                                              self->client_service_.get(), &self->grpc_address_));

  grpc::HealthCheckServiceInterface* health = self->server_->GetHealthCheckService();
  health->SetServingStatus(false);
  health->SetServingStatus(kClientServiceName, false);
  self->registry_->SetServingListener([health, engine = self->engine_.get()](bool serving) {
    health->SetServingStatus(serving);
    health->SetServingStatus(kClientServiceName, serving);
    engine->OnServingChanged();
  });
  if (options.http_listen) {
    http::HttpFrontendOptions http_options;
    http_options.listen = *options.http_listen;
    http_options.model_name = std::filesystem::path(model.model_path()).filename().string();
    if (http_options.model_name.empty()) http_options.model_name = model.model_path();
    http_options.max_model_len = model.max_context_length();
    http_options.limits = client_options.limits;
    http_options.tokenizer = client_options.tokenizer;
    http_options.api_keys = client_options.api_keys;
    absl::StatusOr<http::SamplingDefaults> defaults = http::ReadSamplingDefaults(options.model_dir);
    if (!defaults.ok()) return Annotate(defaults.status(), "--model");
    http_options.sampling_defaults = *defaults;
    absl::StatusOr<std::optional<http::ChatTemplate>> chat =
        http::ChatTemplate::Load(options.model_dir, options.chat_template);
    if (!chat.ok()) {
      return Annotate(chat.status(), options.chat_template.empty() ? "--model" : "--chat-template");
    }
    if (*chat) {
      LOG_INFO("chat template: {}", (*chat)->origin());
      http_options.chat_template = std::make_shared<const http::ChatTemplate>(std::move(**chat));
    } else {
      LOG_INFO(
          "{} has no chat template: /v1/chat/completions answers 400 (--chat-template FILE "
          "gives one)",
          options.model_dir);
    }
    // The HTTP API speaks plain HTTP: TLS belongs to a proxy or ingress in
    // front of it (docs/api.md).
    const bool loopback = options.http_listen->host == "127.0.0.1" ||
                          options.http_listen->host == "::1" ||
                          options.http_listen->host == "localhost";
    if (!options.client_tls.empty()) {
      LOG_WARN(
          "--http-listen {}: the HTTP API is plain HTTP while the gRPC port uses TLS; "
          "terminate TLS in front of it (a proxy or ingress) before exposing it",
          options.http_listen->ToString());
    } else if (!loopback && http_options.api_keys.empty()) {
      LOG_WARN(
          "--http-listen {}: anyone who reaches this address can generate; give "
          "--api-key-file to require keys",
          options.http_listen->ToString());
    }
    ASSIGN_OR_RETURN(self->http_,
                     http::HttpFrontend::Start(std::move(http_options), self->registry_.get(),
                                               self->engine_.get(), self->serving_metrics_.get()));
  }
  if (options.metrics_listen) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
        MetricsServer::Start(*options.metrics_listen, self->metrics_registry_);
    if (!metrics.ok()) return Annotate(metrics.status(), "--metrics-listen");
    self->metrics_server_ = std::move(*metrics);
  }
  const char* client_security = options.client_tls.empty()      ? "plaintext"
                                : options.client_tls.ca.empty() ? "TLS"
                                                                : "mutual TLS";
  const char* control_security = control_mtls                   ? "mutual TLS"
                                 : !options.control_tls.empty() ? "TLS + cluster secret"
                                                                : "cluster secret";
  LOG_INFO(
      "epserve-router {} serving {} ({}) on {} ({}); workers join on {} ({}); metrics on {}; "
      "expecting {} worker(s)",
      kVersion, model.architecture(), model.model_path(), self->grpc_address_.ToString(),
      client_security, self->control_address_.ToString(), control_security,
      self->metrics_server_ ? self->metrics_server_->address().ToString() : "(off)",
      options.world_size);
  RETURN_IF_ERROR(self->WritePortsFile());
  self->sweeper_ = std::thread([raw = self.get()] { raw->SweepLoop(); });
  if (options.local_workers) RETURN_IF_ERROR(self->SpawnLocalWorkers());
  return self;
}

RouterServer::~RouterServer() {
  Shutdown("router destroyed");
  if (sweeper_.joinable()) sweeper_.join();
  if (startup_failure_thread_.joinable()) startup_failure_thread_.join();
  if (!local_worker_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(local_worker_dir_, ec);
  }
}

absl::Status RouterServer::WritePortsFile() const {
  if (options_.ports_file.empty()) return absl::OkStatus();
  std::string tmp = options_.ports_file + ".tmp";
  {
    std::ofstream out(tmp);
    out << "{\"grpc\": \"" << grpc_address_.ToString() << "\", \"control\": \""
        << control_address_.ToString() << "\", \"metrics\": \""
        << (metrics_server_ ? metrics_server_->address().ToString() : "") << "\", \"http\": \""
        << (http_ ? http_->address().ToString() : "") << "\"}\n";
    if (!out) return absl::InternalError(absl::StrCat("--ports-file: cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, options_.ports_file, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("--ports-file: cannot rename to ", options_.ports_file, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status RouterServer::SpawnLocalWorkers() {
  std::string worker_bin = ExecutableDir() + "/epserve-worker";
  if (!std::filesystem::exists(worker_bin)) {
    return absl::NotFoundError(
        absl::StrCat("--local-workers: worker binary not found at ", worker_bin));
  }
  std::string router = absl::StrCat("127.0.0.1:", control_address_.port);
  std::string dir_template =
      (std::filesystem::temp_directory_path() / "epserve-router.XXXXXX").string();
  if (mkdtemp(dir_template.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("--local-workers: cannot create a directory like ",
                                            dir_template, ": ", std::strerror(errno)));
  }
  local_worker_dir_ = dir_template;
  // CPU workers on one host share its cores instead of each taking all.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const unsigned cpu_threads = options_.worker_cpu_threads > 0
                                   ? static_cast<unsigned>(options_.worker_cpu_threads)
                                   : std::max(1u, cores / options_.world_size);
  const uint32_t gpus =
      options_.local_gpus > 0 ? static_cast<uint32_t>(options_.local_gpus) : options_.world_size;
  const uint32_t per_gpu = (options_.world_size + gpus - 1) / gpus;
  for (uint32_t rank = 0; rank < options_.world_size; ++rank) {
    std::string device =
        options_.worker_device == "cuda" ? absl::StrCat("cuda:", rank % gpus) : "cpu";
    std::vector<std::string> argv = {worker_bin,
                                     "--router=" + router,
                                     absl::StrCat("--rank=", rank),
                                     "--device=" + device,
                                     "--collective-host=127.0.0.1",
                                     "--metrics-listen=127.0.0.1:0",
                                     absl::StrCat("--kv-cache-memory-mb=", options_.kv_cache_memory_mb),
                                     absl::StrCat("--cpu-threads=", cpu_threads),
                                     "--log-level=" + options_.worker_log_level};
    if (options_.worker_device == "cuda") {
      // Workers sharing a GPU cannot tell their memory from each other's:
      // their KV caches take --kv-cache-memory-mb instead of a share.
      argv.push_back(absl::StrCat("--gpu-memory-utilization=",
                                  per_gpu > 1 ? 0.0 : options_.gpu_memory_utilization));
      if (options_.enforce_eager) argv.push_back("--enforce-eager");
    }
    LocalWorker worker;
    worker.argv = std::move(argv);
    worker.rank = rank;
    worker.device = device;
    worker.started = std::chrono::steady_clock::now();
    worker.error_file = absl::StrCat(local_worker_dir_, "/rank-", rank, ".error");
    ASSIGN_OR_RETURN(worker.process, SpawnLocalWorker(worker));
    LOG_INFO("spawned local worker {} (pid {}) on {}", rank, worker.process.pid(), device);
    local_workers_.push_back(std::move(worker));
  }
  return absl::OkStatus();
}

absl::StatusOr<Subprocess> RouterServer::SpawnLocalWorker(const LocalWorker& worker) const {
  SubprocessOptions spawn;
  spawn.env = {{rpc::kClusterSecretEnv, cluster_secret_}, {kErrorFileEnv, worker.error_file}};
  std::error_code ec;
  std::filesystem::remove(worker.error_file, ec);  // the error of an earlier run
  return Subprocess::Spawn(worker.argv, spawn);
}

void RouterServer::RestartExitedLocalWorkers() {
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < local_workers_.size(); ++i) {
    LocalWorker& w = local_workers_[i];
    if (w.process.running()) {
      if (auto code = w.process.Wait(std::chrono::milliseconds(0))) {
        if (now - w.started >= kLocalWorkerStableRun) w.restarts = 0;
        const auto backoff =
            w.restarts == 0
                ? std::chrono::milliseconds(0)
                : std::min(kLocalWorkerFirstBackoff * (1 << std::min(w.restarts - 1, 6)),
                           kLocalWorkerMaxBackoff);
        std::string error;
        if (std::ifstream in(w.error_file); in) std::getline(in, error);
        const std::string exit = absl::StrCat("local worker ", w.rank, " (", w.device, ", pid ",
                                              w.process.pid(), ") exited ",
                                              *code > 128 ? absl::StrCat("on signal ", *code - 128)
                                                          : absl::StrCat("with code ", *code));
        if (registry_->groups_formed_total() == 0) {
          FailStartup(
              absl::StrCat(exit, " before the cluster served: ",
                           error.empty() ? "it left no error message (see its log above)" : error));
          return;
        }
        registry_->NoteRankMissing(w.rank, error.empty() ? exit : absl::StrCat(exit, ": ", error),
                                   now);
        LOG_WARN("local worker {} (pid {}) exited with code {}; starting it again in {} ms", i,
                 w.process.pid(), *code, backoff.count());
        w.restart_at = now + backoff;
      }
      continue;
    }
    if (!w.restart_at || now < *w.restart_at) continue;
    absl::StatusOr<Subprocess> again = SpawnLocalWorker(w);
    ++w.restarts;
    if (!again.ok()) {
      LOG_ERROR("cannot start local worker {} again: {}", i, again.status().ToString());
      w.restart_at = now + kLocalWorkerMaxBackoff;
      continue;
    }
    w.process = std::move(*again);
    w.started = now;
    w.restart_at.reset();
    LOG_INFO("local worker {} started again (pid {}, restart {})", i, w.process.pid(), w.restarts);
  }
}

void RouterServer::FailStartup(const std::string& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_started_ || !exit_status_.ok()) return;
    exit_status_ = absl::FailedPreconditionError(error);
  }
  LOG_ERROR("{}", error);
  startup_failure_thread_ = std::thread([this, error] { Shutdown(error); });
}

void RouterServer::ReloadApiKeysIfChanged() {
  if (options_.api_key_file.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - api_keys_checked_ < std::chrono::seconds(1)) return;
  api_keys_checked_ = now;
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(options_.api_key_file, ec);
  if (ec || mtime == api_keys_mtime_) return;
  api_keys_mtime_ = mtime;  // one attempt (and one warning) per change
  absl::StatusOr<std::vector<std::string>> keys =
      rpc::ReadTokenFile(options_.api_key_file, "--api-key-file");
  if (!keys.ok()) {
    // Half-written or emptied: the old keys stay until the file is valid.
    LOG_WARN("--api-key-file changed but cannot be used ({}); keeping the previous keys",
             keys.status().message());
    return;
  }
  const size_t count = keys->size();
  api_keys_.Replace(std::move(*keys));
  LOG_INFO("--api-key-file {} changed: {} API key(s) now accepted", options_.api_key_file, count);
}

void RouterServer::SweepLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!sweeper_stop_) {
    lock.unlock();
    auto now = Clock::now();
    ReloadApiKeysIfChanged();
    registry_->Sweep(now);
    v1::GetServerInfoResponse info;
    registry_->FillServerInfo(&info, now);
    metrics_->Update(info, registry_->workers_lost_total(), registry_->groups_formed_total());
    lock.lock();
    // Not while shutting down: workers then exit on purpose.
    if (!shutdown_started_) {
      lock.unlock();
      RestartExitedLocalWorkers();
      lock.lock();
    }
    cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return sweeper_stop_; });
  }
}

void RouterServer::Shutdown(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_started_) return;
    shutdown_started_ = true;
  }
  if (server_) {
    LOG_INFO("shutting down: {}", reason);
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->GetHealthCheckService()->SetServingStatus(kClientServiceName, false);
  }
  // In-flight requests finish (new ones are refused) while the workers and
  // their liveness checks keep running.
  if (engine_) {
    EngineStats stats = engine_->Stats();
    if (stats.running + stats.waiting > 0) {
      LOG_INFO("draining {} request(s) (up to {} s)", stats.running + stats.waiting,
               options_.drain_timeout.count());
    }
    engine_->Drain(std::chrono::duration_cast<std::chrono::milliseconds>(options_.drain_timeout));
  }
  http_.reset();  // its handlers' streams ended with the drain
  {
    std::lock_guard<std::mutex> lock(mu_);
    sweeper_stop_ = true;
  }
  cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
  // Start() may have failed half-way: everything below is optional.
  if (registry_) registry_->ShutdownAll(reason);
  auto deadline = std::chrono::steady_clock::now() + options_.drain_timeout;
  // Local workers exit on the Shutdown message; SIGTERM (then SIGKILL) only
  // those that have not within the drain timeout.
  for (LocalWorker& worker : local_workers_) {
    Subprocess& child = worker.process;
    if (!child.running()) continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    std::optional<int> code = child.Wait(std::max(left, std::chrono::milliseconds(0)));
    if (!code) code = child.Terminate(std::chrono::seconds(2));
    LOG_INFO("local worker pid {} exited with code {}", child.pid(), *code);
  }
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (control_server_) {
    control_server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_done_ = true;
  }
  cv_.notify_all();
}

absl::Status RouterServer::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return shutdown_done_; });
  return exit_status_;
}

}  // namespace epserve::router
