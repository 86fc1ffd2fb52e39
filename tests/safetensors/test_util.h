// Helpers shared by the safetensors tests.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "common/safetensors/writer.h"
#include "gtest/gtest.h"

namespace epserve::safetensors::testing {

// Root of this process's test directories; removed when the tests end.
inline std::filesystem::path ProcessTempRoot() {
  return std::filesystem::path(::testing::TempDir()) /
         ("epserve_safetensors_test_" + std::to_string(::getpid()));
}
class TempRootCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(ProcessTempRoot(), ec);
  }
};
inline const bool kTempRootCleanupRegistered =
    (::testing::AddGlobalTestEnvironment(new TempRootCleanup), true);

// A fresh, empty directory for the current test.
inline std::string TempDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::filesystem::path dir =
      ProcessTempRoot() / (std::string(info->test_suite_name()) + "_" + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Bytes of `values` in memory order (little-endian on every supported host).
template <typename T>
std::string BytesOf(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// `n` bytes counting from `seed`, so each tensor's content is distinct.
inline std::string Pattern(size_t n, uint8_t seed) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(seed + i * 7);
  return out;
}

inline TensorToWrite U8Tensor(std::string name, int64_t n, uint8_t seed) {
  return TensorToWrite{std::move(name), DataType::kUInt8, {n}, Pattern(n, seed)};
}

}  // namespace epserve::safetensors::testing
