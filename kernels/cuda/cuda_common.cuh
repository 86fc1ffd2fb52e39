// Shared by the CUDA kernels: storage element types, loads/stores as float,
// the one place run-time element types become template parameters, and the
// device-side error word.
//
// Content errors (an id, slot, block or expert a kernel cannot use) cannot
// be returned from a kernel without a host synchronisation, so kernels set a
// bit in the backend's device error word (`uint32_t* errors`, never null) and
// skip the bad element (writing zeros where they own the output). The backend
// reads the word when it next synchronises with the host and fails with the
// op's name (CudaBackend::CheckDeviceErrors).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"
#include "common/dtype.h"

namespace epserve::kernels::cuda {

// Storage type of weights and KV cache entries (activations are float32).
enum class Elem : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Bits of the device error word.
enum DeviceError : uint32_t {
  kErrEmbeddingId = 1u << 0,        // Embedding: id outside [0, rows)
  kErrKvSlot = 1u << 1,             // WriteKvCache: slot outside [-1, num_slots)
  kErrBlockTable = 1u << 2,         // PagedAttention: block id outside the cache / bad metadata
  kErrExpertId = 1u << 3,           // MoePermute: expert id outside [0, E)
  kErrMissingExpert = 1u << 4,      // GroupedExpertMatMul: rows routed to an expert not held
  kErrPosition = 1u << 5,           // Rope: negative position
  kErrPrologueSlot = 1u << 6,       // AttentionPrologue: slot outside [-1, num_slots)
  kErrProloguePosition = 1u << 7,   // AttentionPrologue: negative position
  kErrCopyRowsBlock = 1u << 8,      // CopyRows: a block outside src or dst
  kErrEpPackExpertId = 1u << 9,     // EpDispatchPack: a topk id outside [0, E)
  kErrEpPackRank = 1u << 10,        // EpDispatchPack: an expert_to_rank entry outside [0, W)
  kErrEpUnpackExpertId = 1u << 11,  // EpDispatchUnpack: a route id outside [-1, E)
  kErrEpUnpackCount = 1u << 12,     // EpDispatchUnpack: a receive count outside [0, C]
  kErrEpUnpackRows = 1u << 13,      // EpDispatchUnpack: more rows than M
  kErrEpCombineRoute = 1u << 14,    // EpCombinePack: a count outside [0, C] or a route row
                                    // outside [-1, M)
  kErrEpCombineSlot = 1u << 15,     // EpCombineUnpack: a token slot outside [-1, C)
};

inline absl::StatusOr<Elem> ElemOf(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32: return Elem::kF32;
    case DataType::kBFloat16: return Elem::kBF16;
    case DataType::kFloat16: return Elem::kF16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "CUDA backend: element type ", DataTypeName(dtype),
          " is not supported (float32, bfloat16, float16)"));
  }
}

template <typename T>
__device__ __forceinline__ float ToF32(T v);
template <>
__device__ __forceinline__ float ToF32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float ToF32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float ToF32<__half>(__half v) { return __half2float(v); }

// Round to nearest even, like the CPU backend's NarrowFromF32.
template <typename T>
__device__ __forceinline__ T FromF32(float v);
template <>
__device__ __forceinline__ float FromF32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromF32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromF32<__half>(float v) { return __float2half_rn(v); }

// Calls `f` with a value of the C++ type for `elem` (f(float{}), ...).
template <typename F>
absl::Status DispatchElem(Elem elem, F&& f) {
  switch (elem) {
    case Elem::kF32: return f(float{});
    case Elem::kBF16: return f(__nv_bfloat16{});
    case Elem::kF16: return f(__half{});
  }
  return absl::InvalidArgumentError("CUDA backend: unknown element type");
}

// After a launch: the launch error (bad configuration, no device) as Status.
inline absl::Status LaunchStatus(const char* kernel) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA kernel ", kernel, " failed to launch: ",
                                          cudaGetErrorName(err), " (", cudaGetErrorString(err),
                                          ")"));
}

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Asynchronous 16-byte copies global -> shared (sm_80+), for the tiled
// kernels (attention prefill, grouped GEMM). `valid` false zero-fills the
// 16 bytes and reads nothing from `gmem`.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

}  // namespace epserve::kernels::cuda
