// epserve-run generate: greedy generation on the CPU backend, single process
// (prefill, then one token per decode step through the paged KV cache):
//
//   epserve-run generate --model DIR (--prompt TEXT | --token-ids 1,2,3) --max-tokens N
//                        [--dtype D] [--ignore-eos]
//   {"prompt_ids": [...], "generated_ids": [...], "text": "...", "finish_reason": "stop"|"length"}
//
// The prompt is encoded with the model directory's tokenizer (special tokens
// added and parsed, as `tokenize` does); `text` decodes the generated ids
// without special tokens. Generation stops at config.json's eos_token_id
// unless --ignore-eos. Sampling comes with worker/sampling; this is greedy.
#pragma once

#include <ostream>

namespace epserve::cli {

int RunGenerateCommand(int argc, char** argv);
// Same, writing to the given streams (for tests).
int RunGenerateCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace epserve::cli
