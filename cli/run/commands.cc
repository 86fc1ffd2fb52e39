#include "cli/run/commands.h"

#include "cli/run/generate_command.h"
#include "cli/run/inspect_command.h"
#include "cli/run/logits_command.h"
#include "cli/run/tokenize_command.h"

namespace epserve::cli {

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"inspect", [](int argc, char** argv) { return RunInspectCommand(argc, argv); }},
      {"tokenize", [](int argc, char** argv) { return RunTokenizeCommand(argc, argv); }},
      {"detokenize", [](int argc, char** argv) { return RunDetokenizeCommand(argc, argv); }},
      {"logits", [](int argc, char** argv) { return RunLogitsCommand(argc, argv); }},
      {"generate", [](int argc, char** argv) { return RunGenerateCommand(argc, argv); }},
  };
  return commands;
}

}  // namespace epserve::cli
