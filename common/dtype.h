// Element types of tensors and collective buffers.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve {

enum class DataType {
  kFloat64,
  kFloat32,
  kBFloat16,
  kFloat16,
  kFloat8E4M3,  // OCP FP8 e4m3fn (finite, NaN only), as safetensors F8_E4M3
  kFloat8E5M2,
  kInt64,
  kInt32,
  kInt16,
  kInt8,
  kUInt64,
  kUInt32,
  kUInt16,
  kUInt8,
  kBool,
};

size_t DataTypeSize(DataType type);
// "float32", "bfloat16", "float16", "float8_e4m3fn", "int64", ... (the names
// torch and config.json use).
const char* DataTypeName(DataType type);
// Accepts the names above; the error lists the accepted ones.
absl::StatusOr<DataType> ParseDataType(absl::string_view name);

}  // namespace epserve
