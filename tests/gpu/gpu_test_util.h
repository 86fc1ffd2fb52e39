// Shared by the GPU tests: the CUDA backend or a skip that says why, and
// host/device helpers. GPU tests carry the ctest label `gpu`; without a
// usable GPU (or in a build without the CUDA backend) they skip with the
// reason printed.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/ops.h"

namespace epserve::kernels::testing {

// The reason GPU tests cannot run here, or "" when cuda:0 works.
inline std::string GpuUnavailableReason() {
  if (!CudaBackendBuilt()) return "this build has no CUDA backend (nvcc was not found)";
  auto props = QueryDevice(DeviceSpec{DeviceType::kCuda, 0});
  if (!props.ok()) return std::string("no usable GPU: ") + std::string(props.status().message());
  return "";
}

#define EPSERVE_REQUIRE_GPU()                                              \
  do {                                                                     \
    const std::string epserve_gpu_reason_ =                                \
        ::epserve::kernels::testing::GpuUnavailableReason();               \
    if (!epserve_gpu_reason_.empty()) GTEST_SKIP() << epserve_gpu_reason_; \
  } while (0)

// EPSERVE_TEST_DEVICE (cpu, cuda, cuda:K) as a device; cpu when unset or
// unparsable. Suites that also run on a GPU read their device from it.
inline DeviceSpec TestDeviceFromEnv() {
  const char* env = std::getenv("EPSERVE_TEST_DEVICE");
  if (env == nullptr || *env == '\0') return {};
  auto d = ParseDevice(env);
  return d.ok() ? *d : DeviceSpec{};
}

// Skips every test of the binary, printing why, when EPSERVE_TEST_DEVICE
// names a GPU that is not usable here. Register with
// ::testing::AddGlobalTestEnvironment(new GpuTestEnvironment).
class GpuTestEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (TestDeviceFromEnv().type == DeviceType::kCpu) return;
    const std::string reason = GpuUnavailableReason();
    if (!reason.empty()) GTEST_SKIP() << reason;
  }
};

// max |got - want| / max(1e-30, max |want|).
inline double MaxRelError(const std::vector<float>& got, const std::vector<float>& want) {
  double err = 0.0, scale = 1e-30;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - want[i]);
    err = std::isnan(d) ? INFINITY : std::max(err, d);
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  }
  return err / scale;
}

}  // namespace epserve::kernels::testing
