// SafetensorsFile and the writer: round trips, zero-copy views into the
// mapping, resident-byte accounting, open errors.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/safetensors/header.h"
#include "common/safetensors/safetensors_file.h"
#include "common/safetensors/writer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/safetensors/test_util.h"

namespace epserve::safetensors {
namespace {

using ::testing::HasSubstr;
using testing::BytesOf;
using testing::Pattern;
using testing::TempDir;

std::string View(absl::Span<const uint8_t> s) {
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

TEST(WriterTest, RoundTripEveryDtypeAndMetadata) {
  const std::string path = TempDir() + "/model.safetensors";
  std::vector<TensorToWrite> tensors = {
      {"w.f32", DataType::kFloat32, {2, 3}, BytesOf<float>({1, 2, 3, 4, 5, 6})},
      {"w.bf16", DataType::kBFloat16, {3}, Pattern(6, 1)},
      {"scalar.f64", DataType::kFloat64, {}, BytesOf<double>({3.5})},
      {"empty", DataType::kInt32, {0, 4}, ""},
      {"ids", DataType::kInt64, {2}, BytesOf<int64_t>({-1, 1LL << 40})},
      {"fp8", DataType::kFloat8E4M3, {5}, Pattern(5, 9)},
      {"mask", DataType::kBool, {3}, std::string("\1\0\1", 3)},
      {"u16", DataType::kUInt16, {1}, Pattern(2, 3)},
  };
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}, {"note", "héllo"}}).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.tensors().size(), tensors.size());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "héllo");
  // The header is padded to 8 bytes; each tensor is aligned to its element size.
  EXPECT_EQ(f.data_section_offset() % 8, 0u);
  for (const TensorInfo& t : f.tensors()) EXPECT_EQ(t.begin % DataTypeSize(t.dtype), 0u) << t.name;

  for (const TensorToWrite& want : tensors) {
    const TensorInfo* t = f.Find(want.name);
    ASSERT_NE(t, nullptr) << want.name;
    EXPECT_EQ(t->dtype, want.dtype);
    EXPECT_EQ(t->shape, want.shape);
    EXPECT_EQ(t->num_bytes(), want.bytes.size());
    auto data = f.Data(*t);
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(View(*data), want.bytes) << want.name;
  }
  EXPECT_EQ(f.Find("w.f32")->num_elements(), 6);
  EXPECT_EQ(f.Find("scalar.f64")->num_elements(), 1);
  EXPECT_EQ(f.Find("empty")->num_elements(), 0);
  EXPECT_EQ(f.Find("missing"), nullptr);
}

TEST(WriterTest, HeaderMatchesTheReferenceLayout) {
  const std::string path = TempDir() + "/x.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"a", DataType::kUInt8, {1}, "z"}}).ok());
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string bytes = ss.str();
  const std::string json = R"({"a":{"data_offsets":[0,1],"dtype":"U8","shape":[1]}})";
  const size_t padded = (json.size() + 7) / 8 * 8;
  ASSERT_EQ(bytes.size(), 8 + padded + 1);
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), padded);
  EXPECT_EQ(bytes.substr(8, json.size()), json);
  EXPECT_EQ(bytes.substr(8 + json.size(), padded - json.size()),
            std::string(padded - json.size(), ' '));
  EXPECT_EQ(bytes.back(), 'z');
}

TEST(WriterTest, RejectsInconsistentTensors) {
  const std::string dir = TempDir();
  auto s = WriteSafetensors(dir + "/a.safetensors", {{"a", DataType::kFloat32, {2}, "abc"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("needs 8 bytes, got 3"));
  s = WriteSafetensors(dir + "/b.safetensors",
                       {{"a", DataType::kUInt8, {1}, "x"}, {"a", DataType::kUInt8, {1}, "y"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = WriteSafetensors(dir + "/c.safetensors", {{"__metadata__", DataType::kUInt8, {1}, "x"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  s = WriteSafetensors(dir + "/d.safetensors", {{"a", DataType::kUInt8, {-1}, ""}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.safetensors"));
}

// The start of the mapping that holds `p` in /proc/self/maps, and its file.
std::pair<uintptr_t, std::string> MappingOf(const void* p) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(maps, line)) {
    std::istringstream ls(line);
    std::string range, perms, offset, dev, inode, file;
    ls >> range >> perms >> offset >> dev >> inode >> file;
    const size_t dash = range.find('-');
    const uintptr_t lo = std::stoull(range.substr(0, dash), nullptr, 16);
    const uintptr_t hi = std::stoull(range.substr(dash + 1), nullptr, 16);
    if (addr >= lo && addr < hi) return {lo, file};
  }
  return {0, ""};
}

TEST(SafetensorsFileTest, DataIsAZeroCopyViewIntoTheMapping) {
  const std::string path = TempDir() + "/model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {testing::U8Tensor("a", 100, 1),
                                      testing::U8Tensor("b", 5000, 2)})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.ResidentBytes(), 0u) << "nothing is mapped before the first Data()";
  auto a = f.Data(*f.Find("a"));
  auto b = f.Data(*f.Find("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  // Both views live in one read-only mapping of this very file, at the
  // header-given offsets: no copy was made.
  const auto [base, mapped_file] = MappingOf(a->data());
  EXPECT_EQ(std::filesystem::canonical(mapped_file), std::filesystem::canonical(path));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data()),
            base + f.data_section_offset() + f.Find("a")->begin);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()),
            base + f.data_section_offset() + f.Find("b")->begin);
  EXPECT_EQ(MappingOf(b->data()).first, base);
  auto again = f.Data(*f.Find("a"));
  EXPECT_EQ(again->data(), a->data());
}

TEST(SafetensorsFileTest, ConcurrentFirstDataCallsShareOneMapping) {
  const std::string path = TempDir() + "/model.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {testing::U8Tensor("a", 64, 1)}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  std::vector<const uint8_t*> seen(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { seen[i] = (*file)->Data((*file)->tensors()[0])->data(); });
  }
  for (auto& t : threads) t.join();
  for (const uint8_t* p : seen) EXPECT_EQ(p, seen[0]);
}

TEST(SafetensorsFileTest, RejectsTensorInfoOfAnotherFile) {
  const std::string dir = TempDir();
  ASSERT_TRUE(WriteSafetensors(dir + "/a.safetensors", {testing::U8Tensor("t", 8, 1)}).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/b.safetensors", {testing::U8Tensor("t", 8, 2)}).ok());
  auto a = SafetensorsFile::Open(dir + "/a.safetensors");
  auto b = SafetensorsFile::Open(dir + "/b.safetensors");
  ASSERT_TRUE(a.ok() && b.ok());
  auto data = (*a)->Data(*(*b)->Find("t"));
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
  TensorInfo forged = *(*a)->Find("t");
  forged.end = 1 << 30;
  EXPECT_EQ((*a)->Data(forged).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsFileTest, OpenErrorsNameThePath) {
  const std::string dir = TempDir();
  auto missing = SafetensorsFile::Open(dir + "/nope.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.safetensors"));
  auto directory = SafetensorsFile::Open(dir);
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr("not a regular file"));
}

// Reading some tensors makes only their pages resident: the basis of
// expert-subset loading.
TEST(SafetensorsFileTest, OnlyTouchedTensorsBecomeResident) {
  const std::string path = TempDir() + "/experts.safetensors";
  constexpr int64_t kExpertBytes = 256 * 1024;
  std::vector<TensorToWrite> experts;
  for (int e = 0; e < 8; ++e) {
    experts.push_back(testing::U8Tensor(absl::StrCat("experts.", e), kExpertBytes,
                                        static_cast<uint8_t>(e)));
  }
  ASSERT_TRUE(WriteSafetensors(path, experts).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  ASSERT_TRUE(f.Data(f.tensors()[0]).ok());  // maps the file
  ASSERT_TRUE(f.ReleaseResidentPages().ok());
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (f.ResidentBytes() > 2 * page) {
    GTEST_SKIP() << "the page cache of " << path << " cannot be dropped here (tmpfs?): "
                 << f.ResidentBytes() << " bytes stay resident";
  }
  uint64_t sum = 0;
  for (const char* name : {"experts.2", "experts.5"}) {
    auto data = f.Data(*f.Find(name));
    ASSERT_TRUE(data.ok());
    for (uint8_t byte : *data) sum += byte;
  }
  EXPECT_GT(sum, 0u);
  const uint64_t resident = f.ResidentBytes();
  EXPECT_GE(resident, 2 * kExpertBytes);
  // Each touched range may share a page with its neighbours at both ends.
  EXPECT_LE(resident, 2 * kExpertBytes + 4 * page + 2 * page) << "untouched experts were read in";
  ASSERT_TRUE(f.ReleaseResidentPages().ok());
  EXPECT_LE(f.ResidentBytes(), 2 * page);
}

}  // namespace
}  // namespace epserve::safetensors
