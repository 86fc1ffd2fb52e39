// Shared by the GPU tests: the CUDA backend or a skip that says why, and
// host/device helpers. GPU tests carry the ctest label `gpu`; without a
// usable GPU (or in a build without the CUDA backend) they skip with the
// reason printed.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/device.h"
#include "kernels/ops.h"
#include "kernels/registry.h"

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

// A fixture on cuda:0 (skipped with the reason when there is none) with the
// host <-> device helpers the op tests share. Base: ::testing::Test or a
// parameterised base. A derived SetUp calls GpuTest::SetUp() first and
// returns when IsSkipped() or HasFatalFailure().
template <typename Base = ::testing::Test>
class GpuTest : public Base {
 protected:
  void SetUp() override {
    EPSERVE_REQUIRE_GPU();
    auto gpu = CreateBackend(DeviceSpec{DeviceType::kCuda, 0});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    gpu_ = std::move(*gpu);
  }

  Tensor Up(const Tensor& host) {
    auto t = gpu_->ToDevice(host);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : Tensor{};
  }
  Tensor GpuEmpty(DataType d, std::vector<int64_t> shape) {
    auto t = gpu_->Empty(d, std::move(shape));
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : Tensor{};
  }
  template <typename T>
  std::vector<T> DownAs(const Tensor& t) {
    std::vector<T> v(t.nbytes() / sizeof(T));
    absl::Status s = gpu_->CopyToHost(t, v.data(), v.size() * sizeof(T));
    EXPECT_TRUE(s.ok()) << s;
    return v;
  }
  std::vector<float> Down(const Tensor& t) { return DownAs<float>(t); }
  std::vector<int32_t> DownInt(const Tensor& t) { return DownAs<int32_t>(t); }
  std::vector<uint8_t> DownBytes(const Tensor& t) { return DownAs<uint8_t>(t); }

  std::unique_ptr<Backend> gpu_;
};

// GpuTest with the CPU reference backend as cpu_: the op-by-op comparisons.
class GpuCpuTest : public GpuTest<> {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    cpu_ = cpu::CreateCpuBackend();
  }

  std::unique_ptr<Backend> cpu_;
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
