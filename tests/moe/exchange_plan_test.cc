// PlanExchange, table-tested: each case is a gathered count matrix, a
// placement and a rank, with the counts, row blocks, offsets and loads that
// rank must plan, written out by hand.
#include "worker/moe/exchange_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace epserve::moe {
namespace {

using ::testing::HasSubstr;

struct Case {
  std::string name;
  std::vector<std::vector<int64_t>> counts;  // [world][E]
  std::vector<uint32_t> expert_to_rank;      // [E]
  int rank = 0;
  // Expected:
  std::vector<int64_t> send_counts;
  std::vector<int64_t> recv_counts;
  std::vector<RowBlock> send_blocks;
  std::vector<RowBlock> recv_blocks;
  bool send_identity = true;
  bool recv_identity = true;
  std::vector<int32_t> expert_offsets;
  std::vector<int64_t> rows_per_expert;
  std::vector<int64_t> rows_per_rank;
  int64_t num_sent = 0;
  int64_t num_received = 0;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<int64_t> Flatten(const std::vector<std::vector<int64_t>>& m) {
  std::vector<int64_t> out;
  for (const auto& row : m) out.insert(out.end(), row.begin(), row.end());
  return out;
}

const std::vector<Case>& Cases() {
  static const auto* cases = new std::vector<Case>{
      {.name = "OneRankEveryExpertLocal",
       .counts = {{2, 0, 1}},
       .expert_to_rank = {0, 0, 0},
       .rank = 0,
       .send_counts = {3},
       .recv_counts = {3},
       .send_blocks = {{0, 0, 2}, {2, 2, 1}},
       .recv_blocks = {{0, 0, 2}, {2, 2, 1}},
       .expert_offsets = {0, 2, 2, 3},
       .rows_per_expert = {2, 0, 1},
       .rows_per_rank = {3},
       .num_sent = 3,
       .num_received = 3},
      {.name = "TwoRanksLinearRankZero",
       .counts = {{1, 2, 0, 3}, {2, 0, 1, 1}},
       .expert_to_rank = {0, 0, 1, 1},
       .rank = 0,
       .send_counts = {3, 3},
       .recv_counts = {3, 2},
       .send_blocks = {{0, 0, 1}, {1, 1, 2}, {3, 3, 3}},
       .recv_blocks = {{0, 0, 1}, {3, 1, 2}, {1, 3, 2}},
       .recv_identity = false,
       .expert_offsets = {0, 3, 5, 5, 5},
       .rows_per_expert = {3, 2, 0, 0},
       .rows_per_rank = {5, 5},
       .num_sent = 6,
       .num_received = 5},
      {.name = "TwoRanksLinearRankOne",
       .counts = {{1, 2, 0, 3}, {2, 0, 1, 1}},
       .expert_to_rank = {0, 0, 1, 1},
       .rank = 1,
       .send_counts = {2, 2},
       .recv_counts = {3, 2},
       .send_blocks = {{0, 0, 2}, {2, 2, 1}, {3, 3, 1}},
       .recv_blocks = {{3, 0, 1}, {0, 1, 3}, {4, 4, 1}},
       .recv_identity = false,
       .expert_offsets = {0, 0, 0, 1, 5},
       .rows_per_expert = {0, 0, 1, 4},
       .rows_per_rank = {5, 5},
       .num_sent = 4,
       .num_received = 5},
      {.name = "TwoRanksRoundRobinReordersTheSend",
       .counts = {{1, 1, 1, 1}, {0, 2, 0, 0}},
       .expert_to_rank = {0, 1, 0, 1},
       .rank = 0,
       .send_counts = {2, 2},
       .recv_counts = {2, 0},
       .send_blocks = {{0, 0, 1}, {2, 1, 1}, {1, 2, 1}, {3, 3, 1}},
       .recv_blocks = {{0, 0, 1}, {1, 1, 1}},
       .send_identity = false,
       .expert_offsets = {0, 1, 1, 2, 2},
       .rows_per_expert = {1, 0, 1, 0},
       .rows_per_rank = {2, 4},
       .num_sent = 4,
       .num_received = 2},
      {.name = "RankWithZeroTokensStillReceives",
       .counts = {{2, 1}, {0, 0}},
       .expert_to_rank = {0, 1},
       .rank = 1,
       .send_counts = {0, 0},
       .recv_counts = {1, 0},
       .send_blocks = {},
       .recv_blocks = {{0, 0, 1}},
       .expert_offsets = {0, 0, 1},
       .rows_per_expert = {0, 1},
       .rows_per_rank = {2, 1},
       .num_sent = 0,
       .num_received = 1},
      {.name = "ThreeRanksOneExpertEach",
       .counts = {{1, 0, 2}, {0, 3, 0}, {1, 1, 1}},
       .expert_to_rank = {0, 1, 2},
       .rank = 2,
       .send_counts = {1, 1, 1},
       .recv_counts = {2, 0, 1},
       .send_blocks = {{0, 0, 1}, {1, 1, 1}, {2, 2, 1}},
       .recv_blocks = {{0, 0, 2}, {2, 2, 1}},
       .expert_offsets = {0, 0, 0, 3},
       .rows_per_expert = {0, 0, 3},
       .rows_per_rank = {2, 4, 3},
       .num_sent = 3,
       .num_received = 3},
      {.name = "FourRanksRoundRobinWithEmptyExpertsAndAnIdleRank",
       .counts = {{0, 1, 0, 0, 0, 2, 0, 0},
                  {1, 0, 0, 0, 0, 1, 0, 1},
                  {0, 0, 0, 0, 0, 0, 0, 0},
                  {0, 2, 0, 0, 0, 0, 0, 0}},
       .expert_to_rank = {0, 1, 2, 3, 0, 1, 2, 3},
       .rank = 1,
       .send_counts = {1, 1, 0, 1},
       .recv_counts = {3, 1, 0, 2},
       .send_blocks = {{0, 0, 1}, {1, 1, 1}, {2, 2, 1}},
       .recv_blocks = {{0, 0, 1}, {4, 1, 2}, {1, 3, 2}, {3, 5, 1}},
       .recv_identity = false,
       .expert_offsets = {0, 0, 3, 3, 3, 3, 6, 6, 6},
       .rows_per_expert = {0, 3, 0, 0, 0, 3, 0, 0},
       .rows_per_rank = {1, 6, 0, 1},
       .num_sent = 3,
       .num_received = 6},
      {.name = "TwoRanksIdentityWhenEveryRowStaysHome",
       .counts = {{3, 0}, {0, 2}},
       .expert_to_rank = {0, 1},
       .rank = 0,
       .send_counts = {3, 0},
       .recv_counts = {3, 0},
       .send_blocks = {{0, 0, 3}},
       .recv_blocks = {{0, 0, 3}},
       .expert_offsets = {0, 3, 3},
       .rows_per_expert = {3, 0},
       .rows_per_rank = {3, 2},
       .num_sent = 3,
       .num_received = 3},
  };
  return *cases;
}

class ExchangePlanTest : public ::testing::TestWithParam<Case> {};

TEST_P(ExchangePlanTest, PlansTheWrittenOutExchange) {
  const Case& c = GetParam();
  absl::StatusOr<ExchangePlan> plan = PlanExchange(Flatten(c.counts), c.expert_to_rank, c.rank);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->send_counts, c.send_counts);
  EXPECT_EQ(plan->recv_counts, c.recv_counts);
  EXPECT_EQ(plan->send_blocks, c.send_blocks);
  EXPECT_EQ(plan->recv_blocks, c.recv_blocks);
  EXPECT_EQ(plan->send_identity, c.send_identity);
  EXPECT_EQ(plan->recv_identity, c.recv_identity);
  EXPECT_EQ(plan->expert_offsets, c.expert_offsets);
  EXPECT_EQ(plan->rows_per_expert, c.rows_per_expert);
  EXPECT_EQ(plan->rows_per_rank, c.rows_per_rank);
  EXPECT_EQ(plan->num_sent, c.num_sent);
  EXPECT_EQ(plan->num_received, c.num_received);
}

TEST_P(ExchangePlanTest, ReplanningIntoAUsedPlanGivesTheSamePlan) {
  const Case& c = GetParam();
  // A plan left over from a different exchange (other world, other sizes).
  ExchangePlan plan = *PlanExchange({5, 0, 0, 7}, {0, 1}, 1);
  ASSERT_TRUE(PlanExchange(Flatten(c.counts), c.expert_to_rank, c.rank, &plan).ok());
  EXPECT_EQ(plan.send_counts, c.send_counts);
  EXPECT_EQ(plan.recv_counts, c.recv_counts);
  EXPECT_EQ(plan.send_blocks, c.send_blocks);
  EXPECT_EQ(plan.recv_blocks, c.recv_blocks);
  EXPECT_EQ(plan.send_identity, c.send_identity);
  EXPECT_EQ(plan.recv_identity, c.recv_identity);
  EXPECT_EQ(plan.expert_offsets, c.expert_offsets);
  EXPECT_EQ(plan.rows_per_expert, c.rows_per_expert);
  EXPECT_EQ(plan.rows_per_rank, c.rows_per_rank);
}

INSTANTIATE_TEST_SUITE_P(Cases, ExchangePlanTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& p) { return p.param.name; });

struct ErrorCase {
  std::string name;
  std::vector<int64_t> counts;
  std::vector<uint32_t> expert_to_rank;
  int rank = 0;
  std::string message;
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

class ExchangePlanErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ExchangePlanErrorTest, RefusesNamingTheArgument) {
  const ErrorCase& c = GetParam();
  absl::StatusOr<ExchangePlan> plan = PlanExchange(c.counts, c.expert_to_rank, c.rank);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(plan.status().message(), HasSubstr(c.message));
}

INSTANTIATE_TEST_SUITE_P(
    Errors, ExchangePlanErrorTest,
    ::testing::Values(
        ErrorCase{"NoExperts", {1, 2}, {}, 0, "expert_to_rank: expected at least 1 expert"},
        ErrorCase{"CountsNotAMultipleOfExperts",
                  {1, 2, 3},
                  {0, 1},
                  0,
                  "counts: expected world x 2 entries, found 3"},
        ErrorCase{"RankOutsideTheWorld", {1, 2, 3, 4}, {0, 1}, 2, "rank: expected in [0, 2)"},
        ErrorCase{"OwnerOutsideTheWorld",
                  {1, 2, 3, 4},
                  {0, 2},
                  0,
                  "expert_to_rank[1]: expected a rank in [0, 2), found 2"},
        ErrorCase{"NegativeCount",
                  {1, 2, -3, 4},
                  {0, 1},
                  0,
                  "counts[1][0]: expected at least 0, found -3"}),
    [](const ::testing::TestParamInfo<ErrorCase>& p) { return p.param.name; });

TEST(ExchangePlanLimits, MoreThanInt32RowsReceivedIsResourceExhausted) {
  const int64_t big = int64_t{1} << 30;
  absl::StatusOr<ExchangePlan> plan = PlanExchange({big, big, big, 0}, {0, 1}, 0);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(), HasSubstr("rank 0 received 2147483648 rows"));
}

}  // namespace
}  // namespace epserve::moe
