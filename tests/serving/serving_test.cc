// Serving through the router as real processes on loopback: streamed
// Generate against the offline runner's output, with data-parallel workers,
// concurrency, cancellation, overload, KV preemption, deadlines, drain,
// validation, Abort and the request metrics.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/device.h"
#include "kernels/registry.h"
#include "nlohmann/json.hpp"
#include "tests/gpu/gpu_test_util.h"
#include "tests/integration/cluster_harness.h"

namespace epserve::testing {
namespace {

using ::testing::HasSubstr;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kModel[] = EPSERVE_SOURCE_DIR "/checkpoints/tiny-random-qwen3-moe";
constexpr int kMaxTokens = 16;

const std::vector<std::string>& Prompts() {
  static const std::vector<std::string> prompts = {
      "Hello world",
      "The quick brown fox jumps over the lazy dog",
      "Mixture of experts",
      "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30",
      "a",
      "Serving large language models with expert parallelism across several worker processes",
      "Once upon a time",
      "def main():\n    return 0\n",
  };
  return prompts;
}

struct Reference {
  std::vector<uint32_t> ids;
  std::string finish_reason;
};

// Greedy continuation of `prompt` by the single-process runner.
Reference RunOffline(const std::string& prompt, int max_tokens, bool ignore_eos = false) {
  std::vector<std::string> args = {"generate", "--model", kModel, "--prompt", prompt,
                                   "--max-tokens", absl::StrCat(max_tokens)};
  if (ignore_eos) args.push_back("--ignore-eos");
  RunResult r = RunToExit(Binary("epserve-run"), args, seconds(60));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  Reference ref;
  if (r.exit_code != 0) return ref;
  // The JSON object is the last line of the output.
  std::string line = r.output.substr(r.output.rfind('{'));
  auto json = nlohmann::json::parse(line);
  ref.ids = json["generated_ids"].get<std::vector<uint32_t>>();
  ref.finish_reason = json["finish_reason"].get<std::string>();
  return ref;
}

const std::vector<Reference>& References() {
  static const std::vector<Reference> refs = [] {
    std::vector<Reference> out;
    for (const std::string& p : Prompts()) out.push_back(RunOffline(p, kMaxTokens));
    return out;
  }();
  return refs;
}

const char* ReasonName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_ABORT: return "abort";
    default: return "unspecified";
  }
}

struct Outcome {
  grpc::Status status;
  std::vector<uint32_t> chunk_ids;  // token ids over all chunks
  std::string text;                 // text over all chunks
  int num_chunks = 0;
  bool has_complete = false;
  v1::GenerateComplete complete;
  std::string request_id;
};

struct CallOptions {
  std::optional<milliseconds> deadline;
  // Cancel the call after this many chunks.
  std::optional<int> cancel_after;
};

Outcome Generate(v1::Epserve::Stub& stub, const v1::GenerateRequest& req,
                 const CallOptions& options = {}) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options.deadline.value_or(seconds(120)));
  Outcome out;
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    out.request_id = resp.request_id();
    if (resp.has_chunk()) {
      ++out.num_chunks;
      out.chunk_ids.insert(out.chunk_ids.end(), resp.chunk().token_ids().begin(),
                           resp.chunk().token_ids().end());
      out.text += resp.chunk().text();
      if (options.cancel_after && out.num_chunks >= *options.cancel_after) ctx.TryCancel();
    }
    if (resp.has_complete()) {
      out.has_complete = true;
      out.complete = resp.complete();
    }
  }
  out.status = reader->Finish();
  return out;
}

v1::GenerateRequest Greedy(const std::string& prompt, int max_tokens = kMaxTokens) {
  v1::GenerateRequest req;
  req.set_text(prompt);
  req.mutable_sampling_params()->set_temperature(0.0f);
  req.mutable_sampling_params()->set_max_tokens(static_cast<uint32_t>(max_tokens));
  return req;
}

const auto* const kGpuEnvironment =
    ::testing::AddGlobalTestEnvironment(new kernels::testing::GpuTestEnvironment);

// EPSERVE_TEST_DEVICE=cuda runs the router's local workers on GPUs (worker K
// on cuda:K; ctest's serving_gpu, label gpu). A test that needs more workers
// than the machine has GPUs skips saying so; without a GPU every test skips.
bool OnGpu() { return kernels::testing::TestDeviceFromEnv().type == kernels::DeviceType::kCuda; }

int GpuCount() {
  int n = 0;
  while (kernels::QueryDevice(kernels::DeviceSpec{kernels::DeviceType::kCuda, n}).ok()) ++n;
  return n;
}

#define REQUIRE_WORKERS(n)                                                              \
  do {                                                                                  \
    if (OnGpu() && GpuCount() < (n)) {                                                  \
      GTEST_SKIP() << "needs " << (n) << " GPUs for " << (n) << " GPU workers, found " \
                   << GpuCount();                                                       \
    }                                                                                   \
  } while (0)

std::unique_ptr<RouterHandle> StartServing(int workers, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--model=" + std::string(kModel),
                                   absl::StrCat("--local-workers=", workers),
                                   "--log-level=warn"};
  if (OnGpu()) args.push_back("--device=cuda");
  args.insert(args.end(), extra.begin(), extra.end());
  auto router = RouterHandle::Start(args);
  if (router == nullptr) return nullptr;
  if (!WaitFor([&] { return router->Serving(); }, seconds(60))) {
    ADD_FAILURE() << "router not serving; output:\n" << router->process().output();
    return nullptr;
  }
  return router;
}

void ExpectMatchesReference(const Outcome& out, const Reference& ref, const std::string& what) {
  ASSERT_TRUE(out.status.ok()) << what << ": " << out.status.error_message();
  ASSERT_TRUE(out.has_complete) << what;
  EXPECT_EQ(out.chunk_ids, ref.ids) << what;
  EXPECT_EQ(std::vector<uint32_t>(out.complete.output_ids().begin(),
                                  out.complete.output_ids().end()),
            ref.ids)
      << what;
  EXPECT_EQ(ReasonName(out.complete.finish_reason()), ref.finish_reason) << what;
  EXPECT_EQ(out.complete.usage().completion_tokens(), ref.ids.size()) << what;
}

// Every request is gone and every KV block free again.
void ExpectIdle(RouterHandle& router) {
  EXPECT_TRUE(WaitFor(
      [&] {
        v1::GetServerInfoResponse info = router.Info();
        if (info.requests_running() + info.requests_waiting() != 0) return false;
        for (const auto& w : info.workers()) {
          if (w.kv_blocks_used() != 0 || w.requests_running() != 0) return false;
        }
        return true;
      },
      seconds(10)))
      << router.Info().DebugString();
}

// 32 concurrent clients over the prompts; every stream equals the offline
// greedy output, for `workers` data-parallel workers.
void RunConcurrentGreedy(int workers) {
  const auto& refs = References();
  auto router = StartServing(workers);
  ASSERT_NE(router, nullptr);
  v1::GetServerInfoResponse info = router->Info();
  EXPECT_EQ(info.parallelism(), "data");
  ASSERT_EQ(info.workers_size(), workers);
  for (const auto& w : info.workers()) {
    EXPECT_GT(w.kv_blocks_total(), 0u);
    EXPECT_EQ(w.kv_block_size(), 16u);
    EXPECT_EQ(w.local_experts_size(), 8);  // data parallel: every expert everywhere
  }
  auto stub = ClientStub(router->grpc_address());
  constexpr int kClients = 32;
  std::vector<Outcome> outcomes(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      outcomes[i] = Generate(*stub, Greedy(Prompts()[i % Prompts().size()]));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) {
    ExpectMatchesReference(outcomes[i], refs[i % refs.size()], absl::StrCat("client ", i));
  }
  // The text streamed equals the detokenized ids.
  grpc::ClientContext ctx;
  v1::DetokenizeRequest dreq;
  *dreq.mutable_token_ids() = {refs[0].ids.begin(), refs[0].ids.end()};
  v1::DetokenizeResponse dresp;
  ASSERT_TRUE(stub->Detokenize(&ctx, dreq, &dresp).ok());
  EXPECT_EQ(outcomes[0].text, dresp.text());
  ExpectIdle(*router);
  if (workers > 1) {
    // Work was spread: every worker computed steps.
    std::string scraped = ScrapeMetrics(router->metrics_address());
    for (int w = 0; w < workers; ++w) {
      EXPECT_THAT(scraped, HasSubstr(absl::StrCat("worker=\"", w, "\"")));
    }
  }
}

TEST(Serving, GreedyMatchesOfflineRunnerOneWorker32Clients) { RunConcurrentGreedy(1); }

TEST(Serving, GreedyMatchesOfflineRunnerThreeWorkers32Clients) {
  REQUIRE_WORKERS(3);
  RunConcurrentGreedy(3);
}

TEST(Serving, CancelledStreamsLeaveNoTraceAndOthersComplete) {
  REQUIRE_WORKERS(2);
  const auto& refs = References();
  auto router = StartServing(2);
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  constexpr int kStreams = 64;
  std::mt19937 rng(1234);
  std::vector<std::optional<int>> cancel_at(kStreams);
  int cancelled = 0;
  for (int i = 0; i < kStreams; ++i) {
    if (std::uniform_real_distribution<double>(0, 1)(rng) < 0.3) {
      cancel_at[i] = std::uniform_int_distribution<int>(1, 8)(rng);
      ++cancelled;
    }
  }
  ASSERT_GT(cancelled, 10);
  std::vector<Outcome> outcomes(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      CallOptions options;
      options.cancel_after = cancel_at[i];
      // Long enough that a cancel lands mid-stream.
      v1::GenerateRequest req = Greedy(Prompts()[i % Prompts().size()]);
      outcomes[i] = Generate(*stub, req, options);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kStreams; ++i) {
    const Reference& ref = refs[i % refs.size()];
    if (!cancel_at[i]) {
      ExpectMatchesReference(outcomes[i], ref, absl::StrCat("stream ", i));
    } else if (!outcomes[i].status.ok()) {
      EXPECT_EQ(outcomes[i].status.error_code(), grpc::StatusCode::CANCELLED) << i;
    }
  }
  ExpectIdle(*router);
  // Cancelled requests are counted as aborted.
  std::string scraped = ScrapeMetrics(router->metrics_address());
  const double aborted =
      MetricValue(scraped, "epserve_requests_total{finish_reason=\"abort\",model=\"tiny-random-qwen3-moe\"}");
  const double ended = aborted +
      MetricValue(scraped, "epserve_requests_total{finish_reason=\"stop\",model=\"tiny-random-qwen3-moe\"}") +
      MetricValue(scraped, "epserve_requests_total{finish_reason=\"length\",model=\"tiny-random-qwen3-moe\"}");
  EXPECT_EQ(ended, kStreams) << scraped;
}

TEST(Serving, BurstBeyondTheQueueLimitIsRefusedAtOnce) {
  constexpr int kLimit = 4;
  auto router = StartServing(1, {absl::StrCat("--max-waiting-requests=", kLimit),
                                 "--max-running-requests=2"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  constexpr int kBurst = 10 * kLimit;
  std::vector<Outcome> outcomes(kBurst);
  std::vector<double> seconds_taken(kBurst);
  std::vector<std::thread> threads;
  for (int i = 0; i < kBurst; ++i) {
    threads.emplace_back([&, i] {
      auto t0 = std::chrono::steady_clock::now();
      outcomes[i] = Generate(*stub, Greedy(Prompts()[i % Prompts().size()], 48));
      seconds_taken[i] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  }
  for (auto& t : threads) t.join();
  int accepted = 0;
  int refused = 0;
  double slowest_refusal = 0;
  for (int i = 0; i < kBurst; ++i) {
    if (outcomes[i].status.ok()) {
      ++accepted;
      EXPECT_TRUE(outcomes[i].has_complete) << i;
    } else {
      ++refused;
      EXPECT_EQ(outcomes[i].status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << outcomes[i].status.error_message();
      EXPECT_THAT(outcomes[i].status.error_message(), HasSubstr("queue full"));
      EXPECT_EQ(outcomes[i].num_chunks, 0);
      slowest_refusal = std::max(slowest_refusal, seconds_taken[i]);
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GE(accepted, kLimit);
  // Refusals come at once, not after the accepted requests ran.
  EXPECT_LT(slowest_refusal, 2.0);
  std::string scraped = ScrapeMetrics(router->metrics_address());
  EXPECT_EQ(MetricValue(scraped, "epserve_requests_rejected_total{model=\"tiny-random-qwen3-moe\",reason=\"queue_full\"}"),
            refused);
  ExpectIdle(*router);
}

TEST(Serving, KvExhaustionPreemptsAndOutputsStayExact) {
  // 1 worker with 10 blocks of 16 tokens; every request grows to 64 generated
  // tokens (5 to 9 blocks), so any two that overlap cannot both keep their KV.
  constexpr int kLong = 64;
  std::vector<Reference> refs;
  for (const std::string& p : Prompts()) refs.push_back(RunOffline(p, kLong, true));
  auto router = StartServing(1, {"--kv-cache-blocks=10"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  std::vector<Outcome> outcomes(Prompts().size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < Prompts().size(); ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest req = Greedy(Prompts()[i], kLong);
      req.mutable_sampling_params()->set_ignore_eos(true);
      outcomes[i] = Generate(*stub, req);
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < outcomes.size(); ++i) {
    ExpectMatchesReference(outcomes[i], refs[i], absl::StrCat("prompt ", i));
  }
  std::string scraped = ScrapeMetrics(router->metrics_address());
  EXPECT_GT(MetricValue(scraped, "epserve_num_preemptions_total{model=\"tiny-random-qwen3-moe\"}"), 0)
      << scraped;
  ExpectIdle(*router);
}

TEST(Serving, RequestThatCanNeverFitTheKvCacheIsRefused) {
  auto router = StartServing(1, {"--kv-cache-blocks=2"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  Outcome out = Generate(*stub, Greedy(Prompts()[0], 100));
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(out.status.error_message(), HasSubstr("KV blocks"));
  // A request that fits still runs.
  Outcome ok = Generate(*stub, Greedy(Prompts()[0], 8));
  EXPECT_TRUE(ok.status.ok()) << ok.status.error_message();
}

TEST(Serving, DeadlineOnAQueuedRequestEndsItBeforeItRuns) {
  auto router = StartServing(1, {"--max-running-requests=1"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  // Occupy the only running slot.
  v1::GenerateRequest busy = Greedy(Prompts()[1], 400);
  busy.mutable_sampling_params()->set_ignore_eos(true);
  Outcome busy_out;
  std::thread busy_thread([&] { busy_out = Generate(*stub, busy); });
  ASSERT_TRUE(WaitFor([&] { return router->Info().requests_running() == 1; }, seconds(10)));
  CallOptions options;
  options.deadline = milliseconds(100);
  auto t0 = std::chrono::steady_clock::now();
  Outcome late = Generate(*stub, Greedy(Prompts()[0]), options);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(late.num_chunks, 0);
  EXPECT_LT(took, 2.0);
  // It left the queue and never ran: one request was computed (the busy
  // one) and nothing is waiting.
  EXPECT_TRUE(WaitFor([&] { return router->Info().requests_waiting() == 0; }, seconds(5)));
  std::string scraped = ScrapeMetrics(router->metrics_address());
  EXPECT_EQ(
      MetricValue(scraped, "epserve_request_queue_time_seconds_count{model=\"tiny-random-qwen3-moe\"}"), 1)
      << scraped;
  EXPECT_EQ(MetricValue(scraped,
                   "epserve_requests_total{finish_reason=\"abort\",model=\"tiny-random-qwen3-moe\"}"),
            1);
  busy_thread.join();
  EXPECT_TRUE(busy_out.status.ok()) << busy_out.status.error_message();
  EXPECT_EQ(busy_out.chunk_ids.size(), 400u);
}

TEST(Serving, AbortEndsARunningRequestWithFinishReasonAbort) {
  auto router = StartServing(1);
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  v1::GenerateRequest req = Greedy(Prompts()[2], 2000);
  req.mutable_sampling_params()->set_ignore_eos(true);
  req.set_request_id("to-abort");
  Outcome out;
  std::thread t([&] { out = Generate(*stub, req); });
  ASSERT_TRUE(WaitFor([&] { return router->Info().requests_running() == 1; }, seconds(10)));
  grpc::ClientContext ctx;
  v1::AbortRequest abort;
  abort.set_request_id("to-abort");
  v1::AbortResponse aresp;
  grpc::Status s = stub->Abort(&ctx, abort, &aresp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  t.join();
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_TRUE(out.has_complete);
  EXPECT_EQ(out.complete.finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_LT(out.chunk_ids.size(), 2000u);
  EXPECT_EQ(out.complete.usage().completion_tokens(), out.chunk_ids.size());
  // Unknown ids are NOT_FOUND; the same id can be used again.
  grpc::ClientContext ctx2;
  s = stub->Abort(&ctx2, abort, &aresp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  ExpectIdle(*router);
}

TEST(Serving, StopStringsStopTokensAndIdsInput) {
  const auto& refs = References();
  auto router = StartServing(1);
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  // Pre-tokenized input gives the same continuation as text.
  grpc::ClientContext ctx;
  v1::TokenizeRequest treq;
  treq.set_text(Prompts()[1]);
  v1::TokenizeResponse tresp;
  ASSERT_TRUE(stub->Tokenize(&ctx, treq, &tresp).ok());
  v1::GenerateRequest by_ids = Greedy("");
  by_ids.clear_text();
  *by_ids.mutable_token_ids()->mutable_ids() = tresp.token_ids();
  Outcome ids_out = Generate(*stub, by_ids);
  ExpectMatchesReference(ids_out, refs[1], "token_ids input");
  EXPECT_EQ(ids_out.complete.usage().prompt_tokens(),
            static_cast<uint32_t>(tresp.token_ids_size()));

  // A stop token id: generation ends at its first occurrence.
  const Reference& ref = refs[3];
  ASSERT_GE(ref.ids.size(), 4u);
  const uint32_t stop_id = ref.ids[2];
  v1::GenerateRequest req = Greedy(Prompts()[3]);
  req.mutable_sampling_params()->add_stop_token_ids(stop_id);
  Outcome out = Generate(*stub, req);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  size_t first = std::find(ref.ids.begin(), ref.ids.end(), stop_id) - ref.ids.begin();
  EXPECT_EQ(out.chunk_ids, std::vector<uint32_t>(ref.ids.begin(), ref.ids.begin() + first + 1));
  EXPECT_EQ(out.complete.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(out.complete.stop_token_id(), stop_id);

  // A stop string taken from the full text: the returned text ends before it.
  Outcome full = Generate(*stub, Greedy(Prompts()[6]));
  ASSERT_TRUE(full.status.ok());
  std::string stop;
  for (size_t n = 2; n <= full.text.size() && stop.empty(); ++n) {
    std::string cand = full.text.substr(full.text.size() / 2, n);
    // Must be valid UTF-8 on its own and not occur earlier.
    bool ascii = std::all_of(cand.begin(), cand.end(), [](char c) { return (c & 0x80) == 0; });
    if (ascii && full.text.find(cand) == full.text.size() / 2) stop = cand;
  }
  if (!stop.empty()) {
    v1::GenerateRequest sreq = Greedy(Prompts()[6]);
    sreq.mutable_sampling_params()->add_stop(stop);
    Outcome sout = Generate(*stub, sreq);
    ASSERT_TRUE(sout.status.ok()) << sout.status.error_message();
    EXPECT_EQ(sout.text, full.text.substr(0, full.text.size() / 2));
    EXPECT_EQ(sout.complete.finish_reason(), v1::FINISH_REASON_STOP);
    EXPECT_EQ(sout.complete.stop_str(), stop);
  } else {
    ADD_FAILURE() << "no ASCII stop string candidate in: " << full.text;
  }
}

TEST(Serving, InvalidRequestsNameTheFieldWhileValidTrafficContinues) {
  const auto& refs = References();
  auto router = StartServing(1);
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  std::vector<Outcome> valid(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < valid.size(); ++i) {
    threads.emplace_back([&, i] { valid[i] = Generate(*stub, Greedy(Prompts()[i])); });
  }
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest&)> mutate;
    std::string field;
  };
  std::vector<Case> cases = {
      {"no input", [](v1::GenerateRequest& r) { r.clear_input(); }, "input"},
      {"empty text", [](v1::GenerateRequest& r) { r.set_text(""); }, "text"},
      {"token id", [](v1::GenerateRequest& r) { r.mutable_token_ids()->add_ids(1u << 30); },
       "token_ids"},
      {"temperature",
       [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_temperature(-1); },
       "sampling_params.temperature"},
      {"top_p", [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_top_p(0); },
       "sampling_params.top_p"},
      {"top_k", [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_top_k(-2); },
       "sampling_params.top_k"},
      {"min_p", [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_min_p(2); },
       "sampling_params.min_p"},
      {"presence",
       [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_presence_penalty(NAN); },
       "sampling_params.presence_penalty"},
      {"max_tokens", [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_max_tokens(0); },
       "sampling_params.max_tokens"},
      {"context",
       [](v1::GenerateRequest& r) { r.mutable_sampling_params()->set_max_tokens(1u << 30); },
       "sampling_params.max_tokens"},
      {"stop", [](v1::GenerateRequest& r) { r.mutable_sampling_params()->add_stop(""); },
       "sampling_params.stop[0]"},
      {"request id", [](v1::GenerateRequest& r) { r.set_request_id("bad id\n"); }, "request_id"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req = Greedy(Prompts()[0]);
    c.mutate(req);
    Outcome out = Generate(*stub, req);
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_THAT(out.status.error_message(), HasSubstr(c.field)) << c.name;
    EXPECT_EQ(out.num_chunks, 0) << c.name;
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < valid.size(); ++i) {
    ExpectMatchesReference(valid[i], refs[i], absl::StrCat("valid ", i));
  }
  std::string scraped = ScrapeMetrics(router->metrics_address());
  EXPECT_EQ(MetricValue(scraped,
                   "epserve_requests_rejected_total{model=\"tiny-random-qwen3-moe\",reason=\"invalid\"}"),
            static_cast<double>(cases.size()));
}

TEST(Serving, MetricsAfterTraffic) {
  const auto& refs = References();
  auto router = StartServing(1);
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  uint64_t prompt_tokens = 0;
  uint64_t generated = 0;
  for (size_t i = 0; i < 3; ++i) {
    Outcome out = Generate(*stub, Greedy(Prompts()[i]));
    ExpectMatchesReference(out, refs[i], absl::StrCat("prompt ", i));
    prompt_tokens += out.complete.usage().prompt_tokens();
    generated += out.complete.usage().completion_tokens();
  }
  std::string m = ScrapeMetrics(router->metrics_address());
  const std::string model = "model=\"tiny-random-qwen3-moe\"";
  EXPECT_EQ(MetricValue(m, "epserve_prompt_tokens_total{" + model + "}"), prompt_tokens);
  EXPECT_EQ(MetricValue(m, "epserve_generation_tokens_total{" + model + "}"), generated);
  EXPECT_EQ(MetricValue(m, "epserve_time_to_first_token_seconds_count{" + model + "}"), 3);
  EXPECT_EQ(MetricValue(m, "epserve_e2e_request_latency_seconds_count{" + model + "}"), 3);
  EXPECT_EQ(MetricValue(m, "epserve_request_queue_time_seconds_count{" + model + "}"), 3);
  EXPECT_EQ(MetricValue(m, "epserve_inter_token_latency_seconds_count{" + model + "}"),
            generated - 3);
  EXPECT_EQ(MetricValue(m, "epserve_requests_running{" + model + "}"), 0);
  EXPECT_EQ(MetricValue(m, "epserve_requests_waiting{" + model + "}"), 0);
  EXPECT_EQ(MetricValue(m, "epserve_kv_cache_usage_ratio{" + model + ",worker=\"0\"}"), 0);
  EXPECT_GT(MetricValue(m, "epserve_step_duration_seconds_count{" + model +
                          ",phase=\"prefill\",worker=\"0\"}"),
            0);
  EXPECT_GT(MetricValue(m, "epserve_step_duration_seconds_count{" + model +
                          ",phase=\"decode\",worker=\"0\"}"),
            0);
  EXPECT_THAT(m, HasSubstr("epserve_num_preemptions_total{" + model + "} 0"));
}

TEST(Serving, SigtermDrainsInFlightRequestsRefusesNewOnesAndExitsZero) {
  REQUIRE_WORKERS(2);
  auto router = StartServing(2, {"--drain-timeout-s=60"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  constexpr int kInFlight = 6;
  std::vector<Outcome> outcomes(kInFlight);
  std::vector<std::thread> threads;
  for (int i = 0; i < kInFlight; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest req = Greedy(Prompts()[i % Prompts().size()], 200);
      req.mutable_sampling_params()->set_ignore_eos(true);
      outcomes[i] = Generate(*stub, req);
    });
  }
  ASSERT_TRUE(WaitFor([&] { return router->Info().requests_running() == kInFlight; },
                      seconds(20)));
  ASSERT_EQ(kill(router->process().proc.pid(), SIGTERM), 0);
  // New requests are refused while the others finish.
  bool refused = WaitFor(
      [&] {
        Outcome late = Generate(*stub, Greedy(Prompts()[0], 4));
        return late.status.error_code() == grpc::StatusCode::UNAVAILABLE &&
               late.status.error_message().find("draining") != std::string::npos;
      },
      seconds(10));
  EXPECT_TRUE(refused);
  for (auto& t : threads) t.join();
  for (int i = 0; i < kInFlight; ++i) {
    EXPECT_TRUE(outcomes[i].status.ok()) << i << ": " << outcomes[i].status.error_message();
    EXPECT_EQ(outcomes[i].chunk_ids.size(), 200u) << i;
    EXPECT_EQ(outcomes[i].complete.finish_reason(), v1::FINISH_REASON_LENGTH) << i;
  }
  EXPECT_EQ(router->process().proc.Wait(seconds(30)), 0) << router->process().output();
}

// A drain that cannot end (its worker is stopped): a second SIGTERM ends the
// router at once instead of after --drain-timeout-s.
TEST(Serving, SecondSigtermDuringAStuckDrainExitsAtOnce) {
  auto router = StartServing(1, {"--drain-timeout-s=60"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  Outcome outcome;
  std::thread client([&] {
    v1::GenerateRequest req = Greedy(Prompts()[0], 1900);
    req.mutable_sampling_params()->set_ignore_eos(true);
    outcome = Generate(*stub, req);
  });
  ASSERT_TRUE(WaitFor([&] { return router->Info().requests_running() == 1; }, seconds(20)));
  const pid_t worker = static_cast<pid_t>(router->Info().workers(0).pid());
  ASSERT_EQ(kill(worker, SIGSTOP), 0);
  ASSERT_EQ(kill(router->process().proc.pid(), SIGTERM), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(router->process().proc.pid(), SIGTERM), 0);
  const std::optional<int> code = router->process().proc.Wait(seconds(5));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  kill(worker, SIGKILL);  // orphaned by the forced exit
  client.join();
  ASSERT_TRUE(code.has_value()) << "still running 5 s after the second SIGTERM";
  EXPECT_EQ(*code, 130) << router->process().output();
  EXPECT_LT(took, 3.0);
  EXPECT_THAT(router->process().output(), HasSubstr("second signal"));
  EXPECT_FALSE(outcome.status.ok());
}

// Fail-stop (--recovery-timeout-s=0): the requests of a lost worker group end
// at once.
TEST(Serving, WorkerLossEndsInFlightRequestsWithUnavailable) {
  REQUIRE_WORKERS(2);
  auto router = StartServing(
      2, {"--worker-timeout-ms=1500", "--heartbeat-interval-ms=200", "--recovery-timeout-s=0"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  constexpr int kInFlight = 4;
  std::vector<Outcome> outcomes(kInFlight);
  std::vector<std::thread> threads;
  for (int i = 0; i < kInFlight; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest req = Greedy(Prompts()[i], 1900);
      req.mutable_sampling_params()->set_ignore_eos(true);
      outcomes[i] = Generate(*stub, req);
    });
  }
  ASSERT_TRUE(WaitFor([&] { return router->Info().requests_running() == kInFlight; },
                      seconds(20)));
  v1::GetServerInfoResponse info = router->Info();
  ASSERT_EQ(info.workers_size(), 2);
  pid_t victim = static_cast<pid_t>(info.workers(1).pid());
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  for (auto& t : threads) t.join();
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 10.0);
  for (int i = 0; i < kInFlight; ++i) {
    EXPECT_EQ(outcomes[i].status.error_code(), grpc::StatusCode::UNAVAILABLE) << i;
    EXPECT_THAT(outcomes[i].status.error_message(), HasSubstr("rank 1")) << i;
  }
  EXPECT_NE(router->Health(), grpc::health::v1::HealthCheckResponse::SERVING);
  Outcome refused = Generate(*stub, Greedy(Prompts()[0]));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("not serving"));
}

// `streams` greedy streams of exactly `tokens` tokens (ignore_eos) over the
// first prompts, all at once; `meanwhile` runs while they are in flight.
std::vector<Outcome> RunGreedyStreams(v1::Epserve::Stub& stub, int streams, int tokens,
                                      const std::function<void()>& meanwhile) {
  std::vector<Outcome> outcomes(static_cast<size_t>(streams));
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(streams));
  for (int i = 0; i < streams; ++i) {
    threads.emplace_back([&, i] {
      v1::GenerateRequest req = Greedy(Prompts()[static_cast<size_t>(i)], tokens);
      req.mutable_sampling_params()->set_ignore_eos(true);
      outcomes[static_cast<size_t>(i)] = Generate(stub, req);
    });
  }
  meanwhile();
  for (auto& t : threads) t.join();
  return outcomes;
}

// The default: a local worker killed mid-stream is started again, and every
// in-flight request resumes (recomputed on the re-formed group) and ends with
// exactly the tokens of an undisturbed run of the same traffic.
TEST(Serving, KilledLocalWorkerIsRestartedAndEveryStreamCompletesUndisturbed) {
  REQUIRE_WORKERS(2);
  auto router = StartServing(2, {"--worker-timeout-ms=1500", "--heartbeat-interval-ms=200"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  constexpr int kInFlight = 4;
  constexpr int kTokens = 300;
  auto run = [&](const std::function<void()>& meanwhile) {
    return RunGreedyStreams(*stub, kInFlight, kTokens, meanwhile);
  };
  const std::vector<Outcome> undisturbed = run([] {});
  for (int i = 0; i < kInFlight; ++i) {
    ASSERT_TRUE(undisturbed[i].status.ok()) << i << ": " << undisturbed[i].status.error_message();
    ASSERT_EQ(undisturbed[i].chunk_ids.size(), static_cast<size_t>(kTokens)) << i;
  }

  const pid_t victim = static_cast<pid_t>(router->Info().workers(1).pid());
  std::chrono::steady_clock::time_point killed;
  const std::vector<Outcome> disturbed = run([&] {
    ASSERT_TRUE(
        WaitFor([&] { return router->Info().requests_running() == kInFlight; }, seconds(20)));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // mid-generation
    killed = std::chrono::steady_clock::now();
    ASSERT_EQ(kill(victim, SIGKILL), 0);
  });
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  for (int i = 0; i < kInFlight; ++i) {
    ASSERT_TRUE(disturbed[i].status.ok()) << i << ": " << disturbed[i].status.error_message();
    EXPECT_EQ(disturbed[i].chunk_ids, undisturbed[i].chunk_ids) << i;
    EXPECT_EQ(disturbed[i].complete.usage().completion_tokens(), static_cast<uint32_t>(kTokens))
        << i;
  }
  std::cerr << "recovery: " << kInFlight << " streams completed " << took
            << " s after SIGKILL of worker rank 1\n";
  const std::string m = ScrapeMetrics(router->metrics_address());
  EXPECT_EQ(MetricValue(m, "epserve_requests_recovered_total{model=\"tiny-random-qwen3-moe\"}"),
            kInFlight);
  EXPECT_EQ(MetricValue(m, "epserve_recovery_seconds_count{model=\"tiny-random-qwen3-moe\"}"), 1);
  v1::GetServerInfoResponse info = router->Info();
  ASSERT_EQ(info.workers_size(), 2);
  EXPECT_NE(info.workers(1).pid(), static_cast<uint32_t>(victim));  // a new process
  EXPECT_THAT(router->process().output(), HasSubstr("starting it again"));
  ExpectIdle(*router);
}

// Data parallel with --survivor-grace-ms=0: the moment a worker is lost the
// survivor forms a group alone and takes every request (the lost worker's
// recomputed), the streams end with exactly the undisturbed tokens, and the
// full group forms again once the local worker has been started again.
TEST(Serving, SurvivorServesAloneUntilTheLostWorkerIsBack) {
  REQUIRE_WORKERS(2);
  auto router = StartServing(
      2, {"--worker-timeout-ms=1500", "--heartbeat-interval-ms=200", "--survivor-grace-ms=0"});
  ASSERT_NE(router, nullptr);
  auto stub = ClientStub(router->grpc_address());
  constexpr int kInFlight = 4;
  constexpr int kTokens = 300;
  auto run = [&](const std::function<void()>& meanwhile) {
    return RunGreedyStreams(*stub, kInFlight, kTokens, meanwhile);
  };
  const std::vector<Outcome> undisturbed = run([] {});
  const pid_t victim = static_cast<pid_t>(router->Info().workers(1).pid());
  const std::vector<Outcome> disturbed = run([&] {
    ASSERT_TRUE(
        WaitFor([&] { return router->Info().requests_running() == kInFlight; }, seconds(20)));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // mid-generation
    ASSERT_EQ(kill(victim, SIGKILL), 0);
  });
  for (int i = 0; i < kInFlight; ++i) {
    ASSERT_TRUE(undisturbed[i].status.ok()) << i << ": " << undisturbed[i].status.error_message();
    ASSERT_TRUE(disturbed[i].status.ok()) << i << ": " << disturbed[i].status.error_message();
    EXPECT_EQ(disturbed[i].chunk_ids, undisturbed[i].chunk_ids) << i;
  }
  EXPECT_THAT(router->process().output(), HasSubstr("on the 1 surviving worker(s) (ranks 0)"));
  // The restarted worker brings the full group back.
  ASSERT_TRUE(WaitFor(
      [&] {
        const v1::GetServerInfoResponse info = router->Info();
        return info.state() == v1::CLUSTER_STATE_SERVING && info.workers_size() == 2 &&
               info.state_reason().empty();
      },
      seconds(30)))
      << router->process().output();
  // The first group, the survivor's, the full one again (the gauge follows
  // within a sweep).
  EXPECT_TRUE(WaitFor(
      [&] {
        return MetricValue(ScrapeMetrics(router->metrics_address()),
                           "epserve_cluster_group_formations_total") >= 3;
      },
      seconds(5)));
  ExpectIdle(*router);
}

// ---- GPU resources (EPSERVE_TEST_DEVICE=cuda only) ----

// A GPU worker whose weights cannot fit says so, with the numbers, before it
// loads anything; the router never serves. Mixtral-8x7B in float32 is
// 187 GB, more than any single GPU has.
TEST(Serving, GpuWorkerRefusesWeightsLargerThanTheDevice) {
  if (!OnGpu()) GTEST_SKIP() << "GPU only (EPSERVE_TEST_DEVICE=cuda)";
  auto router = RouterHandle::Start(
      {"--model=" EPSERVE_SOURCE_DIR "/tools/configs/mixtral-8x7b-v0.1", "--local-workers=1",
       "--device=cuda", "--load-format=dummy", "--dtype=float32", "--log-level=warn"});
  ASSERT_NE(router, nullptr);
  EXPECT_TRUE(WaitFor(
      [&] { return router->process().output().find("bytes free") != std::string::npos ||
                   router->process().output().find("MiB) free") != std::string::npos; },
      seconds(60)))
      << router->process().output();
  const std::string out = router->process().output();
  EXPECT_NE(out.find("weights of rank 0 need"), std::string::npos) << out;
  EXPECT_FALSE(router->Serving());
}

// A --gpu-memory-utilization that leaves no room for one KV block stops the
// worker at start-up with the allowance, the use and the block size.
TEST(Serving, GpuWorkerWithoutRoomForOneKvBlockSaysSo) {
  if (!OnGpu()) GTEST_SKIP() << "GPU only (EPSERVE_TEST_DEVICE=cuda)";
  auto router = RouterHandle::Start({"--model=" + std::string(kModel), "--local-workers=1",
                                     "--device=cuda", "--gpu-memory-utilization=0.001",
                                     "--log-level=warn"});
  ASSERT_NE(router, nullptr);
  EXPECT_TRUE(WaitFor(
      [&] {
        return router->process().output().find("no memory for a single KV block") !=
               std::string::npos;
      },
      seconds(60)))
      << router->process().output();
  const std::string out = router->process().output();
  EXPECT_NE(out.find("--gpu-memory-utilization 0.001"), std::string::npos) << out;
  EXPECT_NE(out.find("one block of 16 tokens needs"), std::string::npos) << out;
  EXPECT_FALSE(router->Serving());
}

}  // namespace
}  // namespace epserve::testing
