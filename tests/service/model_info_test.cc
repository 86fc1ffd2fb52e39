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

void CopyConfig(const std::string& name, const fs::path& to) {
  fs::copy_file(fs::path(EPSERVE_SOURCE_DIR) / "tools/configs" / name / "config.json",
                to / "config.json", fs::copy_options::overwrite_existing);
}

TEST_F(ModelInfoTest, MoeConfigWithGenerationConfigEos) {
  CopyConfig("mixtral-8x7b-v0.1", dir_);
  Write("generation_config.json", R"({"eos_token_id": [2, 7]})");
  auto info = ReadModelInfo(dir_.string(), "bfloat16");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->architecture(), "MixtralForCausalLM");
  EXPECT_EQ(info->num_layers(), 32u);
  EXPECT_EQ(info->num_experts(), 8u);
  EXPECT_EQ(info->num_experts_per_token(), 2u);
  EXPECT_EQ(info->vocab_size(), 32000u);
  EXPECT_EQ(info->dtype(), "bfloat16");
  EXPECT_EQ(info->bos_token_id(), 1u);
  EXPECT_EQ(std::vector<uint32_t>(info->eos_token_ids().begin(), info->eos_token_ids().end()),
            (std::vector<uint32_t>{2, 7}));
}

TEST_F(ModelInfoTest, DenseConfigHasNoExperts) {
  CopyConfig("qwen3-8b", dir_);
  auto info = ReadModelInfo(dir_.string(), "float32");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->architecture(), "Qwen3ForCausalLM");
  EXPECT_EQ(info->num_experts(), 0u);
  EXPECT_EQ(info->num_experts_per_token(), 0u);
  EXPECT_EQ(info->max_context_length(), 40960u);
}

TEST_F(ModelInfoTest, ErrorsNameTheFileAndKey) {
  EXPECT_THAT(std::string(ReadModelInfo((dir_ / "nope").string(), "").status().message()),
              HasSubstr("does not exist"));
  EXPECT_THAT(std::string(ReadModelInfo(dir_.string(), "").status().message()),
              HasSubstr("config.json"));
  Write("config.json", "{not json");
  EXPECT_THAT(std::string(ReadModelInfo(dir_.string(), "").status().message()),
              HasSubstr("config.json"));
  Write("config.json", R"({"architectures": ["GPT2LMHeadModel"]})");
  EXPECT_THAT(std::string(ReadModelInfo(dir_.string(), "").status().message()),
              HasSubstr("Qwen3MoeForCausalLM"));  // lists the supported ones
  CopyConfig("qwen3-8b", dir_);
  Write("generation_config.json", R"({"eos_token_id": "x"})");
  auto bad = ReadModelInfo(dir_.string(), "");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("generation_config.json"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'eos_token_id'"));
}

}  // namespace
}  // namespace epserve::router
