#include "cli/run/args.h"

namespace epserve::cli {

std::optional<std::string> ParseArgs(int argc, char** argv, const std::set<std::string>& value_opts,
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

int UsageError(std::ostream& err, const char* command, const std::string& message) {
  err << "epserve-run " << command << ": error: " << message << "\n";
  return 2;
}

}  // namespace epserve::cli
