#include "router/scheduler/kv_block_allocator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace epserve::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(KvBlockAllocatorTest, AllocatesLowestIdsFirstAndCountsFree) {
  KvBlockAllocator a(/*num_blocks=*/5, /*block_size=*/4);
  EXPECT_EQ(a.num_free(), 5);
  EXPECT_EQ(a.BlocksForTokens(0), 0);
  EXPECT_EQ(a.BlocksForTokens(4), 1);
  EXPECT_EQ(a.BlocksForTokens(5), 2);
  auto x = a.Allocate(2);
  ASSERT_TRUE(x.ok());
  EXPECT_THAT(*x, ElementsAre(0, 1));
  auto y = a.Allocate(2);
  EXPECT_THAT(*y, ElementsAre(2, 3));
  EXPECT_EQ(a.num_free(), 1);
  EXPECT_EQ(a.num_used(), 4);
  ASSERT_TRUE(a.Free({1}).ok());
  EXPECT_THAT(*a.Allocate(2), ElementsAre(1, 4));
  EXPECT_EQ(a.num_free(), 0);
}

TEST(KvBlockAllocatorTest, AllocateIsAllOrNothing) {
  KvBlockAllocator a(3, 4);
  auto x = a.Allocate(4);
  EXPECT_EQ(x.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(x.status().message(), HasSubstr("4 requested, 3 of 3 free"));
  EXPECT_EQ(a.num_free(), 3);
}

TEST(KvBlockAllocatorTest, DoubleFreeIsNamedAndChangesNothing) {
  KvBlockAllocator a(4, 4);
  auto x = a.Allocate(2);
  ASSERT_TRUE(a.Free({0}).ok());
  absl::Status s = a.Free({1, 0});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("double free of KV block 0"));
  EXPECT_EQ(a.RefCount(1), 1);  // block 1 was not freed either
  s = a.Free({1, 1});
  EXPECT_THAT(s.message(), HasSubstr("double free of KV block 1"));
  EXPECT_EQ(a.num_free(), 3);
}

TEST(KvBlockAllocatorTest, ForeignBlockIsNamed) {
  KvBlockAllocator a(4, 4);
  absl::Status s = a.Free({7});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("foreign block 7"));
}

TEST(KvBlockAllocatorTest, SharedBlocksAreFreedByTheirLastOwner) {
  // The prefix-caching seam: AddRef for a second owner.
  KvBlockAllocator a(2, 4);
  auto x = a.Allocate(1);
  ASSERT_TRUE(a.AddRef(0).ok());
  EXPECT_EQ(a.RefCount(0), 2);
  ASSERT_TRUE(a.Free({0}).ok());
  EXPECT_EQ(a.num_free(), 1);
  ASSERT_TRUE(a.Free({0}).ok());
  EXPECT_EQ(a.num_free(), 2);
  EXPECT_THAT(a.AddRef(0).message(), HasSubstr("not allocated"));
}

}  // namespace
}  // namespace epserve::scheduler
