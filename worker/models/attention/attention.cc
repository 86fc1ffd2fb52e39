#include "worker/models/attention/attention.h"

#include "absl/strings/str_cat.h"
#include "worker/models/attention/gqa_attention.h"

namespace epserve::models {
namespace {

absl::Status NotRun(int layer, absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat(
      "layer ", layer, ": attention ", what, " is not supported by the worker (supported: ",
      AttentionKindName(AttentionKind::kGqa), " with rope, unchunked)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Attention>> CreateAttention(const AttentionSpec& spec, int layer,
                                                           float norm_eps,
                                                           const AttentionWeights* weights) {
  if (spec.kind != AttentionKind::kGqa) {
    return NotRun(layer, absl::StrCat("kind '", AttentionKindName(spec.kind), "'"));
  }
  if (!spec.use_rope) return NotRun(layer, "use_rope = false (NoPE)");
  if (spec.chunk_size > 0) {
    return NotRun(layer, absl::StrCat("chunk_size = ", spec.chunk_size, " (chunked-local)"));
  }
  return std::make_unique<GqaAttention>(spec, norm_eps, weights);
}

kv_cache::KvPoolSpec KvPoolFor(const AttentionSpec& spec) {
  switch (spec.kind) {
    case AttentionKind::kGqa:
      return kv_cache::KvPoolSpec::KeyValue(spec.num_kv_heads, spec.head_dim);
    case AttentionKind::kMla:
      return kv_cache::KvPoolSpec::Latent(spec.latent_dim);
  }
  return {};
}

kv_cache::KvCacheShape KvCacheShapeOf(const ModelDescription& desc) {
  kv_cache::KvCacheShape shape;
  shape.layers.reserve(desc.layers.size());
  for (const LayerSpec& layer : desc.layers) shape.layers.push_back(KvPoolFor(layer.attention));
  return shape;
}

}  // namespace epserve::models
