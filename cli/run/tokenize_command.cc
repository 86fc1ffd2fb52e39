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
#include "absl/strings/str_split.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace epserve::cli {
namespace {

using tokenizer::Tokenizer;

// Parsed --name value / --name=value / --flag arguments.
struct Args {
  std::map<std::string, std::string> values;
  std::set<std::string> flags;
};

// Parses argv[1..] against the allowed value options and flags; returns an
// error message for anything else.
std::optional<std::string> Parse(int argc, char** argv, const std::set<std::string>& value_opts,
                                 const std::set<std::string>& flag_opts, Args& args) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) return "unexpected argument '" + a + "'";
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (flag_opts.count(name)) {
      if (has_value) return "flag --" + name + " takes no value";
      args.flags.insert(name);
      continue;
    }
    if (!value_opts.count(name)) return "unknown option --" + name;
    if (!has_value) {
      if (i + 1 >= argc) return "option --" + name + " needs a value";
      value = argv[++i];
    }
    if (args.values.count(name)) return "option --" + name + " given twice";
    args.values[name] = value;
  }
  return std::nullopt;
}

int Usage(std::ostream& err, const char* command, const std::string& message) {
  err << "epserve-run " << command << ": error: " << message << "\n";
  return 2;
}

}  // namespace

int RunTokenizeCommand(int argc, char** argv, std::ostream& out, std::ostream& err) {
  Args args;
  if (auto e = Parse(argc, argv, {"tokenizer", "text", "text-file"},
                     {"no-add-special-tokens", "no-parse-special-tokens"}, args)) {
    return Usage(err, "tokenize", *e);
  }
  if (!args.values.count("tokenizer")) return Usage(err, "tokenize", "--tokenizer PATH is required");
  if (args.values.count("text") == args.values.count("text-file")) {
    return Usage(err, "tokenize", "give exactly one of --text T or --text-file F");
  }
  std::string text;
  if (args.values.count("text")) {
    text = args.values["text"];
  } else {
    std::ifstream in(args.values["text-file"], std::ios::binary);
    if (!in) return Usage(err, "tokenize", "cannot read --text-file " + args.values["text-file"]);
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
  if (auto e = Parse(argc, argv, {"tokenizer", "token-ids"}, {"skip-special-tokens"}, args)) {
    return Usage(err, "detokenize", *e);
  }
  if (!args.values.count("tokenizer")) {
    return Usage(err, "detokenize", "--tokenizer PATH is required");
  }
  if (!args.values.count("token-ids")) {
    return Usage(err, "detokenize", "--token-ids 1,2,3 is required");
  }
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(args.values["token-ids"], ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return Usage(err, "detokenize", "--token-ids: '" + std::string(part) + "' is not an integer");
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
