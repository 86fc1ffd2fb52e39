#include "router/router_metrics.h"

namespace epserve::router {

RouterMetrics::RouterMetrics(prometheus::Registry& registry)
    : serving_(prometheus::BuildGauge()
                   .Name("epserve_cluster_serving")
                   .Help("1 when every worker is in the collective group and requests are served")
                   .Register(registry)
                   .Add({})),
      expected_workers_(prometheus::BuildGauge()
                            .Name("epserve_cluster_expected_workers")
                            .Help("World size the cluster is configured for")
                            .Register(registry)
                            .Add({})),
      group_epoch_(prometheus::BuildGauge()
                       .Name("epserve_cluster_group_epoch")
                       .Help("Generation of the collective group; bumps on every re-formation")
                       .Register(registry)
                       .Add({})),
      workers_(prometheus::BuildGauge()
                   .Name("epserve_cluster_workers")
                   .Help("Registered workers by state (registered, connected, ready)")
                   .Register(registry)),
      group_formations_(prometheus::BuildCounter()
                            .Name("epserve_cluster_group_formations_total")
                            .Help("Collective groups that formed and passed the warm-up check")
                            .Register(registry)
                            .Add({})),
      workers_lost_(prometheus::BuildCounter()
                        .Name("epserve_cluster_workers_lost_total")
                        .Help("Workers declared lost (stream closed or liveness timeout)")
                        .Register(registry)
                        .Add({})) {}

void RouterMetrics::Update(const v1::GetServerInfoResponse& info, uint64_t workers_lost_total,
                           uint64_t groups_formed_total) {
  serving_.Set(info.state() == v1::CLUSTER_STATE_SERVING ? 1 : 0);
  expected_workers_.Set(info.world_size());
  group_epoch_.Set(static_cast<double>(info.group_epoch()));
  size_t registered = 0, connected = 0, ready = 0;
  for (const v1::WorkerInfo& w : info.workers()) {
    registered += w.state() == v1::WORKER_STATE_REGISTERED;
    connected += w.state() == v1::WORKER_STATE_CONNECTED;
    ready += w.state() == v1::WORKER_STATE_READY;
  }
  workers_.Add({{"state", "registered"}}).Set(static_cast<double>(registered));
  workers_.Add({{"state", "connected"}}).Set(static_cast<double>(connected));
  workers_.Add({{"state", "ready"}}).Set(static_cast<double>(ready));
  group_formations_.Increment(static_cast<double>(groups_formed_total - last_formed_));
  workers_lost_.Increment(static_cast<double>(workers_lost_total - last_lost_));
  last_formed_ = groups_formed_total;
  last_lost_ = workers_lost_total;
}

}  // namespace epserve::router
