// The FakeTransport's invariant checks fire on hand-written bad plans (and
// stay quiet on a good sequence of plans), so a clean engine run means
// something.
#include "fake_transport.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace epserve::router::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

control::v1::SequencePlan Seq(const std::string& id, std::vector<uint32_t> tokens, uint32_t start,
                              std::vector<uint32_t> blocks, bool sample,
                              uint32_t num_prompt_tokens) {
  control::v1::SequencePlan s;
  s.set_request_id(id);
  *s.mutable_token_ids() = {tokens.begin(), tokens.end()};
  s.set_start_position(start);
  *s.mutable_block_table() = {blocks.begin(), blocks.end()};
  s.set_sample(sample);
  s.set_num_prompt_tokens(num_prompt_tokens);
  return s;
}

class FakeTransportTest : public ::testing::Test {
 protected:
  FakeTransportTest() : transport_(Group(), NextTokenModel(100)) {}

  static GroupView Group() {
    GroupView g;
    g.epoch = 1;
    g.block_size = 4;
    g.kv_blocks = {8, 8};
    return g;
  }

  // One step: `seqs` on rank 0 (rank 1 empty), `release` on rank 0.
  void Send(std::vector<control::v1::SequencePlan> seqs, std::vector<std::string> release = {}) {
    std::vector<control::v1::StepPlan> plans(2);
    ++step_;
    for (auto& p : plans) {
      p.set_step_id(step_);
      p.set_epoch(1);
    }
    for (auto& s : seqs) *plans[0].add_sequences() = std::move(s);
    for (auto& id : release) plans[0].add_release_request_ids(std::move(id));
    ASSERT_TRUE(transport_.SendStep(1, plans).ok());
  }

  std::string Violations() {
    std::string all;
    for (const std::string& v : transport_.violations()) all += v + "\n";
    return all;
  }

  FakeTransport transport_;
  uint64_t step_ = 0;
};

TEST_F(FakeTransportTest, GoodPlansIncludingARecomputeAreClean) {
  Send({Seq("a", {1, 2, 3}, 0, {0}, true, 3)});  // samples 4
  Send({Seq("a", {4}, 3, {0}, true, 3)});        // samples 5
  Send({Seq("a", {5}, 4, {0, 1}, true, 3)});     // samples 6
  Send({}, {"a"});                               // preempted
  Send({Seq("a", {1, 2, 3, 4, 5, 6}, 0, {2, 3}, true, 3)});
  EXPECT_THAT(transport_.violations(), IsEmpty());
  EXPECT_THAT(transport_.recomputed(), ElementsAre("a"));
}

TEST_F(FakeTransportTest, MissingRankPlan) {
  std::vector<control::v1::StepPlan> plans(1);
  plans[0].set_step_id(1);
  plans[0].set_epoch(1);
  ASSERT_TRUE(transport_.SendStep(1, plans).ok());
  EXPECT_THAT(Violations(), HasSubstr("1 plans for 2 ranks"));
}

TEST_F(FakeTransportTest, BlockTableTooShort) {
  Send({Seq("a", {1, 2, 3, 4, 5}, 0, {0}, true, 5)});
  EXPECT_THAT(Violations(), HasSubstr("do not cover 5 tokens"));
}

TEST_F(FakeTransportTest, BlockSharedByTwoRequests) {
  Send({Seq("a", {1}, 0, {0}, true, 1)});
  Send({Seq("b", {7}, 0, {0}, true, 1)});  // a still holds block 0
  EXPECT_THAT(Violations(), HasSubstr("block 0 held by 'a' and 'b'"));
}

TEST_F(FakeTransportTest, DecodeWithoutHistory) {
  Send({Seq("a", {1, 2}, 0, {0}, true, 2)});
  Send({Seq("a", {3}, 5, {0, 1}, true, 2)});
  EXPECT_THAT(Violations(), HasSubstr("the rank was fed 2 tokens"));
}

TEST_F(FakeTransportTest, NumPromptTokensUnset) {
  Send({Seq("a", {1, 2}, 0, {0}, true, 0)});
  EXPECT_THAT(Violations(), HasSubstr("num_prompt_tokens not set"));
}

TEST_F(FakeTransportTest, RecomputeWithAWrongGeneratedToken) {
  Send({Seq("a", {1, 2}, 0, {0}, true, 2)});  // samples 3
  Send({}, {"a"});
  Send({Seq("a", {1, 2, 9}, 0, {1}, true, 2)});
  EXPECT_THAT(Violations(), HasSubstr("fed 9 at position 2, history has 3"));
}

TEST_F(FakeTransportTest, ReleasedAndContinuedInOnePlan) {
  Send({Seq("a", {1, 2}, 0, {0}, true, 2)});
  Send({Seq("a", {3}, 2, {0}, true, 2)}, {"a"});
  EXPECT_THAT(Violations(), HasSubstr("releases 'a' and continues it"));
}

TEST_F(FakeTransportTest, ReFedWithoutRelease) {
  Send({Seq("a", {1, 2}, 0, {0}, true, 2)});
  Send({Seq("a", {1, 2, 3}, 0, {1}, true, 2)});
  EXPECT_THAT(Violations(), HasSubstr("no release"));
}

}  // namespace
}  // namespace epserve::router::testing
