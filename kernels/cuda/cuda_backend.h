// CudaBackend: kernels::Backend (ops.h) on one NVIDIA GPU.
//
// * Weights stay in their storage type (float32 / bfloat16 / float16);
//   activations are float32 like every backend. GEMMs go through cuBLAS:
//   bf16/fp16 weights multiply activations rounded to the weight type on
//   tensor cores with fp32 accumulation and output (cublasGemmEx); float32
//   weights use SGEMM without TF32, so results track the CPU reference.
// * Every op is enqueued on one stream; nothing synchronises with the host
//   except CopyToHost and Synchronize. Memory comes from the device's
//   stream-ordered pool (cudaMallocAsync), so per-step activations cost no
//   driver call and allocations inside a graph capture become graph memory
//   nodes.
// * Content errors found by kernels (ids, slots, block tables, experts) are
//   flagged in a device word and reported, with the op's name, at the next
//   CopyToHost / Synchronize (the op itself cannot fail without a sync).
//
// Include only from CUDA-enabled code (kernels/); everything else reaches
// it through kernels::CreateBackend (kernels/registry.h).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace epserve::kernels::cuda {

struct CudaBackendOptions {
  int ordinal = 0;
  // cuBLAS workspace (fixed, so GEMMs can be captured into graphs).
  size_t cublas_workspace_bytes = 32ull << 20;
};

// Fails with the CUDA error text when there is no usable GPU or the ordinal
// is out of range (naming the number of devices).
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(const CudaBackendOptions& options);

}  // namespace epserve::kernels::cuda
