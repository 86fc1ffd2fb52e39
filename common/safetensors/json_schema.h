// Streaming (SAX) reader of the safetensors JSON header. Internal to
// epserve_safetensors: header.cc validates what this returns.
//
// The schema is enforced while parsing, so a hostile header never becomes a
// large or deep DOM: the root must be an object; "__metadata__" (optional, or
// null) an object of string values; every other key a tensor entry object with
// "dtype" (string), "shape" (array of non-negative integers) and
// "data_offsets" (array of non-negative integers). Unknown keys inside a
// tensor entry are skipped, as the reference implementation ignores them.
// Duplicate keys at any level are rejected.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace epserve::safetensors {

// A tensor entry as written in the header, types checked, values not yet.
struct RawTensorEntry {
  std::string name;
  bool has_dtype = false;
  bool has_shape = false;
  bool has_offsets = false;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint64_t> offsets;
};

// Parses `json` (valid UTF-8, starting with '{') into tensor entries, in
// header order, and the metadata map. Errors are InvalidArgument naming
// `file_name` and, inside an entry, the tensor.
absl::Status ParseHeaderJson(absl::Span<const uint8_t> json, absl::string_view file_name,
                             std::vector<RawTensorEntry>* tensors,
                             std::map<std::string, std::string>* metadata);

// `s` in double quotes for an error message, cut to 200 bytes (at a UTF-8
// character boundary) with "..." appended when longer; control bytes escaped.
std::string QuoteForError(absl::string_view s);

}  // namespace epserve::safetensors
