// The paged KV cache of one worker: for every decoder layer a K and a V pool
//
//   k_cache[layer], v_cache[layer]   [num_blocks, block_size, num_kv_heads, head_dim]
//
// allocated through the Backend (device memory), in float32, bfloat16 or
// float16. Token j of a sequence lives in block block_table[j / block_size],
// row j % block_size; block tables are chosen by the caller (the router in the
// cluster, BlockAllocator in tests and epserve-run), never by the cache.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace epserve::kv_cache {

struct KvCacheOptions {
  int64_t num_blocks = 0;  // > 0
  int64_t block_size = 16;  // tokens per block, > 0
  DataType dtype = DataType::kFloat32;  // float32 | bfloat16 | float16
};

struct KvCacheShape {
  int num_layers = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
};

class KvCache {
 public:
  // Allocates 2 * num_layers pools. The contents are uninitialised: a slot
  // is read only after WriteKvCache wrote it. Errors name the bad option.
  static absl::StatusOr<KvCache> Create(kernels::Backend& backend, const KvCacheShape& shape,
                                        const KvCacheOptions& options);

  int num_layers() const { return static_cast<int>(k_.size()); }
  int64_t num_blocks() const { return options_.num_blocks; }
  int64_t block_size() const { return options_.block_size; }
  DataType dtype() const { return options_.dtype; }
  const KvCacheShape& shape() const { return shape_; }
  // Tokens the cache can hold in total.
  int64_t capacity_tokens() const { return options_.num_blocks * options_.block_size; }
  // Bytes of all pools together.
  uint64_t bytes() const;

  // [num_blocks, block_size, num_kv_heads, head_dim]; layer in [0, num_layers).
  kernels::Tensor* k(int layer) { return &k_[layer]; }
  kernels::Tensor* v(int layer) { return &v_[layer]; }
  const kernels::Tensor& k(int layer) const { return k_[layer]; }
  const kernels::Tensor& v(int layer) const { return v_[layer]; }

 private:
  KvCacheShape shape_;
  KvCacheOptions options_;
  std::vector<kernels::Tensor> k_;
  std::vector<kernels::Tensor> v_;
};

// Blocks needed for `num_tokens` tokens (ceil division).
int64_t BlocksForTokens(int64_t num_tokens, int64_t block_size);

}  // namespace epserve::kv_cache
