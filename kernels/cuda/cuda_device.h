#pragma once

#include "absl/status/statusor.h"
#include "kernels/device.h"

namespace epserve::kernels::cuda {

// Properties and free memory of CUDA device `ordinal`. Fails with the CUDA
// error text when no driver or device is present.
absl::StatusOr<DeviceProperties> QueryCudaDevice(int ordinal);

}  // namespace epserve::kernels::cuda
