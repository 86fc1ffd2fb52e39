// Unguessable values (secrets, request ids) from the kernel's CSPRNG.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace epserve {

// `bytes` bytes from getrandom(2), as lowercase hex (2 * bytes characters).
absl::StatusOr<std::string> RandomHex(size_t bytes);

}  // namespace epserve
