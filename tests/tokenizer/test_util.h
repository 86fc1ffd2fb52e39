// Shared helpers for the tokenizer tests: reference vocabularies, fixtures,
// the ~1 MB input (same rule as tools/tokenizer_reference.py).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace epserve::tokenizer::testing {

inline const std::vector<std::string> kReferenceVocabs = {"qwen3", "llama2", "deepseek_v3"};

// Folder with <name>/tokenizer.json: $EPSERVE_TOKENIZER_DIR, else the path
// configured by CMake.
std::string TokenizerDir();

// The reference tokenizer `name`, loaded once per process. The error says to
// run tools/fetch_tokenizers.sh when the files are missing.
absl::StatusOr<const Tokenizer*> ReferenceTokenizer(const std::string& name);

struct CorpusLine {
  std::string name;
  std::string text;
};
std::vector<CorpusLine> LoadCorpus();
// tests/tokenizer/fixtures/<name>.json
nlohmann::json LoadFixture(const std::string& name);

// Corpus texts in order, each followed by '\n', cycled until >= 1 MiB.
std::string BigText(const std::vector<CorpusLine>& corpus);
// 64-bit FNV-1a over the ids as 4 little-endian bytes each, lower-case hex.
std::string Fnv1aIds(const std::vector<int32_t>& ids);

std::vector<int32_t> ToIds(const nlohmann::json& array);

// Streams `ids` through a StreamingDetokenizer one by one; returns the
// concatenated text, or an error. `deltas` (optional) receives each piece.
absl::StatusOr<std::string> StreamAll(const Tokenizer& tok, const std::vector<int32_t>& ids,
                                      bool skip_special, std::vector<std::string>* deltas = nullptr);

}  // namespace epserve::tokenizer::testing
