// Conversion between the client API's epserve.v1.SamplingParams (carried in
// every SequencePlan) and the sampler's sampling::SamplingParams.
//
// Unset optional proto fields take their documented defaults (epserve.proto):
//   temperature 1.0, top_p 1.0, repetition_penalty 1.0, seed: none.
// Plain proto3 scalars default to 0 / false, which are also the sampler's
// defaults. Fields the sampler does not use (max_tokens, stop strings,
// include_stop_str_in_output, skip_special_tokens) are the router's and are
// neither read nor written here.
//
// The conversion never fails: it does not validate (call Validate).
// A stop_token_id above INT32_MAX saturates to INT32_MAX, which Validate then
// rejects as outside the vocabulary (no silent wrap to a negative id).
#pragma once

#include "common/sampling/sampling_params.h"
#include "epserve/v1/epserve.pb.h"

namespace epserve::sampling {

SamplingParams SamplingParamsFromProto(const epserve::v1::SamplingParams& proto);

// The inverse for the fields above; optional fields are always set (explicit
// values round-trip exactly), except seed, set only when present.
epserve::v1::SamplingParams SamplingParamsToProto(const SamplingParams& params);

}  // namespace epserve::sampling
