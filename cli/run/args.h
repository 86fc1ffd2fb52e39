// Argument parsing for epserve-run subcommands: --name value, --name=value
// and bare --flag options, each named up front; anything else is an error.
#pragma once

#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>

namespace epserve::cli {

struct Args {
  std::map<std::string, std::string> values;
  std::set<std::string> flags;

  bool has(const std::string& name) const { return values.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    auto it = values.find(name);
    return it == values.end() ? fallback : it->second;
  }
};

// Parses argv[1..]; returns an error message, or nullopt on success.
std::optional<std::string> ParseArgs(int argc, char** argv, const std::set<std::string>& value_opts,
                                     const std::set<std::string>& flag_opts, Args& args);

// Prints "epserve-run COMMAND: error: MESSAGE" and returns exit code 2.
int UsageError(std::ostream& err, const char* command, const std::string& message);

}  // namespace epserve::cli
