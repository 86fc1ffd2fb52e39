// The subcommands of epserve-run. Each takes argv with argv[0] = its name,
// prints JSON on stdout, errors as one line on stderr; exit 0 ok, 1 failure,
// 2 bad arguments.
#pragma once

#include <vector>

namespace epserve::cli {

struct Command {
  const char* name;
  int (*run)(int argc, char** argv);
};

const std::vector<Command>& Commands();

}  // namespace epserve::cli
