// Shared command-line handling for epserve binaries (Abseil flags).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace epserve {

// Parses argv with Abseil flags after setting a usage message. Flag names
// may be written with - or _ (--local-workers == --local_workers). `--help`
// (-h, --helpfull, --helpshort) prints the usage and epserve's own flags (not
// Abseil's internal ones) on stdout and exits 0; `--version` prints
// VersionLine (common/version.h) and exits 0. An unknown flag prints a
// one-line error naming it and exits 2; a bad value, Abseil's error and
// exit 1. Returns the positional arguments (argv[0] first).
std::vector<std::string> ParseFlags(int argc, char** argv, absl::string_view usage);

// For programs with subcommands whose flags share one Abseil registry: every
// flag given in `args` (argv, flags spelled with - or _) must be defined in a
// source file whose path ends with one of `sources`; otherwise an error
// naming the flag and `command`. `shared_flags` names flags the command also
// takes although another command's source defines them.
absl::Status CheckFlagsOf(const std::vector<std::string>& args, absl::string_view command,
                          const std::vector<absl::string_view>& sources,
                          const std::vector<absl::string_view>& shared_flags = {});

// Environment variable naming a file where Die() also writes its message:
// how the router learns why a local worker exited, and Kubernetes' pod
// termination message (/dev/termination-log).
inline constexpr char kErrorFileEnv[] = "EPSERVE_ERROR_FILE";

// Prints "<program>: error: <message>" to stderr (and to $EPSERVE_ERROR_FILE
// when set) and exits with `code`.
[[noreturn]] void Die(absl::string_view message, int code = 1);

}  // namespace epserve
