// epserve bench: a serving load generator, the counterpart of vLLM's
// benchmark_serving.py with its random dataset. Prompts are random token ids
// (no EOS or BOS) sent with ignore_eos, temperature 0 and max_tokens set to
// the request's output length, so every request generates exactly that many
// tokens. Requests are sent on the arrival schedule through gRPC's callback
// API, or with --backend openai as streamed POST /v1/completions to the
// router's HTTP API (a thread and connection per request); each is timed from
// send to its first token (TTFT), between tokens (ITL), and to its end (E2E).
#include <civetweb.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <thread>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/client/bench_report.h"
#include "cli/client/bench_runner.h"
#include "cli/client/commands.h"
#include "cli/client/generate_request.h"
#include "common/flags/flags_util.h"
#include "nlohmann/json.hpp"

#include "epserve/v1/epserve.grpc.pb.h"

ABSL_FLAG(int, num_prompts, 1000, "bench: number of requests");
ABSL_FLAG(double, request_rate, std::numeric_limits<double>::infinity(),
          "bench: requests per second; inf sends every request at t = 0");
ABSL_FLAG(std::string, arrival, "poisson",
          "bench: poisson (exponential gaps, mean 1/rate) or fixed (gaps of 1/rate)");
ABSL_FLAG(int, max_concurrency, 0, "bench: most requests in flight at once; 0 = no cap");
ABSL_FLAG(int64_t, input_len, 1024, "bench: prompt length in tokens (before --range-ratio)");
ABSL_FLAG(int64_t, output_len, 128, "bench: output length in tokens (before --range-ratio)");
ABSL_FLAG(double, range_ratio, 0.0,
          "bench: lengths are uniform in [len * (1 - r), len * (1 + r)]; r in [0, 1)");
ABSL_FLAG(int, warmup, 0, "bench: requests sent (and not measured) before the run");
ABSL_FLAG(std::string, json_out, "", "bench: also write the results as JSON to this file");
ABSL_FLAG(std::string, backend, "grpc",
          "bench: grpc (the Generate stream) or openai (POST /v1/completions with stream on "
          "the router's HTTP API at --http-server; --server still answers GetModelInfo)");
ABSL_FLAG(std::string, http_server, "127.0.0.1:8000",
          "bench --backend openai: the router's --http-listen address");
// --seed is defined with generate's flags (one flag, two commands).
ABSL_DECLARE_FLAG(std::optional<uint64_t>, seed);

namespace epserve::client {
namespace {

// One streamed Generate call; deletes itself when done.
class GenerateCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  GenerateCall(v1::Epserve::Stub* stub, const RequestSpec& spec, int timeout_s, Clock* clock,
               std::function<void(RequestResult)> done)
      : clock_(clock), done_(std::move(done)), timer_(/*send_time=*/0) {
    result_.prompt_tokens = static_cast<int64_t>(spec.prompt_ids.size());
    request_.mutable_token_ids()->mutable_ids()->Add(spec.prompt_ids.begin(),
                                                     spec.prompt_ids.end());
    v1::SamplingParams& p = *request_.mutable_sampling_params();
    p.set_temperature(0.0f);
    p.set_max_tokens(static_cast<uint32_t>(spec.output_len));
    p.set_ignore_eos(true);
    if (timeout_s > 0) ctx_.set_deadline(DeadlineIn(timeout_s));
    start_ = clock_->Now();
    timer_ = TokenTimer(start_);
    stub->async()->Generate(&ctx_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    if (response_.has_chunk()) timer_.OnTokens(clock_->Now(), response_.chunk().token_ids_size());
    if (response_.has_complete()) complete_ = response_.complete();
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    result_.e2e_s = clock_->Now() - start_;
    if (!status.ok()) {
      result_.error_code = StatusCodeName(status.error_code());
      result_.error_message = status.error_message();
    } else if (!complete_) {
      result_.error_code = "NO_COMPLETE";
      result_.error_message = "the stream ended with status OK but without a complete message";
    } else {
      result_.ok = true;
      if (complete_->has_usage()) {
        result_.prompt_tokens = complete_->usage().prompt_tokens();
        result_.output_tokens = complete_->usage().completion_tokens();
      } else {
        result_.output_tokens = timer_.num_tokens();
      }
      result_.ttft_s = timer_.ttft().value_or(result_.e2e_s);
      result_.itl_s = timer_.itl();
    }
    done_(std::move(result_));
    delete this;
  }

 private:
  Clock* clock_;
  std::function<void(RequestResult)> done_;
  grpc::ClientContext ctx_;
  v1::GenerateRequest request_;
  v1::GenerateResponse response_;
  std::optional<v1::GenerateComplete> complete_;
  double start_ = 0;
  TokenTimer timer_;
  RequestResult result_;
};

BenchConfig ConfigFromFlags(const ServerOptions& server) {
  BenchConfig c;
  c.server = server.address;
  c.num_prompts = absl::GetFlag(FLAGS_num_prompts);
  c.request_rate = absl::GetFlag(FLAGS_request_rate);
  auto arrival = ParseArrival(absl::GetFlag(FLAGS_arrival));
  if (!arrival.ok()) Die(arrival.status().message(), 2);
  c.arrival = *arrival;
  c.max_concurrency = absl::GetFlag(FLAGS_max_concurrency);
  c.input_len = absl::GetFlag(FLAGS_input_len);
  c.output_len = absl::GetFlag(FLAGS_output_len);
  c.range_ratio = absl::GetFlag(FLAGS_range_ratio);
  c.seed = absl::GetFlag(FLAGS_seed).value_or(0);
  c.warmup = absl::GetFlag(FLAGS_warmup);
  c.backend = absl::GetFlag(FLAGS_backend);
  if (c.num_prompts <= 0)
    Die(absl::StrCat("--num-prompts: expected > 0, found ", c.num_prompts), 2);
  if (!(c.request_rate > 0)) {
    Die(absl::StrCat("--request-rate: expected > 0 or inf, found ", c.request_rate), 2);
  }
  if (c.max_concurrency < 0) {
    Die(absl::StrCat("--max-concurrency: expected >= 0, found ", c.max_concurrency), 2);
  }
  if (c.input_len <= 0 || c.output_len <= 0) {
    Die(absl::StrCat("--input-len and --output-len: expected > 0, found ", c.input_len, " and ",
                     c.output_len),
        2);
  }
  if (!(c.range_ratio >= 0 && c.range_ratio < 1)) {
    Die(absl::StrCat("--range-ratio: expected in [0, 1), found ", c.range_ratio), 2);
  }
  if (c.warmup < 0) Die(absl::StrCat("--warmup: expected >= 0, found ", c.warmup), 2);
  return c;
}

v1::GetModelInfoResponse ModelInfo(v1::Epserve::Stub& stub, const ServerOptions& server) {
  grpc::ClientContext ctx;
  ctx.set_deadline(DeadlineIn(server.timeout_s > 0 ? server.timeout_s : 10));
  v1::GetModelInfoResponse model;
  grpc::Status s = stub.GetModelInfo(&ctx, {}, &model);
  if (!s.ok()) {
    Die(absl::StrCat("GetModelInfo at ", server.address,
                     " failed: ", StatusCodeName(s.error_code()), ": ", s.error_message()));
  }
  return model;
}

// One streamed POST /v1/completions (the same request as GenerateCall:
// token-id prompt, greedy, ignore_eos, max_tokens = output length) on its own
// thread; each server-sent chunk of a choice is one token (the HTTP front end
// sends one per step), the usage chunk gives the count.
void RunHttpCompletion(const std::string& host, int port, const std::string& model,
                       const RequestSpec& spec, int timeout_s, Clock* clock,
                       const std::function<void(RequestResult)>& done) {
  RequestResult result;
  result.prompt_tokens = static_cast<int64_t>(spec.prompt_ids.size());
  nlohmann::json body = {{"model", model},
                         {"prompt", spec.prompt_ids},
                         {"max_tokens", spec.output_len},
                         {"temperature", 0},
                         {"ignore_eos", true},
                         {"stream", true},
                         {"stream_options", {{"include_usage", true}}}};
  const std::string text = body.dump();
  const double start = clock->Now();
  TokenTimer timer(start);
  auto fail = [&](const std::string& code, const std::string& message) {
    result.ok = false;
    result.error_code = code;
    result.error_message = message;
    result.e2e_s = clock->Now() - start;
    done(result);
  };
  char err[256] = {0};
  mg_connection* conn = mg_connect_client(host.c_str(), port, 0, err, sizeof err);
  if (conn == nullptr) return fail("UNAVAILABLE", absl::StrCat("connect: ", err));
  mg_printf(conn,
            "POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
            host.c_str(), port, text.size());
  mg_write(conn, text.data(), text.size());
  const int timeout_ms = timeout_s > 0 ? timeout_s * 1000 : 600000;
  if (mg_get_response(conn, err, sizeof err, timeout_ms) < 0) {
    mg_close_connection(conn);
    return fail("UNAVAILABLE", absl::StrCat("response: ", err));
  }
  const int status = mg_get_response_info(conn)->status_code;
  std::string buffer, line;
  char chunk[4096];
  bool complete = false;
  int64_t usage_tokens = -1;
  std::string error_body;
  while (true) {
    const int n = mg_read(conn, chunk, sizeof chunk);
    if (n <= 0) break;
    if (status != 200) {
      error_body.append(chunk, static_cast<size_t>(n));
      continue;
    }
    buffer.append(chunk, static_cast<size_t>(n));
    size_t pos;
    while ((pos = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, pos);
      buffer.erase(0, pos + 2);
      if (event.rfind("data: ", 0) != 0) continue;  // a keep-alive comment
      const std::string data = event.substr(6);
      if (data == "[DONE]") {
        complete = true;
        continue;
      }
      nlohmann::json j = nlohmann::json::parse(data, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("error")) {
        mg_close_connection(conn);
        return fail("ERROR", j["error"].value("message", data));
      }
      if (j.contains("usage") && j["usage"].is_object()) {
        usage_tokens = j["usage"].value("completion_tokens", int64_t{0});
      }
      for (const auto& c : j.value("choices", nlohmann::json::array())) {
        if (c.contains("finish_reason") && !c["finish_reason"].is_null()) continue;
        timer.OnTokens(clock->Now(), 1);
      }
    }
  }
  mg_close_connection(conn);
  if (status != 200) return fail(absl::StrCat("HTTP_", status), error_body);
  if (!complete) return fail("NO_COMPLETE", "the stream ended without [DONE]");
  result.ok = true;
  result.output_tokens = usage_tokens >= 0 ? usage_tokens : timer.num_tokens();
  result.ttft_s = timer.ttft().value_or(0.0);
  result.itl_s = timer.itl();
  result.e2e_s = clock->Now() - start;
  done(result);
}

// `n` requests with lengths drawn around the configured ones.
std::vector<RequestSpec> MakeRequests(int n, const BenchConfig& c,
                                      const v1::GetModelInfoResponse& model, std::mt19937_64& rng) {
  std::vector<uint32_t> excluded(model.eos_token_ids().begin(), model.eos_token_ids().end());
  if (model.has_bos_token_id()) excluded.push_back(model.bos_token_id());
  const std::vector<int64_t> input_lens = SampleLengths(n, c.input_len, c.range_ratio, rng);
  const std::vector<int64_t> output_lens = SampleLengths(n, c.output_len, c.range_ratio, rng);
  std::vector<RequestSpec> specs(static_cast<size_t>(n));
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].index = static_cast<int>(i);
    specs[i].prompt_ids = RandomTokenIds(input_lens[i], model.vocab_size(), excluded, rng);
    specs[i].output_len = output_lens[i];
  }
  return specs;
}

}  // namespace

int RunBench(const ServerOptions& server) {
  const BenchConfig config = ConfigFromFlags(server);
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  auto stub = v1::Epserve::NewStub(MakeChannel(server));
  const v1::GetModelInfoResponse model = ModelInfo(*stub, server);
  if (model.vocab_size() <= static_cast<uint32_t>(model.eos_token_ids_size()) + 1) {
    Die(absl::StrCat("the model's vocabulary (", model.vocab_size(),
                     " ids) has no room for random prompts"));
  }
  const LengthBounds in = LengthRange(config.input_len, config.range_ratio);
  const LengthBounds out = LengthRange(config.output_len, config.range_ratio);
  if (model.max_context_length() > 0 && in.max + out.max > model.max_context_length()) {
    Die(absl::StrCat("--input-len and --output-len allow ", in.max, " + ", out.max,
                     " tokens per request; the model's context is ", model.max_context_length()),
        2);
  }

  std::mt19937_64 rng(config.seed);
  const std::vector<RequestSpec> specs = MakeRequests(config.num_prompts, config, model, rng);
  LoadOptions load;
  load.offsets_s = ArrivalSchedule(config.num_prompts, config.request_rate, config.arrival, rng);
  load.max_concurrency = config.max_concurrency;

  SteadyClock clock;
  SendFn send = [&](const RequestSpec& spec, std::function<void(RequestResult)> done) {
    new GenerateCall(stub.get(), spec, server.timeout_s, &clock, std::move(done));
  };
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (backend == "openai") {
    static const unsigned initialised = mg_init_library(0);
    (void)initialised;
    const std::string address = absl::GetFlag(FLAGS_http_server);
    const size_t colon = address.rfind(':');
    int port = 0;
    if (colon == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(address).substr(colon + 1), &port) || port <= 0) {
      Die(absl::StrCat("--http-server: expected HOST:PORT, found '", address, "'"), 2);
    }
    const std::string host = address.substr(0, colon);
    const std::string model_id =
        model.model_path().substr(model.model_path().find_last_of('/') + 1);
    send = [host, port, model_id, &server, &clock](const RequestSpec& spec,
                                                   std::function<void(RequestResult)> done) {
      std::thread([host, port, model_id, spec, timeout = server.timeout_s, &clock,
                   done = std::move(done)] {
        RunHttpCompletion(host, port, model_id, spec, timeout, &clock, done);
      }).detach();
    };
  } else if (backend != "grpc") {
    Die(absl::StrCat("--backend: expected grpc or openai, found '", backend, "'"), 2);
  }
  if (config.warmup > 0) {
    std::mt19937_64 warmup_rng(config.seed + 1);
    LoadOptions warmup_load;
    warmup_load.offsets_s.assign(static_cast<size_t>(config.warmup), 0.0);
    warmup_load.max_concurrency = config.max_concurrency;
    std::fprintf(stderr, "epserve bench: %d warm-up requests\n", config.warmup);
    LoadRun warm =
        RunLoad(MakeRequests(config.warmup, config, model, warmup_rng), warmup_load, send, clock);
    const BenchSummary s = Summarize(warm.results, warm.duration_s);
    if (s.failed > 0) {
      std::fprintf(stderr, "epserve bench: %lld of %d warm-up requests failed\n",
                   static_cast<long long>(s.failed), config.warmup);
    }
  }
  const std::string rate =
      std::isinf(config.request_rate) ? "inf" : absl::StrCat(config.request_rate);
  const std::string cap =
      config.max_concurrency > 0 ? absl::StrCat(config.max_concurrency) : "none";
  std::fprintf(stderr,
               "epserve bench: %d requests to %s, rate %s (%s), max concurrency %s, "
               "input %lld..%lld, output %lld..%lld tokens\n",
               config.num_prompts, server.address.c_str(), rate.c_str(),
               ArrivalName(config.arrival), cap.c_str(), static_cast<long long>(in.min),
               static_cast<long long>(in.max), static_cast<long long>(out.min),
               static_cast<long long>(out.max));
  // Progress on stderr: a line rewritten in place on a terminal, else a line
  // every 10 s.
  const bool tty = isatty(STDERR_FILENO) != 0;
  const double progress_every = tty ? 0.2 : 10.0;
  const double started = clock.Now();
  double last_progress = started;
  load.on_progress = [&](size_t finished, size_t failed) {
    const double now = clock.Now();
    const bool last = finished == specs.size();
    if (!last && now - last_progress < progress_every) return;
    last_progress = now;
    std::fprintf(stderr, "%sepserve bench: %zu of %zu requests done (%zu failed), %.1f s%s",
                 tty ? "\r" : "", finished, specs.size(), failed, now - started,
                 tty && !last ? "" : "\n");
    std::fflush(stderr);
  };
  const LoadRun run = RunLoad(specs, load, send, clock);
  const BenchSummary summary = Summarize(run.results, run.duration_s);
  std::fputs(FormatTable(config, summary).c_str(), stdout);
  std::fflush(stdout);
  for (const RequestResult& r : run.results) {
    if (!r.ok) {
      std::fprintf(stderr, "epserve bench: first failure: %s: %s\n", r.error_code.c_str(),
                   r.error_message.c_str());
      break;
    }
  }
  if (!json_out.empty()) {
    std::ofstream file(json_out);
    file << ReportJson(config, summary, run.results).dump() << "\n";
    if (!file) Die(absl::StrCat("--json-out: cannot write '", json_out, "'"));
  }
  return summary.failed == 0 ? 0 : 1;
}

}  // namespace epserve::client
