// OutputProcessor, table-style. Each row runs one request through the
// router's output path as the engine runs it: a Scheduler (one worker) takes
// the worker's sampled tokens and decides EOS / stop ids / max_tokens, the
// OutputProcessor turns each token into a chunk, a stop string ends the
// request in the scheduler, and the request ends with Complete over the
// scheduler's token history. Expected: the text streamed, the finish reason
// and what caused it, usage and output ids.
#include "router/frontend/output_processor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "byte_tokenizer.h"
#include "router/scheduler/scheduler.h"

namespace epserve::frontend {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

constexpr uint32_t kEos = 3;  // a control byte: decodes to "\x03"

std::vector<uint32_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }

struct Row {
  std::string name;
  // The request.
  std::vector<std::string> stop;
  std::vector<uint32_t> stop_token_ids;
  bool ignore_eos = false;
  uint32_t min_tokens = 0;
  int max_tokens = 16;
  bool include_stop_str = false;
  // What the worker samples, in order (the run ends when the request does).
  std::vector<uint32_t> sampled;
  // Expected.
  std::string text;  // every chunk's text, concatenated
  v1::FinishReason finish;
  std::string stop_str;                // complete.stop_str
  std::optional<uint32_t> stop_token;  // complete.stop_token_id
  std::vector<uint32_t> output_ids;    // complete.output_ids (= usage)
};

void PrintTo(const Row& r, std::ostream* os) { *os << r.name; }

struct RequestRun {
  std::vector<v1::GenerateResponse> responses;
  std::string text;
  int sampled_used = 0;
};

// The engine's output path for one request of prompt {1, 2}.
RequestRun RunRequest(const Row& row, const tokenizer::Tokenizer* tok) {
  RequestRun run;
  auto sched = scheduler::Scheduler::Create({}, {/*blocks=*/64});
  EXPECT_TRUE(sched.ok()) << sched.status();
  scheduler::RequestSpec spec;
  spec.id = "r";
  spec.prompt_ids = {1, 2};
  spec.max_tokens = row.max_tokens;
  spec.stop_token_ids = row.stop_token_ids;
  spec.eos_token_ids = {kEos};
  spec.ignore_eos = row.ignore_eos;
  EXPECT_TRUE((*sched)->Add(spec).ok());
  std::shared_ptr<const scheduler::Request> history = (*sched)->Share("r");

  v1::SamplingParams params;
  for (const std::string& s : row.stop) params.add_stop(s);
  for (uint32_t id : row.stop_token_ids) params.add_stop_token_ids(id);
  params.set_ignore_eos(row.ignore_eos);
  params.set_min_tokens(row.min_tokens);
  params.set_include_stop_str_in_output(row.include_stop_str);
  OutputProcessor out("r", params, tok);

  std::optional<v1::FinishReason> finish;
  while (!finish && run.sampled_used < static_cast<int>(row.sampled.size())) {
    absl::StatusOr<scheduler::ScheduledBatch> batch = (*sched)->Schedule();
    EXPECT_TRUE(batch.ok()) << batch.status();
    std::vector<scheduler::WorkerToken> tokens;
    for (const scheduler::ScheduledSequence& s : batch->workers[0].sequences) {
      if (s.sample) tokens.push_back({s.request_id, row.sampled[run.sampled_used++]});
    }
    auto updates = (*sched)->OnStepResult(tokens);
    EXPECT_TRUE(updates.ok()) << updates.status();
    for (const scheduler::SequenceUpdate& u : *updates) {
      std::optional<v1::FinishReason> ended;
      if (u.finish_reason == scheduler::FinishReason::kStop) ended = v1::FINISH_REASON_STOP;
      if (u.finish_reason == scheduler::FinishReason::kLength) ended = v1::FINISH_REASON_LENGTH;
      TokenOutput o = out.OnToken(u.token_id, ended, nullptr);
      if (o.stopped_by_string && !u.finish_reason) {
        EXPECT_TRUE((*sched)->Finish("r", scheduler::FinishReason::kStop).ok());
      }
      run.responses.push_back(o.response);
      finish = o.finish_reason;
    }
  }
  EXPECT_TRUE(finish.has_value()) << "the request did not end";
  // Ended: the scheduler holds nothing of it, its history is final.
  EXPECT_EQ((*sched)->Find("r"), nullptr);
  if (finish) {
    for (v1::GenerateResponse& r : out.Complete(*finish, 2, history->generated_ids)) {
      run.responses.push_back(std::move(r));
    }
  }
  for (const v1::GenerateResponse& r : run.responses) {
    if (r.has_chunk()) run.text += r.chunk().text();
  }
  return run;
}

class OutputProcessorTableTest : public ::testing::TestWithParam<Row> {};

TEST_P(OutputProcessorTableTest, StreamsAndCompletes) {
  const Row& row = GetParam();
  std::shared_ptr<const tokenizer::Tokenizer> tok = testing::ByteTokenizer();
  ASSERT_NE(tok, nullptr);
  const RequestRun run = RunRequest(row, tok.get());
  ASSERT_GE(run.responses.size(), 2u);
  // One chunk per token (each with its id), then the complete message.
  std::vector<uint32_t> chunk_ids;
  for (size_t i = 0; i + 1 < run.responses.size(); ++i) {
    ASSERT_TRUE(run.responses[i].has_chunk()) << i;
    EXPECT_EQ(run.responses[i].request_id(), "r");
    for (uint32_t id : run.responses[i].chunk().token_ids()) chunk_ids.push_back(id);
  }
  EXPECT_THAT(chunk_ids, ElementsAreArray(row.output_ids));
  EXPECT_EQ(run.sampled_used, static_cast<int>(row.output_ids.size()));
  EXPECT_EQ(run.text, row.text);
  ASSERT_TRUE(run.responses.back().has_complete());
  const v1::GenerateComplete& c = run.responses.back().complete();
  EXPECT_EQ(c.finish_reason(), row.finish);
  EXPECT_EQ(c.stop_str(), row.stop_str);
  EXPECT_EQ(c.has_stop_token_id(), row.stop_token.has_value());
  if (row.stop_token) {
    EXPECT_EQ(c.stop_token_id(), *row.stop_token);
  }
  EXPECT_EQ(c.usage().prompt_tokens(), 2u);
  EXPECT_EQ(c.usage().completion_tokens(), row.output_ids.size());
  EXPECT_THAT(c.output_ids(), ElementsAreArray(row.output_ids));
}

Row MakeRow(std::string name, std::vector<uint32_t> sampled, std::string text,
            v1::FinishReason finish, std::vector<uint32_t> output_ids) {
  Row r;
  r.name = std::move(name);
  r.sampled = std::move(sampled);
  r.text = std::move(text);
  r.finish = finish;
  r.output_ids = std::move(output_ids);
  return r;
}

std::vector<Row> Rows() {
  std::vector<Row> rows;
  {
    Row r = MakeRow("MaxTokensEndsWithLength", Bytes("abcdef"), "abcd", v1::FINISH_REASON_LENGTH,
                    Bytes("abcd"));
    r.max_tokens = 4;
    rows.push_back(r);
  }
  {
    // EOS is a token of the output (counted in usage, its text streamed).
    Row r = MakeRow("EosEndsWithStop", {'a', 'b', kEos, 'c'}, "ab\x03", v1::FINISH_REASON_STOP,
                    {'a', 'b', kEos});
    r.stop_token = kEos;
    rows.push_back(r);
  }
  {
    Row r = MakeRow("IgnoreEosRunsOn", {'a', kEos, 'b'},
                    "a\x03"
                    "b",
                    v1::FINISH_REASON_LENGTH, {'a', kEos, 'b'});
    r.ignore_eos = true;
    r.max_tokens = 3;
    rows.push_back(r);
  }
  {
    // min_tokens is the worker's (EOS is masked until then); an EOS that
    // arrives ends the request.
    Row r = MakeRow("EosEndsAlsoUnderMinTokens", {'a', kEos, 'b'}, "a\x03", v1::FINISH_REASON_STOP,
                    {'a', kEos});
    r.min_tokens = 3;
    r.stop_token = kEos;
    rows.push_back(r);
  }
  {
    Row r =
        MakeRow("StopTokenId", {'a', 'b', 'z', 'c'}, "abz", v1::FINISH_REASON_STOP, Bytes("abz"));
    r.stop_token_ids = {'z'};
    r.stop_token = 'z';
    rows.push_back(r);
  }
  {
    // "xyz" arrives over three tokens; the text before it streams, the stop
    // string is removed, later tokens are never sampled.
    Row r = MakeRow("StopStringAcrossTokens", Bytes("abxyzcd"), "ab", v1::FINISH_REASON_STOP,
                    Bytes("abxyz"));
    r.stop = {"q", "xyz"};
    r.stop_str = "xyz";
    rows.push_back(r);
  }
  {
    Row r = MakeRow("StopStringKeptInOutput", Bytes("abxyzcd"), "abxyz", v1::FINISH_REASON_STOP,
                    Bytes("abxyz"));
    r.stop = {"xyz"};
    r.include_stop_str = true;
    r.stop_str = "xyz";
    rows.push_back(r);
  }
  {
    // A partial match is held back and released when it breaks off.
    Row r = MakeRow("PartialStopStringReleased", Bytes("axyaxy"), "axyaxy",
                    v1::FINISH_REASON_LENGTH, Bytes("axyaxy"));
    r.stop = {"xyz"};
    r.max_tokens = 6;
    rows.push_back(r);
  }
  {
    // The last token both reaches max_tokens and completes a stop string: the
    // stop string wins.
    Row r = MakeRow("StopStringOnTheLengthToken", Bytes("abxyz"), "ab", v1::FINISH_REASON_STOP,
                    Bytes("abxyz"));
    r.stop = {"xyz"};
    r.max_tokens = 5;
    r.stop_str = "xyz";
    rows.push_back(r);
  }
  {
    // A stop token id that is also the end of a stop string: the string wins.
    Row r = MakeRow("StopStringOnAStopTokenId", Bytes("abxyz"), "ab", v1::FINISH_REASON_STOP,
                    Bytes("abxyz"));
    r.stop = {"xyz"};
    r.stop_token_ids = {'z'};
    r.stop_str = "xyz";
    rows.push_back(r);
  }
  {
    // Held-back text (a possible stop string prefix) is flushed on length.
    Row r = MakeRow("HeldBackTextFlushedAtLength", Bytes("abx"), "abx", v1::FINISH_REASON_LENGTH,
                    Bytes("abx"));
    r.stop = {"xyz"};
    r.max_tokens = 3;
    rows.push_back(r);
  }
  return rows;
}

INSTANTIATE_TEST_SUITE_P(Table, OutputProcessorTableTest, ::testing::ValuesIn(Rows()),
                         [](const auto& test) { return test.param.name; });

TEST(OutputProcessorTest, WithoutTokenizerChunksCarryIdsAndLogprobsOnly) {
  v1::SamplingParams params;
  OutputProcessor out("r", params, /*tokenizer=*/nullptr);
  v1::TokenLogprob lp;
  lp.set_token_id(7);
  lp.set_logprob(-0.5f);
  TokenOutput a = out.OnToken(7, std::nullopt, &lp);
  EXPECT_EQ(a.finish_reason, std::nullopt);
  EXPECT_FALSE(a.stopped_by_string);
  EXPECT_THAT(a.response.chunk().token_ids(), ElementsAre(7u));
  ASSERT_EQ(a.response.chunk().logprobs_size(), 1);
  EXPECT_FLOAT_EQ(a.response.chunk().logprobs(0).logprob(), -0.5f);
  EXPECT_TRUE(a.response.chunk().text().empty());
  TokenOutput b = out.OnToken(9, v1::FINISH_REASON_LENGTH, nullptr);
  EXPECT_EQ(b.finish_reason, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(b.response.chunk().logprobs_size(), 0);
  const std::vector<uint32_t> output = {7, 9};
  std::vector<v1::GenerateResponse> end = out.Complete(v1::FINISH_REASON_LENGTH, 5, output);
  ASSERT_EQ(end.size(), 1u);
  const v1::GenerateComplete& c = end[0].complete();
  EXPECT_EQ(c.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_FALSE(c.has_stop_token_id());
  EXPECT_EQ(c.usage().prompt_tokens(), 5u);
  EXPECT_EQ(c.usage().completion_tokens(), 2u);
}

TEST(OutputProcessorTest, AbortFlushesHeldBackTextThenCompletes) {
  std::shared_ptr<const tokenizer::Tokenizer> tok = testing::ByteTokenizer();
  v1::SamplingParams params;
  params.add_stop("xyz");
  OutputProcessor out("r", params, tok.get());
  EXPECT_EQ(out.OnToken('a', std::nullopt, nullptr).response.chunk().text(), "a");
  EXPECT_EQ(out.OnToken('x', std::nullopt, nullptr).response.chunk().text(), "");  // held
  const std::vector<uint32_t> output = {'a', 'x'};
  std::vector<v1::GenerateResponse> end = out.Complete(v1::FINISH_REASON_ABORT, 2, output);
  ASSERT_EQ(end.size(), 2u);
  EXPECT_EQ(end[0].chunk().text(), "x");
  EXPECT_EQ(end[0].chunk().token_ids_size(), 0);
  ASSERT_TRUE(end[1].has_complete());
  EXPECT_EQ(end[1].complete().finish_reason(), v1::FINISH_REASON_ABORT);
  EXPECT_EQ(end[1].complete().stop_str(), "");
  EXPECT_FALSE(end[1].complete().has_stop_token_id());
  EXPECT_EQ(end[1].complete().usage().completion_tokens(), 2u);
}

TEST(OutputProcessorTest, AnIdOutsideTheVocabularyHasNoTextAndGoesOn) {
  // A padded vocabulary row: the model's vocabulary is larger than the
  // tokenizer's (256 here).
  std::shared_ptr<const tokenizer::Tokenizer> tok = testing::ByteTokenizer();
  v1::SamplingParams params;
  OutputProcessor out("r", params, tok.get());
  EXPECT_EQ(out.OnToken('h', std::nullopt, nullptr).response.chunk().text(), "h");
  TokenOutput odd = out.OnToken(300, std::nullopt, nullptr);
  EXPECT_THAT(odd.response.chunk().token_ids(), ElementsAre(300u));
  EXPECT_EQ(odd.response.chunk().text(), "");
  EXPECT_EQ(odd.finish_reason, std::nullopt);
  TokenOutput last = out.OnToken('i', v1::FINISH_REASON_LENGTH, nullptr);
  EXPECT_EQ(last.response.chunk().text(), "i");
  EXPECT_EQ(last.finish_reason, v1::FINISH_REASON_LENGTH);
}

}  // namespace
}  // namespace epserve::frontend
