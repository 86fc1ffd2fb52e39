#include "cli/run/logits_command.h"

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "cli/run/args.h"
#include "kernels/device.h"
#include "nlohmann/json.hpp"
#include "worker/models/offline_runner.h"

namespace epserve::cli {

std::optional<std::string> ParseTokenIdList(const std::string& text, std::vector<int32_t>* ids) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return "--token-ids: '" + std::string(part) + "' is not an integer";
    }
    ids->push_back(id);
  }
  if (ids->empty()) return "--token-ids: expected at least one id, found none";
  return std::nullopt;
}

std::string OneLine(const std::string& message) {
  return absl::StrReplaceAll(message, {{"\r", ""}, {"\n", "; "}});
}

int RunLogitsCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Args args;
  if (auto e = ParseArgs(argc, argv, {"model", "token-ids", "dtype", "device"}, {}, args)) {
    return UsageError(err, "logits", *e);
  }
  if (!args.has("model")) return UsageError(err, "logits", "--model DIR is required");
  if (!args.has("token-ids")) return UsageError(err, "logits", "--token-ids 1,2,3 is required");
  std::vector<int32_t> ids;
  if (auto e = ParseTokenIdList(args.get("token-ids"), &ids)) return UsageError(err, "logits", *e);

  models::OfflineRunnerOptions options;
  options.model_dir = args.get("model");
  options.dtype = args.get("dtype", "auto");
  if (auto device = kernels::ParseDevice(args.get("device", "cpu")); device.ok()) {
    options.device = *device;
  } else {
    return UsageError(err, "logits", "--device: " + std::string(device.status().message()));
  }
  options.max_context_tokens = static_cast<int64_t>(ids.size());
  auto runner = models::OfflineRunner::Load(options);
  if (!runner.ok()) {
    err << "epserve-run logits: " << OneLine(std::string(runner.status().message())) << "\n";
    return 1;
  }
  auto logits = (*runner)->PromptLogits(ids);
  if (!logits.ok()) {
    err << "epserve-run logits: " << OneLine(std::string(logits.status().message())) << "\n";
    return 1;
  }
  const size_t vocab = static_cast<size_t>((*runner)->desc().vocab_size);
  nlohmann::json rows = nlohmann::json::array();
  for (size_t t = 0; t < ids.size(); ++t) {
    rows.push_back(std::vector<float>(logits->begin() + t * vocab,
                                      logits->begin() + (t + 1) * vocab));
  }
  nlohmann::json j;
  j["logits"] = std::move(rows);
  j["vocab_size"] = vocab;
  out << j.dump() << "\n";
  return 0;
}

int RunLogitsCommand(int argc, char** argv) {
  return RunLogitsCommand(argc, argv, std::cout, std::cerr);
}

}  // namespace epserve::cli
