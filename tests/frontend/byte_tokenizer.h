// A byte-level BPE tokenizer without merges: text encodes to its bytes (id b
// is byte b) and ids decode back to the bytes. Ids >= 256 are outside its
// vocabulary.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>

#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace epserve::frontend::testing {

inline std::shared_ptr<const tokenizer::Tokenizer> ByteTokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[tokenizer::ByteToChar(static_cast<uint8_t>(b))] = b;
  nlohmann::json j = {
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
  auto t = tokenizer::Tokenizer::FromJson(j.dump(), "");
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::shared_ptr<const tokenizer::Tokenizer>(std::move(*t)) : nullptr;
}

}  // namespace epserve::frontend::testing
