// The router's Tokenize / Detokenize RPCs use the same tokenizer code as
// epserve-run, on the model directory's tokenizer.json.
#include <grpcpp/grpcpp.h>

#include <filesystem>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/tokenizer/tokenizer.h"
#include "tests/integration/cluster_harness.h"

namespace epserve::testing {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr char kModel[] = EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe";

TEST(TokenizeRpc, MatchesTheLibraryAndRejectsBadIds) {
  fs::path vocab = fs::path(EPSERVE_TOKENIZER_DIR) / "qwen3";
  ASSERT_TRUE(fs::exists(vocab / "tokenizer.json"))
      << vocab << " missing: run tools/fetch_tokenizers.sh";
  fs::path model = fs::path(ScratchDir()) / "model";
  fs::create_directories(model);
  fs::copy_file(fs::path(kModel) / "config.json", model / "config.json");
  fs::copy_file(vocab / "tokenizer.json", model / "tokenizer.json");
  if (fs::exists(vocab / "tokenizer_config.json")) {
    fs::copy_file(vocab / "tokenizer_config.json", model / "tokenizer_config.json");
  }
  auto router = RouterHandle::Start({"--model=" + model.string(), "--workers=1"});
  ASSERT_NE(router, nullptr);
  auto stub = v1::Epserve::NewStub(
      grpc::CreateChannel(router->grpc_address(), grpc::InsecureChannelCredentials()));

  const std::string text = "Hello, world! 你好 <|im_start|>user\n  x = 12345";
  auto reference = tokenizer::Tokenizer::FromPath(model.string());
  ASSERT_TRUE(reference.ok()) << reference.status();
  auto expected = (*reference)->Encode(text, {});
  ASSERT_TRUE(expected.ok());

  grpc::ClientContext c1;
  v1::TokenizeRequest treq;
  treq.set_text(text);
  v1::TokenizeResponse tresp;
  ASSERT_TRUE(stub->Tokenize(&c1, treq, &tresp).ok());
  std::vector<int32_t> got(tresp.token_ids().begin(), tresp.token_ids().end());
  EXPECT_EQ(got, *expected);

  grpc::ClientContext c2;
  v1::DetokenizeRequest dreq;
  for (int32_t id : got) dreq.add_token_ids(static_cast<uint32_t>(id));
  dreq.set_skip_special_tokens(false);
  v1::DetokenizeResponse dresp;
  ASSERT_TRUE(stub->Detokenize(&c2, dreq, &dresp).ok());
  EXPECT_EQ(dresp.text(), text);

  grpc::ClientContext c3;
  dreq.add_token_ids(4000000000u);
  grpc::Status bad = stub->Detokenize(&c3, dreq, &dresp);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("token_ids"));
  EXPECT_THAT(bad.error_message(), HasSubstr("4000000000"));

  // Bounded like a Generate prompt (4 MiB of text, 2^20 ids).
  grpc::ClientContext c4;
  treq.set_text(std::string((4u << 20) + 1, 'a'));
  grpc::Status big = stub->Tokenize(&c4, treq, &tresp);
  EXPECT_EQ(big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(big.error_message(), HasSubstr("text: 4194305 bytes exceeds the limit of 4194304"));
  grpc::ClientContext c5;
  v1::DetokenizeRequest many;
  for (int i = 0; i < (1 << 20) + 1; ++i) many.add_token_ids(1);
  grpc::Status too_many = stub->Detokenize(&c5, many, &dresp);
  EXPECT_EQ(too_many.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_many.error_message(),
              HasSubstr("token_ids: 1048577 ids exceeds the limit of 1048576"));
  // At the limit, text is tokenized.
  grpc::ClientContext c6;
  treq.set_text(std::string(4u << 20, 'a'));
  EXPECT_TRUE(stub->Tokenize(&c6, treq, &tresp).ok());
}

TEST(TokenizeRpc, ModelWithoutTokenizerSaysSo) {
  auto router = RouterHandle::Start({"--model=" + ConfigOnlyModel(), "--workers=1"});
  ASSERT_NE(router, nullptr);
  auto stub = v1::Epserve::NewStub(
      grpc::CreateChannel(router->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::TokenizeRequest req;
  req.set_text("hi");
  v1::TokenizeResponse resp;
  grpc::Status s = stub->Tokenize(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("has no tokenizer.json"));
}

}  // namespace
}  // namespace epserve::testing
