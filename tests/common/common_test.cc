#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

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

TEST(Placement, OnMembersKeepsEachMembersExpertsAndSpreadsTheLostOnesEvenly) {
  // 8 experts linear on 4 ranks: {0,1} {2,3} {4,5} {6,7}; rank 1 lost.
  const std::vector<uint32_t> owners = *PlaceExperts(8, 4, PlacementStrategy::kLinear);
  absl::StatusOr<std::vector<uint32_t>> placed = PlaceOnMembers(owners, {0, 2, 3});
  ASSERT_TRUE(placed.ok()) << placed.status();
  // Members keep theirs under group ranks 0, 1, 2; experts 2 and 3 go to the
  // least loaded members, lowest group rank first.
  EXPECT_EQ(*placed, (std::vector<uint32_t>{0, 0, 0, 1, 1, 1, 2, 2}));
  // Every loss of 1 or 2 ranks of 5 over 128 experts: each member keeps its
  // experts, every expert placed, counts differ by at most one.
  const std::vector<uint32_t> many = *PlaceExperts(128, 5, PlacementStrategy::kRoundRobin);
  for (uint32_t mask = 1; mask < 31; ++mask) {
    std::vector<uint32_t> members;
    for (uint32_t r = 0; r < 5; ++r) {
      if (mask & (1u << r)) members.push_back(r);
    }
    if (members.size() < 3) continue;
    placed = PlaceOnMembers(many, members);
    ASSERT_TRUE(placed.ok()) << placed.status();
    std::vector<int> held(members.size(), 0);
    for (size_t e = 0; e < many.size(); ++e) {
      ASSERT_LT((*placed)[e], members.size());
      ++held[(*placed)[e]];
      for (size_t g = 0; g < members.size(); ++g) {
        if (many[e] == members[g]) {
          EXPECT_EQ((*placed)[e], g) << "expert " << e;
        }
      }
    }
    EXPECT_LE(
        *std::max_element(held.begin(), held.end()) - *std::min_element(held.begin(), held.end()),
        1)
        << "members mask " << mask;
  }
  // All ranks present: the table itself.
  EXPECT_EQ(*PlaceOnMembers(owners, {0, 1, 2, 3}), owners);
}

TEST(Placement, OnMembersRefusesAnEmptyOrUnsortedGroup) {
  const std::vector<uint32_t> owners = *PlaceExperts(8, 4, PlacementStrategy::kLinear);
  EXPECT_THAT(std::string(PlaceOnMembers(owners, {}).status().message()),
              HasSubstr("a group of no ranks"));
  EXPECT_THAT(std::string(PlaceOnMembers(owners, {2, 1}).status().message()),
              HasSubstr("ascending order, found 2 before 1"));
  EXPECT_FALSE(PlaceOnMembers(owners, {1, 1}).ok());
}

TEST(Placement, RedundantExpertsCoverEverySingleLoss) {
  for (PlacementStrategy strategy : {PlacementStrategy::kLinear, PlacementStrategy::kRoundRobin}) {
    for (uint32_t world : {2u, 3u, 4u, 8u}) {
      const std::vector<uint32_t> owners = *PlaceExperts(64, world, strategy);
      std::vector<std::vector<int>> extra(world);
      for (uint32_t r = 0; r < world; ++r) extra[r] = RedundantExperts(owners, world, r);
      for (uint32_t lost = 0; lost < world; ++lost) {
        std::vector<uint32_t> members;
        for (uint32_t r = 0; r < world; ++r) {
          if (r != lost) members.push_back(r);
        }
        const std::vector<uint32_t> placed = *PlaceOnMembers(owners, members);
        for (size_t e = 0; e < owners.size(); ++e) {
          const uint32_t holder = members[placed[e]];
          const bool own = owners[e] == holder;
          const bool copy =
              std::binary_search(extra[holder].begin(), extra[holder].end(), static_cast<int>(e));
          EXPECT_TRUE(own || copy) << "world " << world << " lost " << lost << " expert " << e
                                   << " placed on rank " << holder;
        }
      }
      // A rank's copies are other ranks' experts, about E/W of them.
      for (uint32_t r = 0; r < world; ++r) {
        for (int e : extra[r]) EXPECT_NE(owners[static_cast<size_t>(e)], r);
        EXPECT_LE(extra[r].size(), 64 / world + 1 + world);
      }
    }
  }
  EXPECT_TRUE(RedundantExperts(std::vector<uint32_t>(8, 0), 1, 0).empty());
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
