#include "router/service/model_info.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace epserve::router {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class ModelInfoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  fs::path dir_;
};

TEST_F(ModelInfoTest, MoeConfigWithGenerationConfigEos) {
  Write("config.json", R"({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
      "vocab_size": 32000, "max_position_embeddings": 32768, "num_hidden_layers": 32,
      "num_local_experts": 8, "num_experts_per_tok": 2, "torch_dtype": "bfloat16",
      "bos_token_id": 1, "eos_token_id": 2})");
  Write("generation_config.json", R"({"eos_token_id": [2, 7]})");
  auto info = ReadModelInfo(dir_.string());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->architecture(), "MixtralForCausalLM");
  EXPECT_EQ(info->num_experts(), 8u);
  EXPECT_EQ(info->num_experts_per_token(), 2u);
  EXPECT_EQ(info->dtype(), "bfloat16");
  EXPECT_EQ(info->bos_token_id(), 1u);
  EXPECT_EQ(std::vector<uint32_t>(info->eos_token_ids().begin(), info->eos_token_ids().end()),
            (std::vector<uint32_t>{2, 7}));
}

TEST_F(ModelInfoTest, DenseConfigHasNoExperts) {
  Write("config.json", R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 151936,
      "num_experts_per_tok": 8, "dtype": "bfloat16"})");
  auto info = ReadModelInfo(dir_.string());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->num_experts(), 0u);
  EXPECT_EQ(info->num_experts_per_token(), 0u);
  EXPECT_EQ(info->dtype(), "bfloat16");
}

TEST_F(ModelInfoTest, ErrorsNameTheFileAndKey) {
  EXPECT_THAT(std::string(ReadModelInfo((dir_ / "nope").string()).status().message()),
              HasSubstr("does not exist"));
  EXPECT_THAT(std::string(ReadModelInfo(dir_.string()).status().message()),
              HasSubstr("config.json"));
  Write("config.json", "{not json");
  EXPECT_THAT(std::string(ReadModelInfo(dir_.string()).status().message()),
              HasSubstr("not a well-formed JSON object"));
  Write("config.json", R"({"architectures": ["X"], "vocab_size": "big"})");
  auto bad = ReadModelInfo(dir_.string());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'vocab_size'"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("config.json"));
  Write("config.json", R"({"vocab_size": 5})");
  EXPECT_THAT(std::string(ReadModelInfo(dir_.string()).status().message()),
              HasSubstr("neither 'architectures' nor 'model_type'"));
}

}  // namespace
}  // namespace epserve::router
