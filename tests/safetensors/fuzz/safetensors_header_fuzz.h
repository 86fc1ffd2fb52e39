// The property the safetensors header fuzzer checks, shared with the gtest
// that replays the corpus (so gcc builds run it too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace epserve::safetensors::fuzz {

// The file name ParseSafetensorsHeader is given; every error must name it.
inline constexpr char kFuzzFileName[] = "fuzz-input.safetensors";

// Parses `data` as a whole safetensors file (file_size = size). Returns "" when
// the result is consistent: either an InvalidArgument/DataLoss error naming
// the file, or a header whose tensors have known dtypes, unique names, sizes
// equal to shape x dtype size, and ranges that tile the data section exactly.
// Otherwise a description of the violated property.
std::string CheckHeaderInvariants(const uint8_t* data, size_t size);

}  // namespace epserve::safetensors::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
