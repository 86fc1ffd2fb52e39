#include "router/engine/serving_metrics.h"

#include <string>

namespace epserve::router {
namespace {

// Bucket bounds in seconds: fine at the low end (a GPU decode step is a few
// ms), reaching minutes for long generations on CPU.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
      0.75,  1.0,    2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0};
  return b;
}

const prometheus::Histogram::BucketBoundaries& InterTokenBuckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
      0.2,    0.3,   0.4,    0.5,   0.75, 1.0,   2.5,  5.0,   10.0};
  return b;
}

const prometheus::Histogram::BucketBoundaries& RequestBuckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
      30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
  return b;
}

const prometheus::Histogram::BucketBoundaries& StepBuckets() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
      0.128,  0.256, 0.512, 1.024, 2.048, 4.096, 8.192};
  return b;
}

}  // namespace

ServingMetrics::ServingMetrics(prometheus::Registry& registry, const std::string& model)
    : model_(model),
      ttft_(prometheus::BuildHistogram()
                .Name("epserve_time_to_first_token_seconds")
                .Help("Time from a request's arrival to its first generated token")
                .Register(registry)),
      itl_(prometheus::BuildHistogram()
               .Name("epserve_inter_token_latency_seconds")
               .Help("Time between two successive generated tokens of a request")
               .Register(registry)),
      e2e_(prometheus::BuildHistogram()
               .Name("epserve_e2e_request_latency_seconds")
               .Help("Time from a request's arrival to its end")
               .Register(registry)),
      queue_(prometheus::BuildHistogram()
                 .Name("epserve_request_queue_time_seconds")
                 .Help("Time from a request's arrival to the first step that computes it")
                 .Register(registry)),
      prompt_tokens_(prometheus::BuildCounter()
                         .Name("epserve_prompt_tokens_total")
                         .Help("Prompt tokens of admitted requests")
                         .Register(registry)),
      generation_tokens_(prometheus::BuildCounter()
                             .Name("epserve_generation_tokens_total")
                             .Help("Generated tokens")
                             .Register(registry)),
      requests_(prometheus::BuildCounter()
                    .Name("epserve_requests_total")
                    .Help("Requests that ended, by finish_reason (stop, length, abort, error)")
                    .Register(registry)),
      rejected_(prometheus::BuildCounter()
                    .Name("epserve_requests_rejected_total")
                    .Help("Requests refused before queueing, by reason (queue_full, invalid, "
                          "unavailable, draining, unauthenticated)")
                    .Register(registry)),
      preemptions_(prometheus::BuildCounter()
                       .Name("epserve_num_preemptions_total")
                       .Help("Running requests preempted (KV blocks freed, recomputed later)")
                       .Register(registry)),
      running_(prometheus::BuildGauge()
                   .Name("epserve_requests_running")
                   .Help("Requests whose sequence is on a worker")
                   .Register(registry)),
      waiting_(prometheus::BuildGauge()
                   .Name("epserve_requests_waiting")
                   .Help("Requests queued for a worker (incl. preempted ones)")
                   .Register(registry)),
      kv_usage_(prometheus::BuildGauge()
                    .Name("epserve_kv_cache_usage_ratio")
                    .Help("Fraction of a worker's KV cache blocks in use")
                    .Register(registry)),
      step_(prometheus::BuildHistogram()
                .Name("epserve_step_duration_seconds")
                .Help("Forward pass + sampling time of one step on a worker, by phase "
                      "(prefill, decode, mixed)")
                .Register(registry)),
      router_step_(prometheus::BuildHistogram()
                       .Name("epserve_router_step_seconds")
                       .Help("One step on the router: scheduling, plans out, every worker's "
                             "result back, tokens handled (minus the workers' step time: "
                             "router + gRPC overhead)")
                       .Register(registry)),
      recovered_(prometheus::BuildCounter()
                     .Name("epserve_requests_recovered_total")
                     .Help("Requests that resumed on a new worker group after theirs was lost "
                           "(a worker died, stalled or failed a step): recomputed, not ended")
                     .Register(registry)),
      recovery_(prometheus::BuildHistogram()
                    .Name("epserve_recovery_seconds")
                    .Help("From losing a worker group with requests in flight to those "
                          "requests resuming on a new group")
                    .Register(registry)),
      ttft_h_(ttft_.Add({{"model", model}}, LatencyBuckets())),
      itl_h_(itl_.Add({{"model", model}}, InterTokenBuckets())),
      e2e_h_(e2e_.Add({{"model", model}}, RequestBuckets())),
      queue_h_(queue_.Add({{"model", model}}, RequestBuckets())),
      router_step_h_(router_step_.Add({{"model", model}}, StepBuckets())),
      prompt_tokens_c_(prompt_tokens_.Add({{"model", model}})),
      generation_tokens_c_(generation_tokens_.Add({{"model", model}})),
      preemptions_c_(preemptions_.Add({{"model", model}})),
      running_g_(running_.Add({{"model", model}})),
      waiting_g_(waiting_.Add({{"model", model}})),
      recovered_c_(recovered_.Add({{"model", model}})),
      recovery_h_(recovery_.Add({{"model", model}}, RequestBuckets())) {
  // Every finish reason is exported from the start (rate() needs a zero).
  for (const char* reason : {"stop", "length", "abort", "error"}) FinishedCounter(reason);
  for (const char* reason :
       {"queue_full", "invalid", "unavailable", "draining", "unauthenticated"}) {
    rejected_.Add({{"model", model_}, {"reason", reason}});
  }
}

prometheus::Counter& ServingMetrics::FinishedCounter(const std::string& reason) {
  return requests_.Add({{"model", model_}, {"finish_reason", reason}});
}

void ServingMetrics::RequestAdmitted(int64_t prompt_tokens) {
  prompt_tokens_c_.Increment(static_cast<double>(prompt_tokens));
}

void ServingMetrics::RequestRejected(const std::string& reason) {
  rejected_.Add({{"model", model_}, {"reason", reason}}).Increment();
}

void ServingMetrics::QueueTime(double seconds) { queue_h_.Observe(seconds); }
void ServingMetrics::FirstToken(double seconds) { ttft_h_.Observe(seconds); }
void ServingMetrics::InterToken(double seconds) { itl_h_.Observe(seconds); }

void ServingMetrics::GenerationTokens(int64_t n) {
  generation_tokens_c_.Increment(static_cast<double>(n));
}

void ServingMetrics::RequestFinished(const std::string& finish_reason, double e2e_seconds) {
  FinishedCounter(finish_reason).Increment();
  e2e_h_.Observe(e2e_seconds);
}

void ServingMetrics::Preemptions(uint64_t n) { preemptions_c_.Increment(static_cast<double>(n)); }

void ServingMetrics::SetQueue(int running, int waiting) {
  running_g_.Set(running);
  waiting_g_.Set(waiting);
}

void ServingMetrics::SetKvUsage(int worker, double ratio) {
  kv_usage_.Add({{"model", model_}, {"worker", std::to_string(worker)}}).Set(ratio);
}

void ServingMetrics::StepDuration(int worker, const std::string& phase, double seconds) {
  step_.Add({{"model", model_}, {"worker", std::to_string(worker)}, {"phase", phase}},
            StepBuckets())
      .Observe(seconds);
}

void ServingMetrics::RouterStep(double seconds) { router_step_h_.Observe(seconds); }

void ServingMetrics::RequestsRecovered(int64_t n, double waited) {
  recovered_c_.Increment(static_cast<double>(n));
  recovery_h_.Observe(waited);
}

}  // namespace epserve::router
