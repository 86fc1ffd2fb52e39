// The MoE block staged against the dense MLP, on tiny weights built here:
// routing forced to one expert equals that expert as a dense SwiGLU MLP;
// identical experts under top-2 renormalised routing equal one of them; a
// token routed to an expert this worker does not hold is an error; the
// dispatcher refuses calls out of order.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kernels/registry.h"
#include "worker/models/mlp_block.h"
#include "worker/models/offline_runner.h"
#include "worker/moe/moe_block.h"
#include "worker/moe/token_dispatcher.h"

namespace epserve::moe {
namespace {

using models::DenseMlpForward;
using models::MlpWeights;
using models::MoeWeights;
using models::ToHostFloats;

constexpr int64_t kTokens = 5, kHidden = 8, kWidth = 6, kExperts = 4;

kernels::Tensor Filled(std::vector<int64_t> shape, std::mt19937& rng, float lo, float hi) {
  kernels::Tensor t = *kernels::EmptyHostTensor(DataType::kFloat32, std::move(shape));
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.mutable_data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

kernels::LinearWeight Linear(kernels::Tensor w) {
  return kernels::LinearWeight::Unquantized(std::move(w));
}

MlpWeights RandomMlp(std::mt19937& rng) {
  return {Linear(Filled({kWidth, kHidden}, rng, -0.5f, 0.5f)),
          Linear(Filled({kWidth, kHidden}, rng, -0.5f, 0.5f)),
          Linear(Filled({kHidden, kWidth}, rng, -0.5f, 0.5f))};
}

// Router rows: +1 for the `favoured` experts, -1 for the others; with
// positive inputs the favoured experts win every token.
kernels::LinearWeight Router(const std::vector<int>& favoured) {
  kernels::Tensor r = *kernels::EmptyHostTensor(DataType::kFloat32, {kExperts, kHidden});
  float* p = r.mutable_data_as<float>();
  for (int64_t e = 0; e < kExperts; ++e) {
    const bool fav = std::find(favoured.begin(), favoured.end(), e) != favoured.end();
    for (int64_t j = 0; j < kHidden; ++j) p[e * kHidden + j] = fav ? 1.0f : -1.0f;
  }
  return Linear(r);
}

std::vector<float> Host(kernels::Backend& b, const kernels::Tensor& t) {
  return *ToHostFloats(b, t);
}

class MoeBlockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = *kernels::CreateBackend(kernels::DeviceSpec{});
    x_ = Filled({kTokens, kHidden}, rng_, 0.1f, 1.0f);
  }
  kernels::Tensor Run(const MoeShape& shape, const MoeWeights& w, absl::Status* status) {
    LocalTokenDispatcher dispatcher(*backend_, kExperts);
    kernels::Tensor out = *backend_->Empty(DataType::kFloat32, {kTokens, kHidden});
    *status = MoeBlock(shape, &w).Forward(*backend_, dispatcher, x_, &out);
    return out;
  }
  std::vector<float> Dense(const MlpWeights& w) {
    kernels::Tensor out = *backend_->Empty(DataType::kFloat32, {kTokens, kHidden});
    EXPECT_TRUE(DenseMlpForward(*backend_, w, x_, &out).ok());
    return Host(*backend_, out);
  }

  std::mt19937 rng_{1234};
  std::unique_ptr<kernels::Backend> backend_;
  kernels::Tensor x_;  // [T, H], positive
};

TEST_F(MoeBlockTest, OneRoutedExpertEqualsThatExpertAsDenseMlp) {
  MoeWeights w;
  w.router = Router({2});
  std::vector<MlpWeights> experts;
  for (int e = 0; e < kExperts; ++e) experts.push_back(RandomMlp(rng_));
  for (const MlpWeights& e : experts) {
    w.expert_gate.push_back(e.gate_proj);
    w.expert_up.push_back(e.up_proj);
    w.expert_down.push_back(e.down_proj);
  }
  absl::Status status;
  kernels::Tensor out = Run({kExperts, {.top_k = 1, .renormalize = true}}, w, &status);
  ASSERT_TRUE(status.ok()) << status;
  const std::vector<float> got = Host(*backend_, out);
  const std::vector<float> want = Dense(experts[2]);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6f) << i;
}

TEST_F(MoeBlockTest, IdenticalExpertsUnderRenormalisedTopTwoEqualOne) {
  MlpWeights expert = RandomMlp(rng_);
  MoeWeights w;
  w.router = Router({1, 3});
  w.expert_gate.assign(kExperts, expert.gate_proj);
  w.expert_up.assign(kExperts, expert.up_proj);
  w.expert_down.assign(kExperts, expert.down_proj);
  absl::Status status;
  kernels::Tensor out = Run({kExperts, {.top_k = 2, .renormalize = true}}, w, &status);
  ASSERT_TRUE(status.ok()) << status;
  const std::vector<float> got = Host(*backend_, out);
  const std::vector<float> want = Dense(expert);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5f) << i;
}

TEST_F(MoeBlockTest, SharedExpertAddsSigmoidGatedDenseMlp) {
  MlpWeights expert = RandomMlp(rng_);
  MlpWeights shared = RandomMlp(rng_);
  MoeWeights w;
  w.router = Router({0});
  w.expert_gate.assign(kExperts, expert.gate_proj);
  w.expert_up.assign(kExperts, expert.up_proj);
  w.expert_down.assign(kExperts, expert.down_proj);
  w.shared_expert = shared;
  w.shared_expert_gate = Linear(Filled({1, kHidden}, rng_, -0.5f, 0.5f));
  absl::Status status;
  kernels::Tensor out = Run({kExperts, {.top_k = 1, .renormalize = true}}, w, &status);
  ASSERT_TRUE(status.ok()) << status;
  const std::vector<float> got = Host(*backend_, out);
  const std::vector<float> routed = Dense(expert), shared_out = Dense(shared);
  const float* x = x_.data_as<float>();
  const float* g = w.shared_expert_gate.weight.data_as<float>();
  for (int64_t t = 0; t < kTokens; ++t) {
    double logit = 0;
    for (int64_t j = 0; j < kHidden; ++j) logit += double(x[t * kHidden + j]) * g[j];
    const double s = 1.0 / (1.0 + std::exp(-logit));
    for (int64_t j = 0; j < kHidden; ++j) {
      const size_t i = static_cast<size_t>(t * kHidden + j);
      EXPECT_NEAR(got[i], routed[i] + s * shared_out[i], 1e-5) << i;
    }
  }
}

TEST_F(MoeBlockTest, RoutingToAnExpertNotHeldIsAnError) {
  MlpWeights expert = RandomMlp(rng_);
  MoeWeights w;
  w.router = Router({3});
  w.expert_gate.assign(kExperts, expert.gate_proj);
  w.expert_up.assign(kExperts, expert.up_proj);
  w.expert_down.assign(kExperts, expert.down_proj);
  w.expert_gate[3] = w.expert_up[3] = w.expert_down[3] = kernels::LinearWeight{};
  absl::Status status;
  Run({kExperts, {.top_k = 1, .renormalize = true}}, w, &status);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), ::testing::HasSubstr("3"));
}

TEST_F(MoeBlockTest, DispatcherRefusesCallsOutOfOrder) {
  LocalTokenDispatcher dispatcher(*backend_, kExperts);
  kernels::Tensor ids = *backend_->Empty(DataType::kInt32, {kTokens, 1});
  kernels::Tensor weights = *backend_->Empty(DataType::kFloat32, {kTokens, 1});
  for (int64_t t = 0; t < kTokens; ++t) {
    ids.mutable_data_as<int32_t>()[t] = static_cast<int32_t>(t % kExperts);
    weights.mutable_data_as<float>()[t] = 1.0f;
  }
  kernels::Tensor out = *backend_->Empty(DataType::kFloat32, {kTokens, kHidden});
  EXPECT_EQ(dispatcher.Combine(x_, &out).code(), absl::StatusCode::kFailedPrecondition);
  auto d = dispatcher.Dispatch(x_, ids, weights);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(dispatcher.Dispatch(x_, ids, weights).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Identity experts: combine gives the input back.
  ASSERT_TRUE(dispatcher.Combine(d->rows, &out).ok());
  EXPECT_EQ(Host(*backend_, out), Host(*backend_, x_));
}

}  // namespace
}  // namespace epserve::moe
