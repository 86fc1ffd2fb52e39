#include "worker/kv_cache/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::kv_cache {

const char* KvPoolKindName(KvPoolKind kind) {
  switch (kind) {
    case KvPoolKind::kKeyValue:
      return "key_value";
    case KvPoolKind::kLatent:
      return "latent";
  }
  return "?";
}

KvPoolSpec KvPoolSpec::KeyValue(int64_t num_kv_heads, int64_t head_dim) {
  KvPoolSpec s;
  s.kind = KvPoolKind::kKeyValue;
  s.num_kv_heads = num_kv_heads;
  s.head_dim = head_dim;
  return s;
}

KvPoolSpec KvPoolSpec::Latent(int64_t latent_dim) {
  KvPoolSpec s;
  s.kind = KvPoolKind::kLatent;
  s.latent_dim = latent_dim;
  return s;
}

int64_t KvPoolSpec::elements_per_token() const {
  switch (kind) {
    case KvPoolKind::kKeyValue:
      return 2 * num_kv_heads * head_dim;
    case KvPoolKind::kLatent:
      return latent_dim;
  }
  return 0;
}

uint64_t KvPoolSpec::BlockBytes(int64_t block_size, DataType dtype) const {
  return static_cast<uint64_t>(block_size) * static_cast<uint64_t>(elements_per_token()) *
         DataTypeSize(dtype);
}

std::string KvPoolSpec::ToString() const {
  switch (kind) {
    case KvPoolKind::kKeyValue:
      return absl::StrCat("key_value(", num_kv_heads, " x ", head_dim, ")");
    case KvPoolKind::kLatent:
      return absl::StrCat("latent(", latent_dim, ")");
  }
  return "?";
}

uint64_t KvCacheShape::BlockBytes(int64_t block_size, DataType dtype) const {
  uint64_t total = 0;
  for (const KvPoolSpec& layer : layers) total += layer.BlockBytes(block_size, dtype);
  return total;
}

KvCacheShape UniformKeyValueShape(int num_layers, int64_t num_kv_heads, int64_t head_dim) {
  KvCacheShape shape;
  shape.layers.assign(std::max(num_layers, 0), KvPoolSpec::KeyValue(num_kv_heads, head_dim));
  return shape;
}

absl::StatusOr<KvCache> KvCache::Create(kernels::Backend& backend, const KvCacheShape& shape,
                                        const KvCacheOptions& options) {
  if (options.num_blocks <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache: num_blocks: expected > 0, found ", options.num_blocks));
  }
  if (options.block_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache: block_size: expected > 0, found ", options.block_size));
  }
  if (options.dtype != DataType::kFloat32 && options.dtype != DataType::kBFloat16 &&
      options.dtype != DataType::kFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache: dtype: expected float32, bfloat16 or float16, found ",
                     DataTypeName(options.dtype)));
  }
  if (shape.layers.empty()) {
    return absl::InvalidArgumentError("KvCache: shape: expected at least one layer, found none");
  }
  for (int layer = 0; layer < shape.num_layers(); ++layer) {
    const KvPoolSpec& s = shape.layers[layer];
    const bool ok =
        s.kind == KvPoolKind::kKeyValue ? s.num_kv_heads > 0 && s.head_dim > 0 : s.latent_dim > 0;
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "KvCache: shape: layer ", layer, ": expected positive sizes, found ", s.ToString()));
    }
  }
  KvCache cache;
  cache.shape_ = shape;
  cache.options_ = options;
  for (const KvPoolSpec& s : shape.layers) {
    KvPool pool;
    pool.spec = s;
    if (s.kind == KvPoolKind::kKeyValue) {
      const std::vector<int64_t> dims = {options.num_blocks, options.block_size, s.num_kv_heads,
                                         s.head_dim};
      ASSIGN_OR_RETURN(pool.k, backend.Empty(options.dtype, dims));
      ASSIGN_OR_RETURN(pool.v, backend.Empty(options.dtype, dims));
    } else {
      ASSIGN_OR_RETURN(
          pool.latent,
          backend.Empty(options.dtype, {options.num_blocks, options.block_size, s.latent_dim}));
    }
    cache.pools_.push_back(std::move(pool));
  }
  return cache;
}

uint64_t KvCache::bytes() const {
  uint64_t total = 0;
  for (const KvPool& p : pools_) {
    for (const kernels::Tensor* t : {&p.k, &p.v, &p.latent}) {
      if (t->defined()) total += t->nbytes();
    }
  }
  return total;
}

int64_t BlocksForTokens(int64_t num_tokens, int64_t block_size) {
  return (num_tokens + block_size - 1) / block_size;
}

}  // namespace epserve::kv_cache
