#include "common/safetensors/header.h"

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/safetensors/json_schema.h"
#include "common/status.h"

namespace epserve::safetensors {
namespace {

constexpr uint64_t kMaxInt64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

struct DTypeName {
  DataType type;
  const char* name;
};
constexpr DTypeName kDTypes[] = {
    {DataType::kFloat64, "F64"},     {DataType::kFloat32, "F32"},
    {DataType::kFloat16, "F16"},     {DataType::kBFloat16, "BF16"},
    {DataType::kFloat8E4M3, "F8_E4M3"}, {DataType::kFloat8E5M2, "F8_E5M2"},
    {DataType::kInt64, "I64"},       {DataType::kInt32, "I32"},
    {DataType::kInt16, "I16"},       {DataType::kInt8, "I8"},
    {DataType::kUInt64, "U64"},      {DataType::kUInt32, "U32"},
    {DataType::kUInt16, "U16"},      {DataType::kUInt8, "U8"},
    {DataType::kBool, "BOOL"},
};

// Offset of the first byte that is not part of well-formed UTF-8 (no overlong
// forms, no surrogates, nothing above U+10FFFF), or npos when all is valid.
size_t FirstInvalidUtf8(absl::Span<const uint8_t> s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // > U+10FFFF
    } else {
      return i;
    }
    if (s.size() - i < len) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return absl::string_view::npos;
}

std::string ShapeString(const std::vector<uint64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Converts one raw entry into a TensorInfo: dtype known, dims fit int64,
// [begin, end] ordered, and elements x dtype size == end - begin without
// overflow. Placement in the data section is checked by the caller.
absl::StatusOr<TensorInfo> ValidateEntry(const RawTensorEntry& raw, absl::string_view file_name) {
  const auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file ", file_name, ": tensor ", QuoteForError(raw.name), ": ",
                     what));
  };
  if (!raw.has_dtype) return error("missing \"dtype\"");
  if (!raw.has_shape) return error("missing \"shape\"");
  if (!raw.has_offsets) return error("missing \"data_offsets\"");

  TensorInfo info;
  info.name = raw.name;
  auto dtype = ParseSafetensorsDType(raw.dtype);
  if (!dtype.ok()) return error(dtype.status().message());
  info.dtype = *dtype;

  // Element count with overflow checks; any zero dimension makes it 0.
  const bool has_zero = std::find(raw.shape.begin(), raw.shape.end(), 0u) != raw.shape.end();
  uint64_t num_elements = 1;
  for (size_t i = 0; i < raw.shape.size(); ++i) {
    const uint64_t dim = raw.shape[i];
    if (dim > kMaxInt64) {
      return error(absl::StrCat("shape[", i, "] = ", dim, " exceeds the largest dimension ",
                                kMaxInt64));
    }
    info.shape.push_back(static_cast<int64_t>(dim));
    if (has_zero) continue;
    if (num_elements > kMaxInt64 / dim) {
      return error(absl::StrCat("shape ", ShapeString(raw.shape),
                                " has more elements than fit in 64 bits (overflow)"));
    }
    num_elements *= dim;
  }
  if (has_zero) num_elements = 0;

  if (raw.offsets.size() != 2) {
    return error(absl::StrCat("\"data_offsets\" must be [begin, end], found ", raw.offsets.size(),
                              " values"));
  }
  info.begin = raw.offsets[0];
  info.end = raw.offsets[1];
  if (info.begin > info.end) {
    return error(absl::StrCat("data_offsets [", info.begin, ", ", info.end,
                              "]: begin > end (expected begin <= end)"));
  }
  const uint64_t elem_size = DataTypeSize(info.dtype);
  if (num_elements > std::numeric_limits<uint64_t>::max() / elem_size) {
    return error(absl::StrCat("shape ", ShapeString(raw.shape), " x ", raw.dtype, " (", elem_size,
                              " bytes) overflows 64 bits"));
  }
  const uint64_t expected = num_elements * elem_size;
  if (expected != info.num_bytes()) {
    return error(absl::StrCat("shape ", ShapeString(raw.shape), " x ", raw.dtype, " (",
                              elem_size, " bytes) needs ", expected, " bytes, but data_offsets [",
                              info.begin, ", ", info.end, "] span ", info.num_bytes(), " bytes"));
  }
  return info;
}

}  // namespace

int64_t TensorInfo::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  for (int64_t d : shape) n *= d;  // fits: validated by ParseSafetensorsHeader
  return n;
}

const char* SafetensorsDTypeName(DataType type) {
  for (const DTypeName& d : kDTypes) {
    if (d.type == type) return d.name;
  }
  return "?";  // unreachable: every DataType has a safetensors name
}

absl::StatusOr<DataType> ParseSafetensorsDType(absl::string_view name) {
  std::string accepted;
  for (const DTypeName& d : kDTypes) {
    if (name == d.name) return d.type;
    absl::StrAppend(&accepted, accepted.empty() ? "" : " ", d.name);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype ", QuoteForError(name),
                                                 " (expected one of: ", accepted, ")"));
}

absl::StatusOr<uint64_t> ParseSafetensorsHeaderLength(absl::Span<const uint8_t> prefix,
                                                      uint64_t file_size,
                                                      absl::string_view file_name) {
  const std::string where = absl::StrCat("safetensors file ", file_name, ": ");
  if (file_size < kPrefixBytes) {
    return absl::DataLossError(absl::StrCat(where, "file is ", file_size,
                                            " bytes, shorter than the 8-byte header length "
                                            "prefix (truncated?)"));
  }
  if (prefix.size() < kPrefixBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "need the first 8 bytes to read the header length, got ",
                     prefix.size()));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | prefix[i];
  if (n == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "header length is 0; expected a JSON object of at least 2 bytes"));
  }
  if (n > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "header length ", n, " exceeds the cap of ", kMaxHeaderBytes, " bytes"));
  }
  if (n > file_size - kPrefixBytes) {  // no overflow: file_size >= 8
    return absl::DataLossError(absl::StrCat(where, "header length ", n, " extends past the end of ",
                                            "the file (expected at most ", file_size - kPrefixBytes,
                                            " bytes after the prefix; truncated?)"));
  }
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::Span<const uint8_t> bytes,
                                                         uint64_t file_size,
                                                         absl::string_view file_name) {
  ASSIGN_OR_RETURN(const uint64_t n, ParseSafetensorsHeaderLength(bytes, file_size, file_name));
  const std::string where = absl::StrCat("safetensors file ", file_name, ": ");
  if (bytes.size() - kPrefixBytes < n) {
    return absl::InvalidArgumentError(absl::StrCat(where, "only ", bytes.size() - kPrefixBytes,
                                                   " of the ", n, " header bytes were provided"));
  }
  SafetensorsHeader header;
  header.header_bytes = n;
  header.data_section_offset = kPrefixBytes + n;
  header.data_section_bytes = file_size - header.data_section_offset;

  const absl::Span<const uint8_t> json = bytes.subspan(kPrefixBytes, n);
  if (const size_t bad = FirstInvalidUtf8(json); bad != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "header is not valid UTF-8 (bad byte 0x",
                     absl::Hex(json[bad], absl::kZeroPad2), " at header offset ", bad, ")"));
  }
  // nlohmann's lexer stops at a NUL byte as if the input ended there, which
  // would let anything after it through; JSON has no raw NUL anywhere.
  if (const auto nul = std::find(json.begin(), json.end(), 0); nul != json.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "header is not valid JSON (NUL byte at header offset ", nul - json.begin(), ")"));
  }
  if (json[0] != '{') {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "header is not a JSON object (expected '{' as its first byte, found ",
        QuoteForError(absl::string_view(reinterpret_cast<const char*>(json.data()), 1)), ")"));
  }
  std::vector<RawTensorEntry> raw;
  RETURN_IF_ERROR(ParseHeaderJson(json, file_name, &raw, &header.metadata));

  header.tensors.reserve(raw.size());
  for (const RawTensorEntry& entry : raw) {
    ASSIGN_OR_RETURN(TensorInfo info, ValidateEntry(entry, file_name));
    header.tensors.push_back(std::move(info));
  }

  // The ranges must tile [0, data_section_bytes) in order.
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  uint64_t cursor = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : header.tensors) {
    if (t.begin < cursor) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "tensor ", QuoteForError(t.name), " data_offsets [", t.begin, ", ", t.end,
          "] overlap tensor ", QuoteForError(previous->name), " [", previous->begin, ", ",
          previous->end, "] (expected ranges that do not overlap)"));
    }
    if (t.begin > cursor) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "gap in the data section: bytes [", cursor, ", ", t.begin,
          ") belong to no tensor (expected tensor ", QuoteForError(t.name), " to begin at ",
          cursor, ")"));
    }
    cursor = t.end;
    previous = &t;
  }
  if (cursor > header.data_section_bytes) {
    return absl::DataLossError(absl::StrCat(
        where, "tensor ", QuoteForError(previous->name), " ends at data offset ", cursor,
        " but the data section has only ", header.data_section_bytes,
        " bytes (file truncated? expected file size ", header.data_section_offset,
        " + ", cursor, ")"));
  }
  if (cursor < header.data_section_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, "trailing bytes: the tensors cover ", cursor, " bytes but the data section has ",
        header.data_section_bytes, " (expected the data section to be fully covered)"));
  }
  return header;
}

}  // namespace epserve::safetensors
