#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_status.h"
#include "kernels/cuda/cuda_device.h"

namespace epserve::kernels::cuda {

absl::StatusOr<DeviceProperties> QueryCudaDevice(int ordinal) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda:", ordinal, " requested but no usable CUDA device: ", cudaGetErrorString(err)));
  }
  if (ordinal < 0 || ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda:", ordinal, " requested but this machine has ", count,
                     " CUDA device(s) (cuda:0..cuda:", count - 1, ")"));
  }
  cudaDeviceProp prop{};
  RETURN_IF_CUDA_ERROR(cudaGetDeviceProperties(&prop, ordinal));
  RETURN_IF_CUDA_ERROR(cudaSetDevice(ordinal));
  size_t free_bytes = 0, total_bytes = 0;
  RETURN_IF_CUDA_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));

  DeviceProperties p;
  p.spec = DeviceSpec{DeviceType::kCuda, ordinal};
  p.name = prop.name;
  p.total_memory_bytes = total_bytes;
  p.free_memory_bytes = free_bytes;
  p.compute_units = static_cast<uint32_t>(prop.multiProcessorCount);
  p.compute_capability = absl::StrCat(prop.major, ".", prop.minor);
  return p;
}

}  // namespace epserve::kernels::cuda
