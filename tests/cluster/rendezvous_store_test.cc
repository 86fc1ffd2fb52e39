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

}  // namespace
}  // namespace epserve::router
