// LoadModel on the bundled checkpoint: the description, a backend for the
// device and the weights placed through it, the load options honoured, and
// errors passed through naming what failed.
#include "worker/weights/model_loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "common/checkpoint/load_format.h"
#include "common/model_config/model_config.h"

namespace epserve::weights {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kModel = std::string(EPSERVE_SOURCE_DIR) + "/checkpoints/tiny-random-qwen3-moe";

kernels::DeviceSpec Cpu() { return kernels::DeviceSpec{}; }

TEST(LoadModel, ReturnsDescriptionCpuBackendAndWeights) {
  absl::StatusOr<LoadedModel> model = LoadModel(kModel, Cpu(), {}, LoadOptions{});
  ASSERT_TRUE(model.ok()) << model.status();
  absl::StatusOr<ModelDescription> config = LoadModelConfig(kModel);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(model->desc.architecture, "Qwen3MoeForCausalLM");
  EXPECT_EQ(model->desc.architecture, config->architecture);
  EXPECT_EQ(model->desc.num_layers, config->num_layers);
  EXPECT_EQ(model->desc.hidden_size, config->hidden_size);
  EXPECT_EQ(model->desc.vocab_size, config->vocab_size);

  ASSERT_NE(model->backend, nullptr);
  EXPECT_EQ(model->backend->device().type, kernels::DeviceType::kCpu);

  ASSERT_NE(model->weights, nullptr);
  EXPECT_EQ(model->weights->desc().architecture, model->desc.architecture);
  EXPECT_EQ(model->weights->desc().num_layers, model->desc.num_layers);
  const LoadReport& report = model->weights->report();
  EXPECT_GT(report.num_tensors, 0);
  EXPECT_GT(report.bytes_read, 0u);  // read from model.safetensors, not dummies
  EXPECT_EQ(report.local_experts.size(), static_cast<size_t>(model->desc.moe.num_experts));
  const kernels::Tensor* embed = model->weights->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->storage->device().type, kernels::DeviceType::kCpu);
}

TEST(LoadModel, HonoursTheLoadOptions) {
  LoadOptions load;
  load.format = checkpoint::LoadFormat::kDummy;
  load.seed = 7;
  load.dtype = "bfloat16";
  load.rank = 1;
  load.expert_to_rank = {0, 1, 0, 1, 0, 1, 0, 1};
  absl::StatusOr<LoadedModel> model = LoadModel(kModel, Cpu(), {}, load);
  ASSERT_TRUE(model.ok()) << model.status();
  const LoadReport& report = model->weights->report();
  EXPECT_EQ(report.weight_dtype, DataType::kBFloat16);
  EXPECT_EQ(report.bytes_read, 0u);
  EXPECT_THAT(report.local_experts, ElementsAre(1, 3, 5, 7));

  // The same dummies LoadWeights makes with these options on a CPU backend.
  absl::StatusOr<std::unique_ptr<kernels::Backend>> cpu = kernels::CreateBackend(Cpu());
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  load.device = cpu->get();
  absl::StatusOr<ModelWeights> direct = LoadWeights(model->desc, kModel, load);
  ASSERT_TRUE(direct.ok()) << direct.status();
  const kernels::Tensor* a = model->weights->Find("model.embed_tokens.weight");
  const kernels::Tensor* b = direct->Find("model.embed_tokens.weight");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(a->nbytes(), b->nbytes());
  EXPECT_EQ(std::memcmp(a->data(), b->data(), a->nbytes()), 0);
}

TEST(LoadModel, MissingDirectoryFailsNamingIt) {
  const std::string missing = kModel + "-does-not-exist";
  absl::StatusOr<LoadedModel> model = LoadModel(missing, Cpu(), {}, LoadOptions{});
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr(missing));
}

TEST(LoadModel, PassesTheWeightLoadersErrorsThrough) {
  LoadOptions load;
  load.dtype = "int3";
  absl::StatusOr<LoadedModel> model = LoadModel(kModel, Cpu(), {}, load);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("int3"));
}

}  // namespace
}  // namespace epserve::weights
