#include "router/http/openai_protocol.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace epserve::http {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

CompletionRequest Parse(const std::string& body) {
  CompletionRequest req;
  std::optional<HttpError> e = ParseCompletionRequest(body, "m", &req);
  EXPECT_FALSE(e.has_value()) << (e ? e->message : "");
  return req;
}

HttpError Fail(const std::string& body) {
  CompletionRequest req;
  std::optional<HttpError> e = ParseCompletionRequest(body, "m", &req);
  EXPECT_TRUE(e.has_value()) << body;
  return e.value_or(HttpError{});
}

TEST(OpenAiProtocol, EveryParameterMapsToTheSamplingParams) {
  CompletionRequest r = Parse(R"({"model": "m", "prompt": "hi", "max_tokens": 7,
    "temperature": 0.5, "top_p": 0.9, "top_k": 5, "min_p": 0.1, "seed": 42, "stop": ["a", "b"],
    "stop_token_ids": [3], "presence_penalty": 0.5, "frequency_penalty": -0.5,
    "repetition_penalty": 1.1, "logprobs": 2, "n": 3, "min_tokens": 2, "ignore_eos": true,
    "include_stop_str_in_output": true, "skip_special_tokens": false, "stream": true,
    "stream_options": {"include_usage": true}, "user": "u", "best_of": 3, "unknown": 1})");
  ASSERT_EQ(r.prompts.size(), 1u);
  const v1::SamplingParams& s = r.prompts[0].sampling_params();
  EXPECT_EQ(r.prompts[0].text(), "hi");
  EXPECT_EQ(s.max_tokens(), 7u);
  EXPECT_FLOAT_EQ(s.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(s.top_p(), 0.9f);
  EXPECT_EQ(s.top_k(), 5);
  EXPECT_FLOAT_EQ(s.min_p(), 0.1f);
  EXPECT_EQ(s.seed(), 42u);
  EXPECT_THAT(s.stop(), ::testing::ElementsAre("a", "b"));
  EXPECT_THAT(s.stop_token_ids(), ::testing::ElementsAre(3u));
  EXPECT_FLOAT_EQ(s.presence_penalty(), 0.5f);
  EXPECT_FLOAT_EQ(s.frequency_penalty(), -0.5f);
  EXPECT_FLOAT_EQ(s.repetition_penalty(), 1.1f);
  EXPECT_TRUE(s.logprobs());
  EXPECT_EQ(s.top_logprobs(), 2u);
  EXPECT_EQ(s.min_tokens(), 2u);
  EXPECT_TRUE(s.ignore_eos());
  EXPECT_TRUE(s.include_stop_str_in_output());
  EXPECT_FALSE(s.skip_special_tokens());
  EXPECT_EQ(r.n, 3);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.logprobs, 2);
}

TEST(OpenAiProtocol, DefaultsAndPromptShapes) {
  CompletionRequest r = Parse(R"({"model": "m", "prompt": "x", "top_k": -1})");
  EXPECT_EQ(r.prompts[0].sampling_params().max_tokens(), 16u);  // OpenAI's default
  EXPECT_FALSE(r.prompts[0].sampling_params().has_temperature());
  EXPECT_EQ(r.prompts[0].sampling_params().top_k(), 0);  // -1: off
  EXPECT_FALSE(r.prompts[0].sampling_params().logprobs());
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  r = Parse(R"({"model": "m", "prompt": [1, 2, 3]})");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_THAT(r.prompts[0].token_ids().ids(), ::testing::ElementsAre(1u, 2u, 3u));
  r = Parse(R"({"model": "m", "prompt": ["a", [4, 5], "c"], "stop": "x"})");
  ASSERT_EQ(r.prompts.size(), 3u);
  EXPECT_EQ(r.prompts[0].text(), "a");
  EXPECT_THAT(r.prompts[1].token_ids().ids(), ::testing::ElementsAre(4u, 5u));
  EXPECT_EQ(r.prompts[2].text(), "c");
  for (const auto& p : r.prompts)
    EXPECT_THAT(p.sampling_params().stop(), ::testing::ElementsAre("x"));
}

TEST(OpenAiProtocol, TheModelsGenerationConfigFillsWhatARequestLeavesOut) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / absl::StrCat("epserve_gencfg_", getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "generation_config.json")
      << R"({"temperature": 0.6, "top_p": 0.95, "top_k": 20, "eos_token_id": 2})";
  absl::StatusOr<SamplingDefaults> d = ReadSamplingDefaults(dir.string());
  ASSERT_TRUE(d.ok()) << d.status();
  CompletionRequest r;
  ASSERT_FALSE(
      ParseCompletionRequest(R"({"model": "m", "prompt": "x", "top_p": 0.5})", "m", &r, *d));
  const v1::SamplingParams& s = r.prompts[0].sampling_params();
  EXPECT_FLOAT_EQ(s.temperature(), 0.6f);  // the model's
  EXPECT_FLOAT_EQ(s.top_p(), 0.5f);        // the request's
  EXPECT_EQ(s.top_k(), 20);
  EXPECT_FALSE(s.has_repetition_penalty());
  // No file: no defaults; a wrong type names the file and key.
  std::filesystem::remove(dir / "generation_config.json");
  EXPECT_FALSE(ReadSamplingDefaults(dir.string())->temperature.has_value());
  std::ofstream(dir / "generation_config.json") << R"({"top_p": "high"})";
  absl::StatusOr<SamplingDefaults> bad = ReadSamplingDefaults(dir.string());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("'top_p' must be a number"));
  std::filesystem::remove_all(dir);
}

TEST(OpenAiProtocol, BadInputNamesTheFieldWithOpenAisErrorShape) {
  struct Case {
    std::string body;
    int status;
    std::string param;
    std::string says;
  };
  const Case cases[] = {
      {"{not json", 400, "", "not valid JSON"},
      {"[1, 2]", 400, "", "must be a JSON object"},
      {R"({"prompt": "x"})", 400, "model", "required"},
      {R"({"model": "other", "prompt": "x"})", 404, "model", "does not exist"},
      {R"({"model": "m"})", 400, "prompt", "required"},
      {R"({"model": "m", "prompt": []})", 400, "prompt", "non-empty"},
      {R"({"model": "m", "prompt": [{"a": 1}]})", 400, "prompt[0]", "expected a string"},
      {R"({"model": "m", "prompt": [-1]})", 400, "prompt", "out of range"},
      {R"({"model": "m", "prompt": "x", "temperature": "hot"})", 400, "temperature",
       "expected a number"},
      {R"({"model": "m", "prompt": "x", "top_p": 1.5})", 400, "top_p", "must be in [0, 1]"},
      {R"({"model": "m", "prompt": "x", "max_tokens": -1})", 400, "max_tokens", "must be in"},
      {R"({"model": "m", "prompt": "x", "n": 0})", 400, "n", "must be in [1, 128]"},
      {R"({"model": "m", "prompt": "x", "logprobs": 21})", 400, "logprobs", "[0, 20]"},
      {R"({"model": "m", "prompt": "x", "stop": 3})", 400, "stop", "a list of strings"},
      {R"({"model": "m", "prompt": "x", "stop": ["a", 1]})", 400, "stop", "a list of strings"},
      {R"({"model": "m", "prompt": "x", "echo": true})", 400, "echo", "not supported"},
      {R"({"model": "m", "prompt": "x", "suffix": "s"})", 400, "suffix", "not supported"},
      {R"({"model": "m", "prompt": "x", "logit_bias": {"1": 5}})", 400, "logit_bias",
       "not supported"},
      {R"({"model": "m", "prompt": "x", "n": 2, "best_of": 3})", 400, "best_of", "equal to n"},
      {R"({"model": "m", "prompt": "x", "stream": "yes"})", 400, "stream", "true or false"},
      {R"({"model": "m", "prompt": "x", "stream_options": {"include_usage": 1}})", 400,
       "stream_options.include_usage", "true or false"},
      {R"({"model": "m", "prompt": "x", "seed": 1.5})", 400, "seed", "an integer"},
      {R"({"model": "m", "prompt": "x", "user": 5})", 400, "user", "a string"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    HttpError e = Fail(c.body);
    EXPECT_EQ(e.status, c.status);
    EXPECT_EQ(e.param, c.param);
    EXPECT_THAT(e.message, HasSubstr(c.says));
    json body = json::parse(ErrorBody(e));
    EXPECT_EQ(body["error"]["message"], e.message);
    EXPECT_TRUE(body["error"].contains("type"));
    EXPECT_TRUE(body["error"].contains("code"));
    if (c.param.empty()) {
      EXPECT_TRUE(body["error"]["param"].is_null());
    } else {
      EXPECT_EQ(body["error"]["param"], c.param);
    }
  }
}

TEST(OpenAiProtocol, StatusesMapToHttpCodes) {
  EXPECT_EQ(FromStatus(absl::InvalidArgumentError("x")).status, 400);
  EXPECT_EQ(FromStatus(absl::UnauthenticatedError("x")).status, 401);
  EXPECT_EQ(FromStatus(absl::NotFoundError("x")).status, 404);
  EXPECT_EQ(FromStatus(absl::ResourceExhaustedError("x")).status, 429);
  EXPECT_EQ(FromStatus(absl::UnavailableError("x")).status, 503);
  EXPECT_EQ(FromStatus(absl::InternalError("x")).status, 500);
  EXPECT_EQ(FromStatus(absl::ResourceExhaustedError("queue full")).message, "queue full");
}

TEST(OpenAiProtocol, ResponsesCarryChoicesUsageAndStreamEvents) {
  std::vector<ChoiceResult> choices(4);
  for (int i = 0; i < 4; ++i) {
    v1::GenerateResponse chunk;
    chunk.mutable_chunk()->set_text(std::string("ab\xff", i == 3 ? 3 : 2));  // a broken byte
    chunk.mutable_chunk()->add_token_ids(7);
    Accumulate(chunk, &choices[static_cast<size_t>(i)]);
    v1::GenerateResponse done;
    done.mutable_complete()->set_finish_reason(i == 0 ? v1::FINISH_REASON_STOP
                                                      : v1::FINISH_REASON_LENGTH);
    done.mutable_complete()->mutable_usage()->set_prompt_tokens(i < 2 ? 5 : 6);
    done.mutable_complete()->mutable_usage()->set_completion_tokens(1);
    Accumulate(done, &choices[static_cast<size_t>(i)]);
  }
  CompletionFormat f;
  f.id = "cmpl-1";
  f.created = 10;
  f.model = "m";
  f.system_fingerprint = "fp";
  // Two prompts x n = 2: prompt tokens once per prompt.
  json body = json::parse(CompletionBody(f, choices, 2));
  EXPECT_EQ(body["object"], "text_completion");
  ASSERT_EQ(body["choices"].size(), 4u);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(body["choices"][3]["text"], "ab\xef\xbf\xbd");  // U+FFFD, not a failure
  EXPECT_EQ(body["usage"]["prompt_tokens"], 11);
  EXPECT_EQ(body["usage"]["completion_tokens"], 4);
  EXPECT_EQ(body["usage"]["total_tokens"], 15);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
  EXPECT_TRUE(body["choices"][0]["logprobs"].is_null());

  const std::string event = CompletionChunkEvent(f, 1, "x", {}, "");
  ASSERT_TRUE(event.rfind("data: ", 0) == 0);
  ASSERT_EQ(event.substr(event.size() - 2), "\n\n");
  json chunk = json::parse(event.substr(6));
  EXPECT_EQ(chunk["choices"][0]["index"], 1);
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  // The per-token path (prefix rendered once) gives the same object.
  CompletionFormat fast = f;
  PrepareChunkPrefix(&fast);
  for (const char* reason : {"", "length"}) {
    const std::string a = CompletionChunkEvent(f, 2, "t\"\xff", {}, reason);
    const std::string b = CompletionChunkEvent(fast, 2, "t\"\xff", {}, reason);
    EXPECT_EQ(json::parse(a.substr(6)), json::parse(b.substr(6))) << b;
    EXPECT_EQ(b.substr(b.size() - 2), "\n\n");
  }
  json usage = json::parse(UsageEvent(f, 3, 4).substr(6));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  json models = json::parse(ModelsBody("m", 5, 2048));
  EXPECT_EQ(models["data"][0]["id"], "m");
  EXPECT_EQ(models["data"][0]["max_model_len"], 2048);
}

TEST(OpenAiProtocol, LogprobsListTokensAndAlternatives) {
  ChoiceResult c;
  v1::GenerateResponse chunk;
  v1::TokenLogprob* lp = chunk.mutable_chunk()->add_logprobs();
  lp->set_token_id(5);
  lp->set_logprob(-0.5f);
  v1::TopLogprob* alt = lp->add_top_logprobs();
  alt->set_token_id(6);
  alt->set_logprob(-1.0f);
  Accumulate(chunk, &c);
  CompletionFormat f;
  f.logprobs = 1;
  f.token_text = [](const void*, uint32_t id) {
    return std::string(1, static_cast<char>('a' + id));
  };
  json body = json::parse(CompletionBody(f, {c}, 1));
  const json& l = body["choices"][0]["logprobs"];
  EXPECT_EQ(l["tokens"][0], "f");
  EXPECT_FLOAT_EQ(l["token_logprobs"][0].get<float>(), -0.5f);
  EXPECT_FLOAT_EQ(l["top_logprobs"][0]["g"].get<float>(), -1.0f);
}

}  // namespace
}  // namespace epserve::http
