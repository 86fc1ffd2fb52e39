// Shared command-line handling for epserve binaries (Abseil flags).
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace epserve {

// Parses argv with Abseil flags after setting a usage message. Flag names
// may be written with - or _ (--local-workers == --local_workers). `--help`
// lists only epserve's own flags (not Abseil's internal ones). Unknown flags
// and bad values print a one-line error and exit(2). Returns the positional
// arguments (argv[0] first).
std::vector<std::string> ParseFlags(int argc, char** argv, absl::string_view usage);

// Prints "<program>: error: <message>" to stderr and exits with `code`.
[[noreturn]] void Die(absl::string_view message, int code = 1);

}  // namespace epserve
