// CpuBackend: the reference implementation of kernels::Backend (ops.h).
//
// * Linear ops take unquantized weights (Supports: WeightFormat::kUnquantized
//   for every LinearOp).
// * Activations are float32; bf16/fp16 weights are widened to fp32 on the
//   fly (MatMul: per call, a panel of rows at a time into a scratch buffer;
//   nothing is cached, so weight memory stays at the checkpoint's size).
// * GEMMs go through OpenBLAS cblas_sgemm (which threads itself); everything
//   else is threaded with OpenMP (libgomp) over rows / (sequence, head).
// * Ops run synchronously on the calling thread; stream() is null.
// * Content checks the op boundary cannot do (ids, slots, block tables,
//   routed experts) are done here, before anything is written.
//
// The ops are implemented one family per file: matmul.cc, embedding.cc,
// norm.cc, rope.cc, elementwise.cc, attention.cc, moe_gate.cc, moe.cc.
#pragma once

#include <memory>

#include "kernels/ops.h"

namespace epserve::kernels::cpu {

struct CpuBackendOptions {
  // Threads for the ops; 0 = OpenMP's and OpenBLAS's defaults (all cores).
  // A positive value also sets OpenBLAS's process-wide GEMM thread count.
  int num_threads = 0;
};

std::unique_ptr<Backend> CreateCpuBackend(const CpuBackendOptions& options = {});

// Not final: tests derive from it to vary Supports.
class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options);

  DeviceSpec device() const override { return DeviceSpec{}; }
  void* stream() const override { return nullptr; }
  absl::Status Synchronize() override { return absl::OkStatus(); }
  bool Supports(LinearOp op, WeightFormat format) const override;
  absl::StatusOr<Tensor> Empty(DataType dtype, std::vector<int64_t> shape) override;
  absl::StatusOr<Tensor> ToDevice(const Tensor& host) override;

 protected:
  absl::Status CopyFromHostImpl(const void* src, size_t bytes, Tensor* dst) override;
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

 private:
  int num_threads_;  // > 0
};

}  // namespace epserve::kernels::cpu
