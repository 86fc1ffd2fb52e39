#include "cli/client/bench_runner.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace epserve::client {

double SteadyClock::Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void SteadyClock::SleepUntil(double time) {
  const double wait = time - Now();
  if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
}

namespace {

// Shared with the completion callbacks, which may run after RunLoad's last
// wait returns (they still unlock and notify).
struct LoadState {
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;
  int max_in_flight = 0;
  size_t finished = 0;
  size_t failed = 0;
  std::vector<RequestResult> results;
};

}  // namespace

LoadRun RunLoad(const std::vector<RequestSpec>& specs, const LoadOptions& options,
                const SendFn& send, Clock& clock) {
  auto state = std::make_shared<LoadState>();
  state->results.resize(specs.size());
  const double start = clock.Now();
  for (size_t i = 0; i < specs.size(); ++i) {
    clock.SleepUntil(start + (i < options.offsets_s.size() ? options.offsets_s[i] : 0.0));
    {
      std::unique_lock<std::mutex> lock(state->mu);
      state->cv.wait(lock, [&] {
        return options.max_concurrency <= 0 || state->in_flight < options.max_concurrency;
      });
      ++state->in_flight;
      state->max_in_flight = std::max(state->max_in_flight, state->in_flight);
    }
    send(specs[i], [state, i, progress = options.on_progress](RequestResult result) {
      std::lock_guard<std::mutex> lock(state->mu);
      if (!result.ok) ++state->failed;
      state->results[i] = std::move(result);
      --state->in_flight;
      ++state->finished;
      if (progress) progress(state->finished, state->failed);
      state->cv.notify_all();
    });
  }
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait(lock, [&] { return state->finished == specs.size(); });
  LoadRun run;
  run.duration_s = clock.Now() - start;
  run.max_in_flight = state->max_in_flight;
  run.results = std::move(state->results);
  return run;
}

}  // namespace epserve::client
