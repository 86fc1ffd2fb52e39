// What one request's stream receives: one chunk per sampled token, then a
// complete message (finish reason, matched stop, usage, output ids); the
// sampling fields the plans carry; text and stop strings with a tokenizer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/tokenizer/tokenizer.h"
#include "engine_harness.h"
#include "tests/frontend/byte_tokenizer.h"

namespace epserve::router::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

constexpr uint32_t kVocab = 1000;

using ::epserve::frontend::testing::ByteTokenizer;

class EngineStreamTest : public EngineTest {
 protected:
  void StartOneRank(EngineOptions options = DefaultOptions(),
                    std::shared_ptr<const tokenizer::Tokenizer> tok = nullptr,
                    uint32_t vocab = kVocab) {
    Start(std::move(options), Group(/*num_ranks=*/1, /*kv_blocks=*/64), NextTokenModel(vocab),
          std::move(tok));
  }
};

TEST_F(EngineStreamTest, ChunksOfOneTokenThenCompleteWithLength) {
  StartOneRank();
  auto stream = Submit("r", {5, 6, 7}, /*max_tokens=*/4);
  ASSERT_TRUE(stream->WaitFinished(kWait));
  EXPECT_TRUE(stream->status().ok()) << stream->status();

  const std::vector<v1::GenerateResponse> responses = stream->responses();
  ASSERT_EQ(responses.size(), 5u);
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(responses[i].has_chunk()) << i;
    EXPECT_EQ(responses[i].request_id(), "r");
    EXPECT_THAT(responses[i].chunk().token_ids(), ElementsAre(8 + i)) << i;
    EXPECT_TRUE(responses[i].chunk().text().empty());  // no tokenizer
    EXPECT_EQ(responses[i].chunk().logprobs_size(), 0);
  }
  ASSERT_TRUE(responses[4].has_complete());
  const v1::GenerateComplete& c = responses[4].complete();
  EXPECT_EQ(c.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(c.matched_stop_case(), v1::GenerateComplete::MATCHED_STOP_NOT_SET);
  EXPECT_EQ(c.usage().prompt_tokens(), 3u);
  EXPECT_EQ(c.usage().completion_tokens(), 4u);
  EXPECT_THAT(c.output_ids(), ElementsAreArray(stream->chunk_token_ids()));
  EXPECT_THAT(c.output_ids(), ElementsAre(8, 9, 10, 11));
}

TEST_F(EngineStreamTest, EosTokenStopsWithStopTokenId) {
  EngineOptions o = DefaultOptions();
  o.eos_token_ids = {10, 500};
  StartOneRank(o);
  auto stream = Submit("r", {5, 6, 7}, /*max_tokens=*/8);
  ASSERT_TRUE(stream->WaitFinished(kWait));
  EXPECT_TRUE(stream->status().ok()) << stream->status();
  const auto c = stream->complete();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->finish_reason(), v1::FINISH_REASON_STOP);
  ASSERT_EQ(c->matched_stop_case(), v1::GenerateComplete::kStopTokenId);
  EXPECT_EQ(c->stop_token_id(), 10u);
  EXPECT_THAT(c->output_ids(), ElementsAre(8, 9, 10));
  EXPECT_EQ(c->usage().completion_tokens(), 3u);
  EXPECT_THAT(stream->chunk_token_ids(), ElementsAre(8, 9, 10));
}

TEST_F(EngineStreamTest, IgnoreEosGeneratesToLength) {
  EngineOptions o = DefaultOptions();
  o.eos_token_ids = {10};
  StartOneRank(o);
  NewRequest req = MakeRequest("r", {5, 6, 7}, /*max_tokens=*/5);
  req.sampling.set_ignore_eos(true);
  auto stream = Submit(std::move(req));
  ASSERT_TRUE(stream->WaitFinished(kWait));
  EXPECT_TRUE(stream->status().ok()) << stream->status();
  const auto c = stream->complete();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(c->matched_stop_case(), v1::GenerateComplete::MATCHED_STOP_NOT_SET);
  EXPECT_THAT(c->output_ids(), ElementsAre(8, 9, 10, 11, 12));
}

TEST_F(EngineStreamTest, StopTokenIdsStopEvenWithIgnoreEos) {
  StartOneRank();
  NewRequest req = MakeRequest("r", {5}, /*max_tokens=*/10);
  req.sampling.add_stop_token_ids(9);
  req.sampling.set_ignore_eos(true);
  auto stream = Submit(std::move(req));
  ASSERT_TRUE(stream->WaitFinished(kWait));
  EXPECT_TRUE(stream->status().ok()) << stream->status();
  const auto c = stream->complete();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->finish_reason(), v1::FINISH_REASON_STOP);
  ASSERT_EQ(c->matched_stop_case(), v1::GenerateComplete::kStopTokenId);
  EXPECT_EQ(c->stop_token_id(), 9u);
  EXPECT_THAT(c->output_ids(), ElementsAre(6, 7, 8, 9));
}

TEST_F(EngineStreamTest, PlansCarryWorkerSamplingFieldsOnly) {
  StartOneRank();
  NewRequest req = MakeRequest("r", {5, 6, 7}, /*max_tokens=*/3);
  req.sampling.set_temperature(0.5f);
  req.sampling.set_seed(7);
  req.sampling.set_top_k(20);
  req.sampling.set_max_tokens(3);
  req.sampling.add_stop("never");
  req.sampling.set_include_stop_str_in_output(true);
  req.sampling.set_skip_special_tokens(false);
  auto stream = Submit(std::move(req));
  ASSERT_TRUE(stream->WaitFinished(kWait));
  EXPECT_TRUE(stream->status().ok()) << stream->status();

  int num_sequences = 0;
  for (const RecordedStep& step : transport().steps()) {
    for (const control::v1::SequencePlan& s : step.plans[0].sequences()) {
      ++num_sequences;
      EXPECT_EQ(s.num_prompt_tokens(), 3u);
      const v1::SamplingParams& p = s.sampling_params();
      EXPECT_FLOAT_EQ(p.temperature(), 0.5f);
      EXPECT_EQ(p.seed(), 7u);
      EXPECT_EQ(p.top_k(), 20);
      EXPECT_FALSE(p.has_max_tokens());
      EXPECT_EQ(p.stop_size(), 0);
      EXPECT_FALSE(p.include_stop_str_in_output());
      EXPECT_FALSE(p.has_skip_special_tokens());
    }
  }
  EXPECT_EQ(num_sequences, 3);  // a prefill and two decodes
}

TEST_F(EngineStreamTest, LogprobsReachTheChunks) {
  StartOneRank();
  transport().SetLogprobs(true);
  auto stream = Submit("r", {5}, /*max_tokens=*/3);
  ASSERT_TRUE(stream->WaitFinished(kWait));
  const std::vector<v1::GenerateChunk> chunks = stream->chunks();
  ASSERT_EQ(chunks.size(), 3u);
  for (const v1::GenerateChunk& c : chunks) {
    ASSERT_EQ(c.logprobs_size(), 1);
    EXPECT_EQ(c.logprobs(0).token_id(), c.token_ids(0));
    EXPECT_FLOAT_EQ(c.logprobs(0).logprob(), -0.5f);
  }
}

TEST_F(EngineStreamTest, TextIsStreamedWithATokenizer) {
  auto tok = ByteTokenizer();
  ASSERT_NE(tok, nullptr);
  StartOneRank(DefaultOptions(), tok, /*vocab=*/256);
  auto stream = Submit("r", {'a'}, /*max_tokens=*/4);
  ASSERT_TRUE(stream->WaitFinished(kWait));
  EXPECT_TRUE(stream->status().ok()) << stream->status();
  EXPECT_EQ(stream->text(), "bcde");
  const auto c = stream->complete();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->finish_reason(), v1::FINISH_REASON_LENGTH);
}

TEST_F(EngineStreamTest, StopStringEndsTheRequestAndIsCutFromTheText) {
  auto tok = ByteTokenizer();
  ASSERT_NE(tok, nullptr);
  StartOneRank(DefaultOptions(), tok, /*vocab=*/256);
  NewRequest req = MakeRequest("r", {'a'}, /*max_tokens=*/20);
  req.sampling.add_stop("zz");
  req.sampling.add_stop("de");
  auto stream = Submit(std::move(req));
  ASSERT_TRUE(stream->WaitFinished(kWait));
  EXPECT_TRUE(stream->status().ok()) << stream->status();
  EXPECT_EQ(stream->text(), "bc");
  const auto c = stream->complete();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->finish_reason(), v1::FINISH_REASON_STOP);
  ASSERT_EQ(c->matched_stop_case(), v1::GenerateComplete::kStopStr);
  EXPECT_EQ(c->stop_str(), "de");
  EXPECT_THAT(c->output_ids(), ElementsAre('b', 'c', 'd', 'e'));
  // The request is finished in the scheduler too: nothing sampled after 'e'.
  EXPECT_EQ(StepsScheduling(transport().steps(), "r").size(), 4u);
  IdleStats();
}

TEST_F(EngineStreamTest, RequestThatCannotFitTheKvIsRefusedOnItsStream) {
  StartOneRank();  // 64 blocks of 4 tokens
  auto stream = Submit("r", {1, 2, 3}, /*max_tokens=*/1000);
  ExpectFinishedWith(*stream, absl::StatusCode::kInvalidArgument, "KV blocks");
  EXPECT_EQ(transport().num_steps(), 0u);
}

TEST_F(EngineStreamTest, NotServingEndsTheRequestUnavailable) {
  StartOneRank();
  transport().StopServing("waiting for 2 workers");
  engine().OnServingChanged();
  NewRequest req = MakeRequest("r", {1}, 4);
  auto stream = StreamOf(req);
  const absl::Status s = TrySubmit(std::move(req));
  // Refused at once, or accepted and ended on the stream: UNAVAILABLE with
  // the transport's reason either way.
  if (s.ok()) {
    ExpectFinishedWith(*stream, absl::StatusCode::kUnavailable, "waiting for 2 workers");
  } else {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  }
  EXPECT_EQ(transport().num_steps(), 0u);
}

}  // namespace
}  // namespace epserve::router::testing
