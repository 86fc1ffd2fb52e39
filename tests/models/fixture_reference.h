// Reads a fixture's reference.json + logits.bin (docs/fixtures.md): the
// prompts, their transformers float32 logits at every position and their
// 16-token greedy continuations.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace epserve::models::testing {

struct ReferencePrompt {
  std::string name;
  std::vector<int32_t> ids;
  std::vector<float> logits;  // [ids.size(), vocab] row-major
  float max_abs_logit = 0.0f;
  std::vector<int32_t> greedy_new_tokens;
};

struct FixtureReference {
  std::string fixture;
  int64_t vocab_size = 0;
  std::vector<ReferencePrompt> prompts;
};

absl::StatusOr<FixtureReference> LoadFixtureReference(const std::string& dir);

// Where a fixture's model files are (checkpoints/tiny-random-qwen3-moe keeps its own;
// every other fixture directory holds its checkpoint).
std::string FixtureModelDir(const std::string& fixture);
std::string FixtureReferenceDir(const std::string& fixture);

}  // namespace epserve::models::testing
