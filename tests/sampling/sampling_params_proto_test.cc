// The proto <-> sampler SamplingParams conversion: documented defaults for
// unset optional fields, exact round trips, no silent wrap of large ids.
#include "common/sampling/sampling_params_proto.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace epserve::sampling {
namespace {

TEST(SamplingParamsProto, UnsetFieldsTakeTheDocumentedDefaults) {
  const sampling::SamplingParams p = SamplingParamsFromProto(epserve::v1::SamplingParams{});
  EXPECT_EQ(p.temperature, 1.0f);
  EXPECT_EQ(p.top_p, 1.0f);
  EXPECT_EQ(p.top_k, 0);
  EXPECT_EQ(p.min_p, 0.0f);
  EXPECT_FALSE(p.seed.has_value());
  EXPECT_EQ(p.min_tokens, 0u);
  EXPECT_TRUE(p.stop_token_ids.empty());
  EXPECT_FALSE(p.ignore_eos);
  EXPECT_EQ(p.presence_penalty, 0.0f);
  EXPECT_EQ(p.frequency_penalty, 0.0f);
  EXPECT_EQ(p.repetition_penalty, 1.0f);
  EXPECT_FALSE(p.logprobs);
  EXPECT_EQ(p.top_logprobs, 0u);
  EXPECT_TRUE(sampling::Validate(p, 100).ok());
}

TEST(SamplingParamsProto, ExplicitZeroTemperatureIsGreedyNotTheDefault) {
  epserve::v1::SamplingParams proto;
  proto.set_temperature(0.0f);
  proto.set_seed(0);
  const sampling::SamplingParams p = SamplingParamsFromProto(proto);
  EXPECT_TRUE(sampling::IsGreedy(p));
  ASSERT_TRUE(p.seed.has_value());
  EXPECT_EQ(*p.seed, 0u);
}

TEST(SamplingParamsProto, EveryFieldRoundTrips) {
  sampling::SamplingParams p;
  p.temperature = 0.7f;
  p.top_p = 0.9f;
  p.top_k = 40;
  p.min_p = 0.05f;
  p.seed = 1234;
  p.min_tokens = 3;
  p.stop_token_ids = {5, 7};
  p.ignore_eos = true;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = -0.25f;
  p.repetition_penalty = 1.1f;
  p.logprobs = true;
  p.top_logprobs = 4;
  const sampling::SamplingParams q = SamplingParamsFromProto(SamplingParamsToProto(p));
  EXPECT_EQ(q.temperature, p.temperature);
  EXPECT_EQ(q.top_p, p.top_p);
  EXPECT_EQ(q.top_k, p.top_k);
  EXPECT_EQ(q.min_p, p.min_p);
  EXPECT_EQ(q.seed, p.seed);
  EXPECT_EQ(q.min_tokens, p.min_tokens);
  EXPECT_EQ(q.stop_token_ids, p.stop_token_ids);
  EXPECT_EQ(q.ignore_eos, p.ignore_eos);
  EXPECT_EQ(q.presence_penalty, p.presence_penalty);
  EXPECT_EQ(q.frequency_penalty, p.frequency_penalty);
  EXPECT_EQ(q.repetition_penalty, p.repetition_penalty);
  EXPECT_EQ(q.logprobs, p.logprobs);
  EXPECT_EQ(q.top_logprobs, p.top_logprobs);
  EXPECT_FALSE(SamplingParamsToProto(sampling::SamplingParams{}).has_seed());
}

TEST(SamplingParamsProto, HugeStopIdSaturatesAndFailsValidation) {
  epserve::v1::SamplingParams proto;
  proto.add_stop_token_ids(std::numeric_limits<uint32_t>::max());
  const sampling::SamplingParams p = SamplingParamsFromProto(proto);
  ASSERT_EQ(p.stop_token_ids.size(), 1u);
  EXPECT_EQ(p.stop_token_ids[0], std::numeric_limits<int32_t>::max());
  EXPECT_FALSE(sampling::Validate(p, 1000).ok());
}

}  // namespace
}  // namespace epserve::sampling
