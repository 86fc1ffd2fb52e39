// The load runner: requests go out on schedule, never more than the
// concurrency cap in flight, and results come back in request order. A fake
// clock stands in for time and fake send functions for gRPC.
#include "cli/client/bench_runner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <thread>

namespace epserve::client {
namespace {

// Time moves only when the runner sleeps.
class FakeClock final : public Clock {
 public:
  double Now() override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void SleepUntil(double time) override {
    std::lock_guard<std::mutex> lock(mu_);
    now_ = std::max(now_, time);
  }

 private:
  std::mutex mu_;
  double now_ = 100.0;
};

std::vector<RequestSpec> Specs(int n) {
  std::vector<RequestSpec> specs(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    specs[static_cast<size_t>(i)].index = i;
    specs[static_cast<size_t>(i)].output_len = i + 1;
  }
  return specs;
}

RequestResult ResultFor(const RequestSpec& spec) {
  RequestResult r;
  r.ok = true;
  r.output_tokens = spec.output_len;
  return r;
}

TEST(RunLoad, SendsOnScheduleWithoutWaitingForSlowRequests) {
  // No request finishes until the last one was sent: with no cap, the
  // dispatcher must not wait for any of them.
  FakeClock clock;
  const int n = 6;
  LoadOptions options;
  options.offsets_s = {0.0, 0.5, 0.5, 1.25, 2.0, 7.0};
  std::vector<double> sent_at;
  std::vector<std::function<void(RequestResult)>> pending;
  std::vector<RequestSpec> pending_specs;
  SendFn send = [&](const RequestSpec& spec, std::function<void(RequestResult)> done) {
    sent_at.push_back(clock.Now());
    pending.push_back(std::move(done));
    pending_specs.push_back(spec);
    if (static_cast<int>(pending.size()) == n) {
      // Finish in reverse order; results must still come back in send order.
      for (int i = n - 1; i >= 0; --i)
        pending[static_cast<size_t>(i)](ResultFor(pending_specs[static_cast<size_t>(i)]));
    }
  };
  const LoadRun run = RunLoad(Specs(n), options, send, clock);
  ASSERT_EQ(sent_at.size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    EXPECT_DOUBLE_EQ(sent_at[static_cast<size_t>(i)],
                     100.0 + options.offsets_s[static_cast<size_t>(i)]);
  EXPECT_EQ(run.max_in_flight, n);
  EXPECT_DOUBLE_EQ(run.duration_s, 7.0);
  ASSERT_EQ(run.results.size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) EXPECT_EQ(run.results[static_cast<size_t>(i)].output_tokens, i + 1);
}

// Completes requests on its own thread, one every `step`, oldest first, and
// records how many were in flight at any send.
class FakeServer {
 public:
  explicit FakeServer(std::chrono::microseconds step) : step_(step) {
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeServer() {
    stop_ = true;
    thread_.join();
  }

  void Send(const RequestSpec& spec, std::function<void(RequestResult)> done) {
    std::lock_guard<std::mutex> lock(mu_);
    max_in_flight_ = std::max(max_in_flight_, ++in_flight_);
    order_.push_back(spec.index);
    queue_.emplace_back(spec, std::move(done));
  }
  int max_in_flight() {
    std::lock_guard<std::mutex> lock(mu_);
    return max_in_flight_;
  }
  std::vector<int> order() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_;
  }

 private:
  void Serve() {
    while (!stop_) {
      std::this_thread::sleep_for(step_);
      std::pair<RequestSpec, std::function<void(RequestResult)>> next;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (queue_.empty()) continue;
        next = std::move(queue_.front());
        queue_.pop_front();
        --in_flight_;
      }
      next.second(ResultFor(next.first));
    }
  }

  std::chrono::microseconds step_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  int in_flight_ = 0;
  int max_in_flight_ = 0;
  std::vector<int> order_;
  std::deque<std::pair<RequestSpec, std::function<void(RequestResult)>>> queue_;
  std::thread thread_;
};

TEST(RunLoad, ConcurrencyCapIsObeyedAndReached) {
  for (int cap : {1, 3, 4}) {
    SCOPED_TRACE(cap);
    FakeClock clock;
    FakeServer server(std::chrono::microseconds(200));
    const int n = 40;
    LoadOptions options;
    options.offsets_s.assign(n, 0.0);  // all at once: the cap is what limits
    options.max_concurrency = cap;
    SendFn send = [&](const RequestSpec& spec, std::function<void(RequestResult)> done) {
      server.Send(spec, std::move(done));
    };
    const LoadRun run = RunLoad(Specs(n), options, send, clock);
    EXPECT_EQ(server.max_in_flight(), cap);
    EXPECT_EQ(run.max_in_flight, cap);
    // Requests start in arrival order.
    std::vector<int> expected(n);
    for (int i = 0; i < n; ++i) expected[static_cast<size_t>(i)] = i;
    EXPECT_EQ(server.order(), expected);
    ASSERT_EQ(run.results.size(), static_cast<size_t>(n));
    for (const RequestResult& r : run.results) EXPECT_TRUE(r.ok);
  }
}

TEST(RunLoad, SteadyClockSleepsUntilTheOffset) {
  SteadyClock clock;
  LoadOptions options;
  options.offsets_s = {0.0, 0.05};
  std::vector<double> sent_at;
  SendFn send = [&](const RequestSpec& spec, std::function<void(RequestResult)> done) {
    sent_at.push_back(clock.Now());
    done(ResultFor(spec));
  };
  const double start = clock.Now();
  const LoadRun run = RunLoad(Specs(2), options, send, clock);
  ASSERT_EQ(sent_at.size(), 2u);
  EXPECT_GE(sent_at[1] - start, 0.05);
  EXPECT_GE(run.duration_s, 0.05);
}

}  // namespace
}  // namespace epserve::client
