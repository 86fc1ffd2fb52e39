#include "worker/worker_metrics.h"

#include <algorithm>
#include <string>

namespace epserve::worker {

WorkerMetrics::WorkerMetrics(prometheus::Registry& registry)
    : joins_(prometheus::BuildCounter()
                 .Name("epserve_worker_group_joins_total")
                 .Help("Attempts to join a collective group, by result")
                 .Register(registry)),
      joins_ok_(joins_.Add({{"result", "ok"}})),
      joins_error_(joins_.Add({{"result", "error"}})),
      warmup_bytes_(prometheus::BuildGauge()
                        .Name("epserve_worker_warmup_alltoall_bytes")
                        .Help("Bytes sent + received by the last warm-up all-to-all-v check")
                        .Register(registry)
                        .Add({})),
      rank_(prometheus::BuildGauge()
                .Name("epserve_worker_rank")
                .Help("This worker's rank in the cluster (-1 before registration)")
                .Register(registry)
                .Add({})),
      steps_(prometheus::BuildCounter()
                 .Name("epserve_worker_steps_total")
                 .Help("Steps this worker executed, by result")
                 .Register(registry)),
      steps_ok_(steps_.Add({{"result", "ok"}})),
      steps_error_(steps_.Add({{"result", "error"}})),
      idle_steps_(prometheus::BuildCounter()
                      .Name("epserve_worker_idle_steps_total")
                      .Help("Steps with no tokens on this worker (with expert parallelism it "
                            "still serves the other ranks' rows to its experts)")
                      .Register(registry)
                      .Add({})),
      step_seconds_(
          prometheus::BuildHistogram()
              .Name("epserve_worker_step_seconds")
              .Help("This worker's forward pass + sampling time per step (compare "
                    "ranks to find stragglers)")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.002, 0.004, 0.008,
                                                               0.016, 0.032, 0.064, 0.128, 0.256,
                                                               0.512, 1.024, 2.048, 4.096, 8.192})),
      weight_bytes_(prometheus::BuildGauge()
                        .Name("epserve_worker_weight_bytes")
                        .Help("Bytes of weights this worker holds (dense parts + its experts)")
                        .Register(registry)
                        .Add({})),
      experts_loaded_(prometheus::BuildCounter()
                          .Name("epserve_worker_experts_loaded_total")
                          .Help("Experts this worker loaded after its start to serve a group of "
                                "survivors (experts of a lost rank it held no copy of)")
                          .Register(registry)
                          .Add({})) {
  rank_.Set(-1);
}

MoeMetrics::MoeMetrics(prometheus::Registry& registry, int64_t num_experts)
    : num_experts_(num_experts),
      dispatch_(prometheus::BuildHistogram()
                    .Name("epserve_moe_dispatch_seconds")
                    .Help("Time of one MoE layer's dispatch (count exchange + all-to-all-v of "
                          "token rows to the expert owners)")
                    .Register(registry)
                    .Add({}, Buckets())),
      combine_(prometheus::BuildHistogram()
                   .Name("epserve_moe_combine_seconds")
                   .Help("Time of one MoE layer's combine (all-to-all-v of expert outputs "
                         "back + weighted sum)")
                   .Register(registry)
                   .Add({}, Buckets())),
      bytes_(prometheus::BuildCounter()
                 .Name("epserve_moe_alltoall_bytes_total")
                 .Help("Bytes this worker moved in MoE all-to-all exchanges, by direction")
                 .Register(registry)),
      sent_(bytes_.Add({{"direction", "sent"}})),
      received_(bytes_.Add({{"direction", "received"}})),
      expert_tokens_(prometheus::BuildCounter()
                         .Name("epserve_moe_expert_tokens_total")
                         .Help("Token rows computed by this worker's experts, by MoE layer and "
                               "expert")
                         .Register(registry)),
      imbalance_(prometheus::BuildGauge()
                     .Name("epserve_moe_load_imbalance_ratio")
                     .Help("Last step's expert rows per rank, max over mean (1 = balanced)")
                     .Register(registry)
                     .Add({})),
      rank_rows_(prometheus::BuildGauge()
                     .Name("epserve_moe_rank_rows")
                     .Help("Last step's expert rows computed by each rank (summed over MoE "
                           "layers)")
                     .Register(registry)) {
  imbalance_.Set(1.0);
}

void MoeMetrics::OnMoeExchange(const moe::MoeExchangeStats& s) {
  if (s.timed) {
    dispatch_.Observe(s.dispatch_seconds);
    combine_.Observe(s.combine_seconds);
  }
  sent_.Increment(static_cast<double>(s.bytes_sent));
  received_.Increment(static_cast<double>(s.bytes_received));
  for (size_t e = 0; e < s.rows_per_expert.size(); ++e) {
    if (s.rows_per_expert[e] > 0) {
      ExpertCounter(s.layer, static_cast<int64_t>(e))
          .Increment(static_cast<double>(s.rows_per_expert[e]));
    }
  }
  if (step_rows_.size() < s.rows_per_rank.size()) step_rows_.resize(s.rows_per_rank.size());
  for (size_t r = 0; r < s.rows_per_rank.size(); ++r) step_rows_[r] += s.rows_per_rank[r];
}

void MoeMetrics::EndStep() {
  if (step_rows_.empty()) return;
  int64_t max = 0;
  int64_t sum = 0;
  for (size_t r = 0; r < step_rows_.size(); ++r) {
    max = std::max(max, step_rows_[r]);
    sum += step_rows_[r];
    rank_rows_.Add({{"rank", std::to_string(r)}}).Set(static_cast<double>(step_rows_[r]));
  }
  if (sum > 0) {
    imbalance_.Set(static_cast<double>(max) * static_cast<double>(step_rows_.size()) /
                   static_cast<double>(sum));
  }
  std::fill(step_rows_.begin(), step_rows_.end(), 0);
}

prometheus::Histogram::BucketBoundaries MoeMetrics::Buckets() {
  return {0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002,
          0.005,   0.01,    0.02,    0.05,   0.1,    0.2,    0.5,   1.0};
}

prometheus::Counter& MoeMetrics::ExpertCounter(int layer, int64_t expert) {
  const size_t index =
      static_cast<size_t>(layer) * static_cast<size_t>(num_experts_) + static_cast<size_t>(expert);
  if (index >= expert_counters_.size()) expert_counters_.resize(index + 1, nullptr);
  if (expert_counters_[index] == nullptr) {
    expert_counters_[index] =
        &expert_tokens_.Add({{"layer", std::to_string(layer)}, {"expert", std::to_string(expert)}});
  }
  return *expert_counters_[index];
}

}  // namespace epserve::worker
