// A single-process model runner for epserve-run and tests: loads a model
// directory on one backend, owns a KV cache and a BlockAllocator, and runs
// whole prompts (all-position logits) or greedy generation (prefill, then one
// token per decode step through the KV cache).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "kernels/ops.h"
#include "worker/kv_cache/block_allocator.h"
#include "worker/kv_cache/kv_cache.h"
#include "worker/models/decoder_model.h"
#include "worker/weights/weight_loader.h"

namespace epserve::models {

struct OfflineRunnerOptions {
  std::string model_dir;
  std::string dtype = "auto";  // weight dtype policy: auto | bfloat16 | float16 | float32
  DataType kv_cache_dtype = DataType::kFloat32;
  int64_t block_size = 16;
  int64_t max_context_tokens = 4096;  // KV cache capacity for one sequence
  kernels::DeviceSpec device;         // cpu, or cuda:K
  std::string load_format = "auto";   // auto | dummy
  uint64_t seed = 0;                  // dummy weights
};

class OfflineRunner {
 public:
  // Errors name the directory (missing config.json, bad dtype, missing
  // tensors, unsupported architecture).
  static absl::StatusOr<std::unique_ptr<OfflineRunner>> Load(const OfflineRunnerOptions& options);

  const ModelDescription& desc() const { return weights_.desc(); }
  const weights::ModelWeights& weights() const { return weights_; }
  DecoderModel& model() { return *model_; }
  kv_cache::KvCache& cache() { return cache_; }
  kv_cache::BlockAllocator& allocator() { return allocator_; }

  // Logits after every token of one full prefill: [ids.size() * vocab] row-major.
  absl::StatusOr<std::vector<float>> PromptLogits(absl::Span<const int32_t> ids);
  // Greedy (argmax, lowest id on ties) continuation of `ids`: prefill, then
  // up to max_new_tokens - 1 decode steps of one token. Stops after a token
  // of `stop_ids` (which is returned); empty: runs to max_new_tokens.
  absl::StatusOr<std::vector<int32_t>> GreedyGenerate(absl::Span<const int32_t> ids,
                                                      int64_t max_new_tokens,
                                                      absl::Span<const int64_t> stop_ids = {});

  // Picks the next token from the logits row [vocab] after `output` (the
  // tokens generated so far).
  using TokenPicker = std::function<absl::StatusOr<int32_t>(
      absl::Span<const float> row, absl::Span<const int32_t> output)>;
  // Like GreedyGenerate with `pick` choosing each token.
  absl::StatusOr<std::vector<int32_t>> Generate(absl::Span<const int32_t> ids,
                                                int64_t max_new_tokens,
                                                absl::Span<const int64_t> stop_ids,
                                                const TokenPicker& pick);

 private:
  OfflineRunner(std::unique_ptr<kernels::Backend> backend, weights::ModelWeights weights,
                kv_cache::KvCache cache, int64_t num_blocks)
      : backend_(std::move(backend)),
        weights_(std::move(weights)),
        cache_(std::move(cache)),
        allocator_(num_blocks) {}

  std::unique_ptr<kernels::Backend> backend_;
  weights::ModelWeights weights_;
  kv_cache::KvCache cache_;
  kv_cache::BlockAllocator allocator_;
  std::unique_ptr<DecoderModel> model_;
};

// Index of the largest value (lowest index on ties) of `row`.
int32_t Argmax(absl::Span<const float> row);

// Copies a float32 device tensor to a host vector.
absl::StatusOr<std::vector<float>> ToHostFloats(kernels::Backend& backend,
                                                const kernels::Tensor& t);

}  // namespace epserve::models
