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
  auto cache = KvCache::Create(**backend, {3, 2, 8}, {.num_blocks = 5, .block_size = 4,
                                                      .dtype = DataType::kBFloat16});
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

TEST(KvCache, RejectsBadOptions) {
  auto backend = kernels::CreateBackend(kernels::DeviceSpec{});
  ASSERT_TRUE(backend.ok());
  auto zero = KvCache::Create(**backend, {1, 1, 8}, {.num_blocks = 0});
  EXPECT_THAT(zero.status().message(), testing::HasSubstr("num_blocks"));
  auto int_cache = KvCache::Create(**backend, {1, 1, 8},
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
