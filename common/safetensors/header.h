// The safetensors header: layout, validation and the tensor table.
//
//   offset 0        8                8+N                          file_size
//          +--------+----------------+------------------------------+
//          | N (LE) | JSON header    | data section                 |
//          | u64    | N bytes, UTF-8 | tensors back to back, no gap |
//          +--------+----------------+------------------------------+
//
// Tensor byte ranges in the header ("data_offsets": [begin, end]) are relative
// to the start of the data section. A valid file's ranges tile the data section
// exactly: no overlap, no gap, no trailing bytes (as the format's reference
// implementation requires).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/dtype.h"

namespace epserve::safetensors {

// Size of the little-endian u64 header-length prefix.
inline constexpr uint64_t kPrefixBytes = 8;
// Largest accepted JSON header, as the reference implementation (100 MB).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// One tensor of a safetensors file. Produced only by ParseSafetensorsHeader,
// so shape, dtype and byte range are consistent and overflow-free.
struct TensorInfo {
  std::string name;
  DataType dtype = DataType::kFloat32;
  std::vector<int64_t> shape;  // every dim >= 0; [] is a scalar
  uint64_t begin = 0;          // byte range [begin, end) relative to the data section
  uint64_t end = 0;

  uint64_t num_bytes() const { return end - begin; }
  // Product of `shape` (1 for a scalar). Validated to fit int64 at parse time.
  int64_t num_elements() const;
};

// A validated header.
struct SafetensorsHeader {
  uint64_t header_bytes = 0;         // N, the JSON length (including padding)
  uint64_t data_section_offset = 0;  // 8 + N: file offset of the data section
  uint64_t data_section_bytes = 0;   // file_size - (8 + N)
  std::vector<TensorInfo> tensors;   // sorted by `begin` (file order)
  std::map<std::string, std::string> metadata;  // "__metadata__", may be empty
};

// The safetensors dtype string ("BF16") of `type`, and the inverse. Unknown
// strings give InvalidArgument listing the accepted ones.
const char* SafetensorsDTypeName(DataType type);
absl::StatusOr<DataType> ParseSafetensorsDType(absl::string_view name);

// Decodes and checks the 8-byte prefix: `prefix` holds at least its first 8
// bytes of the file. Returns N after checking N against the cap and against
// `file_size`. DataLoss when the file is too short for the prefix or for the
// header it announces; InvalidArgument for N == 0 or N > kMaxHeaderBytes.
absl::StatusOr<uint64_t> ParseSafetensorsHeaderLength(absl::Span<const uint8_t> prefix,
                                                      uint64_t file_size,
                                                      absl::string_view file_name);

// Validates a safetensors header and returns its tensor table. A pure
// function over untrusted bytes (the fuzz entry point):
//   `bytes`     the start of the file: at least 8 + N bytes (more is ignored,
//               so a whole file in memory may be passed);
//   `file_size` the size of the whole file, which bounds the data section;
//   `file_name` only used in error messages.
// Every error names the file and, where there is one, the tensor, and says
// what was expected and what was found. DataLoss means the file is shorter
// than its header says (a truncated download); everything else is
// InvalidArgument.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::Span<const uint8_t> bytes,
                                                         uint64_t file_size,
                                                         absl::string_view file_name);

}  // namespace epserve::safetensors
