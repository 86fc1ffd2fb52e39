#include "cli/run/commands.h"

#include "cli/run/inspect_command.h"
#include "cli/run/tokenize_command.h"

namespace epserve::cli {

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"inspect", [](int argc, char** argv) { return RunInspectCommand(argc, argv); }},
      {"tokenize", [](int argc, char** argv) { return RunTokenizeCommand(argc, argv); }},
      {"detokenize", [](int argc, char** argv) { return RunDetokenizeCommand(argc, argv); }},
  };
  return commands;
}

}  // namespace epserve::cli
