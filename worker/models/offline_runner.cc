#include "worker/models/offline_runner.h"

#include <algorithm>
#include <filesystem>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/checkpoint/load_format.h"
#include "common/status.h"
#include "worker/weights/model_loader.h"

namespace epserve::models {

int32_t Argmax(absl::Span<const float> row) {
  int32_t best = 0;
  for (size_t i = 1; i < row.size(); ++i) {
    if (row[i] > row[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

absl::StatusOr<std::vector<float>> ToHostFloats(kernels::Backend& backend,
                                                const kernels::Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (!out.empty()) RETURN_IF_ERROR(backend.CopyToHost(t, out.data(), t.nbytes()));
  return out;
}

absl::StatusOr<std::unique_ptr<OfflineRunner>> OfflineRunner::Load(
    const OfflineRunnerOptions& options) {
  if (!std::filesystem::is_directory(options.model_dir)) {
    return absl::NotFoundError(
        absl::StrCat("model directory '", options.model_dir, "' does not exist"));
  }
  if (options.max_context_tokens <= 0 || options.block_size <= 0) {
    return absl::InvalidArgumentError("runner: max_context_tokens and block_size must be > 0");
  }
  weights::LoadOptions load;
  load.dtype = options.dtype;
  ASSIGN_OR_RETURN(load.format, checkpoint::ParseLoadFormat(options.load_format));
  load.seed = options.seed;
  load.backend = options.device.ToString();
  ASSIGN_OR_RETURN(weights::LoadedModel model,
                   weights::LoadModel(options.model_dir, options.device, {}, std::move(load)));
  const ModelDescription& desc = model.desc;
  std::unique_ptr<kernels::Backend> backend = std::move(model.backend);
  weights::ModelWeights w = std::move(*model.weights);
  kv_cache::KvCacheOptions kv;
  kv.block_size = options.block_size;
  kv.num_blocks = kv_cache::BlocksForTokens(options.max_context_tokens, options.block_size);
  kv.dtype = options.kv_cache_dtype;
  ASSIGN_OR_RETURN(kv_cache::KvCache cache,
                   kv_cache::KvCache::Create(*backend, KvCacheShapeOf(desc), kv));
  std::unique_ptr<OfflineRunner> r(
      new OfflineRunner(std::move(backend), std::move(w), std::move(cache), kv.num_blocks));
  ASSIGN_OR_RETURN(r->model_, DecoderModel::Create(r->weights_.desc(), r->weights_, *r->backend_));
  return r;
}

absl::StatusOr<std::vector<float>> OfflineRunner::PromptLogits(absl::Span<const int32_t> ids) {
  StepSequence seq;
  seq.token_ids.assign(ids.begin(), ids.end());
  seq.logits = LogitsRows::kAll;
  ASSIGN_OR_RETURN(seq.block_table,
                   allocator_.Allocate(kv_cache::BlocksForTokens(seq.context_len(),
                                                                 cache_.block_size())));
  absl::Cleanup release = [&] { allocator_.Free(seq.block_table).IgnoreError(); };
  ASSIGN_OR_RETURN(kernels::Tensor logits, model_->Forward(StepInput{{seq}}, cache_));
  return ToHostFloats(*backend_, logits);
}

absl::StatusOr<std::vector<int32_t>> OfflineRunner::GreedyGenerate(
    absl::Span<const int32_t> ids, int64_t max_new_tokens, absl::Span<const int64_t> stop_ids) {
  return Generate(ids, max_new_tokens, stop_ids,
                  [](absl::Span<const float> row, absl::Span<const int32_t>) -> absl::StatusOr<int32_t> {
                    return Argmax(row);
                  });
}

absl::StatusOr<std::vector<int32_t>> OfflineRunner::Generate(absl::Span<const int32_t> ids,
                                                             int64_t max_new_tokens,
                                                             absl::Span<const int64_t> stop_ids,
                                                             const TokenPicker& pick) {
  std::vector<int32_t> out;
  if (max_new_tokens <= 0) return out;
  const int64_t total = static_cast<int64_t>(ids.size()) + max_new_tokens - 1;
  if (total > cache_.capacity_tokens()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "prompt of ", ids.size(), " tokens + ", max_new_tokens, " new tokens exceeds the KV cache (",
        cache_.capacity_tokens(), " tokens)"));
  }
  StepSequence seq;
  seq.token_ids.assign(ids.begin(), ids.end());
  seq.logits = LogitsRows::kLast;
  ASSIGN_OR_RETURN(seq.block_table,
                   allocator_.Allocate(kv_cache::BlocksForTokens(total, cache_.block_size())));
  absl::Cleanup release = [&] { allocator_.Free(seq.block_table).IgnoreError(); };
  const int64_t vocab = desc().vocab_size;
  while (true) {
    ASSIGN_OR_RETURN(kernels::Tensor logits, model_->Forward(StepInput{{seq}}, cache_));
    ASSIGN_OR_RETURN(std::vector<float> row, ToHostFloats(*backend_, logits));
    ASSIGN_OR_RETURN(int32_t next,
                     pick(absl::MakeConstSpan(row).subspan(0, static_cast<size_t>(vocab)), out));
    out.push_back(next);
    if (static_cast<int64_t>(out.size()) == max_new_tokens) break;
    if (std::find(stop_ids.begin(), stop_ids.end(), out.back()) != stop_ids.end()) break;
    seq.num_cached = seq.context_len();
    seq.token_ids = {out.back()};
  }
  return out;
}

}  // namespace epserve::models
