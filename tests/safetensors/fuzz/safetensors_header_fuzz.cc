// libFuzzer target for the safetensors header parser (clang builds only):
//   ninja -C build-sfz safetensors_header_fuzz
//   mkdir -p /tmp/sfz
//   build-sfz/tests/safetensors/safetensors_header_fuzz -max_total_time=60
//       /tmp/sfz tests/safetensors/corpus
// Also compiled into safetensors_test, which calls the same entry point on the
// committed corpus and on deterministic mutations of it.
#include "tests/safetensors/fuzz/safetensors_header_fuzz.h"

#include <cstdio>
#include <cstdlib>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/safetensors/header.h"

namespace epserve::safetensors::fuzz {

std::string CheckHeaderInvariants(const uint8_t* data, size_t size) {
  const auto parsed =
      ParseSafetensorsHeader(absl::Span<const uint8_t>(data, size), size, kFuzzFileName);
  if (!parsed.ok()) {
    const absl::Status& s = parsed.status();
    if (s.code() != absl::StatusCode::kInvalidArgument &&
        s.code() != absl::StatusCode::kDataLoss) {
      return absl::StrCat("unexpected status code: ", s.ToString());
    }
    if (!absl::StrContains(s.message(), kFuzzFileName)) {
      return absl::StrCat("error does not name the file: ", s.ToString());
    }
    return "";
  }
  const SafetensorsHeader& h = *parsed;
  if (h.header_bytes == 0 || h.header_bytes > kMaxHeaderBytes) return "header length out of range";
  if (h.data_section_offset != kPrefixBytes + h.header_bytes) return "wrong data section offset";
  if (h.data_section_offset + h.data_section_bytes != size) return "data section size mismatch";
  std::set<std::string> names;
  uint64_t cursor = 0;
  for (const TensorInfo& t : h.tensors) {
    if (!names.insert(t.name).second) return absl::StrCat("duplicate name ", t.name);
    if (t.begin != cursor) return absl::StrCat("tensor ", t.name, " does not start at ", cursor);
    if (t.end < t.begin) return absl::StrCat("tensor ", t.name, " has begin > end");
    for (int64_t d : t.shape) {
      if (d < 0) return absl::StrCat("tensor ", t.name, " has a negative dimension");
    }
    const int64_t elements = t.num_elements();
    if (elements < 0 ||
        static_cast<uint64_t>(elements) * DataTypeSize(t.dtype) != t.num_bytes()) {
      return absl::StrCat("tensor ", t.name, " size does not match shape x dtype");
    }
    auto round_trip = ParseSafetensorsDType(SafetensorsDTypeName(t.dtype));
    if (!round_trip.ok() || *round_trip != t.dtype) return "dtype name does not round-trip";
    cursor = t.end;
  }
  if (cursor != h.data_section_bytes) return "tensors do not cover the data section";
  return "";
}

}  // namespace epserve::safetensors::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string failure = epserve::safetensors::fuzz::CheckHeaderInvariants(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "property violated: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}
