// The CudaBackend class, shared by cuda_backend.cu (memory, copies, errors,
// graphs, GEMMs) and cuda_ops.cu (the other ops). Private to kernels/cuda.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_common.cuh"

namespace epserve::kernels::cuda {

// What outlives the backend object as long as a tensor of it lives: device
// memory is freed on this stream.
// memory is freed on this stream. While a graph capture runs, buffers
// allocated before it are not freed into the graph (the free would repeat at
// every replay) but after the capture ends.
struct DeviceContext {
  int ordinal = 0;
  cudaStream_t stream = nullptr;
  bool capturing = false;
  uint64_t capture_id = 0;  // of the running (or last) capture
  std::vector<void*> deferred_frees;
  ~DeviceContext();
};

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const CudaBackendOptions& options);
  ~CudaBackend() override;

  DeviceSpec device() const override { return DeviceSpec{DeviceType::kCuda, ctx_->ordinal}; }
  void* stream() const override { return ctx_->stream; }
  absl::Status Synchronize() override;
  // Unquantized weights for every linear op.
  bool Supports(LinearOp op, WeightFormat format) const override;
  absl::StatusOr<Tensor> Empty(DataType dtype, std::vector<int64_t> shape) override;
  absl::StatusOr<Tensor> ToDevice(const Tensor& host) override;
  absl::StatusOr<std::shared_ptr<Storage>> AllocateStagingHost(size_t bytes) override;
  absl::Status CopyToStagingAsync(const Tensor& src, void* dst) override;
  absl::Status CopyFromStagingAsync(const void* src, Tensor* dst) override;
  absl::Status EnqueueHostCall(void (*fn)(void*), void* arg) override;
  absl::Status FillDummy(Tensor* t, uint64_t state0, float half_width, bool ones) override;
  absl::StatusOr<std::unique_ptr<Timestamps>> CreateTimestamps(int n) override;
  bool SupportsGraphs() const override { return true; }
  absl::StatusOr<std::unique_ptr<Graph>> Capture(
      const std::function<absl::Status()>& body) override;

 protected:
  absl::Status CopyFromHostImpl(const void* src, size_t bytes, Tensor* dst) override;
  absl::Status MatMulSharedImpl(const Tensor& x, absl::Span<const LinearWeight* const> ws,
                                absl::Span<const Tensor* const> biases,
                                absl::Span<Tensor* const> ys) override;
  absl::Status CopyToHostImpl(const Tensor& src, void* dst, size_t bytes) override;
  absl::Status CopyRowsImpl(const Tensor& src, const Tensor& blocks, Tensor* dst) override;
  absl::Status MatMulImpl(const Tensor& x, const LinearWeight& w, const Tensor& bias,
                          Tensor* y) override;
  absl::Status EmbeddingImpl(const Tensor& ids, const Tensor& table, Tensor* out) override;
  absl::Status RmsNormImpl(const Tensor& x, Tensor* residual, const Tensor& w, float eps,
                           Tensor* y) override;
  absl::Status HeadRmsNormImpl(Tensor* x, const Tensor& w, float eps) override;
  absl::Status RopeImpl(const RopeFrequencies& freqs, RopeLayout layout, int64_t head_dim,
                        const Tensor& positions, Tensor* q, Tensor* k) override;
  absl::Status SiluAndMulImpl(const Tensor& gate, const Tensor* up, Tensor* out) override;
  absl::Status AddImpl(const Tensor& a, const Tensor& b, Tensor* out) override;
  absl::Status SigmoidGateMulAddImpl(const Tensor& gate_logit, const Tensor& x,
                                     Tensor* out) override;
  absl::Status WriteKvCacheImpl(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                                Tensor* k_cache, Tensor* v_cache) override;
  absl::Status AttentionPrologueImpl(const AttentionPrologueArgs& args,
                                     const RopeFrequencies& freqs) override;
  absl::Status PagedAttentionImpl(const PagedAttentionArgs& args, float scale,
                                  Tensor* out) override;
  absl::Status MoeGateImpl(const Tensor& router_logits, const RoutingParams& routing,
                           Tensor* topk_ids, Tensor* topk_weights) override;
  absl::Status MoePermuteImpl(const Tensor& hidden, const Tensor& topk_ids,
                              MoePermutation* out) override;
  absl::Status GroupedExpertMatMulImpl(const Tensor& rows, const Tensor& expert_offsets,
                                       absl::Span<const LinearWeight> weights,
                                       Tensor* out) override;
  absl::Status MoeUnpermuteImpl(const Tensor& expert_out, const Tensor& topk_weights,
                                const MoePermutation& perm, Tensor* out) override;
  absl::Status GroupedExpertGateUpImpl(const Tensor& rows, const Tensor& expert_offsets,
                                       absl::Span<const LinearWeight> gate,
                                       absl::Span<const LinearWeight> up, Tensor* out) override;
  absl::Status EpDispatchPackImpl(const Tensor& hidden, const Tensor& topk_ids,
                                  const Tensor& topk_weights, const Tensor& expert_to_rank,
                                  Tensor* send_rows, Tensor* send_routes, Tensor* send_counts,
                                  Tensor* token_slots) override;
  absl::Status EpDispatchUnpackImpl(const Tensor& recv_rows, const Tensor& recv_routes,
                                    const Tensor& recv_counts, Tensor* rows, Tensor* expert_offsets,
                                    Tensor* route_rows) override;
  absl::Status EpCombinePackImpl(const Tensor& expert_out, const Tensor& recv_routes,
                                 const Tensor& recv_counts, const Tensor& route_rows,
                                 Tensor* back_rows) override;
  absl::Status EpCombineUnpackImpl(const Tensor& returned_rows, const Tensor& token_slots,
                                   Tensor* out) override;
  absl::Status SampleTokensImpl(const Tensor& logits, absl::Span<const SampleRow> rows,
                                absl::Span<const SampleEdit> edits, int64_t top_n,
                                bool processed_logprobs, Tensor* packed) override;

 private:
  CudaBackend() = default;
  cudaStream_t s() const { return ctx_->stream; }
  // Scratch device memory for one op (freed, stream-ordered, after it).
  absl::StatusOr<Tensor> Scratch(size_t bytes);
  // Reads and clears the device error word (the stream must be idle).
  absl::Status CheckDeviceErrors();
  // The device copy of rope inverse frequencies (cached: uploaded once per
  // distinct table, before any capture uses it).
  absl::StatusOr<const float*> DeviceInvFreq(const std::vector<float>& inv_freq);
  // A device array of the experts' (unquantized) weight pointers (cached per
  // weight set).
  absl::StatusOr<const void* const*> DeviceExpertPointers(absl::Span<const LinearWeight> weights);
  // The one storage type of the held experts' weights (InvalidArgument
  // naming the first that differs); float32 when none is held.
  static absl::StatusOr<DataType> ExpertDtype(const char* op,
                                              absl::Span<const LinearWeight> weights);

  std::shared_ptr<DeviceContext> ctx_;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  uint32_t* errors_ = nullptr;  // device error word
  std::map<std::vector<float>, std::shared_ptr<Storage>> inv_freq_cache_;
  std::map<std::vector<const void*>, std::shared_ptr<Storage>> expert_ptr_cache_;
  // SampleTokens' rows and edits: pinned, reused every step (so the upload
  // does not wait for the forward pass); the event marks the last upload
  // from it done before it is rewritten.
  std::shared_ptr<Storage> sample_args_host_;
  cudaEvent_t sample_args_copied_ = nullptr;
};

}  // namespace epserve::kernels::cuda
