// Streaming detokenization: token-by-token output equals the full decode for
// every corpus line and every decode probe; stop strings cut the stream.
#include <string>
#include <vector>

#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/unicode.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/test_util.h"

namespace epserve::tokenizer::testing {
namespace {

class StreamingTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto tok = ReferenceTokenizer(GetParam());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *tok;
    fixture_ = LoadFixture(GetParam());
  }
  const Tokenizer* tok_ = nullptr;
  nlohmann::json fixture_;
};

TEST_P(StreamingTest, EqualsFullDecodeOnCorpus) {
  for (const auto& c : fixture_["cases"]) {
    const std::vector<int32_t> ids = ToIds(c["ids_special"]);
    for (bool skip : {false, true}) {
      std::vector<std::string> deltas;
      auto streamed = StreamAll(*tok_, ids, skip, &deltas);
      ASSERT_TRUE(streamed.ok()) << streamed.status();
      EXPECT_EQ(*streamed, c[skip ? "decode_skip" : "decode"].get<std::string>())
          << c["name"] << " skip=" << skip;
      for (const std::string& d : deltas) {
        EXPECT_TRUE(ValidateUtf8(d).ok()) << c["name"];
        // The corpus is valid text: a U+FFFD would be a split character.
        EXPECT_EQ(d.find("\xEF\xBF\xBD"), std::string::npos) << c["name"] << ": '" << d << "'";
      }
    }
  }
}

TEST_P(StreamingTest, EqualsFullDecodeOnProbes) {
  for (const auto& p : fixture_["decode_probes"]) {
    const std::vector<int32_t> ids = ToIds(p["ids"]);
    for (bool skip : {false, true}) {
      auto streamed = StreamAll(*tok_, ids, skip);
      ASSERT_TRUE(streamed.ok()) << streamed.status();
      EXPECT_EQ(*streamed, p[skip ? "decode_skip" : "decode"].get<std::string>());
    }
  }
}

// Streams ids with `stop`; returns the concatenated output and whether it stopped.
std::pair<std::string, bool> StreamWithStop(const Tokenizer& tok, const std::vector<int32_t>& ids,
                                            const std::string& stop, bool include) {
  StreamingDetokenizer detok(tok, {.skip_special_tokens = true,
                                   .stop_strings = {"never-occurs-\x01", stop},
                                   .include_stop_str_in_output = include});
  std::string out;
  for (int32_t id : ids) {
    auto d = detok.Append(id);
    EXPECT_TRUE(d.ok()) << d.status();
    out += d->text;
    if (d->matched_stop) {
      EXPECT_EQ(d->stop_index, 1);
      EXPECT_FALSE(detok.Append(id).ok()) << "Append after a stop must fail";
      return {out, true};
    }
  }
  auto d = detok.Finish();
  EXPECT_TRUE(d.ok());
  out += d->text;
  return {out, d->matched_stop};
}

// Stop strings taken from the decoded text at many offsets (so they straddle
// token boundaries and multi-byte characters): the stream ends exactly before
// (or after, with include_stop_str_in_output) the first occurrence.
TEST_P(StreamingTest, StopStringsAcrossTokenBoundaries) {
  int checked = 0;
  for (const auto& c : fixture_["cases"]) {
    const std::string full = c["decode_skip"].get<std::string>();
    if (full.size() < 8) continue;
    const std::vector<int32_t> ids = ToIds(c["ids_special"]);
    for (size_t start = 0; start + 4 <= full.size(); start += full.size() / 5 + 1) {
      size_t b = start, e = start + 4;
      while (b > 0 && (static_cast<unsigned char>(full[b]) & 0xC0) == 0x80) --b;
      while (e < full.size() && (static_cast<unsigned char>(full[e]) & 0xC0) == 0x80) ++e;
      const std::string stop = full.substr(b, e - b);
      const size_t first = full.find(stop);
      for (bool include : {false, true}) {
        auto [out, stopped] = StreamWithStop(*tok_, ids, stop, include);
        EXPECT_TRUE(stopped) << c["name"] << " stop='" << stop << "'";
        EXPECT_EQ(out, full.substr(0, first + (include ? stop.size() : 0)))
            << c["name"] << " stop='" << stop << "'";
        ++checked;
      }
    }
    // A stop string whose prefix ends the text: held back, then flushed.
    const std::string tail_stop = full.substr(full.size() - 2) + "\x02";
    if (full.find(tail_stop) == std::string::npos && ValidateUtf8(tail_stop).ok()) {
      auto [out, stopped] = StreamWithStop(*tok_, ids, tail_stop, false);
      EXPECT_FALSE(stopped);
      EXPECT_EQ(out, full) << c["name"];
    }
  }
  EXPECT_GT(checked, 100);
}

INSTANTIATE_TEST_SUITE_P(Vocabs, StreamingTest, ::testing::ValuesIn(kReferenceVocabs),
                         [](const auto& param_info) { return param_info.param; });

}  // namespace
}  // namespace epserve::tokenizer::testing

namespace epserve::tokenizer::testing {
namespace {

// Property: streaming equals the full decode for random sequences drawn from
// ids that split characters (byte-fallback <0xNN> tokens, byte-level pieces
// of multi-byte characters from the corpus) mixed with ordinary and special ids.
TEST_P(StreamingTest, EqualsFullDecodeOnRandomMixes) {
  std::vector<int32_t> pool;
  for (const auto& c : fixture_["cases"]) {
    for (int32_t id : ToIds(c["ids_special"])) pool.push_back(id);
  }
  for (int32_t id = 0; id < tok_->vocab_size() && id < 600; ++id) {
    if (tok_->IsByteToken(id) || tok_->IsSpecial(id)) pool.push_back(id);
  }
  ASSERT_FALSE(pool.empty());
  uint64_t x = 42;
  const auto next = [&] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<size_t>(x >> 33);
  };
  for (int round = 0; round < 300; ++round) {
    std::vector<int32_t> ids(1 + next() % 30);
    for (int32_t& id : ids) id = pool[next() % pool.size()];
    for (bool skip : {false, true}) {
      auto full = tok_->Decode(ids, {.skip_special_tokens = skip});
      ASSERT_TRUE(full.ok()) << full.status();
      auto streamed = StreamAll(*tok_, ids, skip);
      ASSERT_TRUE(streamed.ok()) << streamed.status();
      ASSERT_EQ(*streamed, *full) << "round " << round << " skip=" << skip;
    }
  }
}

}  // namespace
}  // namespace epserve::tokenizer::testing
