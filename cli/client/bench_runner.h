// The load generator of `epserve bench`: sends requests at their scheduled
// times with at most `max_concurrency` in flight, through a send function
// that returns at once and reports each result later (from any thread).
//
//   dispatcher thread                      send_fn's threads (gRPC callbacks)
//   ─────────────────                      ─────────────────────────────────
//   for each request i:
//     sleep until start + offsets[i]
//     wait for a free slot  ◄───────────── done(result): slot freed
//     send_fn(spec[i], done) ────────────► request runs ...
//   wait until every done() ran
//
// A slow request never delays later arrivals unless the concurrency cap is
// reached; then requests start in arrival order as slots free up (as with
// vLLM's semaphore).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cli/client/bench_stats.h"

namespace epserve::client {

// A monotonic clock in seconds, replaceable in tests.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual double Now() = 0;
  virtual void SleepUntil(double time) = 0;
};

// std::chrono::steady_clock.
class SteadyClock final : public Clock {
 public:
  double Now() override;
  void SleepUntil(double time) override;
};

// One request of the workload.
struct RequestSpec {
  int index = 0;
  std::vector<uint32_t> prompt_ids;
  int64_t output_len = 0;
};

// Starts `spec` and returns without waiting; calls `done` exactly once with
// the result, on any thread (possibly before returning).
using SendFn =
    std::function<void(const RequestSpec& spec, std::function<void(RequestResult)> done)>;

struct LoadOptions {
  // Send time of each request, seconds from the start (ArrivalSchedule).
  std::vector<double> offsets_s;
  // Most requests in flight at once; 0 = no cap.
  int max_concurrency = 0;
  // Called after each completion (on the completing thread, one call at a
  // time) with the requests finished and failed so far.
  std::function<void(size_t finished, size_t failed)> on_progress;
};

struct LoadRun {
  std::vector<RequestResult> results;  // in the order of `specs`
  double duration_s = 0;               // start to the last completion
  int max_in_flight = 0;               // the most requests seen in flight
};

// Runs `specs` (offsets_s.size() == specs.size()) and waits for all of them.
LoadRun RunLoad(const std::vector<RequestSpec>& specs, const LoadOptions& options,
                const SendFn& send, Clock& clock);

}  // namespace epserve::client
