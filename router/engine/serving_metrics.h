// The router's request and step metrics (docs/metrics.md, "Serving").
// Every series carries a `model` label. Thread-safe (prometheus-cpp metrics
// are); the engine's step loop is the only writer in practice.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace epserve::router {

class ServingMetrics {
 public:
  ServingMetrics(prometheus::Registry& registry, const std::string& model);

  // A request passed validation and entered the queue.
  void RequestAdmitted(int64_t prompt_tokens);
  // A request was refused before queueing; reason: queue_full, invalid,
  // unavailable, draining, unauthenticated.
  void RequestRejected(const std::string& reason);
  // Arrival to the first step that computed any of its tokens.
  void QueueTime(double seconds);
  // Arrival to the first generated token reaching the router.
  void FirstToken(double seconds);
  // Gap between two successive generated tokens of one request.
  void InterToken(double seconds);
  void GenerationTokens(int64_t n);
  // finish_reason: stop, length, abort or error.
  void RequestFinished(const std::string& finish_reason, double e2e_seconds);
  void Preemptions(uint64_t n);
  void SetQueue(int running, int waiting);
  void SetKvUsage(int worker, double ratio);
  // phase: prefill (only prefill chunks), decode (only decodes) or mixed.
  void StepDuration(int worker, const std::string& phase, double seconds);
  // One whole step as the router sees it: scheduling, plans sent, every
  // result back, tokens handled. Minus the workers' step time: the router
  // and gRPC overhead.
  void RouterStep(double seconds);
  // `n` requests resumed on a new worker group `waited` seconds after the
  // old one was lost.
  void RequestsRecovered(int64_t n, double waited);

 private:
  prometheus::Counter& FinishedCounter(const std::string& reason);

  const std::string model_;
  prometheus::Family<prometheus::Histogram>& ttft_;
  prometheus::Family<prometheus::Histogram>& itl_;
  prometheus::Family<prometheus::Histogram>& e2e_;
  prometheus::Family<prometheus::Histogram>& queue_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& generation_tokens_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Family<prometheus::Counter>& preemptions_;
  prometheus::Family<prometheus::Gauge>& running_;
  prometheus::Family<prometheus::Gauge>& waiting_;
  prometheus::Family<prometheus::Gauge>& kv_usage_;
  prometheus::Family<prometheus::Histogram>& step_;
  prometheus::Family<prometheus::Histogram>& router_step_;
  prometheus::Family<prometheus::Counter>& recovered_;
  prometheus::Family<prometheus::Histogram>& recovery_;
  prometheus::Histogram& ttft_h_;
  prometheus::Histogram& itl_h_;
  prometheus::Histogram& e2e_h_;
  prometheus::Histogram& queue_h_;
  prometheus::Histogram& router_step_h_;
  prometheus::Counter& prompt_tokens_c_;
  prometheus::Counter& generation_tokens_c_;
  prometheus::Counter& preemptions_c_;
  prometheus::Gauge& running_g_;
  prometheus::Gauge& waiting_g_;
  prometheus::Counter& recovered_c_;
  prometheus::Histogram& recovery_h_;
};

}  // namespace epserve::router
