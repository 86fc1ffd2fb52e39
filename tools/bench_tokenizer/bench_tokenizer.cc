// Tokenizer benchmarks.
//   bench_tokenizer [--benchmark_filter=Encode] [google-benchmark flags]
// Vocabularies from $EPSERVE_TOKENIZER_DIR or .cache/tokenizers
// (tools/fetch_tokenizers.sh); corpus from $EPSERVE_TOKENIZER_CORPUS or
// tests/tokenizer/fixtures/corpus.jsonl. The text is the ~1 MB mixed-language input of
// the reference tests: corpus.jsonl lines, each + '\n', cycled to >= 1 MiB
// (the same string tools/tokenizer_reference.py times Hugging Face on).
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

using epserve::tokenizer::Tokenizer;

std::vector<std::string> CorpusTexts() {
  const char* env = std::getenv("EPSERVE_TOKENIZER_CORPUS");
  std::ifstream in((env != nullptr && *env) ? env : EPSERVE_TOKENIZER_CORPUS);
  if (!in) {
    std::cerr << "cannot read the corpus (set EPSERVE_TOKENIZER_CORPUS)\n";
    std::exit(1);
  }
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
  }
  return out;
}

const std::string& BigText() {
  static const std::string* text = [] {
    auto* s = new std::string();
    const auto corpus = CorpusTexts();
    while (s->size() < (size_t{1} << 20)) {
      for (const std::string& t : corpus) {
        *s += t;
        *s += '\n';
        if (s->size() >= (size_t{1} << 20)) break;
      }
    }
    return s;
  }();
  return *text;
}

const Tokenizer* Load(const std::string& name) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  auto it = cache->find(name);
  if (it != cache->end()) return it->second.get();
  const char* env = std::getenv("EPSERVE_TOKENIZER_DIR");
  const std::string dir = (env != nullptr && *env) ? env : EPSERVE_TOKENIZER_DIR_DEFAULT;
  auto tok = Tokenizer::FromPath(dir + "/" + name);
  if (!tok.ok()) {
    std::cerr << tok.status() << "\n(run tools/fetch_tokenizers.sh)\n";
    std::exit(1);
  }
  return cache->emplace(name, std::move(*tok)).first->second.get();
}

// Encode of the whole ~1 MB text as one input (warm word cache after the
// first iteration, like the reference's own cache).
void BM_EncodeBigText(benchmark::State& state, const std::string& name) {
  const Tokenizer* tok = Load(name);
  const std::string& text = BigText();
  size_t num_ids = 0;
  for (auto _ : state) {
    auto ids = tok->Encode(text, {.add_special_tokens = false});
    num_ids = ids->size();
    benchmark::DoNotOptimize(ids);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["ids"] = static_cast<double>(num_ids);
}

// Encode of each corpus line separately (request-sized inputs).
void BM_EncodeLines(benchmark::State& state, const std::string& name) {
  const Tokenizer* tok = Load(name);
  const auto corpus = CorpusTexts();
  size_t bytes = 0;
  for (const auto& t : corpus) bytes += t.size();
  for (auto _ : state) {
    for (const auto& t : corpus) benchmark::DoNotOptimize(tok->Encode(t, {}));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

// Streaming detokenization, one Append per token, over the ids of the big text.
void BM_StreamingDecode(benchmark::State& state, const std::string& name) {
  const Tokenizer* tok = Load(name);
  const std::vector<int32_t> ids = *tok->Encode(BigText(), {.add_special_tokens = false});
  for (auto _ : state) {
    epserve::tokenizer::StreamingDetokenizer detok(*tok, {.stop_strings = {"</answer>"}});
    for (int32_t id : ids) benchmark::DoNotOptimize(detok.Append(id));
    benchmark::DoNotOptimize(detok.Finish());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}

const int kRegistered = [] {
  for (const char* name : {"qwen3", "llama2", "deepseek_v3"}) {
    benchmark::RegisterBenchmark((std::string("EncodeBigText/") + name).c_str(), BM_EncodeBigText,
                                 std::string(name))
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("EncodeLines/") + name).c_str(), BM_EncodeLines,
                                 std::string(name))
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("StreamingDecode/") + name).c_str(),
                                 BM_StreamingDecode, std::string(name))
        ->Unit(benchmark::kMillisecond);
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
