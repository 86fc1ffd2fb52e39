#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/net.h"

namespace epserve {
namespace {

using ::testing::HasSubstr;

TEST(InterfaceIpv4Address, LoopbackIs127001) {
  absl::StatusOr<std::string> address = InterfaceIpv4Address("lo");
  ASSERT_TRUE(address.ok()) << address.status();
  EXPECT_EQ(*address, "127.0.0.1");
}

TEST(InterfaceIpv4Address, UnknownNameIsNotFoundAndListsInterfaces) {
  absl::StatusOr<std::string> address = InterfaceIpv4Address("nosuchif0");
  ASSERT_EQ(address.status().code(), absl::StatusCode::kNotFound) << address.status();
  EXPECT_THAT(address.status().message(), HasSubstr("no network interface named 'nosuchif0'"));
  EXPECT_THAT(address.status().message(), HasSubstr("lo (127.0.0.1"));
}

TEST(InterfaceIpv4Address, EmptyNameIsNotFound) {
  EXPECT_EQ(InterfaceIpv4Address("").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace epserve
