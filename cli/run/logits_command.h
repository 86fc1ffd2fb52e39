// epserve-run logits: one full prefill of the given token ids on the CPU
// backend, printing the logits after every position (the parity-test entry
// point against transformers):
//
//   epserve-run logits --model DIR --token-ids 1,2,3 [--dtype auto|bfloat16|float16|float32]
//   {"logits": [[...V floats...] per position], "vocab_size": V}
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace epserve::cli {

int RunLogitsCommand(int argc, char** argv);
// Same, writing to the given streams (for tests).
int RunLogitsCommand(int argc, char** argv, std::ostream& out, std::ostream& err);

// Parses "1,2,3" into ids; an error message naming the bad entry, or nullopt.
std::optional<std::string> ParseTokenIdList(const std::string& text, std::vector<int32_t>* ids);

// A status message on one line (newlines become "; ").
std::string OneLine(const std::string& message);

}  // namespace epserve::cli
