// KvCache allocation and BlockAllocator bookkeeping.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "kernels/registry.h"
#include "worker/kv_cache/block_allocator.h"
#include "worker/kv_cache/kv_cache.h"

namespace epserve::kv_cache {
namespace {

TEST(KvCache, AllocatesOnePoolPerLayerForKAndV) {
  auto backend = kernels::CreateBackend(kernels::DeviceSpec{});
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto cache = KvCache::Create(**backend, UniformKeyValueShape(3, 2, 8),
                               {.num_blocks = 5, .block_size = 4, .dtype = DataType::kBFloat16});
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(cache->num_layers(), 3);
  EXPECT_EQ(cache->capacity_tokens(), 20);
  for (int l = 0; l < 3; ++l) {
    EXPECT_EQ(cache->k(l)->shape, (std::vector<int64_t>{5, 4, 2, 8}));
    EXPECT_EQ(cache->v(l)->dtype, DataType::kBFloat16);
    EXPECT_NE(cache->k(l)->data(), cache->v(l)->data());
  }
  EXPECT_EQ(cache->bytes(), 3u * 2 * 5 * 4 * 2 * 8 * 2);
}

// Bytes per block summed over the layers' pools: K and V are 2 * Hkv * D
// elements a token, a latent latent_dim.
TEST(KvCacheShape, BlockBytesSumOverLayerPools) {
  const KvPoolSpec kv = KvPoolSpec::KeyValue(/*num_kv_heads=*/2, /*head_dim=*/8);
  const KvPoolSpec latent = KvPoolSpec::Latent(/*latent_dim=*/576);
  EXPECT_EQ(kv.elements_per_token(), 32);
  EXPECT_EQ(latent.elements_per_token(), 576);
  EXPECT_EQ(kv.BlockBytes(16, DataType::kBFloat16), 16u * 32 * 2);
  EXPECT_EQ(latent.BlockBytes(16, DataType::kBFloat16), 16u * 576 * 2);
  EXPECT_EQ(latent.BlockBytes(64, DataType::kFloat32), 64u * 576 * 4);
  KvCacheShape mixed;
  mixed.layers = {kv, latent, kv};
  EXPECT_EQ(mixed.BlockBytes(16, DataType::kFloat16), 2 * 16u * 32 * 2 + 16u * 576 * 2);
  EXPECT_EQ(UniformKeyValueShape(3, 2, 8).BlockBytes(16, DataType::kBFloat16),
            3u * 2 * 16 * 2 * 8 * 2);
  EXPECT_EQ(latent.ToString(), "latent(576)");
  EXPECT_EQ(kv.ToString(), "key_value(2 x 8)");
}

TEST(KvCache, AllocatesEachLayerItsPoolKind) {
  auto backend = kernels::CreateBackend(kernels::DeviceSpec{});
  ASSERT_TRUE(backend.ok()) << backend.status();
  KvCacheShape shape;
  shape.layers = {KvPoolSpec::KeyValue(2, 8), KvPoolSpec::Latent(12)};
  const KvCacheOptions options{.num_blocks = 5, .block_size = 4, .dtype = DataType::kFloat16};
  auto cache = KvCache::Create(**backend, shape, options);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(cache->shape(), shape);
  EXPECT_EQ(cache->pool(0).k.shape, (std::vector<int64_t>{5, 4, 2, 8}));
  EXPECT_FALSE(cache->pool(0).latent.defined());
  EXPECT_EQ(cache->pool(1).latent.shape, (std::vector<int64_t>{5, 4, 12}));
  EXPECT_EQ(cache->pool(1).latent.dtype, DataType::kFloat16);
  EXPECT_FALSE(cache->pool(1).k.defined());
  EXPECT_FALSE(cache->pool(1).v.defined());
  EXPECT_EQ(cache->bytes(), 5 * shape.BlockBytes(4, DataType::kFloat16));
  shape.layers[1] = KvPoolSpec::Latent(0);
  auto bad = KvCache::Create(**backend, shape, options);
  EXPECT_THAT(bad.status().message(), testing::HasSubstr("layer 1"));
  EXPECT_FALSE(KvCache::Create(**backend, KvCacheShape{}, options).ok());
}

TEST(KvCache, RejectsBadOptions) {
  auto backend = kernels::CreateBackend(kernels::DeviceSpec{});
  ASSERT_TRUE(backend.ok());
  auto zero = KvCache::Create(**backend, UniformKeyValueShape(1, 1, 8), {.num_blocks = 0});
  EXPECT_THAT(zero.status().message(), testing::HasSubstr("num_blocks"));
  auto int_cache = KvCache::Create(**backend, UniformKeyValueShape(1, 1, 8),
                                   {.num_blocks = 1, .block_size = 4, .dtype = DataType::kInt32});
  EXPECT_THAT(int_cache.status().message(), testing::HasSubstr("dtype"));
  EXPECT_EQ(BlocksForTokens(0, 16), 0);
  EXPECT_EQ(BlocksForTokens(17, 16), 2);
}

TEST(BlockAllocator, HandsOutDistinctBlocksAndReportsExhaustion) {
  BlockAllocator a(4);
  auto first = a.Allocate(3);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, (std::vector<int32_t>{0, 1, 2}));
  auto too_many = a.Allocate(2);
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(too_many.status().message(), testing::HasSubstr("need 2, 1 free of 4"));
  EXPECT_EQ(a.num_free(), 1);
  ASSERT_TRUE(a.Free({1}).ok());
  EXPECT_EQ(a.num_free(), 2);
  EXPECT_THAT(a.Free({1}).message(), testing::HasSubstr("block 1 is not allocated"));
  EXPECT_THAT(a.Free({7}).message(), testing::HasSubstr("out of range"));
  EXPECT_THAT(a.Free({0, 0}).message(), testing::HasSubstr("not allocated"));
  EXPECT_EQ(a.num_free(), 2);  // nothing freed by the failed calls
  auto again = a.Allocate(2);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(a.num_free(), 0);
}

}  // namespace
}  // namespace epserve::kv_cache
