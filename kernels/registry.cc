#include "kernels/registry.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_device.h"

#if EPSERVE_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_device.h"
#endif

namespace epserve::kernels {
namespace {

#if !EPSERVE_WITH_CUDA
absl::Status NoCudaBackend(const DeviceSpec& device) {
  return absl::FailedPreconditionError(absl::StrCat(
      "device ", device.ToString(),
      " requested but this build has no CUDA backend (configure with nvcc available and "
      "-DEPSERVE_CUDA=ON)"));
}
#endif

}  // namespace

bool CudaBackendBuilt() { return EPSERVE_WITH_CUDA != 0; }

absl::StatusOr<DeviceProperties> QueryDevice(const DeviceSpec& spec) {
  if (spec.type == DeviceType::kCpu) return cpu::QueryCpuDevice();
#if EPSERVE_WITH_CUDA
  return cuda::QueryCudaDevice(spec.ordinal);
#else
  return NoCudaBackend(spec);
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const DeviceSpec& device,
                                                       const BackendOptions& options) {
  if (device.type == DeviceType::kCpu) {
    cpu::CpuBackendOptions cpu_options;
    cpu_options.num_threads = options.cpu_threads;
    return cpu::CreateCpuBackend(cpu_options);
  }
#if EPSERVE_WITH_CUDA
  cuda::CudaBackendOptions cuda_options;
  cuda_options.ordinal = device.ordinal;
  return cuda::CreateCudaBackend(cuda_options);
#else
  return NoCudaBackend(device);
#endif
}

}  // namespace epserve::kernels
