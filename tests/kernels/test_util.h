// Helpers for the kernel tests: host tensors from vectors, random data,
// dtype rounding, and a CPU backend per test.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "absl/types/span.h"
#include "common/dtype_convert.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/ops.h"

namespace epserve::kernels::testing {

inline Tensor MakeF32(std::vector<int64_t> shape, const std::vector<float>& values) {
  auto t = EmptyHostTensor(DataType::kFloat32, std::move(shape));
  EXPECT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(static_cast<size_t>(t->numel()), values.size());
  if (!values.empty()) std::memcpy(t->mutable_data(), values.data(), values.size() * 4);
  return *t;
}

inline Tensor MakeI32(std::vector<int64_t> shape, const std::vector<int32_t>& values) {
  auto t = EmptyHostTensor(DataType::kInt32, std::move(shape));
  EXPECT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(static_cast<size_t>(t->numel()), values.size());
  if (!values.empty()) std::memcpy(t->mutable_data(), values.data(), values.size() * 4);
  return *t;
}

// A tensor of `dtype` holding `values` rounded to it.
inline Tensor MakeTyped(DataType dtype, std::vector<int64_t> shape,
                        const std::vector<float>& values) {
  auto t = EmptyHostTensor(dtype, std::move(shape));
  EXPECT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(ConvertElements(values.data(), DataType::kFloat32, t->mutable_data(), dtype,
                              static_cast<int64_t>(values.size()))
                  .ok());
  return *t;
}

// `values` rounded to `dtype` and back (what a kernel reading that dtype sees).
inline std::vector<float> RoundTo(DataType dtype, const std::vector<float>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DataType::kBFloat16:
        out[i] = Bf16ToFp32(Fp32ToBf16(values[i]));
        break;
      case DataType::kFloat16:
        out[i] = Fp16ToFp32(Fp32ToFp16(values[i]));
        break;
      default:
        out[i] = values[i];
    }
  }
  return out;
}

// Unquantized LinearWeights of weight tensors ([N, K]; undefined stays undefined).
inline LinearWeight Linear(Tensor w) { return LinearWeight::Unquantized(std::move(w)); }
inline std::vector<LinearWeight> Linears(absl::Span<const Tensor> ws) {
  std::vector<LinearWeight> out;
  for (const Tensor& w : ws) out.push_back(Linear(w));
  return out;
}

inline Tensor Zeros(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return MakeF32(std::move(shape), std::vector<float>(static_cast<size_t>(n), 0.0f));
}

inline std::vector<float> ToVector(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (!v.empty()) std::memcpy(v.data(), t.data(), v.size() * 4);
  return v;
}

inline std::vector<int32_t> ToIntVector(const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  if (!v.empty()) std::memcpy(v.data(), t.data(), v.size() * 4);
  return v;
}

inline std::vector<float> Random(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

inline const char* DtypeName(DataType d) { return DataTypeName(d); }

// The routing every backend runs: softmax, top-k, renormalise iff `renormalize`.
inline RoutingParams SoftmaxTopK(int64_t top_k, bool renormalize) {
  RoutingParams r;
  r.top_k = static_cast<int>(top_k);
  r.renormalize = renormalize;
  return r;
}

}  // namespace epserve::kernels::testing
