// The loader on real transformers checkpoints (tests/fixtures/models, written
// by tools/make_fixtures.py with save_pretrained): every architecture binds
// without missing or unexpected tensors, and the packed expert layout gives
// the same tensors as the per-expert one.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "common/model_config/model_config.h"
#include "common/placement.h"
#include "worker/weights/weight_loader.h"

namespace epserve::weights {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(EPSERVE_SOURCE_DIR) / "tests/fixtures/models";

std::vector<fs::path> ModelDirs() {
  std::vector<fs::path> dirs = {fs::path(EPSERVE_SOURCE_DIR) / "checkpoints/tiny-random-qwen3-moe"};
  for (const auto& e : fs::directory_iterator(kFixtures)) {
    if (fs::exists(e.path() / "model.safetensors")) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

absl::StatusOr<ModelWeights> Load(const fs::path& dir, LoadOptions options = {}) {
  auto desc = LoadModelConfig(dir.string());
  if (!desc.ok()) return desc.status();
  return LoadWeights(*desc, dir.string(), options);
}

TEST(Fixtures, EveryCheckpointBindsCompletely) {
  std::vector<fs::path> dirs = ModelDirs();
  ASSERT_GE(dirs.size(), 11u);
  std::set<std::string> architectures;
  for (const fs::path& dir : dirs) {
    SCOPED_TRACE(dir.string());
    auto desc = LoadModelConfig(dir.string());
    ASSERT_TRUE(desc.ok()) << desc.status();
    architectures.insert(desc->architecture);
    auto w = LoadWeights(*desc, dir.string(), {});
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE(w->report().unexpected.empty());
    EXPECT_EQ(w->tensors().size(), ExpectedTensors(*desc).size());
    // Two ranks together hold every expert exactly once.
    if (desc->is_moe()) {
      LoadOptions half;
      half.expert_to_rank = *PlaceExperts(static_cast<uint32_t>(desc->moe.num_experts), 2,
                                          PlacementStrategy::kRoundRobin);
      std::vector<int> all;
      for (uint32_t rank : {0u, 1u}) {
        half.rank = rank;
        auto part = LoadWeights(*desc, dir.string(), half);
        ASSERT_TRUE(part.ok()) << part.status();
        all.insert(all.end(), part->report().local_experts.begin(),
                   part->report().local_experts.end());
      }
      std::sort(all.begin(), all.end());
      ASSERT_EQ(all.size(), static_cast<size_t>(desc->moe.num_experts));
      for (int e = 0; e < desc->moe.num_experts; ++e) EXPECT_EQ(all[e], e);
    }
  }
  EXPECT_EQ(architectures.size(), SupportedArchitectures().size());
}

void ExpectSameTensors(const ModelWeights& a, const ModelWeights& b) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& [name, t] : a.tensors()) {
    const kernels::Tensor* other = b.Find(name);
    ASSERT_NE(other, nullptr) << name;
    ASSERT_EQ(other->shape, t.shape) << name;
    ASSERT_EQ(other->dtype, t.dtype) << name;
    EXPECT_EQ(std::memcmp(other->data(), t.data(), t.nbytes()), 0) << name;
  }
}

TEST(Fixtures, PackedLayoutEqualsPerExpertLayout) {
  for (const auto& [base, packed] : std::vector<std::pair<std::string, std::string>>{
           {"mixtral", "mixtral_packed"}, {"qwen3_moe_bf16", "qwen3_moe_bf16_packed"}}) {
    SCOPED_TRACE(packed);
    auto a = Load(kFixtures / base);
    auto b = Load(kFixtures / packed);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_TRUE(a->report().packed_layers.empty());
    EXPECT_FALSE(b->report().packed_layers.empty());
    ExpectSameTensors(*a, *b);
  }
}

TEST(Fixtures, Bf16CheckpointKeepsBf16AndWidensExactly) {
  auto kept = Load(kFixtures / "qwen3_moe_bf16");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->report().weight_dtype, DataType::kBFloat16);
  LoadOptions f32;
  f32.dtype = "float32";
  auto wide = Load(kFixtures / "qwen3_moe_bf16", f32);
  ASSERT_TRUE(wide.ok()) << wide.status();
  for (const auto& [name, t] : kept->tensors()) {
    if (t.dtype != DataType::kBFloat16) continue;
    const kernels::Tensor* w = wide->Find(name);
    ASSERT_EQ(w->dtype, DataType::kFloat32);
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint32_t bits = static_cast<uint32_t>(t.data_as<uint16_t>()[i]) << 16;
      float expect;
      std::memcpy(&expect, &bits, 4);
      ASSERT_EQ(w->data_as<float>()[i], expect) << name << "[" << i << "]";
    }
  }
}

}  // namespace
}  // namespace epserve::weights
