#include "common/dtype.h"

#include "absl/strings/str_cat.h"

namespace epserve {
namespace {

struct Entry {
  DataType type;
  const char* name;
  size_t size;
};

constexpr Entry kEntries[] = {
    {DataType::kFloat64, "float64", 8},
    {DataType::kFloat32, "float32", 4},
    {DataType::kBFloat16, "bfloat16", 2},
    {DataType::kFloat16, "float16", 2},
    {DataType::kFloat8E4M3, "float8_e4m3fn", 1},
    {DataType::kFloat8E5M2, "float8_e5m2", 1},
    {DataType::kInt64, "int64", 8},
    {DataType::kInt32, "int32", 4},
    {DataType::kInt16, "int16", 2},
    {DataType::kInt8, "int8", 1},
    {DataType::kUInt64, "uint64", 8},
    {DataType::kUInt32, "uint32", 4},
    {DataType::kUInt16, "uint16", 2},
    {DataType::kUInt8, "uint8", 1},
    {DataType::kBool, "bool", 1},
};

const Entry& Find(DataType type) {
  for (const Entry& e : kEntries) {
    if (e.type == type) return e;
  }
  return kEntries[0];  // unreachable: every enumerator is in the table
}

}  // namespace

size_t DataTypeSize(DataType type) { return Find(type).size; }
const char* DataTypeName(DataType type) { return Find(type).name; }

absl::StatusOr<DataType> ParseDataType(absl::string_view name) {
  std::string accepted;
  for (const Entry& e : kEntries) {
    if (name == e.name) return e.type;
    absl::StrAppend(&accepted, accepted.empty() ? "" : ", ", e.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown data type '", name, "' (accepted: ", accepted, ")"));
}

}  // namespace epserve
