#pragma once

#include "absl/status/statusor.h"
#include "kernels/device.h"

namespace epserve::kernels::cpu {

// Logical cores, physical memory (total and available) and the CPU model name.
absl::StatusOr<DeviceProperties> QueryCpuDevice();

}  // namespace epserve::kernels::cpu
