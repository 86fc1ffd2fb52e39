#include "common/flags/flags_util.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace epserve {

namespace {
std::string& ProgramName() {
  static std::string name = "epserve";
  return name;
}
}  // namespace

std::vector<std::string> ParseFlags(int argc, char** argv, absl::string_view usage) {
  if (argc > 0) ProgramName() = std::filesystem::path(argv[0]).filename().string();
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  // Only flags defined in epserve's own sources appear in --help.
  config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "router/") || absl::StrContains(file, "worker/") ||
           absl::StrContains(file, "cli/") || absl::StrContains(file, "common/");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.normalize_filename = [](absl::string_view file) { return std::string(file); };
  absl::SetFlagsUsageConfig(config);
  // Abseil flag names use '_'; accept the '-' spelling people type
  // (--local-workers) by rewriting the name part of each "--flag[=value]".
  std::vector<std::string> rewritten(argv, argv + argc);
  for (size_t i = 1; i < rewritten.size(); ++i) {
    std::string& arg = rewritten[i];
    if (arg == "--") break;
    if (arg.size() < 3 || arg[0] != '-') continue;
    size_t start = arg[1] == '-' ? 2 : 1;
    size_t end = std::min(arg.find('='), arg.size());
    for (size_t k = start; k < end; ++k) {
      if (arg[k] == '-') arg[k] = '_';
    }
  }
  std::vector<char*> ptrs;
  for (std::string& arg : rewritten) ptrs.push_back(arg.data());
  ptrs.push_back(nullptr);
  std::vector<char*> positional = absl::ParseCommandLine(argc, ptrs.data());
  return std::vector<std::string>(positional.begin(), positional.end());
}

void Die(absl::string_view message, int code) {
  std::fprintf(stderr, "%s: error: %s\n", ProgramName().c_str(),
               std::string(message).c_str());
  std::fflush(stderr);
  std::exit(code);
}

}  // namespace epserve
