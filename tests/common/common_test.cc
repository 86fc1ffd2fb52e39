#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/dtype.h"
#include "common/net.h"
#include "common/placement.h"
#include "common/status.h"

namespace epserve {
namespace {

using ::testing::HasSubstr;

struct AddressCase {
  const char* text;
  bool allow_zero;
  bool ok;
  const char* host;
  int port;
  const char* error;  // substring of the error message
};

TEST(ParseHostPort, Table) {
  const AddressCase cases[] = {
      {"127.0.0.1:50051", false, true, "127.0.0.1", 50051, ""},
      {"router.epserve.svc:1", false, true, "router.epserve.svc", 1, ""},
      {"[::1]:8080", false, true, "::1", 8080, ""},
      {"0.0.0.0:0", true, true, "0.0.0.0", 0, ""},
      {"0.0.0.0:0", false, false, "", 0, "port 0"},
      {"localhost", false, false, "", 0, "missing ':PORT'"},
      {":50051", false, false, "", 0, "empty host"},
      {"host:65536", false, false, "", 0, "out of range"},
      {"host:-1", false, false, "", 0, "out of range"},
      {"host:http", false, false, "", 0, "not a number"},
      {"::1:80", false, false, "", 0, "brackets"},
      {"[::1:80", false, false, "", 0, "unclosed"},
      {"ho st:80", false, false, "", 0, "whitespace"},
  };
  for (const AddressCase& c : cases) {
    SCOPED_TRACE(c.text);
    auto parsed = ParseHostPort(c.text, c.allow_zero);
    ASSERT_EQ(parsed.ok(), c.ok) << parsed.status();
    if (c.ok) {
      EXPECT_EQ(parsed->host, c.host);
      EXPECT_EQ(parsed->port, c.port);
    } else {
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.error));
      EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(c.text));
    }
  }
}

TEST(HostPort, ToStringBracketsIpv6) {
  EXPECT_EQ((HostPort{"::1", 80}).ToString(), "[::1]:80");
  EXPECT_EQ((HostPort{"a.b", 80}).ToString(), "a.b:80");
}

TEST(DataType, NamesRoundTripAndUnknownListsAccepted) {
  for (DataType t :
       {DataType::kFloat64, DataType::kFloat32, DataType::kBFloat16, DataType::kFloat16,
        DataType::kFloat8E4M3, DataType::kFloat8E5M2, DataType::kInt64, DataType::kInt32,
        DataType::kInt16, DataType::kInt8, DataType::kUInt64, DataType::kUInt32,
        DataType::kUInt16, DataType::kUInt8, DataType::kBool}) {
    auto parsed = ParseDataType(DataTypeName(t));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, t);
  }
  EXPECT_EQ(DataTypeSize(DataType::kBFloat16), 2u);
  EXPECT_EQ(DataTypeSize(DataType::kInt64), 8u);
  auto bad = ParseDataType("half");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'half'"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("bfloat16"));
}

TEST(Placement, LinearAndRoundRobin) {
  auto linear = PlaceExperts(8, 3, PlacementStrategy::kLinear);
  ASSERT_TRUE(linear.ok());
  EXPECT_EQ(*linear, (std::vector<uint32_t>{0, 0, 0, 1, 1, 1, 2, 2}));
  auto rr = PlaceExperts(8, 3, PlacementStrategy::kRoundRobin);
  ASSERT_TRUE(rr.ok());
  EXPECT_EQ(*rr, (std::vector<uint32_t>{0, 1, 2, 0, 1, 2, 0, 1}));
}

TEST(Placement, BalancedForManyShapes) {
  for (uint32_t n = 1; n <= 8; ++n) {
    for (uint32_t e = n; e <= 64; e += 3) {
      for (auto strategy : {PlacementStrategy::kLinear, PlacementStrategy::kRoundRobin}) {
        auto owners = PlaceExperts(e, n, strategy);
        ASSERT_TRUE(owners.ok());
        std::vector<uint32_t> per_rank(n, 0);
        for (uint32_t r : *owners) {
          ASSERT_LT(r, n);
          ++per_rank[r];
        }
        for (uint32_t c : per_rank) {
          EXPECT_GE(c, e / n) << e << " experts on " << n;
          EXPECT_LE(c, (e + n - 1) / n) << e << " experts on " << n;
        }
      }
    }
  }
}

TEST(Placement, Errors) {
  EXPECT_THAT(std::string(PlaceExperts(2, 4, PlacementStrategy::kLinear).status().message()),
              HasSubstr("2 experts cannot be spread over 4 ranks"));
  EXPECT_FALSE(PlaceExperts(4, 0, PlacementStrategy::kLinear).ok());
  EXPECT_THAT(std::string(ParsePlacementStrategy("random").status().message()),
              HasSubstr("linear, round-robin"));
}

absl::StatusOr<int> Half(int x) {
  if (x % 2) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

absl::Status CheckEven(int x) {
  RETURN_IF_ERROR(Half(x));
  return absl::OkStatus();
}

TEST(StatusMacros, PropagateFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(3).ok());
  EXPECT_EQ(Annotate(absl::NotFoundError("x"), "loading").message(), "loading: x");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "loading").ok());
}

}  // namespace
}  // namespace epserve
