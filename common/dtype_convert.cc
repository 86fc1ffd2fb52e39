#include "common/dtype_convert.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

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

bool IsFloat(DataType t) {
  return t == DataType::kFloat32 || t == DataType::kBFloat16 || t == DataType::kFloat16;
}

bool IsFp8(DataType t) { return t == DataType::kFloat8E4M3 || t == DataType::kFloat8E5M2; }

float Load(const void* src, DataType type, int64_t i) {
  switch (type) {
    case DataType::kFloat32:
      return static_cast<const float*>(src)[i];
    case DataType::kBFloat16:
      return Bf16ToFp32(static_cast<const uint16_t*>(src)[i]);
    case DataType::kFloat16:
      return Fp16ToFp32(static_cast<const uint16_t*>(src)[i]);
    case DataType::kFloat8E4M3:
      return Fp8E4M3ToFp32(static_cast<const uint8_t*>(src)[i]);
    default:
      return Fp8E5M2ToFp32(static_cast<const uint8_t*>(src)[i]);
  }
}

void Store(void* dst, DataType type, int64_t i, float v) {
  switch (type) {
    case DataType::kFloat32:
      static_cast<float*>(dst)[i] = v;
      break;
    case DataType::kBFloat16:
      static_cast<uint16_t*>(dst)[i] = Fp32ToBf16(v);
      break;
    default:
      static_cast<uint16_t*>(dst)[i] = Fp32ToFp16(v);
      break;
  }
}

}  // namespace

float Bf16ToFp32(uint16_t h) { return FromBits(static_cast<uint32_t>(h) << 16); }

uint16_t Fp32ToBf16(float f) {
  uint32_t u = Bits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((u >> 16) | 0x0040);  // quiet NaN, sign kept
  uint32_t rounding = 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

float Fp16ToFp32(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24.
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return FromBits(sign | 0x7F800000 | (mant << 13));  // inf / NaN
  return FromBits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t Fp32ToFp16(float f) {
  uint32_t u = Bits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  uint32_t abs = u & 0x7FFFFFFF;
  if (abs > 0x7F800000) return static_cast<uint16_t>(sign | 0x7E00);  // NaN
  if (abs >= 0x477FF000) return static_cast<uint16_t>(sign | 0x7C00);  // rounds to >= 65520: inf
  int32_t exp = static_cast<int32_t>(abs >> 23) - 127;
  if (exp < -14) {
    // Subnormal (or zero) in fp16: value = m * 2^-24 with m rounded to even.
    float a = FromBits(abs);
    float scaled = a * 16777216.0f;  // 2^24, exact
    float m = std::nearbyint(scaled);  // default rounding mode: ties to even
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(m));
  }
  uint32_t mant = abs & 0x7FFFFF;
  uint32_t half = (static_cast<uint32_t>(exp + 15) << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;  // carries into exp correctly
  return static_cast<uint16_t>(sign | half);
}

float Fp8E4M3ToFp32(uint8_t b) {
  float sign = (b & 0x80) ? -1.0f : 1.0f;
  int exp = (b >> 3) & 0xF;
  int mant = b & 0x7;
  if (exp == 0xF && mant == 0x7) return std::nanf("");
  if (exp == 0) return sign * std::ldexp(static_cast<float>(mant), -9);  // subnormal: m/8 * 2^-6
  return sign * std::ldexp(1.0f + mant / 8.0f, exp - 7);
}

float Fp8E5M2ToFp32(uint8_t b) {
  // e5m2 is the top byte of an fp16.
  return Fp16ToFp32(static_cast<uint16_t>(b) << 8);
}

bool CanConvert(DataType src, DataType dst) {
  if (src == dst) return true;
  return IsFloat(dst) && (IsFloat(src) || IsFp8(src));
}

absl::Status ConvertElements(const void* src, DataType src_type, void* dst, DataType dst_type,
                             int64_t count) {
  if (!CanConvert(src_type, dst_type)) {
    return absl::UnimplementedError(absl::StrCat("no conversion from ", DataTypeName(src_type),
                                                 " to ", DataTypeName(dst_type)));
  }
  if (count <= 0) return absl::OkStatus();
  if (src_type == dst_type) {
    std::memcpy(dst, src, static_cast<size_t>(count) * DataTypeSize(src_type));
    return absl::OkStatus();
  }
  for (int64_t i = 0; i < count; ++i) Store(dst, dst_type, i, Load(src, src_type, i));
  return absl::OkStatus();
}

}  // namespace epserve
