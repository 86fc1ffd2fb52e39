// CudaBackend: device memory, copies, the device error word, graph capture
// and the cuBLAS GEMMs. The other ops are in cuda_ops.cu.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/cuda/cuda_status.h"
#include "common/status.h"
#include "kernels/cuda/cuda_backend_impl.cuh"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/skinny_gemm.cuh"

namespace epserve::kernels::cuda {
namespace {

// Device memory from the stream-ordered pool, freed on the context's stream
// (see DeviceContext for frees during a capture).
class DeviceStorage final : public Storage {
 public:
  DeviceStorage(void* data, size_t bytes, std::shared_ptr<DeviceContext> ctx, uint64_t capture_id)
      : data_(data), bytes_(bytes), ctx_(std::move(ctx)), capture_id_(capture_id) {}
  ~DeviceStorage() override {
    if (data_ == nullptr) return;
    if (ctx_->capturing && capture_id_ != ctx_->capture_id) {
      ctx_->deferred_frees.push_back(data_);
      return;
    }
    cudaFreeAsync(data_, ctx_->stream);
  }
  const void* data() const override { return data_; }
  void* mutable_data() override { return data_; }
  size_t size_bytes() const override { return bytes_; }
  DeviceSpec device() const override { return DeviceSpec{DeviceType::kCuda, ctx_->ordinal}; }

 private:
  void* data_;
  size_t bytes_;
  std::shared_ptr<DeviceContext> ctx_;
  uint64_t capture_id_;
};

class PinnedStorage final : public Storage {
 public:
  PinnedStorage(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  ~PinnedStorage() override { cudaFreeHost(data_); }
  const void* data() const override { return data_; }
  void* mutable_data() override { return data_; }
  size_t size_bytes() const override { return bytes_; }
  DeviceSpec device() const override { return DeviceSpec{}; }  // host memory

 private:
  void* data_;
  size_t bytes_;
};

class CudaGraph final : public Backend::Graph {
 public:
  CudaGraph(cudaGraph_t graph, cudaGraphExec_t exec, cudaStream_t stream)
      : graph_(graph), exec_(exec), stream_(stream) {}
  ~CudaGraph() override {
    cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
  }
  absl::Status Replay() override {
    RETURN_IF_CUDA_ERROR(cudaGraphLaunch(exec_, stream_));
    return absl::OkStatus();
  }

 private:
  cudaGraph_t graph_;
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
};

std::string DeviceErrorNames(uint32_t bits) {
  std::vector<std::string> names;
  if (bits & kErrEmbeddingId) names.push_back("Embedding: a token id outside the table");
  if (bits & kErrKvSlot) names.push_back("WriteKvCache: a slot outside the cache");
  if (bits & kErrBlockTable) {
    names.push_back("PagedAttention: a block table entry or context length outside the cache");
  }
  if (bits & kErrExpertId) names.push_back("MoePermute: an expert id outside [0, E)");
  if (bits & kErrMissingExpert) {
    names.push_back("GroupedExpertMatMul: rows routed to an expert this worker does not hold");
  }
  if (bits & kErrPosition) names.push_back("Rope: a negative position");
  if (bits & kErrPrologueSlot) names.push_back("AttentionPrologue: a slot outside the cache");
  if (bits & kErrProloguePosition) names.push_back("AttentionPrologue: a negative position");
  if (bits & kErrCopyRowsBlock) names.push_back("CopyRows: a row block outside src or dst");
  if (bits & kErrEpPackExpertId) names.push_back("EpDispatchPack: an expert id outside [0, E)");
  if (bits & kErrEpPackRank) {
    names.push_back("EpDispatchPack: an expert_to_rank entry outside [0, W)");
  }
  if (bits & kErrEpUnpackExpertId) {
    names.push_back("EpDispatchUnpack: a route expert id outside [-1, E)");
  }
  if (bits & kErrEpUnpackCount) {
    names.push_back("EpDispatchUnpack: a receive count outside [0, C]");
  }
  if (bits & kErrEpUnpackRows) {
    names.push_back("EpDispatchUnpack: more expert rows than rows.shape[0]");
  }
  if (bits & kErrEpCombineRoute) {
    names.push_back(
        "EpCombinePack: a receive count outside [0, C] or a route row outside "
        "[-1, expert_out rows)");
  }
  if (bits & kErrEpCombineSlot) names.push_back("EpCombineUnpack: a token slot outside [-1, C)");
  return absl::StrJoin(names, "; ");
}

}  // namespace

DeviceContext::~DeviceContext() {
  if (stream != nullptr) {
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  }
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(
    const CudaBackendOptions& options) {
  // No driver / GPU, or an ordinal beyond the devices: the device query's
  // errors, which name the device count.
  RETURN_IF_ERROR(QueryCudaDevice(options.ordinal).status());
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->ctx_ = std::make_shared<DeviceContext>();
  b->ctx_->ordinal = options.ordinal;
  RETURN_IF_CUDA_ERROR(cudaSetDevice(options.ordinal));
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&b->ctx_->stream, cudaStreamNonBlocking));
  // Keep freed pool memory for reuse instead of returning it to the driver
  // at every synchronisation.
  cudaMemPool_t pool = nullptr;
  RETURN_IF_CUDA_ERROR(cudaDeviceGetDefaultMemPool(&pool, options.ordinal));
  uint64_t threshold = std::numeric_limits<uint64_t>::max();
  RETURN_IF_CUDA_ERROR(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  RETURN_IF_CUBLAS_ERROR(cublasCreate(&b->cublas_));
  RETURN_IF_CUBLAS_ERROR(cublasSetStream(b->cublas_, b->ctx_->stream));
  RETURN_IF_CUDA_ERROR(cudaMalloc(&b->cublas_workspace_, options.cublas_workspace_bytes));
  RETURN_IF_CUBLAS_ERROR(
      cublasSetWorkspace(b->cublas_, b->cublas_workspace_, options.cublas_workspace_bytes));
  RETURN_IF_CUBLAS_ERROR(cublasSetMathMode(b->cublas_, CUBLAS_DEFAULT_MATH));
  RETURN_IF_CUDA_ERROR(cudaMalloc(&b->errors_, sizeof(uint32_t)));
  RETURN_IF_CUDA_ERROR(cudaMemset(b->errors_, 0, sizeof(uint32_t)));
  return b;
}

CudaBackend::~CudaBackend() {
  if (ctx_ != nullptr) cudaStreamSynchronize(ctx_->stream);
  inv_freq_cache_.clear();
  expert_ptr_cache_.clear();
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (cublas_workspace_ != nullptr) cudaFree(cublas_workspace_);
  if (errors_ != nullptr) cudaFree(errors_);
  if (sample_args_copied_ != nullptr) cudaEventDestroy(sample_args_copied_);
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> b, CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(b));
}

absl::Status CudaBackend::CheckDeviceErrors() {
  uint32_t bits = 0;
  RETURN_IF_CUDA_ERROR(cudaMemcpy(&bits, errors_, sizeof(bits), cudaMemcpyDeviceToHost));
  if (bits == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(cudaMemset(errors_, 0, sizeof(uint32_t)));
  return absl::InvalidArgumentError(
      absl::StrCat("CUDA kernels rejected their input: ", DeviceErrorNames(bits)));
}

absl::Status CudaBackend::Synchronize() {
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s()));
  return CheckDeviceErrors();
}

absl::StatusOr<Tensor> CudaBackend::Empty(DataType dtype, std::vector<int64_t> shape) {
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Empty: shape: expected non-negative dimensions, found ", ShapeString(shape)));
    }
  }
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  // 256-byte granules keep every tensor aligned for vector loads.
  const size_t bytes = std::max<size_t>(256, (t.nbytes() + 255) / 256 * 256);
  void* p = nullptr;
  cudaError_t err = cudaMallocAsync(&p, bytes, s());
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    return absl::ResourceExhaustedError(absl::StrCat(
        "cuda:", ctx_->ordinal, ": cannot allocate ", bytes, " bytes for a ",
        ShapeString(t.shape), " ", DataTypeName(dtype), " tensor (", free_bytes, " of ",
        total_bytes, " bytes free): ", cudaGetErrorString(err)));
  }
  t.storage = std::make_shared<DeviceStorage>(p, bytes, ctx_,
                                              ctx_->capturing ? ctx_->capture_id : 0);
  return t;
}

absl::StatusOr<Tensor> CudaBackend::ToDevice(const Tensor& host) {
  if (!host.defined()) {
    return absl::InvalidArgumentError("ToDevice: host: expected a tensor, found an undefined one");
  }
  const DeviceSpec where = host.storage->device();
  if (where.type == DeviceType::kCuda && where.ordinal == ctx_->ordinal) return host;
  if (where.type != DeviceType::kCpu) {
    return absl::InvalidArgumentError(absl::StrCat("ToDevice: host: expected a host tensor, found one on ", where.ToString()));
  }
  ASSIGN_OR_RETURN(Tensor t, Empty(host.dtype, host.shape));
  if (host.nbytes() > 0) {
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(t.mutable_data(), host.data(), host.nbytes(),
                                         cudaMemcpyHostToDevice, s()));
    // The host tensor (maybe a mapped checkpoint) may go away after return.
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s()));
  }
  return t;
}

absl::StatusOr<std::shared_ptr<Storage>> CudaBackend::AllocateStagingHost(size_t bytes) {
  void* p = nullptr;
  RETURN_IF_CUDA_ERROR(cudaHostAlloc(&p, std::max<size_t>(bytes, 64), cudaHostAllocDefault));
  return std::shared_ptr<Storage>(new PinnedStorage(p, bytes));
}

absl::Status CudaBackend::CopyToStagingAsync(const Tensor& src, void* dst) {
  if (!src.defined() || dst == nullptr) {
    return absl::InvalidArgumentError("CopyToStagingAsync: expected a tensor and a destination");
  }
  if (src.nbytes() == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src.data(), src.nbytes(), cudaMemcpyDeviceToHost, s()));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyFromStagingAsync(const void* src, Tensor* dst) {
  if (dst == nullptr || !dst->defined() || src == nullptr) {
    return absl::InvalidArgumentError("CopyFromStagingAsync: expected a source and a tensor");
  }
  if (dst->nbytes() == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(dst->mutable_data(), src, dst->nbytes(), cudaMemcpyHostToDevice, s()));
  return absl::OkStatus();
}

absl::Status CudaBackend::EnqueueHostCall(void (*fn)(void*), void* arg) {
  RETURN_IF_CUDA_ERROR(cudaLaunchHostFunc(s(), fn, arg));
  return absl::OkStatus();
}

namespace {

// CUDA events on the backend's stream. Inside a stream capture a mark is
// recorded as an external event node, so every replay of the graph takes it.
class CudaTimestamps final : public Backend::Timestamps {
 public:
  CudaTimestamps(cudaStream_t stream, std::vector<cudaEvent_t> events)
      : stream_(stream), events_(std::move(events)), recorded_(events_.size(), false) {}
  ~CudaTimestamps() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }

  absl::Status Record(int i) override {
    RETURN_IF_ERROR(Check("Record", i));
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    RETURN_IF_CUDA_ERROR(cudaStreamIsCapturing(stream_, &capture));
    const unsigned flags =
        capture == cudaStreamCaptureStatusActive ? cudaEventRecordExternal : cudaEventRecordDefault;
    RETURN_IF_CUDA_ERROR(cudaEventRecordWithFlags(events_[static_cast<size_t>(i)], stream_, flags));
    recorded_[static_cast<size_t>(i)] = true;
    return absl::OkStatus();
  }

  absl::StatusOr<double> Seconds(int from, int to) override {
    for (int i : {from, to}) {
      RETURN_IF_ERROR(Check("Seconds", i));
      if (!recorded_[static_cast<size_t>(i)]) {
        return absl::FailedPreconditionError(
            absl::StrCat("Timestamps::Seconds: mark ", i, " was never recorded"));
      }
      const cudaError_t q = cudaEventQuery(events_[static_cast<size_t>(i)]);
      if (q == cudaErrorNotReady) {
        (void)cudaGetLastError();  // keep it out of the next launch's status
        return absl::UnavailableError(
            absl::StrCat("Timestamps::Seconds: the stream has not reached mark ", i));
      }
      RETURN_IF_ERROR(Cleared(q, "cudaEventQuery"));
    }
    float ms = 0.0f;
    RETURN_IF_ERROR(Cleared(cudaEventElapsedTime(&ms, events_[static_cast<size_t>(from)],
                                                 events_[static_cast<size_t>(to)]),
                            "cudaEventElapsedTime"));
    return static_cast<double>(ms) * 1e-3;
  }

 private:
  absl::Status Check(const char* what, int i) const {
    if (i < 0 || i >= static_cast<int>(events_.size())) {
      return absl::OutOfRangeError(
          absl::StrCat("Timestamps::", what, ": mark ", i, " outside [0, ", events_.size(), ")"));
    }
    return absl::OkStatus();
  }

  // A failed timing call (e.g. a mark captured into a graph that has not
  // been replayed yet) is not the next kernel launch's error: clear it.
  static absl::Status Cleared(cudaError_t err, const char* call) {
    if (err == cudaSuccess) return absl::OkStatus();
    (void)cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("Timestamps::Seconds: ", call, ": ", cudaGetErrorString(err)));
  }

  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
  std::vector<bool> recorded_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend::Timestamps>> CudaBackend::CreateTimestamps(int n) {
  if (n < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateTimestamps: n: expected a count >= 0, found ", n));
  }
  std::vector<cudaEvent_t> events;
  events.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    cudaEvent_t e = nullptr;
    const cudaError_t err = cudaEventCreate(&e);
    if (err != cudaSuccess) {
      for (cudaEvent_t made : events) cudaEventDestroy(made);
      RETURN_IF_CUDA_ERROR(err);
    }
    events.push_back(e);
  }
  return std::unique_ptr<Timestamps>(new CudaTimestamps(s(), std::move(events)));
}

absl::Status CudaBackend::FillDummy(Tensor* t, uint64_t state0, float half_width, bool ones) {
  if (t == nullptr || !t->defined() || t->mutable_data() == nullptr) {
    return absl::InvalidArgumentError("FillDummy: t: expected a writable tensor");
  }
  const DeviceSpec where = t->storage->device();
  if (where.type == DeviceType::kCpu) return FillDummyHost(t, state0, half_width, ones);
  if (where.ordinal != ctx_->ordinal) {
    return absl::InvalidArgumentError(absl::StrCat("FillDummy: t: expected a tensor on ",
                                                   device().ToString(), ", found one on ",
                                                   where.ToString()));
  }
  ASSIGN_OR_RETURN(Elem elem, ElemOf(t->dtype));
  return cuda::FillDummy(t->mutable_data(), elem, t->numel(), state0, half_width, ones, s());
}

absl::Status CudaBackend::CopyFromHostImpl(const void* src, size_t bytes, Tensor* dst) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(dst->mutable_data(), src, bytes, cudaMemcpyHostToDevice, s()));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHostImpl(const Tensor& src, void* dst, size_t bytes) {
  if (bytes > 0) {
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(dst, src.data(), bytes, cudaMemcpyDeviceToHost, s()));
  }
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(s()));
  return CheckDeviceErrors();
}

absl::StatusOr<Tensor> CudaBackend::Scratch(size_t bytes) {
  return Empty(DataType::kUInt8, {static_cast<int64_t>(std::max<size_t>(bytes, 1))});
}

absl::StatusOr<std::unique_ptr<Backend::Graph>> CudaBackend::Capture(
    const std::function<absl::Status()>& body) {
  DeviceContext& cs = *ctx_;
  if (cs.capturing) return absl::FailedPreconditionError("Capture: a capture is already running");
  cs.capturing = true;
  ++cs.capture_id;
  cudaGraph_t graph = nullptr;
  const absl::Status status = [&]() -> absl::Status {
    RETURN_IF_CUDA_ERROR(cudaStreamBeginCapture(s(), cudaStreamCaptureModeThreadLocal));
    const absl::Status body_status = body();
    const cudaError_t end = cudaStreamEndCapture(s(), &graph);
    RETURN_IF_ERROR(body_status);
    RETURN_IF_CUDA_ERROR(end);
    return absl::OkStatus();
  }();
  cs.capturing = false;
  for (void* p : cs.deferred_frees) cudaFreeAsync(p, s());
  cs.deferred_frees.clear();
  cudaGetLastError();
  if (!status.ok()) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    return status;
  }
  cudaGraphExec_t exec = nullptr;
  if (cudaError_t err = cudaGraphInstantiate(&exec, graph, 0); err != cudaSuccess) {
    cudaGraphDestroy(graph);
    return cuda_internal::CudaError(err, "cudaGraphInstantiate", __FILE__, __LINE__);
  }
  return std::unique_ptr<Graph>(new CudaGraph(graph, exec, s()));
}

// ---- cuBLAS GEMMs ----

bool CudaBackend::Supports(LinearOp /*op*/, WeightFormat format) const {
  switch (format) {
    case WeightFormat::kUnquantized:
      return true;
    case WeightFormat::kFp8Block:  // no GPU kernels yet: refused at load, naming the layer
    case WeightFormat::kAwqInt4:
      return false;
  }
  return false;
}

// Up to 4 rows the skinny kernel beats cuBLAS (measured: Qwen3-8B decode
// at batch 8 was slower through it than batch 64 through cuBLAS).
constexpr int64_t kSkinnyRows = 4;

// Decode-sized weights of one type sharing x: one skinny launch, each output
// bit-identical to its MatMul. Anything else: MatMul per weight.
absl::Status CudaBackend::MatMulSharedImpl(const Tensor& x,
                                           absl::Span<const LinearWeight* const> linears,
                                           absl::Span<const Tensor* const> biases,
                                           absl::Span<Tensor* const> ys) {
  // Unquantized [N, K] weights (Supports); at most 4 (checked by MatMulShared).
  const Tensor* w_tensors[4] = {};
  for (size_t i = 0; i < linears.size(); ++i) w_tensors[i] = &linears[i]->weight;
  const absl::Span<const Tensor* const> ws(w_tensors, linears.size());
  const int64_t t = x.shape[0], k = x.shape[1];
  bool one_launch = ws.size() > 1 && t >= 1 && t <= kSkinnyRows && k > 0;
  std::optional<DataType> bias_dtype;
  for (size_t i = 0; one_launch && i < ws.size(); ++i) {
    one_launch = ws[i]->dtype == ws[0]->dtype && ws[i]->shape[0] > 0 &&
                 SkinnyGemmApplies(t, k, x.data(), ws[i]->data());
    if (biases[i] != nullptr && biases[i]->defined()) {
      if (bias_dtype && *bias_dtype != biases[i]->dtype) one_launch = false;
      bias_dtype = biases[i]->dtype;
    }
  }
  if (!one_launch) return Backend::MatMulSharedImpl(x, linears, biases, ys);
  ASSIGN_OR_RETURN(Elem elem, ElemOf(ws[0]->dtype));
  Elem bias_elem = elem;
  if (bias_dtype) {
    ASSIGN_OR_RETURN(bias_elem, ElemOf(*bias_dtype));
  }
  std::vector<SkinnyOutput> outputs;
  for (size_t i = 0; i < ws.size(); ++i) {
    const bool has_bias = biases[i] != nullptr && biases[i]->defined();
    outputs.push_back({ws[i]->data(), ws[i]->shape[0], has_bias ? biases[i]->data() : nullptr,
                       ys[i]->mutable_data_as<float>()});
  }
  return SkinnyGemmShared(x.data_as<float>(), t, k, outputs, elem, bias_elem, s());
}

absl::Status CudaBackend::MatMulImpl(const Tensor& x, const LinearWeight& linear,
                                     const Tensor& bias, Tensor* y) {
  const Tensor& w = linear.weight;  // unquantized [N, K] (Supports)
  const int64_t t = x.shape[0], k = x.shape[1], n = w.shape[0];
  if (t == 0 || n == 0) return absl::OkStatus();
  if (k == 0) {
    RETURN_IF_CUDA_ERROR(cudaMemsetAsync(y->mutable_data(), 0, y->nbytes(), s()));
  } else if (t > std::numeric_limits<int>::max() || n > std::numeric_limits<int>::max() ||
             k > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("MatMul: dimensions ", t, "x", k, "x", n,
                                                   " exceed cuBLAS's int range"));
  } else {
    // Row-major y[T,N] = x[T,K] · w[N,K]^T is column-major y^T = w^T' · x':
    // A = w (transposed, lda K), B = x (lda K), C = y (ldc N).
    const float one = 1.0f, zero = 0.0f;
    // Up to kSkinnyRows rows the skinny kernel beats cuBLAS. For
    // float32 weights (the MoE router) cuBLAS SGEMM at one row is a dot +
    // reduce kernel pair; the skinny kernel does it in one memory-bound
    // launch in plain fp32 (no TF32, x not rounded), as SGEMM does.
    if (t <= kSkinnyRows && SkinnyGemmApplies(t, k, x.data(), w.data())) {
      // Decode-sized: fp32 activations straight into a memory-bound kernel,
      // bias fused, one launch.
      ASSIGN_OR_RETURN(Elem elem, ElemOf(w.dtype));
      Elem bias_elem = elem;
      if (bias.defined()) {
        ASSIGN_OR_RETURN(bias_elem, ElemOf(bias.dtype));
      }
      return SkinnyGemm(x.data_as<float>(), t, k, w.data(), elem, n,
                        bias.defined() ? bias.data() : nullptr, bias_elem,
                        y->mutable_data_as<float>(), s());
    }
    if (w.dtype == DataType::kFloat32) {
      RETURN_IF_CUBLAS_ERROR(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n),
                                         static_cast<int>(t), static_cast<int>(k), &one,
                                         w.data_as<float>(), static_cast<int>(k),
                                         x.data_as<float>(), static_cast<int>(k), &zero,
                                         y->mutable_data_as<float>(), static_cast<int>(n)));
    } else {
      ASSIGN_OR_RETURN(Elem elem, ElemOf(w.dtype));
      const cudaDataType_t type = elem == Elem::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
      ASSIGN_OR_RETURN(Tensor xs, Scratch(static_cast<size_t>(t * k) * 2));
      RETURN_IF_ERROR(CastFromF32(x.data_as<float>(), t * k, elem, xs.mutable_data(), s()));
      RETURN_IF_CUBLAS_ERROR(cublasGemmEx(
          cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(t),
          static_cast<int>(k), &one, w.data(), type, static_cast<int>(k), xs.data(), type,
          static_cast<int>(k), &zero, y->mutable_data(), CUDA_R_32F, static_cast<int>(n),
          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  }
  if (bias.defined()) {
    ASSIGN_OR_RETURN(Elem bias_elem, ElemOf(bias.dtype));
    RETURN_IF_ERROR(AddBias(y->mutable_data_as<float>(), bias.data(), bias_elem, t, n, s()));
  }
  return absl::OkStatus();
}

}  // namespace epserve::kernels::cuda
