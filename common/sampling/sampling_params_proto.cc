#include "common/sampling/sampling_params_proto.h"

#include <cstdint>
#include <limits>

namespace epserve::sampling {

SamplingParams SamplingParamsFromProto(const epserve::v1::SamplingParams& proto) {
  SamplingParams p;
  p.temperature = proto.has_temperature() ? proto.temperature() : 1.0f;
  p.top_p = proto.has_top_p() ? proto.top_p() : 1.0f;
  p.top_k = proto.top_k();
  p.min_p = proto.min_p();
  if (proto.has_seed()) p.seed = proto.seed();
  p.min_tokens = proto.min_tokens();
  p.stop_token_ids.reserve(static_cast<size_t>(proto.stop_token_ids_size()));
  for (uint32_t id : proto.stop_token_ids()) {
    constexpr uint32_t kMax = static_cast<uint32_t>(std::numeric_limits<int32_t>::max());
    p.stop_token_ids.push_back(static_cast<int32_t>(id > kMax ? kMax : id));
  }
  p.ignore_eos = proto.ignore_eos();
  p.presence_penalty = proto.presence_penalty();
  p.frequency_penalty = proto.frequency_penalty();
  p.repetition_penalty = proto.has_repetition_penalty() ? proto.repetition_penalty() : 1.0f;
  p.logprobs = proto.logprobs();
  p.top_logprobs = proto.top_logprobs();
  return p;
}

epserve::v1::SamplingParams SamplingParamsToProto(const SamplingParams& params) {
  epserve::v1::SamplingParams proto;
  proto.set_temperature(params.temperature);
  proto.set_top_p(params.top_p);
  proto.set_top_k(params.top_k);
  proto.set_min_p(params.min_p);
  if (params.seed.has_value()) proto.set_seed(*params.seed);
  proto.set_min_tokens(params.min_tokens);
  for (int32_t id : params.stop_token_ids) {
    // Negative ids are invalid for the sampler too; they map to UINT32_MAX,
    // which stays outside every vocabulary.
    proto.add_stop_token_ids(id < 0 ? std::numeric_limits<uint32_t>::max()
                                    : static_cast<uint32_t>(id));
  }
  proto.set_ignore_eos(params.ignore_eos);
  proto.set_presence_penalty(params.presence_penalty);
  proto.set_frequency_penalty(params.frequency_penalty);
  proto.set_repetition_penalty(params.repetition_penalty);
  proto.set_logprobs(params.logprobs);
  proto.set_top_logprobs(params.top_logprobs);
  return proto;
}

}  // namespace epserve::sampling
