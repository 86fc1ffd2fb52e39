#include "cli/run/tokenize_command.h"

#include <cstdint>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "cli/run/args.h"
#include "absl/strings/str_split.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace epserve::cli {
namespace {

using tokenizer::Tokenizer;


}  // namespace

int RunTokenizeCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Args args;
  if (auto e = ParseArgs(argc, argv, {"tokenizer", "text", "text-file"},
                     {"no-add-special-tokens", "no-parse-special-tokens"}, args)) {
    return UsageError(err, "tokenize", *e);
  }
  if (!args.values.count("tokenizer")) return UsageError(err, "tokenize", "--tokenizer PATH is required");
  if (args.values.count("text") == args.values.count("text-file")) {
    return UsageError(err, "tokenize", "give exactly one of --text T or --text-file F");
  }
  std::string text;
  if (args.values.count("text")) {
    text = args.values["text"];
  } else {
    std::ifstream in(args.values["text-file"], std::ios::binary);
    if (!in) return UsageError(err, "tokenize", "cannot read --text-file " + args.values["text-file"]);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  auto tok = Tokenizer::FromPath(args.values["tokenizer"]);
  if (!tok.ok()) {
    err << "epserve-run tokenize: " << tok.status() << "\n";
    return 1;
  }
  tokenizer::EncodeOptions options;
  options.add_special_tokens = !args.flags.count("no-add-special-tokens");
  options.parse_special_tokens = !args.flags.count("no-parse-special-tokens");
  auto ids = (*tok)->Encode(text, options);
  if (!ids.ok()) {
    err << "epserve-run tokenize: " << ids.status() << "\n";
    return 1;
  }
  nlohmann::json j;
  j["ids"] = *ids;
  j["num_tokens"] = ids->size();
  nlohmann::json tokens = nlohmann::json::array();
  for (int32_t id : *ids) tokens.push_back(*(*tok)->IdToToken(id));
  j["tokens"] = std::move(tokens);
  out << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return 0;
}

int RunDetokenizeCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Args args;
  if (auto e = ParseArgs(argc, argv, {"tokenizer", "token-ids"}, {"skip-special-tokens"}, args)) {
    return UsageError(err, "detokenize", *e);
  }
  if (!args.values.count("tokenizer")) {
    return UsageError(err, "detokenize", "--tokenizer PATH is required");
  }
  if (!args.values.count("token-ids")) {
    return UsageError(err, "detokenize", "--token-ids 1,2,3 is required");
  }
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(args.values["token-ids"], ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return UsageError(err, "detokenize", "--token-ids: '" + std::string(part) + "' is not an integer");
    }
    ids.push_back(id);
  }
  auto tok = Tokenizer::FromPath(args.values["tokenizer"]);
  if (!tok.ok()) {
    err << "epserve-run detokenize: " << tok.status() << "\n";
    return 1;
  }
  auto text = (*tok)->Decode(ids, {.skip_special_tokens = args.flags.count("skip-special-tokens") > 0});
  if (!text.ok()) {
    err << "epserve-run detokenize: " << text.status() << "\n";
    return 1;
  }
  nlohmann::json j;
  j["text"] = *text;
  out << j.dump() << "\n";
  return 0;
}

int RunTokenizeCommand(int argc, char** argv) {
  return RunTokenizeCommand(argc, argv, std::cout, std::cerr);
}

int RunDetokenizeCommand(int argc, char** argv) {
  return RunDetokenizeCommand(argc, argv, std::cout, std::cerr);
}

}  // namespace epserve::cli
