// `epserve-run tokenize` and `epserve-run detokenize`: the tokenizer from the
// command line, printing one JSON object on stdout.
//
//   epserve-run tokenize --tokenizer PATH (--text T | --text-file F)
//                        [--no-add-special-tokens] [--no-parse-special-tokens]
//     -> {"ids":[...],"num_tokens":N,"tokens":["...", ...]}
//   epserve-run detokenize --tokenizer PATH --token-ids 1,2,3 [--skip-special-tokens]
//     -> {"text":"..."}
//
// PATH is a model directory (tokenizer.json + optional tokenizer_config.json)
// or a tokenizer.json file. argv[0] is the subcommand name. Exit codes: 0 ok,
// 1 the tokenizer failed (message on stderr), 2 bad arguments (one line on stderr).
#pragma once

#include <ostream>

namespace epserve::cli {

int RunTokenizeCommand(int argc, char** argv);
int RunDetokenizeCommand(int argc, char** argv);

// Same, writing to the given streams (for tests).
int RunTokenizeCommand(int argc, char** argv, std::ostream& out, std::ostream& err);
int RunDetokenizeCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace epserve::cli
