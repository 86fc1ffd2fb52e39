// The router's Prometheus metrics (see docs/metrics.md).
#pragma once

#include "epserve/v1/epserve.pb.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace epserve::router {

class RouterMetrics {
 public:
  explicit RouterMetrics(prometheus::Registry& registry);
  // Refreshes the metrics from a registry snapshot and its monotonic counts.
  void Update(const v1::GetServerInfoResponse& info, uint64_t workers_lost_total,
              uint64_t groups_formed_total);

 private:
  prometheus::Gauge& serving_;
  prometheus::Gauge& expected_workers_;
  prometheus::Gauge& group_epoch_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Counter& group_formations_;
  prometheus::Counter& workers_lost_;
  uint64_t last_lost_ = 0;
  uint64_t last_formed_ = 0;
};

}  // namespace epserve::router
