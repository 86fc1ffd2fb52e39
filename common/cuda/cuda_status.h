// CUDA runtime, cuBLAS and NCCL errors as absl::Status carrying the failed
// expression, file and line (and NCCL's last error text). Only included by
// CUDA-enabled code (kernels/cuda, worker/comm).
#pragma once

#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "common/status.h"

#if __has_include(<nccl.h>)
#include <nccl.h>
#define EPSERVE_HAVE_NCCL_HEADER 1
#endif

namespace epserve::cuda_internal {

inline absl::Status CudaError(cudaError_t err, const char* expr, const char* file, int line) {
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", expr, " failed: ",
                                          cudaGetErrorName(err), " (", cudaGetErrorString(err),
                                          ")"));
}

inline absl::Status CublasError(cublasStatus_t err, const char* expr, const char* file,
                                int line) {
  return absl::InternalError(
      absl::StrCat(file, ":", line, ": ", expr, " failed: cublas status ", static_cast<int>(err)));
}

#ifdef EPSERVE_HAVE_NCCL_HEADER
inline absl::Status NcclError(ncclResult_t err, ncclComm_t comm, const char* expr,
                              const char* file, int line) {
  const char* last = comm != nullptr ? ncclGetLastError(comm) : "";
  return absl::InternalError(absl::StrCat(file, ":", line, ": ", expr,
                                          " failed: ", ncclGetErrorString(err),
                                          (last && *last) ? absl::StrCat(": ", last) : ""));
}
#endif

}  // namespace epserve::cuda_internal

#define RETURN_IF_CUDA_ERROR(expr)                                                  \
  do {                                                                              \
    cudaError_t epserve_cuda_err_ = (expr);                                         \
    if (epserve_cuda_err_ != cudaSuccess)                                           \
      return ::epserve::cuda_internal::CudaError(epserve_cuda_err_, #expr, __FILE__, \
                                                 __LINE__);                         \
  } while (0)

#define RETURN_IF_CUBLAS_ERROR(expr)                                                      \
  do {                                                                                    \
    cublasStatus_t epserve_cublas_err_ = (expr);                                          \
    if (epserve_cublas_err_ != CUBLAS_STATUS_SUCCESS)                                     \
      return ::epserve::cuda_internal::CublasError(epserve_cublas_err_, #expr, __FILE__,  \
                                                   __LINE__);                             \
  } while (0)

// RETURN_IF_NCCL_ERROR(comm, expr): `comm` may be nullptr before init.
#define RETURN_IF_NCCL_ERROR(comm, expr)                                                  \
  do {                                                                                    \
    ncclResult_t epserve_nccl_err_ = (expr);                                              \
    if (epserve_nccl_err_ != ncclSuccess)                                                 \
      return ::epserve::cuda_internal::NcclError(epserve_nccl_err_, (comm), #expr,        \
                                                 __FILE__, __LINE__);                     \
  } while (0)
