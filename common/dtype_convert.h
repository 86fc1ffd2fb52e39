// Element conversions between floating-point storage types. Widening
// (bf16/fp16/fp8 -> fp32) is exact; narrowing rounds to nearest, ties to
// even, overflows to infinity and keeps NaN a NaN.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace epserve {

float Bf16ToFp32(uint16_t h);
uint16_t Fp32ToBf16(float f);
float Fp16ToFp32(uint16_t h);
uint16_t Fp32ToFp16(float f);
// OCP FP8: e4m3fn (no infinities; S.1111.111 is NaN) and e5m2.
float Fp8E4M3ToFp32(uint8_t b);
float Fp8E5M2ToFp32(uint8_t b);

// Whether ConvertElements supports src -> dst.
bool CanConvert(DataType src, DataType dst);

// Converts `count` elements. Supported: any of float32 / bfloat16 / float16
// to any of them, and float8 (e4m3fn, e5m2) to those three. Same type is a
// copy. Other pairs are an error naming both types.
absl::Status ConvertElements(const void* src, DataType src_type, void* dst, DataType dst_type,
                             int64_t count);

}  // namespace epserve
