// `epserve-run inspect` on the shipped real-shape configs (dummy format: no
// weight files) and on a broken checkpoint.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "cli/run/inspect_command.h"
#include "common/model_config/model_config.h"
#include "nlohmann/json.hpp"
#include "tests/models/quantize_reference.h"

namespace epserve::cli {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

struct Result {
  int code;
  std::string out, err;
};

Result Inspect(std::vector<std::string> args) {
  args.insert(args.begin(), "inspect");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  std::ostringstream out, err;
  int code = RunInspectCommand(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

TEST(Inspect, EveryShippedRealShapeConfigWithDummyWeights) {
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(EPSERVE_SOURCE_DIR "/tools/configs")) {
    if (!fs::exists(entry.path() / "config.json")) continue;
    ++seen;
    SCOPED_TRACE(entry.path().string());
    auto desc = LoadModelConfig(entry.path().string());
    ASSERT_TRUE(desc.ok()) << desc.status();
    std::vector<std::string> args = {"--model", entry.path().string(), "--load-format=dummy"};
    if (desc->is_moe()) args.push_back("--expert-parallel=4");
    Result r = Inspect(args);
    ASSERT_EQ(r.code, 0) << r.err << r.out;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["architecture"], desc->architecture);
    EXPECT_EQ(j["parameters"]["total"].get<int64_t>(), desc->total_params());
    EXPECT_EQ(j["parameters"]["active_per_token"].get<int64_t>(), desc->active_params_per_token());
    EXPECT_TRUE(j["loadable"].get<bool>());
    uint64_t loaded = 0;
    for (auto& [dtype, bytes] : j["loaded_bytes_by_dtype"].items()) loaded += bytes.get<uint64_t>();
    EXPECT_GE(loaded, static_cast<uint64_t>(desc->total_params()) * 2);  // >= bf16 size
    if (desc->is_moe()) {
      // Each rank holds the dense part and a quarter of the experts.
      uint64_t sum = 0;
      for (auto& rank : j["expert_parallel"]["ranks"]) {
        EXPECT_EQ(rank["experts"].size(), static_cast<size_t>(desc->moe.num_experts / 4));
        sum += rank["bytes"].get<uint64_t>();
      }
      EXPECT_GT(sum, loaded);       // dense parts are replicated
      EXPECT_LT(sum, 4 * loaded);   // experts are not
    }
  }
  EXPECT_EQ(seen, 5);
}

// --device: the largest rank's weights must fit the named device's memory.
TEST(Inspect, DeviceMemoryDecidesLoadable) {
  const std::string qwen3 = EPSERVE_SOURCE_DIR "/tools/configs/qwen3-30b-a3b";
  Result fits = Inspect({"--model", EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe",
                         "--load-format=dummy", "--device=cpu"});
  ASSERT_EQ(fits.code, 0) << fits.err << fits.out;
  auto j = nlohmann::json::parse(fits.out);
  EXPECT_TRUE(j["loadable"].get<bool>());
  EXPECT_GT(j["device"]["total_memory_bytes"].get<uint64_t>(),
            j["device"]["largest_rank_bytes"].get<uint64_t>());

  // A model far larger than any host: 1.9 TB of weights (under the parser's 1 PiB bound).
  fs::path dir = fs::path(::testing::TempDir()) / "inspect_huge";
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ifstream in(qwen3 + "/config.json");
    nlohmann::json c = nlohmann::json::parse(in);
    c["num_experts"] = 4096;
    c["num_experts_per_tok"] = 8;
    std::ofstream(dir / "config.json") << c.dump();
  }
  Result huge = Inspect(
      {"--model", dir.string(), "--load-format=dummy", "--device=cpu", "--expert-parallel=2"});
  EXPECT_EQ(huge.code, 1) << huge.err;
  j = nlohmann::json::parse(huge.out);
  EXPECT_FALSE(j["loadable"].get<bool>());
  ASSERT_EQ(j["problems"].size(), 1u);
  EXPECT_THAT(j["problems"][0].get<std::string>(), HasSubstr("bytes on the largest rank, cpu ("));
  // Without --device no memory is compared.
  Result unnamed = Inspect({"--model", dir.string(), "--load-format=dummy"});
  EXPECT_EQ(unnamed.code, 0) << unnamed.err;
  Result bad = Inspect({"--model", dir.string(), "--load-format=dummy", "--device=tpu"});
  EXPECT_EQ(bad.code, 2);
}

TEST(Inspect, ReportsMissingWeightsAndFailsWithoutCrashing) {
  fs::path dir = fs::path(::testing::TempDir()) / "inspect_missing";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(EPSERVE_SOURCE_DIR "/tools/configs/qwen3-8b/config.json", dir / "config.json");
  Result r = Inspect({"--model", dir.string()});
  EXPECT_EQ(r.code, 1);
  auto j = nlohmann::json::parse(r.out);
  EXPECT_FALSE(j["loadable"].get<bool>());
  EXPECT_THAT(j["problems"][0].get<std::string>(), HasSubstr("no safetensors weights"));
}

TEST(Inspect, BadArguments) {
  EXPECT_EQ(Inspect({}).code, 2);
  EXPECT_THAT(Inspect({}).err, HasSubstr("--model DIR is required"));
  EXPECT_THAT(Inspect({"--model", "x", "--load-format", "pt"}).err, HasSubstr("auto, dummy"));
  EXPECT_THAT(Inspect({"--model", "x", "--bogus"}).err, HasSubstr("unknown option --bogus"));
  Result dense = Inspect({"--model", EPSERVE_SOURCE_DIR "/tools/configs/qwen3-8b",
                          "--load-format=dummy", "--expert-parallel=2"});
  EXPECT_EQ(dense.code, 2);
  EXPECT_THAT(dense.err, HasSubstr("needs a MoE model"));
  Result missing = Inspect({"--model", "/nonexistent"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_THAT(missing.err, HasSubstr("/nonexistent"));
}

TEST(Inspect, QuantizedCheckpointReportsFormatsAndHeldBytes) {
  for (auto format : {testing::QuantFormat::kFp8Block, testing::QuantFormat::kAwqInt4}) {
    const std::string name = format == testing::QuantFormat::kFp8Block ? "fp8-block" : "awq-int4";
    SCOPED_TRACE(name);
    testing::QuantizedPair pair;
    const fs::path scratch = fs::path(EPSERVE_TEST_SCRATCH) / absl::StrCat("inspect_", getpid());
    ASSERT_TRUE(
        testing::QuantizeModel(std::string(EPSERVE_SOURCE_DIR) + "/tests/fixtures/models/qwen3_moe",
                               scratch.string(), format, &pair)
            .ok());
    Result r = Inspect({"--model", pair.quantized_dir});
    ASSERT_EQ(r.code, 0) << r.err << r.out;
    nlohmann::json j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["quantization"], format == testing::QuantFormat::kFp8Block ? "fp8" : "awq");
    // Every linear layer but the router gate is quantized (4 layers: q, k,
    // v, o each; 3 dense MLPs of 3; 1 MoE layer of 8 experts x 3).
    EXPECT_EQ(j["linear_formats"][name]["layers"], 4 * 4 + 3 * 3 + 8 * 3);
    EXPECT_EQ(j["linear_formats"]["unquantized"]["layers"], 1);
    // The held bytes are the checkpoint's (quantized tensors keep their dtype).
    uint64_t held = 0, stored = 0;
    for (const auto& [dtype, bytes] : j["loaded_bytes_by_dtype"].items())
      held += bytes.get<uint64_t>();
    for (const auto& [dtype, bytes] : j["checkpoint"]["bytes_by_dtype"].items()) {
      stored += bytes.get<uint64_t>();
    }
    EXPECT_EQ(held, stored);
    // A GPU cannot run it yet: not loadable there, with the reason.
    Result gpu = Inspect({"--model", pair.quantized_dir, "--device", "cuda:0"});
    EXPECT_NE(gpu.code, 0);
    EXPECT_THAT(gpu.out, HasSubstr("no fp8-block or awq-int4 kernels"));
  }
}

}  // namespace
}  // namespace epserve::cli
