#include "worker/sampling/penalties.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace epserve::sampling {
namespace {

absl::Status CheckIds(absl::string_view name, absl::Span<const int32_t> ids, int64_t vocab) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(name, "[", i, "] = ", ids[i],
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTokenIds(absl::Span<const int32_t> prompt_ids,
                           absl::Span<const int32_t> output_ids, int64_t vocab) {
  if (absl::Status s = CheckIds("prompt_ids", prompt_ids, vocab); !s.ok()) return s;
  return CheckIds("output_ids", output_ids, vocab);
}

void ApplyPenalties(absl::Span<float> logits, const SamplingParams& params,
                    absl::Span<const int32_t> prompt_ids, absl::Span<const int32_t> output_ids,
                    PenaltyScratch* scratch) {
  const bool repetition = params.repetition_penalty != 1.0f;
  const bool additive = params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f;
  if (!repetition && !additive) return;
  PenaltyScratch local;
  if (scratch == nullptr) scratch = &local;
  const size_t vocab = logits.size();
  if (scratch->output_count.size() < vocab) scratch->output_count.assign(vocab, 0);
  if (scratch->seen.size() < vocab) scratch->seen.assign(vocab, 0);
  std::vector<uint32_t>& count = scratch->output_count;
  std::vector<uint8_t>& seen = scratch->seen;

  for (int32_t id : output_ids) ++count[id];
  if (repetition) {
    const float r = params.repetition_penalty;
    auto penalise = [&](int32_t id) {
      if (seen[id]) return;
      seen[id] = 1;
      float& x = logits[id];
      x = x > 0.0f ? x / r : x * r;
    };
    for (int32_t id : prompt_ids) penalise(id);
    for (int32_t id : output_ids) penalise(id);
  }
  if (additive) {
    for (int32_t id : output_ids) {
      if (count[id] == 0) continue;  // already handled (duplicate id)
      float& x = logits[id];
      x -= params.frequency_penalty * static_cast<float>(count[id]);
      x -= params.presence_penalty;
      count[id] = 0;
    }
  }
  // Leave the scratch zeroed for the next row.
  for (int32_t id : output_ids) count[id] = 0;
  if (repetition) {
    for (int32_t id : prompt_ids) seen[id] = 0;
    for (int32_t id : output_ids) seen[id] = 0;
  }
}

void ApplyMinTokensMask(absl::Span<float> logits, const SamplingParams& params,
                        size_t num_generated, absl::Span<const int32_t> eos_token_ids) {
  if (num_generated >= params.min_tokens) return;
  const int64_t vocab = static_cast<int64_t>(logits.size());
  auto mask = [&](int32_t id) {
    if (id >= 0 && id < vocab) logits[id] = -std::numeric_limits<float>::infinity();
  };
  for (int32_t id : params.stop_token_ids) mask(id);
  if (!params.ignore_eos) {
    for (int32_t id : eos_token_ids) mask(id);
  }
}

}  // namespace epserve::sampling
