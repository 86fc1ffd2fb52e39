// The committed corpus of malformed files (tests/safetensors/corpus, written
// by make_corpus.py): every file gives its expected error, through the pure
// parser and through SafetensorsFile::Open, and never crashes. The same files
// and deterministic mutations of them are replayed through the fuzz entry
// point's property check.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/safetensors/header.h"
#include "common/safetensors/safetensors_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/safetensors/fuzz/safetensors_header_fuzz.h"

namespace epserve::safetensors {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Code = absl::StatusCode;

struct Expected {
  Code code;
  std::string substring;  // of the message; "" for valid files
};

// file -> expected result. Every corpus file must have a row, and every row a file.
const std::map<std::string, Expected>& Table() {
  static const auto* table = new std::map<std::string, Expected>{
      {"valid_two_tensors.safetensors", {Code::kOk, ""}},
      {"valid_scalar_empty_metadata.safetensors", {Code::kOk, ""}},
      {"valid_no_tensors.safetensors", {Code::kOk, ""}},
      {"valid_all_dtypes.safetensors", {Code::kOk, ""}},

      {"truncated_data.safetensors",
       {Code::kDataLoss, "tensor \"b\" ends at data offset 22 but the data section has only 18 bytes"}},
      {"truncated_prefix.safetensors",
       {Code::kDataLoss, "file is 5 bytes, shorter than the 8-byte header length prefix"}},
      {"empty_file.safetensors", {Code::kDataLoss, "file is 0 bytes"}},
      {"header_length_past_eof.safetensors",
       {Code::kDataLoss, "header length 1000 extends past the end of the file"}},
      {"header_length_zero.safetensors", {Code::kInvalidArgument, "header length is 0"}},
      {"header_length_huge.safetensors",
       {Code::kInvalidArgument, "header length 1099511627776 exceeds the cap of 100000000 bytes"}},
      {"header_length_u64_max.safetensors",
       {Code::kInvalidArgument, "header length 18446744073709551615 exceeds the cap"}},
      {"header_length_cap_plus_one.safetensors",
       {Code::kInvalidArgument, "header length 100000001 exceeds the cap"}},

      {"non_utf8_json.safetensors",
       {Code::kInvalidArgument, "header is not valid UTF-8 (bad byte 0xff at header offset 2)"}},
      {"overlong_utf8_json.safetensors",
       {Code::kInvalidArgument, "header is not valid UTF-8 (bad byte 0xc0"}},
      {"json_not_object.safetensors",
       {Code::kInvalidArgument, "header is not a JSON object (expected '{' as its first byte, found \"[\")"}},
      {"json_leading_space.safetensors",
       {Code::kInvalidArgument, "header is not a JSON object"}},
      {"json_syntax_error.safetensors", {Code::kInvalidArgument, "header is not valid JSON"}},
      {"json_trailing_garbage.safetensors", {Code::kInvalidArgument, "header is not valid JSON"}},
      {"json_nul_padding.safetensors",
       {Code::kInvalidArgument, "header is not valid JSON (NUL byte at header offset 53)"}},
      {"json_nul_then_garbage.safetensors",
       {Code::kInvalidArgument, "header is not valid JSON (NUL byte at header offset 53)"}},
      {"metadata_not_string.safetensors",
       {Code::kInvalidArgument, "__metadata__ value of \"step\" must be a string, found a number"}},
      {"metadata_not_object.safetensors",
       {Code::kInvalidArgument, "\"__metadata__\" must be an object of string values, found a string"}},
      {"tensor_not_object.safetensors",
       {Code::kInvalidArgument, "tensor \"a\": expected an object with \"dtype\""}},
      {"missing_data_offsets.safetensors",
       {Code::kInvalidArgument, "tensor \"a\": missing \"data_offsets\""}},
      {"missing_dtype.safetensors", {Code::kInvalidArgument, "tensor \"a\": missing \"dtype\""}},
      {"duplicate_tensor_name.safetensors",
       {Code::kInvalidArgument, "duplicate tensor name \"a\""}},
      {"duplicate_field.safetensors",
       {Code::kInvalidArgument, "tensor \"a\": duplicate key \"dtype\""}},
      {"deep_nesting_in_unknown_key.safetensors",
       {Code::kInvalidArgument, "tensor \"b\": expected an object"}},

      {"unknown_dtype.safetensors",
       {Code::kInvalidArgument, "tensor \"a\": unknown dtype \"C64\" (expected one of: F64 F32"}},
      {"dtype_not_string.safetensors",
       {Code::kInvalidArgument, "tensor \"a\": \"dtype\" must be a string, found a number"}},
      {"negative_shape.safetensors",
       {Code::kInvalidArgument, "tensor \"a\": \"shape\"[1] = -3 is negative"}},
      {"shape_float.safetensors",
       {Code::kInvalidArgument, "tensor \"a\": \"shape\"[0] = 2.0 is not an integer"}},
      {"shape_not_array.safetensors",
       {Code::kInvalidArgument, "\"shape\" must be an array of non-negative integers, found a number"}},
      {"dim_exceeds_int64.safetensors",
       {Code::kInvalidArgument,
        "shape[0] = 9223372036854775808 exceeds the largest dimension 9223372036854775807"}},
      {"shape_element_overflow.safetensors",
       {Code::kInvalidArgument,
        "shape [4294967296, 4294967296, 4] has more elements than fit in 64 bits"}},
      {"shape_bytes_overflow.safetensors",
       {Code::kInvalidArgument, "shape [2305843009213693952] x F64 (8 bytes) overflows 64 bits"}},
      {"shape_dtype_mismatch.safetensors",
       {Code::kInvalidArgument,
        "tensor \"a\": shape [2, 3] x F32 (4 bytes) needs 24 bytes, but data_offsets [0, 20] "
        "span 20 bytes"}},
      {"begin_greater_than_end.safetensors",
       {Code::kInvalidArgument, "tensor \"a\": data_offsets [8, 4]: begin > end"}},
      {"offsets_three_values.safetensors",
       {Code::kInvalidArgument, "\"data_offsets\" must be [begin, end], found 3 values"}},
      {"offsets_overflow.safetensors",
       {Code::kInvalidArgument,
        "\"data_offsets\"[1] = 18446744073709551616 is not an integer in [0, 2^64-1]"}},
      {"offsets_near_u64_max.safetensors",
       {Code::kInvalidArgument, "bytes [8, 18446744073709551607) belong to no tensor"}},

      {"overlapping_offsets.safetensors",
       {Code::kInvalidArgument,
        "tensor \"b\" data_offsets [4, 12] overlap tensor \"a\" [0, 8]"}},
      {"gap_between_tensors.safetensors",
       {Code::kInvalidArgument, "gap in the data section: bytes [8, 12) belong to no tensor"}},
      {"data_not_starting_at_zero.safetensors",
       {Code::kInvalidArgument, "gap in the data section: bytes [0, 4)"}},
      {"trailing_bytes.safetensors",
       {Code::kInvalidArgument, "trailing bytes: the tensors cover 22 bytes but the data section has 26"}},
      {"data_but_no_tensors.safetensors",
       {Code::kInvalidArgument, "trailing bytes: the tensors cover 0 bytes"}},
      {"tensor_past_eof.safetensors",
       {Code::kDataLoss, "tensor \"b\" ends at data offset 1004 but the data section has only 4 bytes"}},
  };
  return *table;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::pair<std::string, std::string>> Corpus() {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& entry : fs::directory_iterator(EPSERVE_SAFETENSORS_CORPUS)) {
    files.emplace_back(entry.path().filename().string(), ReadFile(entry.path()));
  }
  std::sort(files.begin(), files.end());
  return files;
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

void ExpectResult(const absl::Status& status, const Expected& expected, const std::string& file) {
  EXPECT_EQ(status.code(), expected.code) << file << ": " << status;
  if (expected.code == Code::kOk) return;
  EXPECT_THAT(std::string(status.message()), HasSubstr(expected.substring)) << file;
  EXPECT_THAT(std::string(status.message()), HasSubstr(file)) << "error must name the file";
}

TEST(CorpusTest, EveryFileHasARowAndEveryRowAFile) {
  const auto corpus = Corpus();
  std::set<std::string> names;
  for (const auto& [name, data] : corpus) {
    names.insert(name);
    EXPECT_TRUE(Table().count(name)) << "no expected result for corpus file " << name;
  }
  for (const auto& [name, expected] : Table()) {
    EXPECT_TRUE(names.count(name)) << "corpus file missing: " << name
                                   << " (run tests/safetensors/make_corpus.py)";
  }
}

TEST(CorpusTest, ParserGivesTheExpectedError) {
  for (const auto& [name, data] : Corpus()) {
    auto it = Table().find(name);
    if (it == Table().end()) continue;
    ExpectResult(ParseSafetensorsHeader(Bytes(data), data.size(), name).status(), it->second,
                 name);
  }
}

TEST(CorpusTest, OpenGivesTheExpectedError) {
  for (const auto& [name, data] : Corpus()) {
    auto it = Table().find(name);
    if (it == Table().end()) continue;
    const std::string path = (fs::path(EPSERVE_SAFETENSORS_CORPUS) / name).string();
    ExpectResult(SafetensorsFile::Open(path).status(), it->second, name);
  }
}

TEST(CorpusTest, ParserIgnoresBytesAfterTheHeaderButChecksFileSize) {
  // The parser only reads 8 + N bytes; the rest of `bytes` is not needed.
  for (const auto& [name, contents] : Corpus()) {
    if (name != "valid_two_tensors.safetensors") continue;
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(contents[i]);
    const std::string head = contents.substr(0, 8 + n);
    EXPECT_TRUE(ParseSafetensorsHeader(Bytes(head), contents.size(), name).ok());
    // Fewer bytes than the header is a caller error, not a crash.
    const auto short_read =
        ParseSafetensorsHeader(Bytes(head.substr(0, 12)), contents.size(), name);
    EXPECT_EQ(short_read.status().code(), Code::kInvalidArgument);
    EXPECT_THAT(std::string(short_read.status().message()), HasSubstr("header bytes were provided"));
  }
}

TEST(FuzzReplayTest, CorpusThroughTheFuzzEntry) {
  const auto corpus = Corpus();
  ASSERT_GE(corpus.size(), 40u) << "corpus missing in " << EPSERVE_SAFETENSORS_CORPUS;
  for (const auto& [name, data] : corpus) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
    EXPECT_EQ(fuzz::CheckHeaderInvariants(bytes, data.size()), "") << name;
    EXPECT_EQ(LLVMFuzzerTestOneInput(bytes, data.size()), 0) << name;
  }
  EXPECT_EQ(fuzz::CheckHeaderInvariants(nullptr, 0), "");
}

// Deterministic mutations (byte flips, splices, truncations, extensions), with
// the length prefix often rewritten to match, so they get past it.
TEST(FuzzReplayTest, Mutations) {
  const auto corpus = Corpus();
  ASSERT_FALSE(corpus.empty());
  uint64_t x = 12345;
  const auto next = [&] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<size_t>(x >> 33);
  };
  int accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string data = corpus[next() % corpus.size()].second;
    const int edits = 1 + static_cast<int>(next() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = data.empty() ? 0 : next() % data.size();
      switch (next() % 5) {
        case 0:
          if (!data.empty()) data[pos] = static_cast<char>(next() & 0xFF);
          break;
        case 1: {
          static const char* kTokens[] = {"{", "}", "[", "]", ",", ":", "\"", "-1", "0",
                                          "18446744073709551615", "1e999", "\"F32\"", "null"};
          data.insert(pos, kTokens[next() % (sizeof(kTokens) / sizeof(kTokens[0]))]);
          break;
        }
        case 2:
          data.resize(pos);
          break;
        case 3:
          data.append(next() % 16, static_cast<char>(next() & 0xFF));
          break;
        case 4:
          if (data.size() > 8) data.erase(pos, next() % 8);
          break;
      }
    }
    if (data.size() >= 8 && next() % 2 == 0) {
      // Point the prefix at a plausible header end: up to the last '}' or ' '.
      const size_t end = data.find_last_of("} ");
      if (end != std::string::npos && end >= 8) {
        const uint64_t n = end + 1 - 8;
        for (int i = 0; i < 8; ++i) data[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
      }
    }
    const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
    const std::string failure = fuzz::CheckHeaderInvariants(bytes, data.size());
    ASSERT_EQ(failure, "") << "round " << round;
    accepted += ParseSafetensorsHeader(Bytes(data), data.size(), "m").ok();
  }
  // Some mutations must stay valid, or the replay only exercises the prefix.
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace epserve::safetensors
