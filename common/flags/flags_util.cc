#include "common/flags/flags_util.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/internal/program_name.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/version.h"

namespace epserve {

namespace {
std::string& ProgramName() {
  static std::string name = "epserve";
  return name;
}

// The flag name of a command-line argument ("--max-tokens=8" -> "max_tokens"),
// or "" for a positional argument.
std::string FlagName(absl::string_view arg) {
  if (arg.size() < 2 || arg[0] != '-' || arg == "-") return "";
  arg.remove_prefix(arg[1] == '-' ? 2 : 1);
  std::string name(arg.substr(0, arg.find('=')));
  for (char& c : name) {
    if (c == '-') c = '_';
  }
  return name;
}

// --help / --version and their spellings, answered before Abseil parses (it
// exits 1 after --help).
enum class Special { kNone, kHelp, kVersion };
Special FindSpecial(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    const std::string name = FlagName(arg);
    if (name == "help" || name == "h" || name == "helpfull" || name == "helpshort") {
      return Special::kHelp;
    }
    if (name == "version") return Special::kVersion;
  }
  return Special::kNone;
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
  config.version_string = [] { return VersionLine(ProgramName()) + "\n"; };
  absl::SetFlagsUsageConfig(config);
  if (argc > 0) absl::flags_internal::SetProgramInvocationName(argv[0]);
  switch (FindSpecial(argc, argv)) {
    case Special::kHelp:
      absl::flags_internal::SetFlagsHelpMode(absl::flags_internal::HelpMode::kImportant);
      absl::flags_internal::HandleUsageFlags(std::cout, usage);
      std::cout.flush();
      std::exit(0);
    case Special::kVersion:
      std::cout << VersionLine(ProgramName()) << std::endl;
      std::exit(0);
    case Special::kNone:
      break;
  }
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
  // An unknown flag is a usage error (exit 2) naming it; Abseil would exit 1.
  for (size_t i = 1; i < rewritten.size(); ++i) {
    if (rewritten[i] == "--") break;
    const std::string name = FlagName(rewritten[i]);
    if (name.empty()) continue;
    if (const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name)) {
      // "--flag value": the next argument is the value, whatever it looks like.
      if (rewritten[i].find('=') == std::string::npos && !flag->IsOfType<bool>()) ++i;
      continue;
    }
    if (absl::StartsWith(name, "no") && absl::FindCommandLineFlag(name.substr(2)) != nullptr) {
      continue;  // --noflag of a bool
    }
    if (name == "flagfile" || name == "fromenv" || name == "tryfromenv" || name == "undefok") {
      continue;  // Abseil's own
    }
    Die(absl::StrCat("unknown flag --", name, " (see --help)"), 2);
  }
  std::vector<char*> ptrs;
  for (std::string& arg : rewritten) ptrs.push_back(arg.data());
  ptrs.push_back(nullptr);
  std::vector<char*> positional = absl::ParseCommandLine(argc, ptrs.data());
  return std::vector<std::string>(positional.begin(), positional.end());
}

absl::Status CheckFlagsOf(const std::vector<std::string>& args, absl::string_view command,
                          const std::vector<absl::string_view>& sources,
                          const std::vector<absl::string_view>& shared_flags) {
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--") break;
    std::string name = FlagName(args[i]);
    if (name.empty()) continue;
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag != nullptr && args[i].find('=') == std::string::npos && !flag->IsOfType<bool>()) {
      ++i;  // its value
    }
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));  // --noflag of a bool
    }
    if (flag == nullptr) continue;  // unknown flags are the parser's error
    const std::string file = flag->Filename();
    bool ours = false;
    for (absl::string_view source : sources) ours = ours || absl::EndsWith(file, source);
    for (absl::string_view shared : shared_flags) ours = ours || flag->Name() == shared;
    if (!ours) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag->Name(), " is not an option of '", command, "' (see --help)"));
    }
  }
  return absl::OkStatus();
}

void Die(absl::string_view message, int code) {
  std::fprintf(stderr, "%s: error: %s\n", ProgramName().c_str(),
               std::string(message).c_str());
  std::fflush(stderr);
  if (const char* path = std::getenv(kErrorFileEnv); path != nullptr && *path != '\0') {
    if (std::FILE* f = std::fopen(path, "w")) {
      std::fprintf(f, "%.*s\n", static_cast<int>(message.size()), message.data());
      std::fclose(f);
    }
  }
  std::exit(code);
}

}  // namespace epserve
