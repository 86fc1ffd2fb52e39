#include "tests/tokenizer/test_util.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/streaming_detokenizer.h"

namespace epserve::tokenizer::testing {

std::string TokenizerDir() {
  const char* env = std::getenv("EPSERVE_TOKENIZER_DIR");
  return env != nullptr && *env != '\0' ? env : EPSERVE_TOKENIZER_DIR;
}

absl::StatusOr<const Tokenizer*> ReferenceTokenizer(const std::string& name) {
  static std::mutex mu;
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(name);
  if (it != cache->end()) return it->second.get();
  const std::string dir = TokenizerDir() + "/" + name;
  std::ifstream probe(dir + "/tokenizer.json");
  if (!probe) {
    return absl::NotFoundError(absl::StrCat(
        "reference vocabulary '", name, "' not found in ", dir,
        ": run tools/fetch_tokenizers.sh (or set EPSERVE_TOKENIZER_DIR)"));
  }
  auto tok = Tokenizer::FromPath(dir);
  if (!tok.ok()) return tok.status();
  const Tokenizer* raw = tok->get();
  cache->emplace(name, std::move(*tok));
  return raw;
}

std::vector<CorpusLine> LoadCorpus() {
  std::ifstream in(std::string(EPSERVE_TOKENIZER_FIXTURES) + "/corpus.jsonl");
  std::vector<CorpusLine> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    out.push_back({j["name"].get<std::string>(), j["text"].get<std::string>()});
  }
  return out;
}

nlohmann::json LoadFixture(const std::string& name) {
  std::ifstream in(std::string(EPSERVE_TOKENIZER_FIXTURES) + "/" + name + ".json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

std::string BigText(const std::vector<CorpusLine>& corpus) {
  constexpr size_t kMinBytes = size_t{1} << 20;
  std::string out;
  while (out.size() < kMinBytes) {
    for (const CorpusLine& c : corpus) {
      out += c.text;
      out += '\n';
      if (out.size() >= kMinBytes) break;
    }
  }
  return out;
}

std::string Fnv1aIds(const std::vector<int32_t>& ids) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (int32_t id : ids) {
    const uint32_t u = static_cast<uint32_t>(id);
    for (int k = 0; k < 4; ++k) {
      h ^= (u >> (8 * k)) & 0xFF;
      h *= 0x100000001B3ull;
    }
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<int32_t> ToIds(const nlohmann::json& array) {
  return array.get<std::vector<int32_t>>();
}

absl::StatusOr<std::string> StreamAll(const Tokenizer& tok, const std::vector<int32_t>& ids,
                                      bool skip_special, std::vector<std::string>* deltas) {
  StreamingOptions options;
  options.skip_special_tokens = skip_special;
  StreamingDetokenizer detok(tok, options);
  std::string all;
  for (int32_t id : ids) {
    auto d = detok.Append(id);
    if (!d.ok()) return d.status();
    all += d->text;
    if (deltas != nullptr) deltas->push_back(d->text);
  }
  auto d = detok.Finish();
  if (!d.ok()) return d.status();
  all += d->text;
  if (deltas != nullptr) deltas->push_back(d->text);
  return all;
}

}  // namespace epserve::tokenizer::testing
