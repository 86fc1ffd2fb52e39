// epserve generate: one Generate call; the text streams to stdout as chunks
// arrive, the outcome (finish reason, matched stop, usage, TTFT, total time)
// goes to stderr. --json prints each response message as one JSON line.
#include <chrono>
#include <cstdio>
#include <optional>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "cli/client/commands.h"
#include "cli/client/generate_request.h"
#include "cli/client/interrupt.h"
#include "common/flags/flags_util.h"
#include "epserve/v1/epserve.grpc.pb.h"
#include "google/protobuf/util/json_util.h"

ABSL_FLAG(std::optional<std::string>, prompt, std::nullopt,
          "generate: prompt text (the router tokenizes it)");
ABSL_FLAG(std::string, token_ids, "", "generate: prompt as comma-separated token ids");
ABSL_FLAG(std::optional<uint32_t>, max_tokens, std::nullopt,
          "generate: most tokens to generate (default: up to the context length)");
ABSL_FLAG(std::optional<float>, temperature, std::nullopt,
          "generate: sampling temperature, 0 = greedy (default 1.0)");
ABSL_FLAG(std::optional<float>, top_p, std::nullopt, "generate: nucleus sampling mass (default 1)");
ABSL_FLAG(std::optional<int32_t>, top_k, std::nullopt,
          "generate: keep the k most likely tokens (default 0: all)");
ABSL_FLAG(std::optional<float>, min_p, std::nullopt, "generate: min-p cut-off (default 0)");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "generate: seed of the request's sampler (default: the server picks); bench: seed of "
          "the workload (default 0)");
// Never parsed by Abseil: main() takes every --stop out of argv first so the
// flag can repeat. Defined so that --help lists it.
ABSL_FLAG(std::vector<std::string>, stop, {},
          "generate: stop strings; repeatable, and each a comma list (\\, for a literal comma)");
ABSL_FLAG(std::string, stop_token_ids, "",
          "generate: comma-separated token ids that end generation");
ABSL_FLAG(bool, ignore_eos, false, "generate: keep generating past EOS");
ABSL_FLAG(bool, logprobs, false, "generate: return each token's log-probability (see --json)");
ABSL_FLAG(std::optional<uint32_t>, top_logprobs, std::nullopt,
          "generate: also return this many alternatives per token (implies --logprobs)");
ABSL_FLAG(std::string, request_id, "", "generate: request id (default: the router assigns one)");
ABSL_FLAG(int32_t, priority, 0, "generate: scheduling priority, lower runs first");
ABSL_FLAG(bool, json, false,
          "generate: print each response message as one JSON line instead of the text");

namespace epserve::client {
namespace {

GenerateOptions OptionsFromFlags(const std::vector<std::string>& stop_occurrences) {
  GenerateOptions o;
  o.prompt = absl::GetFlag(FLAGS_prompt);
  if (const std::string ids = absl::GetFlag(FLAGS_token_ids); !ids.empty()) {
    auto parsed = ParseIdList(ids, "token-ids");
    if (!parsed.ok()) Die(parsed.status().message(), 2);
    o.token_ids = std::move(*parsed);
  }
  o.max_tokens = absl::GetFlag(FLAGS_max_tokens);
  o.temperature = absl::GetFlag(FLAGS_temperature);
  o.top_p = absl::GetFlag(FLAGS_top_p);
  o.top_k = absl::GetFlag(FLAGS_top_k);
  o.min_p = absl::GetFlag(FLAGS_min_p);
  o.seed = absl::GetFlag(FLAGS_seed);
  o.stop = SplitStopLists(stop_occurrences);
  auto stop_ids = ParseIdList(absl::GetFlag(FLAGS_stop_token_ids), "stop-token-ids");
  if (!stop_ids.ok()) Die(stop_ids.status().message(), 2);
  o.stop_token_ids = std::move(*stop_ids);
  o.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  o.logprobs = absl::GetFlag(FLAGS_logprobs);
  o.top_logprobs = absl::GetFlag(FLAGS_top_logprobs);
  o.request_id = absl::GetFlag(FLAGS_request_id);
  o.priority = absl::GetFlag(FLAGS_priority);
  return o;
}

std::string OneLineJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

double MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

int RunGenerate(const ServerOptions& server, const std::vector<std::string>& stop_occurrences) {
  auto request = BuildGenerateRequest(OptionsFromFlags(stop_occurrences));
  if (!request.ok()) Die(request.status().message(), 2);
  const bool json = absl::GetFlag(FLAGS_json);

  InterruptWatcher interrupts;  // before the channel starts gRPC's threads
  auto stub = v1::Epserve::NewStub(MakeChannel(server));
  grpc::ClientContext ctx;
  if (server.timeout_s > 0) ctx.set_deadline(DeadlineIn(server.timeout_s));
  interrupts.Watch([&ctx] { ctx.TryCancel(); });

  const auto start = std::chrono::steady_clock::now();
  std::optional<double> ttft_ms;
  std::optional<v1::GenerateComplete> complete;
  bool any_chunk = false;
  auto reader = stub->Generate(&ctx, *request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_chunk() && response.chunk().token_ids_size() > 0 && !ttft_ms) {
      ttft_ms = MsSince(start);
    }
    if (json) {
      std::printf("%s\n", OneLineJson(response).c_str());
    } else if (response.has_chunk()) {
      std::fputs(response.chunk().text().c_str(), stdout);
      any_chunk = true;
    }
    std::fflush(stdout);
    if (response.has_complete()) complete = response.complete();
  }
  const grpc::Status status = reader->Finish();
  const double total_ms = MsSince(start);
  if (any_chunk) {  // end the text's line
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }
  if (interrupts.interrupted()) {
    std::fprintf(stderr, "epserve: interrupted (call cancelled)\n");
    return 130;
  }
  if (!status.ok()) {
    Die(absl::StrCat("Generate at ", server.address, " failed: ",
                     StatusCodeName(status.error_code()), ": ", status.error_message()));
  }
  if (!complete) {
    Die(absl::StrCat("Generate at ", server.address,
                     " ended with status OK but without a complete message"));
  }
  std::fprintf(stderr, "%s\n", DescribeCompletion(*complete, ttft_ms, total_ms).c_str());
  return 0;
}

}  // namespace epserve::client
