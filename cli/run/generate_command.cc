#include "cli/run/generate_command.h"

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "cli/run/args.h"
#include "kernels/device.h"
#include "common/status.h"
#include "worker/sampling/sampler.h"
#include "common/sampling/sampling_params.h"
#include "cli/run/logits_command.h"
#include "common/model_config/model_config.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "worker/models/offline_runner.h"

namespace epserve::cli {
namespace {

int Fail(std::ostream& err, const absl::Status& status) {
  err << "epserve-run generate: " << OneLine(std::string(status.message())) << "\n";
  return 1;
}

template <typename T>
std::optional<std::string> ParseNumber(const Args& args, const char* name, T* out) {
  if (!args.has(name)) return std::nullopt;
  bool ok;
  if constexpr (std::is_floating_point_v<T>) {
    ok = absl::SimpleAtof(args.get(name), out);
  } else {
    ok = absl::SimpleAtoi(args.get(name), out);
  }
  if (!ok) return std::string("--") + name + ": not a number: '" + args.get(name) + "'";
  return std::nullopt;
}

// Fills `params` from --temperature, --top-p, ...; range checks are left to
// sampling::Validate (which names the field).
std::optional<std::string> ParseSamplingFlags(const Args& args, sampling::SamplingParams* params) {
  uint64_t seed = 0;
  for (auto e : {ParseNumber(args, "temperature", &params->temperature),
                 ParseNumber(args, "top-p", &params->top_p), ParseNumber(args, "top-k", &params->top_k),
                 ParseNumber(args, "min-p", &params->min_p),
                 ParseNumber(args, "min-tokens", &params->min_tokens),
                 ParseNumber(args, "presence-penalty", &params->presence_penalty),
                 ParseNumber(args, "frequency-penalty", &params->frequency_penalty),
                 ParseNumber(args, "repetition-penalty", &params->repetition_penalty),
                 ParseNumber(args, "top-logprobs", &params->top_logprobs),
                 ParseNumber(args, "seed", &seed)}) {
    if (e) return e;
  }
  if (args.has("seed")) params->seed = seed;
  params->logprobs = args.flags.count("logprobs") > 0 || args.has("top-logprobs");
  return std::nullopt;
}

}  // namespace

int RunGenerateCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Args args;
  if (auto e = ParseArgs(argc, argv,
                         {"model", "prompt", "token-ids", "max-tokens", "dtype", "device", "temperature",
                          "top-p", "top-k", "min-p", "seed", "min-tokens", "presence-penalty",
                          "frequency-penalty", "repetition-penalty", "top-logprobs"},
                         {"ignore-eos", "logprobs"}, args)) {
    return UsageError(err, "generate", *e);
  }
  // Sampling flags; without any, decoding is greedy (temperature 0).
  sampling::SamplingParams params;
  params.temperature = 0.0f;
  if (auto e = ParseSamplingFlags(args, &params)) return UsageError(err, "generate", *e);
  if (!args.has("model")) return UsageError(err, "generate", "--model DIR is required");
  if (args.has("prompt") == args.has("token-ids")) {
    return UsageError(err, "generate", "give exactly one of --prompt TEXT or --token-ids 1,2,3");
  }
  if (!args.has("max-tokens")) return UsageError(err, "generate", "--max-tokens N is required");
  int64_t max_tokens = 0;
  if (!absl::SimpleAtoi(args.get("max-tokens"), &max_tokens) || max_tokens <= 0) {
    return UsageError(err, "generate",
                      "--max-tokens: expected a positive integer, found '" + args.get("max-tokens") +
                          "'");
  }
  const std::string dir = args.get("model");
  auto desc = LoadModelConfig(dir);
  if (!desc.ok()) return Fail(err, desc.status());
  params.ignore_eos = args.flags.count("ignore-eos") > 0;
  if (absl::Status v = sampling::Validate(params, desc->vocab_size); !v.ok()) {
    return UsageError(err, "generate", std::string(v.message()));
  }

  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (auto t = tokenizer::Tokenizer::FromPath(dir); t.ok()) {
    tok = std::move(*t);
  } else if (args.has("prompt")) {
    return Fail(err, t.status());  // --token-ids works without a tokenizer (no text then)
  }
  std::vector<int32_t> prompt_ids;
  if (args.has("prompt")) {
    auto ids = tok->Encode(args.get("prompt"), {});
    if (!ids.ok()) return Fail(err, ids.status());
    prompt_ids = std::move(*ids);
    if (prompt_ids.empty()) return UsageError(err, "generate", "--prompt encodes to no tokens");
  } else if (auto e = ParseTokenIdList(args.get("token-ids"), &prompt_ids)) {
    return UsageError(err, "generate", *e);
  }
  const int64_t context = static_cast<int64_t>(prompt_ids.size()) + max_tokens;
  if (desc->max_position_embeddings > 0 && context > desc->max_position_embeddings) {
    return UsageError(err, "generate",
                      "prompt (" + std::to_string(prompt_ids.size()) + " tokens) + --max-tokens " +
                          std::to_string(max_tokens) + " exceeds max_position_embeddings " +
                          std::to_string(desc->max_position_embeddings));
  }

  models::OfflineRunnerOptions options;
  options.model_dir = dir;
  options.dtype = args.get("dtype", "auto");
  if (auto device = kernels::ParseDevice(args.get("device", "cpu")); device.ok()) {
    options.device = *device;
  } else {
    return UsageError(err, "generate", "--device: " + std::string(device.status().message()));
  }
  options.max_context_tokens = context;
  auto runner = models::OfflineRunner::Load(options);
  if (!runner.ok()) return Fail(err, runner.status());
  std::vector<int64_t> stop_ids;
  if (!args.flags.count("ignore-eos")) stop_ids = desc->eos_token_ids;
  sampling::Sampler::Options sampler_options;
  for (int64_t id : desc->eos_token_ids) sampler_options.eos_token_ids.push_back(static_cast<int32_t>(id));
  sampling::Sampler sampler(sampler_options);
  nlohmann::json logprobs = nlohmann::json::array();
  auto pick = [&](absl::Span<const float> row,
                  absl::Span<const int32_t> output) -> absl::StatusOr<int32_t> {
    sampling::SamplingRow r{&params, prompt_ids, output, output.size()};
    ASSIGN_OR_RETURN(auto rows, sampler.SampleBatch(row, static_cast<int64_t>(row.size()),
                                                    absl::MakeConstSpan(&r, 1)));
    if (!rows[0].ok()) return rows[0].status();
    const sampling::SampledToken& t = *rows[0];
    if (t.logprob) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& alt : t.top_logprobs) top.push_back({{"id", alt.token_id}, {"logprob", alt.logprob}});
      logprobs.push_back({{"id", t.token_id}, {"logprob", *t.logprob}, {"top", top}});
    }
    return t.token_id;
  };
  auto generated = (*runner)->Generate(prompt_ids, max_tokens, stop_ids, pick);
  if (!generated.ok()) return Fail(err, generated.status());

  nlohmann::json j;
  j["prompt_ids"] = prompt_ids;
  j["generated_ids"] = *generated;
  const bool stopped = !generated->empty() && std::find(stop_ids.begin(), stop_ids.end(),
                                                        generated->back()) != stop_ids.end();
  j["finish_reason"] = stopped ? "stop" : "length";
  if (params.logprobs) j["logprobs"] = logprobs;
  if (tok != nullptr) {
    auto text = tok->Decode(*generated, {.skip_special_tokens = true});
    if (!text.ok()) return Fail(err, text.status());
    j["text"] = *text;
  } else {
    j["text"] = nullptr;
  }
  out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return 0;
}

int RunGenerateCommand(int argc, char** argv) {
  return RunGenerateCommand(argc, argv, std::cout, std::cerr);
}

}  // namespace epserve::cli
