// Devices a worker can run on, and what they offer. Backend-neutral: querying
// a device is kernels/registry.h's QueryDevice, which reaches kernels/cpu and
// kernels/cuda.
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve::kernels {

enum class DeviceType { kCpu, kCuda };

struct DeviceSpec {
  DeviceType type = DeviceType::kCpu;
  int ordinal = 0;  // CUDA device index; 0 for the CPU

  std::string ToString() const;  // "cpu", "cuda:1"
};

struct DeviceProperties {
  DeviceSpec spec;
  std::string name;  // "NVIDIA H100 80GB HBM3", CPU model name
  uint64_t total_memory_bytes = 0;
  uint64_t free_memory_bytes = 0;
  uint32_t compute_units = 0;      // CPU logical cores / GPU SMs
  std::string compute_capability;  // "9.0"; empty on CPU
};

// "cpu", "cuda" (= cuda:0) or "cuda:K".
absl::StatusOr<DeviceSpec> ParseDevice(absl::string_view text);

}  // namespace epserve::kernels
