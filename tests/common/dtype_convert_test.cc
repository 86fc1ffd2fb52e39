#include "common/dtype_convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace epserve {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(DtypeConvert, Bf16WideningIsExactForEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = Bf16ToFp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(Bits(f), h << 16);
    EXPECT_EQ(Fp32ToBf16(f), h);  // round trip
  }
}

TEST(DtypeConvert, Fp32ToBf16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(Fp32ToBf16(FromBits(0x3F808000)), 0x3F80);
  // 1.0078125 + half ulp: halfway, odd below -> rounds up to even.
  EXPECT_EQ(Fp32ToBf16(FromBits(0x3F818000)), 0x3F82);
  // Just above halfway rounds up.
  EXPECT_EQ(Fp32ToBf16(FromBits(0x3F808001)), 0x3F81);
  // Just below halfway rounds down.
  EXPECT_EQ(Fp32ToBf16(FromBits(0x3F807FFF)), 0x3F80);
  // Overflow to infinity, sign kept.
  EXPECT_EQ(Fp32ToBf16(FromBits(0x7F7FFFFF)), 0x7F80);
  EXPECT_EQ(Fp32ToBf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_TRUE(std::isnan(Bf16ToFp32(Fp32ToBf16(std::nanf("")))));
}

TEST(DtypeConvert, Fp16RoundTripAndReferenceValues) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = Fp16ToFp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Fp16ToFp32(Fp32ToFp16(f))));
      continue;
    }
    EXPECT_EQ(Fp32ToFp16(f), h) << std::hex << h;
  }
  EXPECT_EQ(Fp16ToFp32(0x3C00), 1.0f);
  EXPECT_EQ(Fp16ToFp32(0x7BFF), 65504.0f);
  EXPECT_EQ(Fp16ToFp32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp32ToFp16(65520.0f), 0x7C00);   // rounds to infinity
  EXPECT_EQ(Fp32ToFp16(65519.0f), 0x7BFF);   // rounds to max
  EXPECT_EQ(Fp32ToFp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie -> even
  EXPECT_EQ(Fp32ToFp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie -> even (up)
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and min subnormal
  EXPECT_EQ(Fp32ToFp16(std::ldexp(3.0f, -25)), 0x0002);
  EXPECT_EQ(Fp32ToFp16(-0.0f), 0x8000);
}

TEST(DtypeConvert, Fp8Decoding) {
  EXPECT_EQ(Fp8E4M3ToFp32(0x38), 1.0f);     // exp 7, mant 0
  EXPECT_EQ(Fp8E4M3ToFp32(0x7E), 448.0f);   // max finite
  EXPECT_EQ(Fp8E4M3ToFp32(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFp32(0x7F)));
  EXPECT_EQ(Fp8E4M3ToFp32(0x01), std::ldexp(1.0f, -9));  // min subnormal
  EXPECT_EQ(Fp8E5M2ToFp32(0x3C), 1.0f);
  EXPECT_EQ(Fp8E5M2ToFp32(0x7B), 57344.0f);
  EXPECT_TRUE(std::isinf(Fp8E5M2ToFp32(0x7C)));
}

TEST(DtypeConvert, ConvertElementsAndUnsupportedPairs) {
  std::vector<uint16_t> bf = {Fp32ToBf16(1.5f), Fp32ToBf16(-2.25f)};
  std::vector<float> f(2);
  ASSERT_TRUE(ConvertElements(bf.data(), DataType::kBFloat16, f.data(), DataType::kFloat32, 2).ok());
  EXPECT_EQ(f[0], 1.5f);
  EXPECT_EQ(f[1], -2.25f);
  std::vector<uint16_t> half(2);
  ASSERT_TRUE(ConvertElements(bf.data(), DataType::kBFloat16, half.data(), DataType::kFloat16, 2).ok());
  EXPECT_EQ(Fp16ToFp32(half[1]), -2.25f);
  auto bad = ConvertElements(f.data(), DataType::kFloat32, half.data(), DataType::kInt32, 2);
  EXPECT_EQ(bad.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(std::string(bad.message()).find("float32 to int32"), std::string::npos);
  EXPECT_FALSE(CanConvert(DataType::kFloat32, DataType::kFloat8E4M3));
  EXPECT_TRUE(CanConvert(DataType::kFloat8E4M3, DataType::kBFloat16));
}

}  // namespace
}  // namespace epserve
