// Ids and decodes against Hugging Face `tokenizers` (fixtures written by
// tools/tokenizer_reference.py) for the three real vocabularies.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tokenizer/unicode.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/test_util.h"

namespace epserve::tokenizer::testing {
namespace {

class ReferenceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto tok = ReferenceTokenizer(GetParam());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *tok;
    fixture_ = LoadFixture(GetParam());
    corpus_ = LoadCorpus();
    ASSERT_EQ(fixture_["cases"].size(), corpus_.size()) << "fixture does not match corpus.jsonl";
  }

  // Describes the first difference between two id lists.
  std::string Diff(const std::vector<int32_t>& got, const std::vector<int32_t>& want) const {
    size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
    const auto token = [&](const std::vector<int32_t>& v) -> std::string {
      if (i >= v.size()) return "<end>";
      const std::string* t = tok_->IdToToken(v[i]);
      return absl::StrCat(v[i], " '", t ? *t : "?", "'");
    };
    return absl::StrCat("first difference at index ", i, ": got ", token(got), ", want ",
                        token(want), " (got ", got.size(), " ids, want ", want.size(), ")");
  }

  const Tokenizer* tok_ = nullptr;
  nlohmann::json fixture_;
  std::vector<CorpusLine> corpus_;
};

TEST_P(ReferenceTest, EncodeMatches) {
  int checked = 0;
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const auto& want = fixture_["cases"][i];
    ASSERT_EQ(want["name"], corpus_[i].name);
    struct Mode {
      const char* key;
      EncodeOptions options;
    };
    for (const Mode& m : {Mode{"ids", {.add_special_tokens = false}},
                          Mode{"ids_special", {.add_special_tokens = true}},
                          Mode{"ids_text_specials",
                               {.add_special_tokens = false, .parse_special_tokens = false}}}) {
      auto got = tok_->Encode(corpus_[i].text, m.options);
      ASSERT_TRUE(got.ok()) << corpus_[i].name << ": " << got.status();
      const std::vector<int32_t> expected = ToIds(want[m.key]);
      EXPECT_EQ(*got, expected) << corpus_[i].name << " [" << m.key << "] " << Diff(*got, expected);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 3 * static_cast<int>(corpus_.size()));
}

TEST_P(ReferenceTest, DecodeMatches) {
  for (size_t i = 0; i < corpus_.size(); ++i) {
    const auto& want = fixture_["cases"][i];
    const std::vector<int32_t> special = ToIds(want["ids_special"]);
    auto full = tok_->Decode(special, {.skip_special_tokens = false});
    ASSERT_TRUE(full.ok()) << full.status();
    EXPECT_EQ(*full, want["decode"].get<std::string>()) << corpus_[i].name;
    auto skip = tok_->Decode(special, {.skip_special_tokens = true});
    ASSERT_TRUE(skip.ok()) << skip.status();
    EXPECT_EQ(*skip, want["decode_skip"].get<std::string>()) << corpus_[i].name;
    auto plain = tok_->Decode(ToIds(want["ids"]), {});
    ASSERT_TRUE(plain.ok()) << plain.status();
    EXPECT_EQ(*plain, want["decode_plain"].get<std::string>()) << corpus_[i].name;
  }
}

// Pseudo-random ids: invalid UTF-8 from byte-level pieces, byte-fallback runs.
TEST_P(ReferenceTest, DecodeProbesMatch) {
  ASSERT_FALSE(fixture_["decode_probes"].empty());
  for (const auto& probe : fixture_["decode_probes"]) {
    const std::vector<int32_t> ids = ToIds(probe["ids"]);
    auto full = tok_->Decode(ids, {.skip_special_tokens = false});
    ASSERT_TRUE(full.ok()) << full.status();
    EXPECT_EQ(*full, probe["decode"].get<std::string>()) << absl::StrJoin(ids, ",");
    auto skip = tok_->Decode(ids, {.skip_special_tokens = true});
    ASSERT_TRUE(skip.ok()) << skip.status();
    EXPECT_EQ(*skip, probe["decode_skip"].get<std::string>()) << absl::StrJoin(ids, ",");
  }
}

// The ~1 MB input, one encode pass (with special tokens) per vocabulary.
TEST_P(ReferenceTest, BigInputMatches) {
  const std::string big = BigText(corpus_);
  ASSERT_EQ(big.size(), fixture_["big"]["bytes"].get<size_t>());
  auto ids = tok_->Encode(big, {.add_special_tokens = true});
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), fixture_["big"]["count_special"].get<size_t>());
  EXPECT_EQ(Fnv1aIds(*ids), fixture_["big"]["fnv1a_special"].get<std::string>());
}

// decode(encode(x)) == x where the pipeline is lossless: special-token text
// parsed as plain text; NFC-normalizing vocabularies give NFC(x); Metaspace
// vocabularies cannot round-trip a literal U+2581 in the input.
TEST_P(ReferenceTest, RoundTrip) {
  const bool nfc = GetParam() == "qwen3";
  const bool metaspace = GetParam() == "llama2";
  int checked = 0;
  for (const CorpusLine& c : corpus_) {
    if (metaspace && c.text.find("\xE2\x96\x81") != std::string::npos) continue;
    auto ids = tok_->Encode(c.text, {.add_special_tokens = false, .parse_special_tokens = false});
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto text = tok_->Decode(*ids, {});
    ASSERT_TRUE(text.ok()) << text.status();
    std::string want = c.text;
    if (nfc) {
      ASSERT_TRUE(Normalize(NormalForm::kNfc, want).ok());
    }
    EXPECT_EQ(*text, want) << c.name;
    ++checked;
  }
  EXPECT_GT(checked, static_cast<int>(corpus_.size()) / 2);
}

INSTANTIATE_TEST_SUITE_P(Vocabs, ReferenceTest, ::testing::ValuesIn(kReferenceVocabs),
                         [](const auto& param_info) { return param_info.param; });

}  // namespace
}  // namespace epserve::tokenizer::testing
