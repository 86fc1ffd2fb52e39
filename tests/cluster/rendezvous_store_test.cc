#include "router/cluster/rendezvous_store.h"

#include <gtest/gtest.h>

namespace epserve::router {
namespace {

TEST(RendezvousStore, SetGetRetain) {
  RendezvousStore store;
  ASSERT_TRUE(store.Set("epoch/1/a", "x").ok());
  ASSERT_TRUE(store.Set("epoch/2/a", "y").ok());
  EXPECT_EQ(store.Get("epoch/1/a"), "x");
  EXPECT_EQ(store.Get("missing"), std::nullopt);
  store.RetainOnly(RendezvousStore::EpochPrefix(2));
  EXPECT_EQ(store.Get("epoch/1/a"), std::nullopt);
  EXPECT_EQ(store.Get("epoch/2/a"), "y");
  EXPECT_EQ(store.size(), 1u);
}

TEST(RendezvousStore, BoundsAreEnforced) {
  RendezvousStore store;
  EXPECT_EQ(store.Set("", "v").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Set(std::string(RendezvousStore::kMaxKeyBytes + 1, 'k'), "v").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Set("k", std::string(RendezvousStore::kMaxValueBytes + 1, 'v')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.size(), 0u);
}

// 64 values of 1 MiB fill the byte budget: the next new key is refused, a
// replacement of the same size is not, and retiring an epoch frees the bytes.
TEST(RendezvousStore, TotalBytesAreBoundedAndFreedWithTheEpoch) {
  RendezvousStore store;
  const std::string mib(RendezvousStore::kMaxValueBytes, 'v');
  size_t stored = 0;
  absl::Status last = absl::OkStatus();
  for (int i = 0; last.ok() && i < 200; ++i) {
    last = store.Set("epoch/1/k" + std::to_string(i), mib);
    if (last.ok()) ++stored;
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(last.message().find("bytes used"), std::string::npos) << last;
  EXPECT_LT(stored, 64u);
  EXPECT_GT(stored, 60u);
  EXPECT_LE(store.total_bytes(), RendezvousStore::kMaxTotalBytes);
  EXPECT_TRUE(store.Set("epoch/1/k0", mib).ok());
  store.RetainOnly(RendezvousStore::EpochPrefix(2));
  EXPECT_EQ(store.total_bytes(), 0u);
  EXPECT_TRUE(store.Set("epoch/2/k", mib).ok());
  EXPECT_EQ(store.total_bytes(), std::string("epoch/2/k").size() + mib.size());
}

}  // namespace
}  // namespace epserve::router
