// The decoder composed layer by layer: the attention factory, the KV pools
// the layer specs ask for, and the refusals at load of what the worker does
// not run (an attention kind, a routing field), each naming the layer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/model_config/model_config.h"
#include "kernels/ops.h"
#include "kernels/registry.h"
#include "worker/kv_cache/kv_cache.h"
#include "worker/models/attention/attention.h"
#include "worker/models/decoder_model.h"
#include "worker/weights/weight_loader.h"

namespace epserve::models {
namespace {

using ::testing::HasSubstr;

const std::string kModelDir =
    std::string(EPSERVE_SOURCE_DIR) + "/checkpoints/tiny-random-qwen3-moe";

AttentionSpec Gqa() {
  AttentionSpec s;
  s.kind = AttentionKind::kGqa;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 16;
  return s;
}

TEST(CreateAttention, MakesGqaForGqaWithRope) {
  AttentionWeights w;
  auto a = CreateAttention(Gqa(), /*layer=*/0, 1e-6f, &w);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_NE(*a, nullptr);
}

struct RefusalCase {
  const char* name;
  void (*edit)(AttentionSpec*);
  const char* message;
};

class CreateAttentionRefusal : public ::testing::TestWithParam<RefusalCase> {};

TEST_P(CreateAttentionRefusal, NamesTheLayerAndTheKind) {
  AttentionSpec spec = Gqa();
  GetParam().edit(&spec);
  AttentionWeights w;
  auto a = CreateAttention(spec, /*layer=*/3, 1e-6f, &w);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(a.status().message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Specs, CreateAttentionRefusal,
    ::testing::Values(RefusalCase{"Mla",
                                  [](AttentionSpec* s) {
                                    s->kind = AttentionKind::kMla;
                                    s->latent_dim = 512;
                                  },
                                  "layer 3: attention kind 'mla' is not supported by the worker"},
                      RefusalCase{"NoPe", [](AttentionSpec* s) { s->use_rope = false; },
                                  "layer 3: attention use_rope = false (NoPE) is not supported"},
                      RefusalCase{
                          "Chunked", [](AttentionSpec* s) { s->chunk_size = 8192; },
                          "layer 3: attention chunk_size = 8192 (chunked-local) is not supported"}),
    [](const ::testing::TestParamInfo<RefusalCase>& param_info) { return param_info.param.name; });

TEST(KvPoolFor, GqaCachesKeyValueAndMlaOneLatent) {
  EXPECT_EQ(KvPoolFor(Gqa()), kv_cache::KvPoolSpec::KeyValue(2, 16));
  AttentionSpec mla = Gqa();
  mla.kind = AttentionKind::kMla;
  mla.latent_dim = 576;
  EXPECT_EQ(KvPoolFor(mla), kv_cache::KvPoolSpec::Latent(576));
}

TEST(KvCacheShapeOf, OnePoolPerLayerFromItsAttention) {
  auto desc = LoadModelConfig(kModelDir);
  ASSERT_TRUE(desc.ok()) << desc.status();
  EXPECT_EQ(KvCacheShapeOf(*desc),
            kv_cache::UniformKeyValueShape(desc->num_layers, desc->num_kv_heads, desc->head_dim));
  desc->layers[1].attention.kind = AttentionKind::kMla;
  desc->layers[1].attention.latent_dim = 64;
  const kv_cache::KvCacheShape shape = KvCacheShapeOf(*desc);
  ASSERT_EQ(shape.num_layers(), desc->num_layers);
  EXPECT_EQ(shape.layers[0].kind, kv_cache::KvPoolKind::kKeyValue);
  EXPECT_EQ(shape.layers[1], kv_cache::KvPoolSpec::Latent(64));
}

class DecoderLoadRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    auto backend = kernels::CreateBackend(kernels::DeviceSpec{});
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
    auto desc = LoadModelConfig(kModelDir);
    ASSERT_TRUE(desc.ok()) << desc.status();
    desc_ = *desc;
    auto w = weights::LoadWeights(desc_, kModelDir, weights::LoadOptions{});
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = std::make_unique<weights::ModelWeights>(*std::move(w));
  }

  absl::Status Create(const ModelDescription& desc) {
    return DecoderModel::Create(desc, *weights_, *backend_).status();
  }

  std::unique_ptr<kernels::Backend> backend_;
  ModelDescription desc_;
  std::unique_ptr<weights::ModelWeights> weights_;
};

TEST_F(DecoderLoadRefusal, TheBundledModelLoads) { EXPECT_TRUE(Create(desc_).ok()); }

TEST_F(DecoderLoadRefusal, AnAttentionKindTheWorkerCannotRun) {
  ModelDescription d = desc_;
  d.layers[1].attention.kind = AttentionKind::kMla;
  const absl::Status s = Create(d);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("config.json: Qwen3MoeForCausalLM: layer 1: attention kind "
                                     "'mla' is not supported by the worker"));
}

struct RoutingCase {
  const char* name;
  void (*edit)(RoutingParams*);
  const char* message;
};

class DecoderRoutingRefusal : public DecoderLoadRefusal,
                              public ::testing::WithParamInterface<RoutingCase> {};

TEST_P(DecoderRoutingRefusal, NamesTheLayerTheFieldAndTheValue) {
  ModelDescription d = desc_;
  ASSERT_TRUE(d.layers.back().feed_forward.is_moe());
  GetParam().edit(&d.layers.back().feed_forward.routing);
  const absl::Status s = Create(d);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(),
              HasSubstr(absl::StrCat("layer ", d.num_layers - 1, ": ", GetParam().message)));
}

INSTANTIATE_TEST_SUITE_P(
    Fields, DecoderRoutingRefusal,
    ::testing::Values(
        RoutingCase{"Sigmoid", [](RoutingParams* r) { r->scoring = RoutingScoring::kSigmoid; },
                    "routing.scoring: expected softmax, found sigmoid"},
        RoutingCase{"CorrectionBias", [](RoutingParams* r) { r->correction_bias = true; },
                    "routing.correction_bias: expected false, found true"},
        RoutingCase{"Groups",
                    [](RoutingParams* r) {
                      r->n_group = 8;
                      r->topk_group = 4;
                    },
                    "routing.n_group: expected 1 (no expert groups), found 8"},
        RoutingCase{"Scaling", [](RoutingParams* r) { r->routed_scaling_factor = 2.5; },
                    "routing.routed_scaling_factor: expected 1, found 2.5"}),
    [](const ::testing::TestParamInfo<RoutingCase>& param_info) { return param_info.param.name; });

}  // namespace
}  // namespace epserve::models
