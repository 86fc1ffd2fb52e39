// The worker's Prometheus metrics (docs/metrics.md): its life cycle
// (registration, group joins, steps) and, with expert parallelism, the MoE
// exchange of every layer.
#pragma once

#include <cstdint>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "worker/moe/alltoall_dispatcher.h"

namespace epserve::worker {

// The worker's own metrics, registered in `registry` (which must outlive
// them). Updated by the worker's threads; prometheus-cpp metrics are
// thread-safe.
class WorkerMetrics {
 public:
  explicit WorkerMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& joins_;
  prometheus::Counter& joins_ok_;
  prometheus::Counter& joins_error_;
  prometheus::Gauge& warmup_bytes_;
  prometheus::Gauge& rank_;  // -1 before registration
  prometheus::Family<prometheus::Counter>& steps_;
  prometheus::Counter& steps_ok_;
  prometheus::Counter& steps_error_;
  prometheus::Counter& idle_steps_;
  prometheus::Histogram& step_seconds_;
  prometheus::Gauge& weight_bytes_;
  prometheus::Counter& experts_loaded_;
};

// Expert-parallel exchange metrics, fed by the all-to-all dispatcher after
// every MoE layer. Only the step thread calls it.
class MoeMetrics final : public moe::MoeExchangeObserver {
 public:
  // `registry` must outlive this; num_experts: E of the model.
  MoeMetrics(prometheus::Registry& registry, int64_t num_experts);

  void OnMoeExchange(const moe::MoeExchangeStats& s) override;

  // After each step: the load of every rank over the step's MoE layers.
  void EndStep();

 private:
  static prometheus::Histogram::BucketBoundaries Buckets();
  prometheus::Counter& ExpertCounter(int layer, int64_t expert);

  const int64_t num_experts_;
  prometheus::Histogram& dispatch_;
  prometheus::Histogram& combine_;
  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Counter& sent_;
  prometheus::Counter& received_;
  prometheus::Family<prometheus::Counter>& expert_tokens_;
  prometheus::Gauge& imbalance_;
  prometheus::Family<prometheus::Gauge>& rank_rows_;
  std::vector<prometheus::Counter*> expert_counters_;  // [layer * E + expert]
  std::vector<int64_t> step_rows_;                     // [world] this step
};

}  // namespace epserve::worker
