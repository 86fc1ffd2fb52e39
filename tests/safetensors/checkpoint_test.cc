// SafetensorsCheckpoint over model directories: single file, sharded with an
// index, a folder of files; index and shard errors name what is wrong.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/safetensors/checkpoint.h"
#include "common/safetensors/writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/safetensors/test_util.h"

namespace epserve::safetensors {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::TempDir;
using testing::U8Tensor;
using Json = nlohmann::json;

std::string View(absl::Span<const uint8_t> s) {
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

// 12 tensors of 100..1200 bytes: "layers.L.mlp.experts.E.w" for L < 3, E < 4.
std::vector<TensorToWrite> ExpertTensors() {
  std::vector<TensorToWrite> tensors;
  for (int l = 0; l < 3; ++l) {
    for (int e = 0; e < 4; ++e) {
      tensors.push_back(U8Tensor(absl::StrCat("layers.", l, ".mlp.experts.", e, ".w"),
                                 100 * (1 + 4 * l + e), static_cast<uint8_t>(4 * l + e)));
    }
  }
  return tensors;
}

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return Json::parse(in);
}
void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

void ExpectAllTensors(const SafetensorsCheckpoint& ckpt, const std::vector<TensorToWrite>& want) {
  std::vector<std::string> names;
  for (const auto& t : want) names.push_back(t.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(ckpt.TensorNames(), names);
  for (const auto& t : want) {
    auto data = ckpt.Data(t.name);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(View(*data), t.bytes) << t.name;
    auto info = ckpt.Get(t.name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ((*info)->shape, t.shape);
    EXPECT_EQ(ckpt.Find(t.name), *info);
  }
}

TEST(CheckpointTest, SingleFile) {
  const std::string dir = TempDir();
  const auto tensors = ExpertTensors();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectAllTensors(**ckpt, tensors);
  EXPECT_EQ((*ckpt)->Files().size(), 1u);
  EXPECT_EQ(*(*ckpt)->FileOf("layers.0.mlp.experts.0.w"), dir + "/model.safetensors");
}

TEST(CheckpointTest, ShardedViaIndex) {
  const std::string dir = TempDir();
  const auto tensors = ExpertTensors();
  ASSERT_TRUE(WriteShardedSafetensors(dir, tensors, /*max_shard_bytes=*/2000).ok());
  ASSERT_TRUE(fs::exists(dir + "/" + kIndexFileName));
  // A stray file next to the shards is not part of the checkpoint.
  ASSERT_TRUE(WriteSafetensors(dir + "/stray.safetensors", {U8Tensor("stray", 4, 0)}).ok());

  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ExpectAllTensors(**ckpt, tensors);
  EXPECT_GT((*ckpt)->Files().size(), 2u);
  EXPECT_EQ((*ckpt)->Find("stray"), nullptr);
  EXPECT_TRUE((*ckpt)->warnings().empty());
  const Json index = ReadJson(dir + "/" + kIndexFileName);
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 100u * (12 * 13 / 2));
  for (const auto& t : tensors) {
    EXPECT_EQ(*(*ckpt)->FileOf(t.name),
              dir + "/" + index["weight_map"][t.name].get<std::string>());
  }
}

TEST(CheckpointTest, GetNamesTensorAndDirectory) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", ExpertTensors()).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok());
  auto missing = (*ckpt)->Get("lm_head.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(missing.status()), HasSubstr("\"lm_head.weight\""));
  EXPECT_THAT(Message(missing.status()), HasSubstr(dir));
  EXPECT_EQ((*ckpt)->Data("lm_head.weight").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*ckpt)->Find("lm_head.weight"), nullptr);
}

TEST(CheckpointTest, IndexNamingAMissingShard) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteShardedSafetensors(dir, ExpertTensors(), 2000).ok());
  const std::string shard = ReadJson(dir + "/" + kIndexFileName)["weight_map"]
                                ["layers.2.mlp.experts.3.w"].get<std::string>();
  fs::remove(dir + "/" + shard);
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(ckpt.status()), HasSubstr(kIndexFileName));
  EXPECT_THAT(Message(ckpt.status()), HasSubstr("names shard " + shard));
  EXPECT_THAT(Message(ckpt.status()), HasSubstr("layers.2.mlp.experts.3.w"));
  EXPECT_THAT(Message(ckpt.status()), HasSubstr("does not exist"));
}

TEST(CheckpointTest, TensorMissingFromTheShardTheIndexNames) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteShardedSafetensors(dir, ExpertTensors(), 2000).ok());
  Json index = ReadJson(dir + "/" + kIndexFileName);
  const std::string shard = index["weight_map"]["layers.0.mlp.experts.0.w"];
  index["weight_map"]["layers.0.mlp.experts.9.w"] = shard;
  WriteText(dir + "/" + kIndexFileName, index.dump());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(ckpt.status()), HasSubstr("\"layers.0.mlp.experts.9.w\""));
  EXPECT_THAT(Message(ckpt.status()), HasSubstr("in shard " + shard));
  EXPECT_THAT(Message(ckpt.status()), HasSubstr("does not contain"));
}

TEST(CheckpointTest, TensorInShardButNotInIndexIsAWarning) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteShardedSafetensors(dir, ExpertTensors(), 2000).ok());
  Json index = ReadJson(dir + "/" + kIndexFileName);
  index["weight_map"].erase("layers.1.mlp.experts.2.w");
  WriteText(dir + "/" + kIndexFileName, index.dump());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ASSERT_EQ((*ckpt)->warnings().size(), 1u);
  EXPECT_THAT((*ckpt)->warnings()[0], HasSubstr("\"layers.1.mlp.experts.2.w\""));
  EXPECT_THAT((*ckpt)->warnings()[0], HasSubstr("does not assign"));
  EXPECT_EQ((*ckpt)->Find("layers.1.mlp.experts.2.w"), nullptr);  // the index is authoritative
  EXPECT_EQ((*ckpt)->TensorNames().size(), 11u);
}

TEST(CheckpointTest, MalformedIndexNamesTheIndexFile) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteShardedSafetensors(dir, ExpertTensors(), 2000).ok());
  const std::string index_path = dir + "/" + kIndexFileName;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"weight_map\": {", "not valid JSON"},
      {"[]", "expected a JSON object, found array"},
      {"{\"metadata\": {}}", "missing \"weight_map\""},
      {"{\"weight_map\": []}", "\"weight_map\" must be an object"},
      {"{\"weight_map\": {}}", "\"weight_map\" is empty"},
      {"{\"weight_map\": {\"a\": 3}}", "must be a shard file name, found number"},
      {"{\"weight_map\": {\"a\": \"../x.safetensors\"}}", "is not a plain file name"},
      {"{\"weight_map\": {\"a\": \"/etc/passwd\"}}", "is not a plain file name"},
  };
  for (const auto& [text, expected] : cases) {
    WriteText(index_path, text);
    auto ckpt = SafetensorsCheckpoint::Open(dir);
    EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(Message(ckpt.status()), HasSubstr(index_path)) << text;
    EXPECT_THAT(Message(ckpt.status()), HasSubstr(expected)) << text;
  }
}

TEST(CheckpointTest, MalformedShardNamesTheShard) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteShardedSafetensors(dir, ExpertTensors(), 2000).ok());
  const std::string shard = dir + "/" +
                            ReadJson(dir + "/" + kIndexFileName)["weight_map"]
                                ["layers.0.mlp.experts.0.w"].get<std::string>();
  fs::resize_file(shard, fs::file_size(shard) - 1);
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(Message(ckpt.status()), HasSubstr(shard));
}

TEST(CheckpointTest, FolderOfFilesWithoutIndex) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/b.safetensors", {U8Tensor("y", 3, 1)}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/a.safetensors", {U8Tensor("x", 5, 2)}).ok());
  WriteText(dir + "/notes.txt", "not weights");
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->TensorNames(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ((*ckpt)->Files(),
            (std::vector<std::string>{dir + "/a.safetensors", dir + "/b.safetensors"}));
  EXPECT_EQ(*(*ckpt)->FileOf("y"), dir + "/b.safetensors");

  ASSERT_TRUE(WriteSafetensors(dir + "/c.safetensors", {U8Tensor("x", 5, 3)}).ok());
  auto dup = SafetensorsCheckpoint::Open(dir);
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(dup.status()), HasSubstr("\"x\" is in both " + dir + "/a.safetensors and " +
                                               dir + "/c.safetensors"));
}

TEST(CheckpointTest, ModelSafetensorsIsPreferredOverOtherFiles) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", {U8Tensor("x", 5, 2)}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/other.safetensors", {U8Tensor("x", 5, 3)}).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->Files(), (std::vector<std::string>{dir + "/model.safetensors"}));
}

TEST(CheckpointTest, NoWeightsIsNotFoundNamingTheDirectory) {
  const std::string dir = TempDir();
  WriteText(dir + "/config.json", "{}");
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(ckpt.status()), HasSubstr(dir));
  EXPECT_THAT(Message(ckpt.status()), HasSubstr(kIndexFileName));
  EXPECT_THAT(Message(ckpt.status()), HasSubstr("*.safetensors"));
  auto nodir = SafetensorsCheckpoint::Open(dir + "/missing");
  EXPECT_EQ(nodir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(nodir.status()), HasSubstr(dir + "/missing"));
}

TEST(CheckpointTest, ResidentBytesCountOnlyTouchedTensors) {
  const std::string dir = TempDir();
  std::vector<TensorToWrite> tensors;
  for (int e = 0; e < 6; ++e) tensors.push_back(U8Tensor(absl::StrCat("e", e), 128 * 1024, e));
  ASSERT_TRUE(WriteShardedSafetensors(dir, tensors, 3 * 128 * 1024).ok());
  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  ASSERT_EQ((*ckpt)->Files().size(), 2u);
  EXPECT_EQ((*ckpt)->ResidentBytes(), 0u);
  for (const auto& t : tensors) ASSERT_TRUE((*ckpt)->Data(t.name).ok());  // maps, reads nothing
  ASSERT_TRUE((*ckpt)->ReleaseResidentPages().ok());
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if ((*ckpt)->ResidentBytes() > 4 * page) GTEST_SKIP() << "page cache cannot be dropped here";
  uint64_t sum = 0;
  for (const char* name : {"e1", "e4"}) {
    auto data = (*ckpt)->Data(name);
    ASSERT_TRUE(data.ok());
    for (uint8_t b : *data) sum += b;
  }
  EXPECT_GT(sum, 0u);
  EXPECT_GE((*ckpt)->ResidentBytes(), 2u * 128 * 1024);
  EXPECT_LE((*ckpt)->ResidentBytes(), 2u * 128 * 1024 + 8 * page);
}

}  // namespace
}  // namespace epserve::safetensors
