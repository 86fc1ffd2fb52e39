#include "kernels/device.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/registry.h"

namespace epserve::kernels {
namespace {

using ::testing::HasSubstr;

TEST(ParseDevice, Table) {
  EXPECT_EQ(ParseDevice("cpu")->type, DeviceType::kCpu);
  EXPECT_EQ(ParseDevice("cuda")->ordinal, 0);
  EXPECT_EQ(ParseDevice("cuda:3")->ordinal, 3);
  EXPECT_EQ(ParseDevice("cuda:3")->ToString(), "cuda:3");
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", ""}) {
    auto parsed = ParseDevice(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("cpu, cuda or cuda:K"));
  }
}

TEST(QueryDevice, CpuReportsCoresAndMemory) {
  auto cpu = QueryDevice(DeviceSpec{DeviceType::kCpu, 0});
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_GE(cpu->compute_units, 1u);
  EXPECT_GT(cpu->total_memory_bytes, 0u);
  EXPECT_LE(cpu->free_memory_bytes, cpu->total_memory_bytes);
  EXPECT_FALSE(cpu->name.empty());
}

// Runs everywhere: on a GPU machine it checks the properties, elsewhere it
// checks that the failure says why.
TEST(QueryDevice, CudaEitherWorksOrExplains) {
  auto gpu = QueryDevice(DeviceSpec{DeviceType::kCuda, 0});
  if (gpu.ok()) {
    EXPECT_GT(gpu->total_memory_bytes, 0u);
    EXPECT_GT(gpu->compute_units, 0u);
    EXPECT_FALSE(gpu->compute_capability.empty());
  } else if (CudaBackendBuilt()) {
    EXPECT_THAT(std::string(gpu.status().message()), HasSubstr("cuda:0"));
  } else {
    EXPECT_THAT(std::string(gpu.status().message()), HasSubstr("no CUDA backend"));
  }
  auto too_far = QueryDevice(DeviceSpec{DeviceType::kCuda, 999});
  ASSERT_FALSE(too_far.ok());
  EXPECT_THAT(std::string(too_far.status().message()), HasSubstr("cuda:999"));
}

}  // namespace
}  // namespace epserve::kernels
