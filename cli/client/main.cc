// epserve: command-line client of an epserve router.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/client/commands.h"
#include "cli/client/generate_request.h"
#include "common/flags/flags_util.h"

namespace {

constexpr char kUsage[] =
    "epserve: client of an epserve router.\n\n"
    "  epserve info     [--server HOST:PORT]   server topology and model, as JSON\n"
    "  epserve health   [--server HOST:PORT] [--wait-serving-s N]\n"
    "                   prints SERVING or NOT_SERVING; exit code 0 only when SERVING\n"
    "  epserve generate [--server HOST:PORT] (--prompt TEXT | --token-ids 1,2,3)\n"
    "                   [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
    "                   [--seed S] [--stop STR]... [--stop-token-ids 1,2] [--ignore-eos]\n"
    "                   [--logprobs] [--top-logprobs N] [--request-id ID] [--priority N]\n"
    "                   [--timeout-s S] [--json]\n"
    "                   streams the text to stdout, then finish reason, usage and timing to\n"
    "                   stderr; Ctrl-C cancels (exit 130), a failed call exits 1\n"
    "  epserve bench    [--server HOST:PORT] [--num-prompts N] [--request-rate R|inf]\n"
    "                   [--arrival poisson|fixed] [--max-concurrency C] [--input-len L]\n"
    "                   [--output-len O] [--range-ratio r] [--seed S] [--warmup N]\n"
    "                   [--json-out FILE]\n"
    "                   random-token load (like vLLM's benchmark_serving --dataset-name random);\n"
    "                   prints throughput and TTFT/TPOT/ITL/E2E latencies\n\n"
    "--router is another name for --server (default 127.0.0.1:50051).";

}  // namespace

int main(int argc, char** argv) {
  // --stop may repeat, which Abseil flags cannot express: take it out first.
  std::vector<std::string> raw(argv, argv + argc);
  auto stops = epserve::client::ExtractRepeatedFlag(raw, "stop");
  if (!stops.ok()) epserve::Die(stops.status().message(), 2);
  std::vector<char*> rest;
  for (std::string& arg : raw) rest.push_back(arg.data());
  rest.push_back(nullptr);
  std::vector<std::string> args =
      epserve::ParseFlags(static_cast<int>(rest.size()) - 1, rest.data(), kUsage);
  if (args.size() != 2) {
    epserve::Die("expected one command: info, health, generate or bench (see --help)", 2);
  }
  const std::string& command = args[1];
  if (command != "generate" && !stops->empty()) {
    epserve::Die(absl::StrCat("--stop applies to generate, not ", command), 2);
  }
  // Every command takes the server flags and its own (one source file each).
  std::vector<absl::string_view> sources = {"cli/client/server_flags.cc"};
  if (command == "health") sources.push_back("cli/client/health_command.cc");
  if (command == "generate") sources.push_back("cli/client/generate_command.cc");
  if (command == "bench") sources.push_back("cli/client/bench_command.cc");
  // bench takes generate's --seed (one flag, two commands).
  const std::vector<absl::string_view> shared = command == "bench"
                                                    ? std::vector<absl::string_view>{"seed"}
                                                    : std::vector<absl::string_view>{};
  if (absl::Status own = epserve::CheckFlagsOf(raw, command, sources, shared); !own.ok()) {
    epserve::Die(own.message(), 2);
  }
  const epserve::client::ServerOptions server = epserve::client::ServerFlags();
  if (command == "info") return epserve::client::RunInfo(server);
  if (command == "health") return epserve::client::RunHealth(server);
  if (command == "generate") return epserve::client::RunGenerate(server, *stops);
  if (command == "bench") return epserve::client::RunBench(server);
  epserve::Die(
      absl::StrCat("unknown command '", command, "' (expected info, health, generate or bench)"),
      2);
}
