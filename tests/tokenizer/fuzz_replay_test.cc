// Replays the committed fuzz seed corpus (and deterministic mutations of it)
// through the libFuzzer property, so builds without clang run it too.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/tokenizer/fuzz/encode_decode_fuzzer.h"

namespace epserve::tokenizer::testing {
namespace {

std::vector<std::pair<std::string, std::string>> Seeds() {
  std::vector<std::pair<std::string, std::string>> seeds;
  for (const auto& entry : std::filesystem::directory_iterator(EPSERVE_FUZZ_SEEDS)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    seeds.emplace_back(entry.path().filename().string(), ss.str());
  }
  return seeds;
}

std::string RunOne(const std::string& input) {
  return fuzz::EncodeDecodeFuzzOne(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

TEST(FuzzReplayTest, SeedCorpus) {
  const auto seeds = Seeds();
  ASSERT_GE(seeds.size(), 5u) << "seed corpus missing in " << EPSERVE_FUZZ_SEEDS;
  for (const auto& [name, data] : seeds) EXPECT_EQ(RunOne(data), "") << name;
  EXPECT_EQ(RunOne(""), "");
}

// Twenty thousand deterministic mutations (byte flips, splices, truncations).
TEST(FuzzReplayTest, Mutations) {
  const auto seeds = Seeds();
  ASSERT_FALSE(seeds.empty());
  uint64_t x = 7;
  const auto next = [&] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<size_t>(x >> 33);
  };
  for (int round = 0; round < 20000; ++round) {
    std::string data = seeds[next() % seeds.size()].second;
    const int edits = 1 + static_cast<int>(next() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = data.empty() ? 0 : next() % data.size();
      switch (next() % 4) {
        case 0:
          if (!data.empty()) data[pos] = static_cast<char>(next() & 0xFF);
          break;
        case 1:
          data.insert(pos, seeds[next() % seeds.size()].second.substr(0, next() % 8));
          break;
        case 2:
          data.resize(pos);
          break;
        default:
          data.insert(pos, 1, static_cast<char>(0x80 | (next() & 0x7F)));
      }
    }
    const std::string failure = RunOne(data);
    ASSERT_EQ(failure, "") << "round " << round;
  }
}

}  // namespace
}  // namespace epserve::tokenizer::testing
