#include "worker/kv_cache/kv_cache.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace epserve::kv_cache {

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
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCache: dtype: expected float32, bfloat16 or float16, found ",
        DataTypeName(options.dtype)));
  }
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KvCache: shape: expected positive layers, kv heads and head_dim, found ",
        shape.num_layers, ", ", shape.num_kv_heads, ", ", shape.head_dim));
  }
  KvCache cache;
  cache.shape_ = shape;
  cache.options_ = options;
  const std::vector<int64_t> pool = {options.num_blocks, options.block_size, shape.num_kv_heads,
                                     shape.head_dim};
  for (int layer = 0; layer < shape.num_layers; ++layer) {
    ASSIGN_OR_RETURN(kernels::Tensor k, backend.Empty(options.dtype, pool));
    ASSIGN_OR_RETURN(kernels::Tensor v, backend.Empty(options.dtype, pool));
    cache.k_.push_back(std::move(k));
    cache.v_.push_back(std::move(v));
  }
  return cache;
}

uint64_t KvCache::bytes() const {
  uint64_t total = 0;
  for (size_t i = 0; i < k_.size(); ++i) total += k_[i].nbytes() + v_[i].nbytes();
  return total;
}

int64_t BlocksForTokens(int64_t num_tokens, int64_t block_size) {
  return (num_tokens + block_size - 1) / block_size;
}

}  // namespace epserve::kv_cache
