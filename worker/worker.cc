#include "worker/worker.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/load_format.h"
#include "common/logging.h"
#include "common/placement.h"
#include "common/rpc/grpc_status.h"
#include "common/status.h"
#include "kernels/registry.h"
#include "worker/comm/alltoall_check.h"
#include "worker/comm/communicator_factory.h"
#include "worker/models/attention/attention.h"
#include "worker/moe/slot_dispatcher.h"
#include "worker/weights/model_loader.h"
#include "worker/worker_metrics.h"

namespace epserve::worker {

using control::v1::RouterMessage;
using control::v1::WorkerMessage;

Worker::Worker(WorkerOptions options) : options_(std::move(options)) {}

Worker::~Worker() { Stop("worker destroyed"); }

absl::StatusOr<std::unique_ptr<Worker>> Worker::Create(const WorkerOptions& options) {
  std::unique_ptr<Worker> self(new Worker(options));
  absl::StatusOr<kernels::DeviceProperties> device = kernels::QueryDevice(options.device);
  if (!device.ok()) return Annotate(device.status(), "--device");
  self->device_ = *device;
  self->metrics_registry_ = std::make_shared<prometheus::Registry>();
  self->metrics_ = std::make_unique<WorkerMetrics>(*self->metrics_registry_);
  if (options.metrics_listen) {
    auto server = MetricsServer::Start(*options.metrics_listen, self->metrics_registry_);
    if (!server.ok()) return Annotate(server.status(), "--metrics-listen");
    self->metrics_server_ = std::move(*server);
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                   rpc::MakeChannelCredentials(options.control_tls, "--tls"));
  self->control_ =
      std::make_unique<ControlClient>(options.router_address, options.cluster_secret, credentials);
  return self;
}

void Worker::Stop(const std::string& reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return;
    shutdown_ = true;
    stopping_ = true;
    stop_reason_ = reason;
  }
  cv_.notify_all();
  std::lock_guard<std::mutex> lock(stream_mu_);
  if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
}

void Worker::Send(const WorkerMessage& message) {
  std::lock_guard<std::mutex> lock(stream_mu_);
  if (stream_ != nullptr) stream_->Write(message);
}

absl::Status Worker::Run() {
  int rank = options_.requested_rank;
  while (true) {
    bool router_lost = false;
    absl::Status status = RunSession(rank, &router_lost);
    if (!router_lost) return status;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shutdown_) return absl::OkStatus();
      stopping_ = false;
      inbox_.clear();
    }
    rank = static_cast<int>(registration_.rank());
    LOG_WARN("{}; registering again as rank {} (weights kept) for up to {} s", status.message(),
             rank,
             std::chrono::duration_cast<std::chrono::seconds>(options_.register_retry).count());
  }
}

control::v1::RegisterRequest Worker::MakeRegisterRequest(int requested_rank) const {
  control::v1::RegisterRequest req;
  req.set_protocol_version(options_.protocol_version);
  req.set_hostname(LocalHostName());
  req.set_pid(static_cast<uint32_t>(getpid()));
  v1::DeviceInfo* dev = req.mutable_device();
  dev->set_device(device_.spec.ToString());
  dev->set_name(device_.name);
  dev->set_total_memory_bytes(device_.total_memory_bytes);
  dev->set_free_memory_bytes(device_.free_memory_bytes);
  dev->set_compute_units(device_.compute_units);
  dev->set_compute_capability(device_.compute_capability);
  req.mutable_capabilities()->add_collective_backends("gloo");
  if (device_.spec.type == kernels::DeviceType::kCuda && comm::NcclBuilt()) {
    req.mutable_capabilities()->add_collective_backends("nccl");
  }
  req.mutable_capabilities()->add_dtypes("float32");
  if (metrics_server_) req.set_metrics_address(metrics_server_->address().ToString());
  req.set_requested_rank(requested_rank);
  return req;
}

absl::Status Worker::RunSession(int requested_rank, bool* router_lost) {
  *router_lost = false;
  ASSIGN_OR_RETURN(registration_, control_->Register(MakeRegisterRequest(requested_rank),
                                                     options_.register_retry));
  SetLogRole(absl::StrCat("worker-", registration_.rank()));
  metrics_->rank_.Set(registration_.rank());
  LOG_INFO("registered with router {} as {} (rank {} of {}, device {}, collectives {})",
           control_->router_address(), registration_.worker_id(), registration_.rank(),
           registration_.world_size(), device_.spec.ToString(),
           registration_.collective_backend().empty() ? std::string("chosen per group")
                                                      : registration_.collective_backend());

  grpc::ClientContext ctx;
  auto stream = control_->stub().Connect(&ctx);
  {
    std::lock_guard<std::mutex> lock(stream_mu_);
    stream_ctx_ = &ctx;
    stream_ = stream.get();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) ctx.TryCancel();
  }
  WorkerMessage hello;
  hello.mutable_hello()->set_worker_id(registration_.worker_id());
  Send(hello);

  std::thread heartbeat([this] {
    HeartbeatLoop(std::chrono::milliseconds(registration_.heartbeat_interval_ms()));
  });
  std::thread executor([this] { ExecutorLoop(); });

  std::string shutdown_reason;
  RouterMessage msg;
  while (stream->Read(&msg)) {
    if (msg.has_shutdown()) {
      shutdown_reason = msg.shutdown().reason();
      break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    inbox_.push_back(std::move(msg));
    cv_.notify_all();
  }
  bool stop_requested;
  std::string stop_reason;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_requested = stopping_;
    stop_reason = stop_reason_;
    stopping_ = true;
  }
  cv_.notify_all();
  heartbeat.join();
  executor.join();
  {
    std::lock_guard<std::mutex> lock(stream_mu_);
    stream_ = nullptr;
    stream_ctx_ = nullptr;
  }
  ctx.TryCancel();
  absl::Status end = rpc::FromGrpc(stream->Finish());
  comm_.reset();
  if (!shutdown_reason.empty()) {
    LOG_INFO("router asked this worker to shut down: {}", shutdown_reason);
    return absl::OkStatus();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fatal_error_.empty()) return absl::FailedPreconditionError(fatal_error_);
  }
  if (stop_requested) {
    LOG_INFO("stopping: {}", stop_reason);
    return absl::OkStatus();
  }
  *router_lost = true;
  return absl::UnavailableError(absl::StrCat("lost the step stream to router ",
                                             control_->router_address(), ": ",
                                             end.ok() ? "closed by router" : end.message()));
}

absl::Status Worker::EnsureModel() {
  const bool same =
      executor_ != nullptr && weights_ != nullptr && loaded_for_.rank() == registration_.rank() &&
      loaded_for_.world_size() == registration_.world_size() &&
      loaded_for_.plan().SerializeAsString() == registration_.plan().SerializeAsString();
  if (same) {
    LOG_INFO("the router's plan is the one the weights were loaded for: kept ({} bytes)",
             loaded_message_.model_loaded().weight_bytes());
    executor_->ReleaseAll();  // the old router's requests are gone with it
    Send(loaded_message_);
    return absl::OkStatus();
  }
  if (executor_ != nullptr) LOG_INFO("the router's plan changed: loading the weights again");
  DropExecutor();
  weights_.reset();
  backend_.reset();
  return LoadModel();
}

void Worker::HeartbeatLoop(std::chrono::milliseconds interval) {
  WorkerMessage beat;
  beat.mutable_heartbeat();
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, interval, [this] { return stopping_; })) {
    lock.unlock();
    Send(beat);
    lock.lock();
  }
}

namespace {

// Device memory a step's activations may take at most, estimated from the
// shapes: the largest step (max_tokens_per_step tokens through the widest
// layer, MoE rows top_k times over), its logits rows, the graphs' logits
// buffer, and a fixed allowance for the CUDA context, cuBLAS and graph pools.
uint64_t ActivationReserveBytes(const ModelDescription& desc,
                                const control::v1::KvCacheConfig& kv, int64_t graph_batch) {
  const uint64_t tokens = kv.max_tokens_per_step() > 0 ? kv.max_tokens_per_step() : 2048;
  const uint64_t rows = kv.max_running_requests() > 0 ? kv.max_running_requests() : 256;
  const uint64_t h = static_cast<uint64_t>(desc.hidden_size);
  const uint64_t q = static_cast<uint64_t>(desc.num_heads * desc.head_dim);
  const uint64_t kvw = static_cast<uint64_t>(desc.num_kv_heads * desc.head_dim);
  const uint64_t dense = static_cast<uint64_t>(desc.intermediate_size);
  const uint64_t moe = desc.moe.num_experts > 0
                           ? static_cast<uint64_t>(desc.moe.routing.top_k) *
                                 (3 * static_cast<uint64_t>(desc.moe.moe_intermediate_size) + 3 * h)
                           : 0;
  const uint64_t per_token = 4 * (6 * h + 3 * q + 2 * kvw + std::max(3 * dense, moe));
  const uint64_t vocab = static_cast<uint64_t>(desc.vocab_size);
  return tokens * per_token + 2 * rows * vocab * 4 +
         static_cast<uint64_t>(std::max<int64_t>(graph_batch, 0)) * vocab * 4 + (768ull << 20);
}

}  // namespace

absl::Status Worker::LoadModel() {
  const control::v1::ModelPlan& plan = registration_.plan();
  auto start = std::chrono::steady_clock::now();
  weights::LoadOptions options;
  options.dtype = plan.dtype().empty() ? "auto" : plan.dtype();
  ASSIGN_OR_RETURN(options.format, checkpoint::ParseLoadFormat(
                                       plan.load_format().empty() ? "auto" : plan.load_format()));
  options.expert_to_rank.assign(plan.expert_placement().expert_to_rank().begin(),
                                plan.expert_placement().expert_to_rank().end());
  options.rank = registration_.rank();
  options.seed = plan.seed();
  if (plan.redundant_experts()) {
    options.extra_experts =
        RedundantExperts(options.expert_to_rank, registration_.world_size(), options.rank);
  }
  exec_placement_ = options.expert_to_rank;
  exec_rank_ = registration_.rank();
  exec_world_ = registration_.world_size();
  load_options_ = options;
  options.backend = options_.device.type == kernels::DeviceType::kCpu ? "cpu" : "cuda";
  kernels::BackendOptions backend_options;
  backend_options.cpu_threads = options_.cpu_threads;
  ASSIGN_OR_RETURN(
      weights::LoadedModel model,
      weights::LoadModel(plan.model_path(), options_.device, backend_options, std::move(options)));
  const ModelDescription& desc = model.desc;
  backend_ = std::move(model.backend);
  weights_ = std::move(model.weights);
  load_options_.device = backend_.get();
  const weights::LoadReport& report = weights_->report();
  base_experts_ = report.local_experts;
  WorkerMessage msg;
  control::v1::ModelLoaded* m = msg.mutable_model_loaded();
  m->set_weight_dtype(DataTypeName(report.weight_dtype));
  m->set_weight_bytes(report.bytes_held);
  m->set_bytes_read(report.bytes_read);
  for (int e : report.local_experts) m->add_local_experts(static_cast<uint32_t>(e));
  if (absl::Status s = CreateExecutor(m); !s.ok()) return s;
  m->set_load_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  metrics_->weight_bytes_.Set(static_cast<double>(report.bytes_held));
  LOG_INFO("loaded {} ({} tensors, {} bytes {}, {} local experts) in {:.2f} s", desc.architecture,
           report.num_tensors, report.bytes_held, DataTypeName(report.weight_dtype),
           report.local_experts.size(), m->load_seconds());
  loaded_for_ = registration_;
  loaded_message_ = msg;
  Send(msg);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Worker::GpuKvBlocks(const ModelDescription& desc,
                                             const control::v1::KvCacheConfig& kv,
                                             const step::StepExecutorOptions& options) const {
  ASSIGN_OR_RETURN(kernels::DeviceProperties props, kernels::QueryDevice(options_.device));
  const uint64_t total = props.total_memory_bytes;
  const uint64_t used = total - props.free_memory_bytes;  // weights, context, other processes
  const uint64_t reserve = ActivationReserveBytes(desc, kv, options_.cuda_graph_max_batch);
  const uint64_t allowed = static_cast<uint64_t>(options_.gpu_memory_utilization *
                                                 static_cast<double>(total));
  const kv_cache::KvCacheShape shape = models::KvCacheShapeOf(desc);
  const uint64_t per_block = step::KvBlockBytes(shape, options.block_size, options.kv_cache_dtype);
  const uint64_t budget = allowed > used + reserve ? allowed - used - reserve : 0;
  ASSIGN_OR_RETURN(int64_t blocks, step::KvBlocksForBudget(shape, options.block_size,
                                                           options.kv_cache_dtype, budget));
  const auto mib = [](uint64_t b) { return absl::StrCat(b >> 20, " MiB"); };
  if (blocks == 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        props.spec.ToString(), ": no memory for a single KV block: --gpu-memory-utilization ",
        options_.gpu_memory_utilization, " allows ", mib(allowed), " of ", mib(total),
        "; in use after loading the weights: ", mib(used), "; activations reserve ", mib(reserve),
        "; one block of ", options.block_size, " tokens needs ", per_block, " bytes"));
  }
  LOG_INFO("{}: KV cache gets {} of {} ({} allowed by --gpu-memory-utilization {}, {} in use, "
           "{} reserved for activations)",
           props.spec.ToString(), mib(static_cast<uint64_t>(blocks) * per_block), mib(total),
           mib(allowed), options_.gpu_memory_utilization, mib(used), mib(reserve));
  return blocks;
}

absl::Status Worker::CreateExecutor(control::v1::ModelLoaded* loaded) {
  const ModelDescription& desc = weights_->desc();
  const control::v1::KvCacheConfig& kv = registration_.plan().kv_cache();
  step::StepExecutorOptions options;
  options.block_size = kv.block_size() == 0 ? 16 : kv.block_size();
  if (!kv.dtype().empty() && kv.dtype() != "auto") {
    ASSIGN_OR_RETURN(options.kv_cache_dtype, ParseDataType(kv.dtype()));
  }
  const kv_cache::KvCacheShape shape = models::KvCacheShapeOf(desc);
  if (kv.num_blocks() > 0) {
    options.num_blocks = kv.num_blocks();
  } else if (options_.device.type != kernels::DeviceType::kCpu &&
             options_.gpu_memory_utilization > 0.0) {
    ASSIGN_OR_RETURN(options.num_blocks, GpuKvBlocks(desc, kv, options));
  } else {
    ASSIGN_OR_RETURN(options.num_blocks,
                     step::KvBlocksForBudget(shape, options.block_size, options.kv_cache_dtype,
                                             options_.kv_cache_bytes));
    if (options.num_blocks == 0) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "--kv-cache-memory-mb: ", options_.kv_cache_bytes, " bytes hold no KV block (one block of ",
          options.block_size, " tokens takes ",
          step::KvBlockBytes(shape, options.block_size, options.kv_cache_dtype), " bytes)"));
    }
  }
  loaded->set_kv_block_size(static_cast<uint32_t>(options.block_size));
  loaded->set_kv_num_blocks(static_cast<uint32_t>(options.num_blocks));
  loaded->set_kv_cache_dtype(DataTypeName(options.kv_cache_dtype));
  if (options_.device.type != kernels::DeviceType::kCpu && !options_.enforce_eager) {
    options.graph_max_batch = std::min<int64_t>(options_.cuda_graph_max_batch,
                                                kv.max_running_requests() > 0
                                                    ? kv.max_running_requests()
                                                    : options_.cuda_graph_max_batch);
    options.graph_max_context = options_.cuda_graph_max_context;
  }
  // Expert parallelism: the experts are split over the ranks, and every MoE
  // layer exchanges token rows with the other ranks through the collective
  // group (bound when the group forms, see JoinGroup).
  std::unique_ptr<moe::TokenDispatcher> dispatcher;
  const std::vector<uint32_t>& owners = exec_placement_;
  if (desc.moe.num_experts > 0 && exec_world_ > 1 && !owners.empty()) {
    moe::SlotDispatcherOptions ep;
    ep.num_experts = desc.moe.num_experts;
    ep.top_k = desc.moe.routing.top_k;
    ep.hidden = desc.hidden_size;
    ep.expert_to_rank.assign(owners.begin(), owners.end());
    const bool gpu = options_.device.type != kernels::DeviceType::kCpu;
    // CPU workers are the float32 reference; GPU workers send bfloat16 rows
    // (half the bytes) and exchange decode steps in fixed-capacity slots
    // sized by the largest decode graph, so those steps need no host reads.
    ep.wire_dtype = gpu ? DataType::kBFloat16 : DataType::kFloat32;
    ep.decode_capacity = gpu ? std::max<int64_t>(options.graph_max_batch, 1) : 0;
    if (gpu && options.graph_max_batch <= 0) ep.decode_capacity = options_.cuda_graph_max_batch;
    for (const LayerSpec& layer : desc.layers) ep.num_layers += layer.feed_forward.is_moe() ? 1 : 0;
    ASSIGN_OR_RETURN(std::unique_ptr<moe::SlotTokenDispatcher> slots,
                     moe::SlotTokenDispatcher::Create(*backend_, std::move(ep), nullptr));
    moe_metrics_ = std::make_unique<MoeMetrics>(*metrics_registry_, desc.moe.num_experts);
    slots->SetObserver(moe_metrics_.get());
    ep_dispatcher_ = slots.get();
    dispatcher = std::move(slots);
    options.collective_moe = true;
  }
  ASSIGN_OR_RETURN(executor_, step::StepExecutor::Create(*weights_, *backend_, options,
                                                         std::move(dispatcher)));
  if (ep_dispatcher_ != nullptr) {
    LOG_INFO("expert parallel: {} of {} experts local, all-to-all over the collective group",
             weights_->report().local_experts.size(), desc.moe.num_experts);
  }
  LOG_INFO("KV cache: {} blocks of {} tokens ({}, {} bytes)", options.num_blocks,
           options.block_size, DataTypeName(options.kv_cache_dtype),
           static_cast<uint64_t>(options.num_blocks) *
               step::KvBlockBytes(shape, options.block_size, options.kv_cache_dtype));
  return absl::OkStatus();
}

void Worker::ExecutorLoop() {
  if (absl::Status loaded = EnsureModel(); !loaded.ok()) {
    LOG_ERROR("cannot load the model: {}", loaded);
    WorkerMessage fatal;
    fatal.mutable_fatal()->set_error(std::string(loaded.message()));
    Send(fatal);
    // The router drops this worker and closes the stream; stop anyway if it
    // does not within a few seconds.
    std::unique_lock<std::mutex> lock(mu_);
    fatal_error_ = std::string(loaded.message());
    if (!cv_.wait_for(lock, std::chrono::seconds(5), [this] { return stopping_; })) {
      lock.unlock();
      Stop("model failed to load");
    }
    return;
  }
  while (true) {
    RouterMessage msg;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !inbox_.empty(); });
      if (stopping_) return;
      msg = std::move(inbox_.front());
      inbox_.pop_front();
      // Only the newest JoinGroup matters: older groups are already gone.
      if (msg.has_join_group()) {
        for (const RouterMessage& later : inbox_) {
          if (later.has_join_group()) msg.Clear();
        }
      }
    }
    if (msg.has_join_group()) JoinGroup(msg.join_group());
    if (msg.has_step_plan()) ExecuteStep(msg.step_plan());
  }
}

void Worker::JoinGroup(const control::v1::JoinGroup& join) {
  if (ep_dispatcher_ != nullptr) (void)ep_dispatcher_->SetCommunicator(nullptr);
  comm_.reset();  // leave the previous group first
  auto start = std::chrono::steady_clock::now();
  comm::CommunicatorOptions comm_options;
  // The router names the group's backend in JoinGroup; older routers only
  // at registration.
  comm_options.backend = join.collective_backend().empty() ? registration_.collective_backend()
                                                           : join.collective_backend();
  if (device_.spec.type == kernels::DeviceType::kCuda) {
    comm_options.cuda_device = device_.spec.ordinal;
  }
  comm_options.rank = static_cast<int>(join.rank());
  comm_options.world_size = static_cast<int>(join.world_size());
  comm_options.hostname = options_.collective_host;
  comm_options.key_prefix = absl::StrCat("epoch/", join.epoch(), "/");
  comm_options.timeout = std::chrono::milliseconds(registration_.collective_timeout_ms());
  GrpcRendezvous rendezvous(&control_->stub());
  absl::StatusOr<std::unique_ptr<comm::Communicator>> comm =
      comm::CreateCommunicator(comm_options, rendezvous);
  WorkerMessage reply;
  control::v1::GroupReady* ready = reply.mutable_group_ready();
  ready->set_epoch(join.epoch());
  absl::StatusOr<comm::AllToAllCheckResult> check =
      comm.ok() ? comm::RunAllToAllCheck(**comm) : comm.status();
  if (check.ok()) {
    if (absl::Status placed = ApplyGroupPlacement(join, ready); !placed.ok()) check = placed;
  }
  if (check.ok() && ep_dispatcher_ != nullptr) {
    absl::Status bound = ep_dispatcher_->SetCommunicator(comm->get());
    if (!bound.ok()) check = bound;
  }
  if (check.ok()) {
    comm_ = std::move(*comm);
    ready->set_ok(true);
    ready->set_alltoall_bytes(check->bytes_sent + check->bytes_received);
    metrics_->joins_ok_.Increment();
    metrics_->warmup_bytes_.Set(static_cast<double>(ready->alltoall_bytes()));
    LOG_INFO("joined collective group epoch {} as rank {}/{} ({}) in {} ms; warm-up "
             "all-to-all-v moved {} bytes",
             join.epoch(), join.rank(), join.world_size(), comm_->backend(),
             std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::steady_clock::now() - start)
                 .count(),
             ready->alltoall_bytes());
  } else {
    ready->set_ok(false);
    ready->set_error(std::string(check.status().message()));
    metrics_->joins_error_.Increment();
    LOG_ERROR("joining collective group epoch {} failed: {}", join.epoch(),
              check.status().ToString());
  }
  Send(reply);
}

void Worker::DropExecutor() {
  ep_dispatcher_ = nullptr;  // owned by the executor's model
  executor_.reset();
  moe_metrics_.reset();
  exec_placement_.clear();
}

absl::Status Worker::ApplyGroupPlacement(const control::v1::JoinGroup& join,
                                         control::v1::GroupReady* ready) {
  const auto& table = registration_.plan().expert_placement().expert_to_rank();
  if (weights_ == nullptr || table.empty()) return absl::OkStatus();
  std::vector<uint32_t> placement(join.expert_placement().expert_to_rank().begin(),
                                  join.expert_placement().expert_to_rank().end());
  uint32_t rank = join.rank(), world = join.world_size();
  if (placement.empty()) {  // an older router: the plan's placement
    placement.assign(table.begin(), table.end());
    rank = registration_.rank();
    world = registration_.world_size();
  }
  if (placement.size() != static_cast<size_t>(table.size())) {
    return absl::InvalidArgumentError(absl::StrCat("JoinGroup: expert placement covers ",
                                                   placement.size(), " experts, the plan's ",
                                                   table.size()));
  }
  std::vector<int> needed;
  for (size_t e = 0; e < placement.size(); ++e) {
    if (placement[e] == rank) needed.push_back(static_cast<int>(e));
  }
  const auto report_experts = [&](uint32_t loaded) {
    ready->mutable_local_experts()->Assign(needed.begin(), needed.end());
    ready->set_experts_loaded(loaded);
  };
  if (executor_ != nullptr && placement == exec_placement_ && rank == exec_rank_ &&
      world == exec_world_) {
    report_experts(0);
    return absl::OkStatus();
  }
  // The old executor goes first: its KV cache and device weights free the
  // memory the experts to load and the new cache take.
  DropExecutor();
  auto start = std::chrono::steady_clock::now();
  std::vector<int> keep;
  std::set_union(base_experts_.begin(), base_experts_.end(), needed.begin(), needed.end(),
                 std::back_inserter(keep));
  weights_->DropExperts(keep);
  const std::vector<int>& held = weights_->report().local_experts;
  std::vector<int> missing;
  std::set_difference(needed.begin(), needed.end(), held.begin(), held.end(),
                      std::back_inserter(missing));
  absl::Status status = weights::AddExperts(registration_.plan().model_path(), load_options_,
                                            missing, weights_.get());
  control::v1::ModelLoaded rebuilt;
  if (status.ok()) {
    exec_placement_ = placement;
    exec_rank_ = rank;
    exec_world_ = world;
    status = CreateExecutor(&rebuilt);
  }
  if (!status.ok()) {
    DropExecutor();  // a half-built one (dispatcher, metrics) included
    no_executor_reason_ =
        absl::StrCat("cannot serve group epoch ", join.epoch(), ": ", status.message());
    return status;
  }
  no_executor_reason_.clear();
  metrics_->weight_bytes_.Set(static_cast<double>(weights_->report().bytes_held));
  metrics_->experts_loaded_.Increment(static_cast<double>(missing.size()));
  ready->set_kv_num_blocks(rebuilt.kv_num_blocks());
  report_experts(static_cast<uint32_t>(missing.size()));
  LOG_INFO(
      "group epoch {}: serving {} expert(s) as group rank {}/{} ({} loaded, {} held) in {:.2f} s",
      join.epoch(), needed.size(), rank, world, missing.size(), held.size(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return absl::OkStatus();
}

void Worker::ExecuteStep(const control::v1::StepPlan& plan) {
  WorkerMessage reply;
  if (executor_ == nullptr) {
    reply.mutable_step_result()->set_step_id(plan.step_id());
    reply.mutable_step_result()->set_error(no_executor_reason_);
    Send(reply);
    return;
  }
  for (const std::string& id : plan.release_request_ids()) executor_->Release(id);
  if (plan.sequences_size() == 0) metrics_->idle_steps_.Increment();
  absl::StatusOr<control::v1::StepResult> result = executor_->Execute(plan);
  if (moe_metrics_ != nullptr) moe_metrics_->EndStep();
  if (result.ok()) {
    metrics_->step_seconds_.Observe(result->step_seconds());
    *reply.mutable_step_result() = std::move(*result);
    metrics_->steps_ok_.Increment();
  } else {
    LOG_ERROR("step {} failed: {}", plan.step_id(), result.status().ToString());
    reply.mutable_step_result()->set_step_id(plan.step_id());
    reply.mutable_step_result()->set_error(std::string(result.status().message()));
    metrics_->steps_error_.Increment();
  }
  Send(reply);
}

}  // namespace epserve::worker
