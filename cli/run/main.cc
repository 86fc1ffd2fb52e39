// epserve-run: the offline, single-process tool (no router, no workers):
// inspect checkpoints, tokenize, and (with the forward pass) generate and
// print logits for parity checks against transformers.
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/run/commands.h"
#include "common/logging.h"
#include "common/version.h"

namespace {

constexpr char kUsage[] =
    "epserve-run: offline single-process tool.\n\n"
    "  epserve-run inspect    --model DIR [--load-format auto|dummy] [--dtype D]\n"
    "                         [--expert-parallel N --rank R]\n"
    "  epserve-run tokenize   --tokenizer PATH (--text T | --text-file F)\n"
    "  epserve-run detokenize --tokenizer PATH --token-ids 1,2,3\n"
    "  epserve-run logits     --model DIR --token-ids 1,2,3 [--dtype D] [--device cpu|cuda:K]\n"
    "  epserve-run generate   --model DIR (--prompt TEXT | --token-ids 1,2,3) --max-tokens N\n"
    "                         [--device cpu|cuda:K] [sampling flags]\n\n"
    "Each command prints one JSON object on stdout. `epserve-run COMMAND --help` for details.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "--version") == 0) {
    std::printf("%s\n", epserve::VersionLine("epserve-run").c_str());
    return 0;
  }
  // Log lines go to stderr: stdout carries only the command's JSON.
  epserve::InitLogging("run", "info");
  std::string command = argv[1];
  for (const epserve::cli::Command& c : epserve::cli::Commands()) {
    if (command == c.name) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "epserve-run: error: unknown command '%s' (see epserve-run --help)\n",
               command.c_str());
  return 2;
}
