// Shared by the expert-parallel dispatcher tests: random routings per rank
// (deterministic in step, rank and k), expert weights, one MoE layer through
// a TokenDispatcher, the single-process reference, Gloo ranks as threads and
// an exchange-stats recorder.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/ops.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/rendezvous.h"
#include "worker/moe/alltoall_dispatcher.h"
#include "worker/moe/token_dispatcher.h"

namespace epserve::moe {

using kernels::Tensor;
using std::chrono::milliseconds;

inline constexpr int64_t kHidden = 16;
inline constexpr int64_t kExperts = 8;
inline constexpr float kTolerance = 1e-5f;

inline Tensor RandomFloats(std::vector<int64_t> shape, std::mt19937& rng, float lo, float hi) {
  Tensor t = *kernels::EmptyHostTensor(DataType::kFloat32, std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.mutable_data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

// One [H, H] matrix per expert, shared read-only by every rank.
inline std::vector<Tensor> ExpertWeights() {
  std::mt19937 rng(42);
  std::vector<Tensor> w;
  w.reserve(kExperts);
  for (int64_t e = 0; e < kExperts; ++e)
    w.push_back(RandomFloats({kHidden, kHidden}, rng, -0.5f, 0.5f));
  return w;
}

enum class Routing {
  kRandom,     // k distinct random experts per token
  kOneExpert,  // every slot of every token to expert `target`
  kOneRank,    // random experts among those of rank `target`
};

struct Step {
  Routing routing = Routing::kRandom;
  int target = 0;
  std::vector<int64_t> tokens;  // per rank
};

struct RankInputs {
  Tensor hidden;        // [T, H]
  Tensor topk_ids;      // [T, k]
  Tensor topk_weights;  // [T, k]
};

// Deterministic in (step, rank, k), so a checker can rebuild any rank's inputs.
inline RankInputs MakeInputs(const Step& step, int step_index, int rank, int64_t k,
                             const std::vector<uint32_t>& placement) {
  std::mt19937 rng(static_cast<uint32_t>(1000003 * k + 7919 * step_index + 31 * rank + 17));
  const int64_t t = step.tokens[rank];
  RankInputs in;
  in.hidden = RandomFloats({t, kHidden}, rng, -1.0f, 1.0f);
  in.topk_weights = RandomFloats({t, k}, rng, 0.0f, 1.0f);
  in.topk_ids = *kernels::EmptyHostTensor(DataType::kInt32, {t, k});
  int32_t* ids = in.topk_ids.mutable_data_as<int32_t>();
  std::vector<int32_t> pool;
  for (int64_t e = 0; e < kExperts; ++e) {
    if (step.routing != Routing::kOneRank || placement[e] == static_cast<uint32_t>(step.target)) {
      pool.push_back(static_cast<int32_t>(e));
    }
  }
  for (int64_t tok = 0; tok < t; ++tok) {
    std::shuffle(pool.begin(), pool.end(), rng);
    for (int64_t j = 0; j < k; ++j) {
      switch (step.routing) {
        case Routing::kRandom:
          ids[tok * k + j] = pool[j];
          break;
        case Routing::kOneExpert:
          ids[tok * k + j] = step.target;
          break;
        case Routing::kOneRank:
          ids[tok * k + j] = pool[std::uniform_int_distribution<size_t>(0, pool.size() - 1)(rng)];
          break;
      }
    }
  }
  return in;
}

// Unquantized LinearWeights of expert weights (undefined: not held).
inline std::vector<kernels::LinearWeight> Linears(const std::vector<Tensor>& ws) {
  std::vector<kernels::LinearWeight> out;
  out.reserve(ws.size());
  for (const Tensor& w : ws) out.push_back(kernels::LinearWeight::Unquantized(w));
  return out;
}

// Dispatch → GroupedExpertMatMul(weights) → Combine; the outputs as floats.
inline std::vector<float> RunLayer(kernels::Backend& backend, TokenDispatcher& dispatcher,
                                   const RankInputs& in, const std::vector<Tensor>& weights,
                                   absl::Status* status) {
  const int64_t t = in.hidden.shape[0];
  auto dispatched = dispatcher.Dispatch(in.hidden, in.topk_ids, in.topk_weights);
  if (!dispatched.ok()) {
    *status = dispatched.status();
    return {};
  }
  Tensor expert_out = *backend.Empty(DataType::kFloat32, {dispatched->rows.shape[0], kHidden});
  absl::Status gemm = backend.GroupedExpertMatMul(dispatched->rows, dispatched->expert_offsets,
                                                  Linears(weights), &expert_out);
  Tensor out = *backend.Empty(DataType::kFloat32, {t, kHidden});
  absl::Status combined = dispatcher.Combine(expert_out, &out);
  *status = !gemm.ok() ? gemm : combined;
  const float* p = out.data_as<float>();
  return std::vector<float>(p, p + t * kHidden);
}

inline std::vector<float> Reference(kernels::Backend& backend, const RankInputs& in,
                                    const std::vector<Tensor>& all_experts) {
  LocalTokenDispatcher local(backend, kExperts);
  absl::Status status;
  std::vector<float> out = RunLayer(backend, local, in, all_experts, &status);
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

// max |got - want| / max |want|.
inline double RelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return INFINITY;
  double diff = 0.0, scale = 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return got.empty() ? 0.0 : diff / scale;
}

inline std::vector<Tensor> LocalExperts(const std::vector<Tensor>& all,
                                        const std::vector<uint32_t>& placement, int rank) {
  std::vector<Tensor> local(all.size());
  for (size_t e = 0; e < all.size(); ++e) {
    if (placement[e] == static_cast<uint32_t>(rank)) local[e] = all[e];
  }
  return local;
}

inline comm::GlooOptions Options(int rank, int world, const std::string& prefix,
                                 milliseconds timeout) {
  comm::GlooOptions o;
  o.rank = rank;
  o.world_size = world;
  o.key_prefix = prefix;
  o.timeout = timeout;
  return o;
}

// Forms a Gloo group of `world` ranks and runs `body` on each rank's thread.
inline void RunRanks(int world, milliseconds timeout, const std::string& prefix,
                     const std::function<void(comm::Communicator&)>& body) {
  comm::InMemoryRendezvous rendezvous;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      auto c = comm::GlooCommunicator::Create(Options(r, world, prefix, timeout), rendezvous);
      ASSERT_TRUE(c.ok()) << c.status();
      body(**c);
    });
  }
  for (std::thread& t : threads) t.join();
}

struct ExchangeRecord {
  int layer = 0;
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  std::vector<int64_t> rows_per_expert;
  std::vector<int64_t> rows_per_rank;
  bool timed = false;
};

class Recorder final : public MoeExchangeObserver {
 public:
  void OnMoeExchange(const MoeExchangeStats& s) override {
    records.push_back({s.layer,
                       s.bytes_sent,
                       s.bytes_received,
                       {s.rows_per_expert.begin(), s.rows_per_expert.end()},
                       {s.rows_per_rank.begin(), s.rows_per_rank.end()},
                       s.timed});
    EXPECT_GE(s.dispatch_seconds, 0.0);
    EXPECT_GE(s.combine_seconds, 0.0);
  }
  std::vector<ExchangeRecord> records;
};

// Token counts per rank cycle through `pattern`; zeros give ranks without tokens.
inline std::vector<int64_t> Tokens(int world, std::vector<int64_t> pattern) {
  std::vector<int64_t> t(world);
  for (int r = 0; r < world; ++r) t[r] = pattern[r % pattern.size()];
  return t;
}

inline std::vector<Step> Steps(int world) {
  return {
      {Routing::kRandom, 0, Tokens(world, {5, 9, 0, 12})},
      {Routing::kRandom, 0, Tokens(world, {0, 7, 3})},
      {Routing::kRandom, 0, Tokens(world, {0})},  // no tokens anywhere
      {Routing::kOneExpert, 5, Tokens(world, {6, 0, 11, 2})},
      {Routing::kOneRank, world - 1, Tokens(world, {4, 7, 10, 13})},
      {Routing::kOneRank, 0, Tokens(world, {11, 0})},
      {Routing::kRandom, 0, Tokens(world, {30})},
      {Routing::kRandom, 0, Tokens(world, {1, 0, 2})},
  };
}

}  // namespace epserve::moe
