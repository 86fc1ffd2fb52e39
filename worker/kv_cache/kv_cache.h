// The paged KV cache of one worker: for every decoder layer a pool described
// by its KvPoolSpec,
//
//   kKeyValue: k_cache[layer], v_cache[layer]   [num_blocks, block_size, num_kv_heads, head_dim]
//   kLatent:   latent[layer]                    [num_blocks, block_size, latent_dim]
//
// allocated through the Backend (device memory), in float32, bfloat16 or
// float16. Every layer has the same blocks: token j of a sequence lives in
// block block_table[j / block_size], row j % block_size, of every layer's pool;
// block tables are chosen by the caller (the router in the cluster,
// BlockAllocator in tests and epserve-run), never by the cache.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace epserve::kv_cache {

struct KvCacheOptions {
  int64_t num_blocks = 0;               // > 0
  int64_t block_size = 16;              // tokens per block, > 0
  DataType dtype = DataType::kFloat32;  // float32 | bfloat16 | float16, every pool
};

enum class KvPoolKind {
  kKeyValue,  // separate K and V per head (GQA)
  kLatent,    // one compressed latent per token (MLA)
};

const char* KvPoolKindName(KvPoolKind kind);  // "key_value", "latent"

// What one layer caches per token.
struct KvPoolSpec {
  KvPoolKind kind = KvPoolKind::kKeyValue;
  int64_t num_kv_heads = 0;  // kKeyValue: Hkv
  int64_t head_dim = 0;      // kKeyValue: D
  int64_t latent_dim = 0;    // kLatent: the latent's width

  static KvPoolSpec KeyValue(int64_t num_kv_heads, int64_t head_dim);
  static KvPoolSpec Latent(int64_t latent_dim);

  // Elements one token takes in this layer: 2 * Hkv * D (K and V), or latent_dim.
  int64_t elements_per_token() const;
  // Bytes one block of `block_size` tokens takes in this layer.
  uint64_t BlockBytes(int64_t block_size, DataType dtype) const;
  // "key_value(2 x 8)", "latent(512)": for error messages.
  std::string ToString() const;

  bool operator==(const KvPoolSpec& o) const = default;
};

// The pools of a whole model, one per layer.
struct KvCacheShape {
  std::vector<KvPoolSpec> layers;

  int num_layers() const { return static_cast<int>(layers.size()); }
  // Bytes one block takes summed over every layer's pool.
  uint64_t BlockBytes(int64_t block_size, DataType dtype) const;

  bool operator==(const KvCacheShape& o) const = default;
};

// `num_layers` K/V pools of the same shape (every layer of today's models).
KvCacheShape UniformKeyValueShape(int num_layers, int64_t num_kv_heads, int64_t head_dim);

// One layer's allocated pools: k and v for kKeyValue, latent for kLatent
// (the others undefined).
struct KvPool {
  KvPoolSpec spec;
  kernels::Tensor k;       // [num_blocks, block_size, Hkv, D]
  kernels::Tensor v;       // same as k
  kernels::Tensor latent;  // [num_blocks, block_size, latent_dim]
};

class KvCache {
 public:
  // Allocates every layer's pools. The contents are uninitialised: a slot is
  // read only after a write (WriteKvCache) stored it. Errors name the bad
  // option or layer.
  static absl::StatusOr<KvCache> Create(kernels::Backend& backend, const KvCacheShape& shape,
                                        const KvCacheOptions& options);

  int num_layers() const { return static_cast<int>(pools_.size()); }
  int64_t num_blocks() const { return options_.num_blocks; }
  int64_t block_size() const { return options_.block_size; }
  DataType dtype() const { return options_.dtype; }
  const KvCacheShape& shape() const { return shape_; }
  // Tokens the cache can hold in total.
  int64_t capacity_tokens() const { return options_.num_blocks * options_.block_size; }
  // Bytes of all pools together.
  uint64_t bytes() const;

  // Layer in [0, num_layers).
  KvPool& pool(int layer) { return pools_[layer]; }
  const KvPool& pool(int layer) const { return pools_[layer]; }
  // A kKeyValue layer's pools: [num_blocks, block_size, num_kv_heads, head_dim].
  kernels::Tensor* k(int layer) { return &pools_[layer].k; }
  kernels::Tensor* v(int layer) { return &pools_[layer].v; }
  const kernels::Tensor& k(int layer) const { return pools_[layer].k; }
  const kernels::Tensor& v(int layer) const { return pools_[layer].v; }

 private:
  KvCacheShape shape_;
  KvCacheOptions options_;
  std::vector<KvPool> pools_;
};

// Blocks needed for `num_tokens` tokens (ceil division).
int64_t BlocksForTokens(int64_t num_tokens, int64_t block_size);

}  // namespace epserve::kv_cache
