// Bad tokenizer files and bad ids give errors that name the problem.
#include <fstream>
#include <string>

#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"

namespace epserve::tokenizer::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// A small valid byte-level tokenizer that the tests below break one key at a time.
nlohmann::json BaseTokenizer() {
  return nlohmann::json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 5, "content": "<|end|>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}],
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "post_processor": {"type": "ByteLevel"},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3, "abc": 4},
              "merges": ["a b", ["ab", "c"]]}
  })");
}

absl::Status Load(const nlohmann::json& j) {
  return Tokenizer::FromJson(j.dump(), "").status();
}

TEST(BadInputTest, BaseLoads) {
  auto tok = Tokenizer::FromJson(BaseTokenizer().dump(), "");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("abc", {});
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, std::vector<int32_t>({4}));
}

TEST(BadInputTest, MalformedJson) {
  const std::string text = BaseTokenizer().dump();
  const absl::Status s = Tokenizer::FromJson(text.substr(0, text.size() / 2), "").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("tokenizer.json"), HasSubstr("malformed JSON at byte")));
  EXPECT_THAT(Tokenizer::FromJson("[1, 2]", "").status().message(),
              HasSubstr("expected a JSON object"));
  EXPECT_THAT(Tokenizer::FromJson(BaseTokenizer().dump(), "{oops").status().message(),
              HasSubstr("tokenizer_config.json: malformed JSON"));
}

TEST(BadInputTest, TruncatedRealFileFailsCleanly) {
  auto tok = ReferenceTokenizer("qwen3");
  ASSERT_TRUE(tok.ok()) << tok.status();  // the file exists; now read a truncated copy
  std::ifstream in(TokenizerDir() + "/qwen3/tokenizer.json");
  std::string head(100000, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  const absl::Status s = Tokenizer::FromJson(head, "").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("malformed JSON at byte"));
}

TEST(BadInputTest, UnknownComponentsAreNamed) {
  struct Case {
    const char* key;
    nlohmann::json value;
    const char* where;
    const char* type;
  };
  const Case cases[] = {
      {"normalizer", {{"type", "BertNormalizer"}}, "at normalizer", "'BertNormalizer'"},
      {"normalizer",
       {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}, {{"type", "Precompiled"}}}}},
       "at normalizer.normalizers[1]", "'Precompiled'"},
      {"pre_tokenizer",
       {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Whitespace"}}}}},
       "at pre_tokenizer.pretokenizers[0]", "'Whitespace'"},
      {"post_processor", {{"type", "Mystery"}}, "at post_processor", "'Mystery'"},
      {"decoder", {{"type", "WordPiece"}}, "at decoder", "'WordPiece'"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = BaseTokenizer();
    j[c.key] = c.value;
    const absl::Status s = Load(j);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << c.key;
    EXPECT_THAT(s.message(), AllOf(HasSubstr("unsupported"), HasSubstr(c.where), HasSubstr(c.type)));
  }
  nlohmann::json j = BaseTokenizer();
  j["model"]["type"] = "Unigram";
  EXPECT_THAT(Load(j).message(), AllOf(HasSubstr("unsupported model 'Unigram'")));
  j = BaseTokenizer();
  j["model"]["dropout"] = 0.1;
  EXPECT_THAT(Load(j).message(), HasSubstr("dropout"));
  j = BaseTokenizer();
  j["truncation"] = {{"max_length", 8}};
  EXPECT_THAT(Load(j).message(), HasSubstr("'truncation' is not supported"));
}

TEST(BadInputTest, MergeNamingUnknownToken) {
  nlohmann::json j = BaseTokenizer();
  j["model"]["merges"].push_back("b zz");
  const absl::Status s = Load(j);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.merges[2]"), HasSubstr("'zz' is not in the vocab")));
  j = BaseTokenizer();
  j["model"]["merges"].push_back("c c");  // "cc" is not in the vocab
  EXPECT_THAT(Load(j).message(), AllOf(HasSubstr("model.merges[2]"), HasSubstr("'cc'")));
  j = BaseTokenizer();
  j["model"]["merges"].push_back("a b c");
  EXPECT_THAT(Load(j).message(), AllOf(HasSubstr("model.merges[2]"), HasSubstr("\"left right\"")));
}

TEST(BadInputTest, MalformedFields) {
  nlohmann::json j = BaseTokenizer();
  j.erase("model");
  EXPECT_THAT(Load(j).message(), HasSubstr("model: missing"));
  j = BaseTokenizer();
  j["model"]["vocab"] = nlohmann::json::array();
  EXPECT_THAT(Load(j).message(), HasSubstr("missing object 'vocab'"));
  j = BaseTokenizer();
  j["model"]["vocab"]["d"] = -3;
  EXPECT_THAT(Load(j).message(), HasSubstr("token 'd' has an invalid id -3"));
  j = BaseTokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"}};
  EXPECT_THAT(Load(j).message(), AllOf(HasSubstr("pre_tokenizer.pattern"),
                                       HasSubstr("cannot compile regex '(unclosed'")));
  j = BaseTokenizer();
  j["added_tokens"][0].erase("content");
  EXPECT_THAT(Load(j).message(), HasSubstr("added_tokens[0]: missing field 'content'"));
  j = BaseTokenizer();
  j["normalizer"] = {{"type", "Prepend"}, {"prepend", 7}};
  EXPECT_THAT(Load(j).message(), HasSubstr("field 'prepend' has the wrong type"));
  EXPECT_THAT(Tokenizer::FromJson(BaseTokenizer().dump(), R"({"bos_token": "<nope>"})")
                  .status()
                  .message(),
              HasSubstr("bos_token '<nope>' is not in the vocabulary"));
  EXPECT_EQ(Tokenizer::FromPath("/nonexistent/tokenizer").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(BadInputTest, IdsOutOfRangeInDecode) {
  auto tok = Tokenizer::FromJson(BaseTokenizer().dump(), "");
  ASSERT_TRUE(tok.ok());
  const absl::Status s = (*tok)->Decode({0, 1, 999999}, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("token id 999999"), HasSubstr("position 2"),
                                 HasSubstr("[0, 6)")));
  EXPECT_THAT((*tok)->Decode({-1}, {}).status().message(), HasSubstr("token id -1 at position 0"));

  StreamingDetokenizer detok(**tok, {});
  ASSERT_TRUE(detok.Append(0).ok());
  const absl::Status stream = detok.Append(6).status();
  EXPECT_EQ(stream.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(stream.message(), AllOf(HasSubstr("token id 6"), HasSubstr("position 1")));
  auto d = detok.Append(1);  // the bad id was not consumed
  ASSERT_TRUE(d.ok());
  auto end = detok.Finish();
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(d->text + end->text, "b");
  EXPECT_EQ(detok.Append(0).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Invalid UTF-8 input is rejected with INVALID_ARGUMENT naming the byte
// offset; it is never repaired (documented in docs/tokenizer.md).
TEST(BadInputTest, InvalidUtf8Input) {
  auto tok = Tokenizer::FromJson(BaseTokenizer().dump(), "");
  ASSERT_TRUE(tok.ok());
  struct Case {
    std::string text;
    const char* offset;
  };
  const Case cases[] = {
      {std::string("ab\xFF" "cd"), "byte offset 2"},
      {std::string("abc\xE4\xB8"), "byte offset 3"},           // truncated at the end
      {std::string("\xC0\xAF"), "byte offset 0"},              // overlong
      {std::string("x\xED\xA0\x80"), "byte offset 1"},         // surrogate
      {std::string("ok \xF4\x90\x80\x80"), "byte offset 3"},   // above U+10FFFF
      {std::string("\xE4\xB8\xAD\x80"), "byte offset 3"},      // stray continuation
  };
  for (const Case& c : cases) {
    const absl::Status s = (*tok)->Encode(c.text, {}).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), AllOf(HasSubstr("not valid UTF-8"), HasSubstr(c.offset)));
  }
}

}  // namespace
}  // namespace epserve::tokenizer::testing
