// Unit tests of tokenizer components whose behaviour is specified by the
// reference documentation rather than by a vocabulary.
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/pattern.h"
#include "common/tokenizer/unicode.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/test_util.h"

namespace epserve::tokenizer::testing {
namespace {

std::vector<std::string> Pieces(const std::string& text, SplitBehavior behavior) {
  std::vector<Range> matches;
  EXPECT_TRUE(Pattern::Literal("-").FindAll(text, matches).ok());
  std::vector<std::string> out;
  for (const auto& [b, e] : ApplySplitBehavior(text.size(), matches, behavior, false)) {
    out.push_back(text.substr(b, e - b));
  }
  return out;
}

// The example of the `tokenizers` SplitDelimiterBehavior documentation.
TEST(ComponentsTest, SplitBehaviorsFollowReferenceDocs) {
  const std::string t = "the-final--countdown";
  using V = std::vector<std::string>;
  EXPECT_EQ(Pieces(t, SplitBehavior::kRemoved), V({"the", "final", "countdown"}));
  EXPECT_EQ(Pieces(t, SplitBehavior::kIsolated), V({"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(Pieces(t, SplitBehavior::kMergedWithPrevious), V({"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(Pieces(t, SplitBehavior::kMergedWithNext), V({"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(Pieces(t, SplitBehavior::kContiguous), V({"the", "-", "final", "--", "countdown"}));
}

// Lossy conversion replaces each maximal ill-formed subpart with one U+FFFD
// (Unicode 3.9 best practice, as Rust's from_utf8_lossy).
TEST(ComponentsTest, Utf8LossyReplacesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(Utf8Lossy("a\xF0\x9F"), "a" + r);
  EXPECT_EQ(Utf8Lossy("\x80\x80"), r + r);
  EXPECT_EQ(Utf8Lossy("\xE4\xB8" "a"), r + "a");
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(Utf8Lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
}

TEST(ComponentsTest, ByteLevelTableIsABijection) {
  EXPECT_EQ(ByteToChar(' '), "\xC4\xA0");  // U+0120 'Ġ'
  EXPECT_EQ(ByteToChar('\n'), "\xC4\x8A");  // U+010A 'Ċ'
  for (int b = 0; b < 256; ++b) {
    const std::string& c = ByteToChar(static_cast<uint8_t>(b));
    size_t pos = 0;
    EXPECT_EQ(CharToByte(DecodeUtf8(c, pos)), b);
  }
}

// BPE cost grows ~n log n in the word length: a 256 KiB single word (the
// Metaspace vocabulary has no pre-tokenizer, so the whole text is one word)
// must encode in well under a second per 100 KiB even on a slow CI machine.
TEST(ComponentsTest, LongWordsAreNotQuadratic) {
  auto tok = ReferenceTokenizer("llama2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::string word;
  uint64_t x = 1;
  while (word.size() < 256 * 1024) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    word += static_cast<char>('a' + (x >> 33) % 26);
  }
  const auto start = std::chrono::steady_clock::now();
  auto ids = (*tok)->Encode(word, {.add_special_tokens = false});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ids.ok());
  EXPECT_LT(seconds, 2.5);
  auto back = (*tok)->Decode(*ids, {});
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, word);
}

// tokenizer_config.json: named tokens resolve to ids; the optional
// add_bos_from_config rule prepends bos to the reference ids.
TEST(ComponentsTest, ConfigSpecialTokens) {
  for (const std::string& name : kReferenceVocabs) {
    auto tok = ReferenceTokenizer(name);
    ASSERT_TRUE(tok.ok()) << tok.status();
    const SpecialTokenConfig& s = (*tok)->special_tokens();
    ASSERT_TRUE(s.eos_id.has_value()) << name;
    EXPECT_EQ((*tok)->TokenToId(s.eos), s.eos_id) << name;
    EXPECT_EQ(*(*tok)->IdToToken(*s.eos_id), s.eos) << name;
  }
  auto with_bos = Tokenizer::FromPath(TokenizerDir() + "/deepseek_v3",
                                      TokenizerOptions{.add_bos_from_config = true});
  ASSERT_TRUE(with_bos.ok()) << with_bos.status();
  const SpecialTokenConfig& s = (*with_bos)->special_tokens();
  ASSERT_TRUE(s.add_bos_token && s.bos_id.has_value());
  const auto fixture = LoadFixture("deepseek_v3");
  const auto corpus = LoadCorpus();
  for (size_t i = 0; i < corpus.size(); ++i) {
    std::vector<int32_t> want = ToIds(fixture["cases"][i]["ids_special"]);
    if (want.empty() || want[0] != *s.bos_id) want.insert(want.begin(), *s.bos_id);
    auto got = (*with_bos)->Encode(corpus[i].text, {.add_special_tokens = true});
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, want) << corpus[i].name;
  }
}

// Encode is safe to call from several threads (shared word cache).
TEST(ComponentsTest, ConcurrentEncodeGivesReferenceIds) {
  auto tok = ReferenceTokenizer("qwen3");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto fixture = LoadFixture("qwen3");
  const auto corpus = LoadCorpus();
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 5; ++rep) {
        for (size_t i = 0; i < corpus.size(); ++i) {
          auto ids = (*tok)->Encode(corpus[i].text, {.add_special_tokens = false});
          if (!ids.ok() || *ids != ToIds(fixture["cases"][i]["ids"])) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace epserve::tokenizer::testing
