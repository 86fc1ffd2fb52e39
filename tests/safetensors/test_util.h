// Helpers shared by the safetensors tests.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/safetensors/writer.h"
#include "gtest/gtest.h"

namespace epserve::safetensors::testing {

// A fresh, empty directory under the gtest temp dir, unique per test.
inline std::string TempDir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                              (std::string("safetensors_") + info->test_suite_name() + "_" +
                               info->name() + "_" + std::to_string(::getpid()));
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
