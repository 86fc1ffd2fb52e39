// The backends this build contains, by device: the one place that knows them.
// Everything outside kernels/ queries devices and creates backends here and
// programs against kernels::Backend (ops.h), never a backend's own header.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/device.h"
#include "kernels/ops.h"

namespace epserve::kernels {

struct BackendOptions {
  // CPU backend: threads for the ops; 0 = OpenMP's and OpenBLAS's defaults
  // (all cores). A positive value also sets OpenBLAS's process-wide GEMM
  // thread count. Ignored by other backends.
  int cpu_threads = 0;
};

// Whether this build contains the CUDA backend.
bool CudaBackendBuilt();

// Queries the device. A CUDA device fails with a clear message when the build
// has no CUDA backend, no driver/GPU is present, or the ordinal is too large.
absl::StatusOr<DeviceProperties> QueryDevice(const DeviceSpec& spec);

// The backend for `device`: the CPU backend, or the CUDA backend on
// `device.ordinal`; an error when the build or machine has no such device.
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const DeviceSpec& device,
                                                       const BackendOptions& options = {});

}  // namespace epserve::kernels
