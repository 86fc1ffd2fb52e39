// Element types of tensors and collective buffers.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace epserve {

enum class DataType { kFloat32, kBFloat16, kFloat16, kInt64, kInt32, kInt16, kInt8, kUInt8 };

size_t DataTypeSize(DataType type);
// "float32", "bfloat16", "float16", "int64", ... (the names config.json uses).
const char* DataTypeName(DataType type);
// Accepts the names above; the error lists the accepted ones.
absl::StatusOr<DataType> ParseDataType(absl::string_view name);

}  // namespace epserve
