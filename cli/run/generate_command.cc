#include "cli/run/generate_command.h"

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "cli/run/args.h"
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

}  // namespace

int RunGenerateCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Args args;
  if (auto e = ParseArgs(argc, argv, {"model", "prompt", "token-ids", "max-tokens", "dtype"},
                         {"ignore-eos"}, args)) {
    return UsageError(err, "generate", *e);
  }
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
  options.max_context_tokens = context;
  auto runner = models::OfflineRunner::Load(options);
  if (!runner.ok()) return Fail(err, runner.status());
  std::vector<int64_t> stop_ids;
  if (!args.flags.count("ignore-eos")) stop_ids = desc->eos_token_ids;
  auto generated = (*runner)->GreedyGenerate(prompt_ids, max_tokens, stop_ids);
  if (!generated.ok()) return Fail(err, generated.status());

  nlohmann::json j;
  j["prompt_ids"] = prompt_ids;
  j["generated_ids"] = *generated;
  const bool stopped = !generated->empty() && std::find(stop_ids.begin(), stop_ids.end(),
                                                        generated->back()) != stop_ids.end();
  j["finish_reason"] = stopped ? "stop" : "length";
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
