// Loading weights from checkpoints written by the test: dtype policy, zero
// copy, missing / mis-shaped / unexpected tensors, packed experts, expert
// subsets, dummy weights, quantized configs.
#include "worker/weights/weight_loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/checkpoint/dtype_policy.h"
#include "common/checkpoint/load_format.h"
#include "common/dtype_convert.h"
#include "common/model_config/model_config.h"
#include "common/placement.h"
#include "common/safetensors/checkpoint.h"
#include "common/safetensors/writer.h"
#include "common/shape.h"

namespace epserve::weights {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr int kExperts = 8;

std::string MoeConfig(const std::string& dtype = "bfloat16") {
  return absl::StrCat(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
    "vocab_size": 64, "hidden_size": 64, "intermediate_size": 96,
    "moe_intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "num_experts": )", kExperts, R"(,
    "num_experts_per_tok": 2, "norm_topk_prob": true, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": ")", dtype, R"("})");
}

// Deterministic bf16 content per tensor name: element i of tensor t.
uint16_t Value(const std::string& name, int64_t i) {
  uint32_t h = 2166136261u;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  float v = static_cast<float>(static_cast<int32_t>((h + i * 2654435761u) % 2001) - 1000) / 1024.0f;
  return Fp32ToBf16(v);
}

safetensors::TensorToWrite Bf16Tensor(const std::string& name, const std::vector<int64_t>& shape,
                                      const std::string& value_name = "") {
  const int64_t n = NumElements(shape);
  std::string bytes(static_cast<size_t>(n) * 2, '\0');
  for (int64_t i = 0; i < n; ++i) {
    uint16_t v = Value(value_name.empty() ? name : value_name, i);
    std::memcpy(&bytes[static_cast<size_t>(i) * 2], &v, 2);
  }
  return {name, DataType::kBFloat16, shape, bytes};
}

class WeightLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(EPSERVE_TEST_SCRATCH) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    WriteConfig(MoeConfig());
  }
  void WriteConfig(const std::string& text) { std::ofstream(dir_ / "config.json") << text; }
  ModelDescription Desc() {
    auto d = LoadModelConfig(dir_.string());
    EXPECT_TRUE(d.ok()) << d.status();
    return *d;
  }
  // Every expected tensor, bf16, minus `skip`, plus `extra`.
  void WriteCheckpoint(const std::set<std::string>& skip = {},
                       std::vector<safetensors::TensorToWrite> extra = {},
                       const std::map<std::string, std::vector<int64_t>>& reshape = {}) {
    std::vector<safetensors::TensorToWrite> tensors = std::move(extra);
    for (const TensorSpec& s : ExpectedTensors(Desc())) {
      if (skip.count(s.name)) continue;
      auto it = reshape.find(s.name);
      tensors.push_back(Bf16Tensor(s.name, it == reshape.end() ? s.shape : it->second));
    }
    ASSERT_TRUE(safetensors::WriteSafetensors((dir_ / "model.safetensors").string(), tensors).ok());
  }
  absl::StatusOr<ModelWeights> Load(LoadOptions options = {}) {
    return LoadWeights(Desc(), dir_.string(), options);
  }
  fs::path dir_;
};

TEST_F(WeightLoaderTest, AutoKeepsCheckpointDtypeZeroCopy) {
  WriteCheckpoint();
  auto w = Load();
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->report().weight_dtype, DataType::kBFloat16);
  EXPECT_EQ(w->report().num_tensors, static_cast<int64_t>(ExpectedTensors(Desc()).size()));
  const kernels::Tensor* q = w->Find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DataType::kBFloat16);
  EXPECT_TRUE(q->storage->read_only());  // a view into the mapped file
  EXPECT_EQ(q->data_as<uint16_t>()[5], Value("model.layers.0.self_attn.q_proj.weight", 5));
  // Norms and routers are float32 in every policy (one cast line for them).
  EXPECT_EQ(w->Find("model.layers.1.mlp.gate.weight")->dtype, DataType::kFloat32);
  EXPECT_EQ(w->Find("model.norm.weight")->dtype, DataType::kFloat32);
  EXPECT_THAT(w->report().casts, ::testing::ElementsAre(HasSubstr("casting bfloat16 checkpoint to float32")));
}

TEST_F(WeightLoaderTest, Bf16CheckpointAsFloat16AndFloat32) {
  WriteCheckpoint();
  for (DataType target : {DataType::kFloat16, DataType::kFloat32}) {
    SCOPED_TRACE(DataTypeName(target));
    LoadOptions o;
    o.dtype = DataTypeName(target);
    auto w = Load(o);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->report().weight_dtype, target);
    for (const TensorSpec& s : ExpectedTensors(Desc())) {
      const kernels::Tensor* t = w->Find(s.name);
      ASSERT_NE(t, nullptr) << s.name;
      DataType expected = checkpoint::StorageDtype(s.role, target);
      EXPECT_EQ(t->dtype, expected) << s.name;
      EXPECT_EQ(t->shape, s.shape) << s.name;
      // bf16 -> fp32 is exact; -> fp16 rounds to nearest even.
      for (int64_t i : {int64_t{0}, t->numel() / 2, t->numel() - 1}) {
        float want = Bf16ToFp32(Value(s.name, i));
        float got = t->dtype == DataType::kFloat32 ? t->data_as<float>()[i]
                                                    : Fp16ToFp32(t->data_as<uint16_t>()[i]);
        if (t->dtype == DataType::kFloat32) {
          EXPECT_EQ(got, want) << s.name << "[" << i << "]";
        } else {
          EXPECT_EQ(t->data_as<uint16_t>()[i], Fp32ToFp16(want)) << s.name << "[" << i << "]";
        }
      }
    }
    if (target == DataType::kFloat16) {
      EXPECT_THAT(w->report().casts, ::testing::Contains(HasSubstr("casting bfloat16 checkpoint to float16")));
    }
  }
}

TEST_F(WeightLoaderTest, EveryMissingTensorIsListedAtOnce) {
  WriteCheckpoint({"model.layers.0.mlp.experts.3.down_proj.weight",
                   "model.layers.1.mlp.experts.3.down_proj.weight", "model.norm.weight"});
  auto w = Load();
  ASSERT_FALSE(w.ok());
  std::string msg(w.status().message());
  EXPECT_THAT(msg, HasSubstr("missing 3 tensor(s)"));
  EXPECT_THAT(msg, HasSubstr("model.layers.0.mlp.experts.3.down_proj.weight"));
  EXPECT_THAT(msg, HasSubstr("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_THAT(msg, HasSubstr("model.norm.weight"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("experts.2.")));
}

TEST_F(WeightLoaderTest, ShapeMismatchSaysExpectedAndFound) {
  WriteCheckpoint({}, {}, {{"model.layers.0.mlp.gate.weight", {4, 64}}});
  auto w = Load();
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()),
              HasSubstr("model.layers.0.mlp.gate.weight: expected [8, 64], found [4, 64]"));
}

TEST_F(WeightLoaderTest, UnexpectedTensorsAreAWarningNotAnError) {
  WriteCheckpoint({}, {Bf16Tensor("model.layers.0.mystery.weight", {2, 2}),
                       Bf16Tensor("model.layers.0.self_attn.rotary_emb.inv_freq", {8})});
  auto w = Load();
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_THAT(w->report().unexpected, ::testing::ElementsAre("model.layers.0.mystery.weight"));
}

TEST_F(WeightLoaderTest, PackedAndPerExpertLayoutsGiveIdenticalTensors) {
  WriteCheckpoint();
  auto per_expert = Load();
  ASSERT_TRUE(per_expert.ok()) << per_expert.status();

  // Same values, packed: gate_up [E, 2I, H] (gate rows then up rows), down [E, H, I].
  ModelDescription desc = Desc();
  std::vector<safetensors::TensorToWrite> tensors;
  std::set<std::string> per_expert_names;
  for (const PackedExpertSpec& p : PackedExpertTensors(desc)) {
    std::string gate_up, down;
    for (int e = 0; e < p.num_experts; ++e) {
      std::string base = absl::StrCat("model.layers.", p.layer, ".mlp.experts.", e, ".");
      for (const char* proj : {"gate_proj", "up_proj"}) {
        gate_up += Bf16Tensor("x", {p.intermediate_size, p.hidden_size},
                              absl::StrCat(base, proj, ".weight")).bytes;
      }
      down += Bf16Tensor("x", {p.hidden_size, p.intermediate_size},
                         absl::StrCat(base, "down_proj.weight")).bytes;
      for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
        per_expert_names.insert(absl::StrCat(base, proj, ".weight"));
      }
    }
    tensors.push_back({p.gate_up_name, DataType::kBFloat16, p.gate_up_shape, gate_up});
    tensors.push_back({p.down_name, DataType::kBFloat16, p.down_shape, down});
  }
  for (const TensorSpec& s : ExpectedTensors(desc)) {
    if (!per_expert_names.count(s.name)) tensors.push_back(Bf16Tensor(s.name, s.shape));
  }
  fs::remove(dir_ / "model.safetensors");
  ASSERT_TRUE(safetensors::WriteSafetensors((dir_ / "model.safetensors").string(), tensors).ok());
  auto packed = Load();
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ(packed->report().packed_layers, (std::vector<int>{0, 1}));
  ASSERT_EQ(packed->tensors().size(), per_expert->tensors().size());
  for (const auto& [name, t] : per_expert->tensors()) {
    const kernels::Tensor* other = packed->Find(name);
    ASSERT_NE(other, nullptr) << name;
    ASSERT_EQ(other->shape, t.shape) << name;
    ASSERT_EQ(other->dtype, t.dtype) << name;
    EXPECT_EQ(std::memcmp(other->data(), t.data(), t.nbytes()), 0) << name;
  }
}

TEST_F(WeightLoaderTest, RankReadsOnlyItsOwnExperts) {
  WriteCheckpoint();
  ModelDescription desc = Desc();
  auto placement = PlaceExperts(kExperts, 4, PlacementStrategy::kRoundRobin);
  ASSERT_TRUE(placement.ok());
  uint64_t expert_bytes = 0, dense_bytes = 0;
  for (const TensorSpec& s : ExpectedTensors(desc)) {
    (s.expert >= 0 ? expert_bytes : dense_bytes) += static_cast<uint64_t>(NumElements(s.shape)) * 2;
  }
  for (uint32_t rank = 0; rank < 4; ++rank) {
    SCOPED_TRACE(rank);
    auto checkpoint = safetensors::SafetensorsCheckpoint::Open(dir_.string());
    ASSERT_TRUE(checkpoint.ok());
    LoadOptions o;
    o.dtype = "float32";  // every tensor is read (and cast) at load
    o.expert_to_rank = *placement;
    o.rank = rank;
    auto w = Load(o);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->report().local_experts, (std::vector<int>{static_cast<int>(rank),
                                                           static_cast<int>(rank) + 4}));
    EXPECT_EQ(w->report().bytes_read, dense_bytes + expert_bytes / 4);
    EXPECT_EQ(w->Find(absl::StrCat("model.layers.0.mlp.experts.", (rank + 1) % 4,
                                   ".up_proj.weight")),
              nullptr);
    EXPECT_NE(w->Find(absl::StrCat("model.layers.0.mlp.experts.", rank, ".up_proj.weight")),
              nullptr);
  }
  // Resident pages follow the bytes read. With the file's pages dropped from
  // the page cache, loading rank 0 of 4 brings in its share and not more
  // (mincore on an independent mapping of the same file sees the page cache).
  auto probe = safetensors::SafetensorsCheckpoint::Open(dir_.string());
  ASSERT_TRUE(probe.ok());
  ASSERT_TRUE((*probe)->Data("model.norm.weight").ok());  // maps the file, touches nothing
  ASSERT_TRUE((*probe)->ReleaseResidentPages().ok());
  if ((*probe)->ResidentBytes() > 4096) {
    GTEST_SKIP() << "this filesystem keeps the checkpoint's pages resident (tmpfs?); "
                    "residency cannot be measured here";
  }
  LoadOptions o;
  o.dtype = "float32";
  o.expert_to_rank = *placement;
  o.rank = 0;
  auto w = Load(o);
  ASSERT_TRUE(w.ok());
  uint64_t resident = (*probe)->ResidentBytes();
  uint64_t file_bytes = fs::file_size(dir_ / "model.safetensors");
  const uint64_t page = 4096;
  // Every tensor read may round up to whole pages at both ends.
  EXPECT_GE(resident, w->report().bytes_read);
  EXPECT_LE(resident, w->report().bytes_read + 2 * page * w->report().num_tensors);
  EXPECT_LT(resident, file_bytes / 2) << "rank 0 of 4 made most of the checkpoint resident";
  RecordProperty("resident_bytes", static_cast<int>(resident));
  RecordProperty("file_bytes", static_cast<int>(file_bytes));
}

TEST_F(WeightLoaderTest, ExtraExpertsAddedAndDroppedEqualAFullLoad) {
  WriteCheckpoint();
  const std::vector<uint32_t> placement = *PlaceExperts(kExperts, 4, PlacementStrategy::kLinear);
  LoadOptions full;
  full.dtype = "float32";
  absl::StatusOr<ModelWeights> all = Load(full);
  ASSERT_TRUE(all.ok()) << all.status();
  const auto same = [&all](const ModelWeights& w, const std::string& name) {
    const kernels::Tensor* a = all->Find(name);
    const kernels::Tensor* b = w.Find(name);
    return a != nullptr && b != nullptr && a->nbytes() == b->nbytes() &&
           std::memcmp(a->data(), b->data(), a->nbytes()) == 0;
  };
  // Rank 1 holds {2, 3}; with extra_experts {6} it also holds 6.
  LoadOptions o;
  o.dtype = "float32";
  o.expert_to_rank = placement;
  o.rank = 1;
  o.extra_experts = {6};
  absl::StatusOr<ModelWeights> w = Load(o);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->report().local_experts, (std::vector<int>{2, 3, 6}));
  EXPECT_TRUE(same(*w, "model.layers.1.mlp.experts.6.gate_proj.weight"));
  EXPECT_EQ(w->Find("model.layers.1.mlp.experts.7.gate_proj.weight"), nullptr);
  const uint64_t bytes = w->report().bytes_held;
  const int64_t tensors = w->report().num_tensors;

  // Taking over experts 0 and 7 (and 3, already held): only 0 and 7 are read,
  // with the values of a full load, their linear layers assembled.
  const uint64_t read_before = w->report().bytes_read;
  ASSERT_TRUE(AddExperts(dir_.string(), o, {0, 3, 7}, &*w).ok());
  EXPECT_EQ(w->report().local_experts, (std::vector<int>{0, 2, 3, 6, 7}));
  for (int layer = 0; layer < 2; ++layer) {
    for (const char* part : {"gate_proj", "up_proj", "down_proj"}) {
      for (int e : {0, 7}) {
        const std::string name =
            absl::StrCat("model.layers.", layer, ".mlp.experts.", e, ".", part, ".weight");
        EXPECT_TRUE(same(*w, name)) << name;
        EXPECT_NE(w->FindLinear(name), nullptr) << name;
      }
    }
  }
  EXPECT_EQ(w->report().num_tensors, tensors + 2 * 2 * 3);  // 2 experts x 2 layers x 3
  EXPECT_GT(w->report().bytes_read, read_before);
  EXPECT_TRUE(same(*w, "model.norm.weight"));  // dense parts untouched

  // Dropping back to {2, 3}: the others' tensors and layers are gone.
  w->DropExperts({2, 3});
  EXPECT_EQ(w->report().local_experts, (std::vector<int>{2, 3}));
  EXPECT_EQ(w->Find("model.layers.0.mlp.experts.6.up_proj.weight"), nullptr);
  EXPECT_EQ(w->FindLinear("model.layers.0.mlp.experts.0.up_proj.weight"), nullptr);
  EXPECT_TRUE(same(*w, "model.layers.0.mlp.experts.2.up_proj.weight"));
  EXPECT_EQ(w->report().num_tensors, tensors - 2 * 3);
  EXPECT_LT(w->report().bytes_held, bytes);

  // An expert outside the model is refused and nothing changes.
  EXPECT_THAT(std::string(AddExperts(dir_.string(), o, {1, kExperts}, &*w).message()),
              HasSubstr("expert 8 outside [0, 8)"));
  EXPECT_EQ(w->report().local_experts, (std::vector<int>{2, 3}));
}

TEST_F(WeightLoaderTest, DummyWeightsNeedNoFilesAndAreDeterministic) {
  LoadOptions o;
  o.format = checkpoint::LoadFormat::kDummy;
  o.seed = 7;
  o.expert_to_rank = *PlaceExperts(kExperts, 2, PlacementStrategy::kLinear);
  auto a = Load(o);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->report().bytes_read, 0u);
  EXPECT_EQ(a->report().weight_dtype, DataType::kBFloat16);
  const kernels::Tensor* norm = a->Find("model.layers.0.input_layernorm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->data_as<float>()[3], 1.0f);
  auto b = Load(o);
  const std::string name = "model.layers.1.mlp.experts.2.down_proj.weight";
  ASSERT_NE(a->Find(name), nullptr);
  EXPECT_EQ(std::memcmp(a->Find(name)->data(), b->Find(name)->data(), a->Find(name)->nbytes()), 0);
  EXPECT_EQ(a->Find("model.layers.1.mlp.experts.5.down_proj.weight"), nullptr);  // rank 1's
  // Another rank holding the same expert gets the same values.
  o.expert_to_rank = *PlaceExperts(kExperts, 2, PlacementStrategy::kRoundRobin);
  auto c = Load(o);
  ASSERT_NE(c->Find(name), nullptr);
  EXPECT_EQ(std::memcmp(a->Find(name)->data(), c->Find(name)->data(), a->Find(name)->nbytes()), 0);
}

TEST_F(WeightLoaderTest, UnsupportedQuantizedDenseConfigIsRefusedClearly) {
  WriteConfig(R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 64, "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256,
    "torch_dtype": "bfloat16", "quantization_config": {"quant_method": "gptq", "bits": 4,
    "group_size": 128, "desc_act": true}})");
  auto w = Load();
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition);
  std::string msg(w.status().message());
  EXPECT_THAT(msg, HasSubstr("gptq"));
  EXPECT_THAT(msg, HasSubstr("act-order"));
  EXPECT_THAT(msg, HasSubstr("cannot be served on the cpu backend"));
  EXPECT_THAT(msg, ::testing::Not(HasSubstr("num_experts")));
}

TEST_F(WeightLoaderTest, BadOptions) {
  WriteCheckpoint();
  LoadOptions o;
  o.dtype = "int8";
  EXPECT_THAT(std::string(Load(o).status().message()),
              HasSubstr("accepted: auto, bfloat16, float16, float32"));
  o.dtype = "auto";
  o.expert_to_rank = {0, 1};
  EXPECT_THAT(std::string(Load(o).status().message()), HasSubstr("covers 2 experts but"));
  EXPECT_THAT(std::string(checkpoint::ParseLoadFormat("pt").status().message()), HasSubstr("auto, dummy"));
}

}  // namespace
}  // namespace epserve::weights
