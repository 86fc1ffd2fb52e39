// /v1/chat/completions: the request's parsing and checks, the template's
// variables and continue_final_message, where the template comes from, and
// the answer's shape (unit; the real router and the official client are in
// openai_client_test.cjs).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/chat_template/jinja.h"
#include "nlohmann/json.hpp"
#include "router/http/chat_template.h"
#include "router/http/openai_protocol.h"

namespace epserve::http {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

ChatRequest Parse(const std::string& body) {
  ChatRequest req;
  std::optional<HttpError> e = ParseChatRequest(body, "m", &req);
  EXPECT_FALSE(e.has_value()) << (e ? e->message : "");
  return req;
}

HttpError Fail(const std::string& body) {
  ChatRequest req;
  std::optional<HttpError> e = ParseChatRequest(body, "m", &req);
  EXPECT_TRUE(e.has_value()) << body;
  return e.value_or(HttpError{});
}

TEST(ChatRequest, ParametersMessagesAndDefaults) {
  ChatRequest r = Parse(R"({"model": "m", "messages": [
      {"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    "max_completion_tokens": 9, "temperature": 0.5, "seed": 7, "n": 2, "stream": true,
    "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 3,
    "stop": "x", "chat_template_kwargs": {"enable_thinking": false}, "unknown_field": 1})");
  EXPECT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1]["content"], "a\nb");  // text parts joined
  EXPECT_EQ(r.sampling.max_tokens(), 9u);
  EXPECT_FLOAT_EQ(r.sampling.temperature(), 0.5f);
  EXPECT_EQ(r.sampling.seed(), 7u);
  EXPECT_EQ(r.n, 2);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_TRUE(r.sampling.logprobs());
  EXPECT_EQ(r.sampling.top_logprobs(), 3u);
  EXPECT_THAT(r.sampling.stop(), ::testing::ElementsAre("x"));
  EXPECT_EQ(r.template_kwargs["enable_thinking"], false);
  EXPECT_TRUE(r.add_generation_prompt);
  EXPECT_TRUE(r.tools.is_null());

  // max_tokens unset: up to the context (the builder's default), not 16.
  ChatRequest d = Parse(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_FALSE(d.sampling.has_max_tokens());
  EXPECT_EQ(d.top_logprobs, -1);
  EXPECT_FALSE(d.sampling.logprobs());
  ChatRequest lp =
      Parse(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": true})");
  EXPECT_EQ(lp.top_logprobs, 0);
}

TEST(ChatRequest, KeepsKeyOrderAndParsesToolCallArguments) {
  ChatRequest r = Parse(R"({"model": "m", "messages": [
      {"role": "user", "content": "weather?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "get", "arguments": "{\"zeta\": 1, \"alpha\": \"x\"}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
    "tools": [{"type": "function", "function": {"name": "get", "parameters": {"z": 1, "a": 2}}}]})");
  const ojson& args = r.messages[1]["tool_calls"][0]["function"]["arguments"];
  ASSERT_TRUE(args.is_object());
  EXPECT_EQ(args.dump(), R"({"zeta":1,"alpha":"x"})");  // the sender's order
  EXPECT_TRUE(r.messages[1]["content"].is_null());
  EXPECT_EQ(r.tools[0]["function"]["parameters"].dump(), R"({"z":1,"a":2})");
  // Arguments that are not JSON stay a string; tool_choice none keeps tools out.
  ChatRequest s = Parse(R"({"model": "m", "tool_choice": "none", "messages": [
      {"role": "assistant", "tool_calls": [{"type": "function",
        "function": {"name": "f", "arguments": "not json"}}]}],
    "tools": [{"type": "function", "function": {"name": "f"}}]})");
  EXPECT_EQ(s.messages[0]["tool_calls"][0]["function"]["arguments"], "not json");
  EXPECT_TRUE(s.tools.is_null());
}

TEST(ChatRequest, BadRequestsNameTheField) {
  struct Case {
    const char* body;
    const char* param;
    const char* says;
  } cases[] = {
      {R"({"model": "m"})", "messages", "non-empty list"},
      {R"({"model": "m", "messages": []})", "messages", "non-empty list"},
      {R"({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role",
       "unknown role 'wizard'"},
      {R"({"model": "m", "messages": [{"content": "x"}]})", "messages[0].role", "required"},
      {R"({"model": "m", "messages": [{"role": "user"}]})", "messages[0].content",
       "required for role user"},
      {R"({"model": "m", "messages": [{"role": "user", "content": 5}]})", "messages[0].content",
       "a string or a list"},
      {R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
       "messages[0].content[0].type", "'image_url' parts are not supported"},
      {R"({"model": "m", "messages": [{"role": "tool", "content": "x"}]})",
       "messages[0].tool_call_id", "required for role tool"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": []}]})",
       "messages[0].tool_calls", "only for role assistant"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})",
       "top_logprobs", "needs logprobs: true"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true,
           "top_logprobs": 21})",
       "top_logprobs", "must be in [0, 20]"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
           "continue_final_message": true})",
       "continue_final_message", "add_generation_prompt"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
           "continue_final_message": true, "add_generation_prompt": false})",
       "continue_final_message", "last message must be the assistant's"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
           "tool_choice": "required"})",
       "tool_choice", "only \"auto\" and \"none\""},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{}]})",
       "tools[0]", "type"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}],
           "chat_template_kwargs": 3})",
       "chat_template_kwargs", "an object"},
      {R"({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"})",
       "temperature", "a number"},
  };
  for (const Case& c : cases) {
    HttpError e = Fail(c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.param, c.param) << c.body;
    EXPECT_THAT(e.message, HasSubstr(c.says)) << c.body;
  }
  EXPECT_EQ(Fail(R"({"model": "other", "messages": [{"role": "user", "content": "x"}]})").status,
            404);
  EXPECT_THAT(Fail("{not json").message, HasSubstr("not valid JSON"));
  EXPECT_THAT(
      Fail("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}")
          .message,
      HasSubstr("not valid JSON (or not UTF-8)"));
}

constexpr char kChatMl[] =
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}"
    "{% endfor %}{% if tools %}[tools: {{ tools | tojson }}]{% endif %}"
    "{% if enable_thinking is defined %}[think={{ enable_thinking }}]{% endif %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}";

TEST(ChatTemplateRender, VariablesAsTransformersPassesThem) {
  ojson special = ojson::parse(R"({"bos_token": {"content": "<s>", "lstrip": false},
      "eos_token": "</s>", "pad_token": null})");
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource(kChatMl, special, "test");
  ASSERT_TRUE(t.ok()) << t.status();
  ChatRequest r = Parse(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}],
      "chat_template_kwargs": {"enable_thinking": false},
      "tools": [{"type": "function", "function": {"name": "f", "description": "d"}}]})");
  absl::StatusOr<std::string> text = t->Render(r);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<s><|user|>hi</s>[tools: [{\"type\": \"function\", \"function\": {\"name\": \"f\", "
            "\"description\": \"d\"}}]][think=False]<|assistant|>");

  ChatRequest cont = Parse(R"({"model": "m", "add_generation_prompt": false,
      "continue_final_message": true, "messages": [{"role": "user", "content": "hi"},
      {"role": "assistant", "content": "The answer is"}]})");
  text = t->Render(cont);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<s><|user|>hi</s><|assistant|>The answer is");  // no </s> after it
}

TEST(ChatTemplateRender, RaiseExceptionComesBackAsTheTemplatesMessage) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromSource(
      "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
      "{% endif %}{{ m.content }}{% endfor %}",
      ojson::object(), "test");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::string> text = t->Render(Parse(R"({"model": "m", "messages": [
      {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})"));
  ASSERT_FALSE(text.ok());
  EXPECT_TRUE(jinja::IsTemplateException(text.status()));
  EXPECT_EQ(text.status().message(),
            "Conversation roles must alternate user/assistant/user/assistant/...");
}

class ModelDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("epserve_chat_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(ModelDir, TemplateFromTokenizerConfigJinjaFileOrOverride) {
  // None: chat is refused later, the router still starts.
  Write("tokenizer_config.json", R"({"eos_token": "</s>"})");
  absl::StatusOr<std::optional<ChatTemplate>> none = ChatTemplate::Load(dir_.string(), "");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  // Named templates: "tool_use" for requests with tools.
  Write("tokenizer_config.json", R"({"eos_token": "</s>", "chat_template": [
      {"name": "default", "template": "D{{ eos_token }}"},
      {"name": "tool_use", "template": "T{{ tools | length }}"}]})");
  absl::StatusOr<std::optional<ChatTemplate>> named = ChatTemplate::Load(dir_.string(), "");
  ASSERT_TRUE(named.ok() && named->has_value()) << named.status();
  EXPECT_EQ(*(*named)->Render(Parse(R"({"model": "m", "messages": [{"role": "user",
      "content": "x"}]})")),
            "D</s>");
  EXPECT_EQ(*(*named)->Render(Parse(R"({"model": "m", "messages": [{"role": "user",
      "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]})")),
            "T1");

  // chat_template.jinja wins over tokenizer_config.json; --chat-template over both.
  Write("chat_template.jinja", "J");
  absl::StatusOr<std::optional<ChatTemplate>> file = ChatTemplate::Load(dir_.string(), "");
  ASSERT_TRUE(file.ok() && file->has_value());
  EXPECT_EQ(*(*file)->Render(Parse(R"({"model": "m", "messages": [{"role": "user",
      "content": "x"}]})")),
            "J");
  Write("override.jinja", "O{{ eos_token }}");
  absl::StatusOr<std::optional<ChatTemplate>> over =
      ChatTemplate::Load(dir_.string(), (dir_ / "override.jinja").string());
  ASSERT_TRUE(over.ok() && over->has_value());
  EXPECT_EQ(*(*over)->Render(Parse(R"({"model": "m", "messages": [{"role": "user",
      "content": "x"}]})")),
            "O</s>");
}

TEST_F(ModelDir, UnsupportedTemplateFailsAtLoadNamingTheFeatureAndFile) {
  Write("tokenizer_config.json", R"({"chat_template": "{% include 'other.jinja' %}"})");
  absl::StatusOr<std::optional<ChatTemplate>> t = ChatTemplate::Load(dir_.string(), "");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("tokenizer_config.json (chat_template)"));
  EXPECT_THAT(t.status().message(), HasSubstr("include"));
  EXPECT_THAT(t.status().message(), HasSubstr("--chat-template"));
  Write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "x"}]})");
  t = ChatTemplate::Load(dir_.string(), "");
  ASSERT_FALSE(t.ok());
  EXPECT_THAT(t.status().message(), HasSubstr("no template named \"default\""));
  EXPECT_FALSE(ChatTemplate::Load(dir_.string(), (dir_ / "missing.jinja").string()).ok());
}

TEST(ChatAnswer, BodyAndStreamEventsHaveOpenAisShape) {
  CompletionFormat f;
  f.object = "chat.completion";
  f.chunk_object = "chat.completion.chunk";
  f.id = "chatcmpl-1";
  f.created = 5;
  f.model = "m";
  f.logprobs = 1;
  ChoiceResult c;
  c.text = "hi";
  c.finish_reason = "stop";
  c.prompt_tokens = 4;
  c.completion_tokens = 2;
  v1::TokenLogprob lp;
  lp.set_token_id(7);
  lp.set_logprob(-0.5f);
  v1::TopLogprob* top = lp.add_top_logprobs();
  top->set_token_id(8);
  top->set_logprob(-1.0f);
  c.logprobs = {lp};
  json body = json::parse(ChatCompletionBody(f, {c}, 1));
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "hi");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["logprobs"]["content"][0]["token"], "<7>");
  EXPECT_EQ(body["choices"][0]["logprobs"]["content"][0]["bytes"], json::parse("[60,55,62]"));
  EXPECT_EQ(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"][0]["token"], "<8>");
  EXPECT_EQ(body["usage"]["total_tokens"], 6);

  auto event = [](const std::string& e) {
    EXPECT_EQ(e.rfind("data: ", 0), 0u);
    return json::parse(e.substr(6));
  };
  json first = event(ChatChunkEvent(f, 0, true, "h", {}, ""));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], json::parse(R"({"role": "assistant", "content": "h"})"));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  json next = event(ChatChunkEvent(f, 0, false, "i", {}, ""));
  EXPECT_EQ(next["choices"][0]["delta"], json::parse(R"({"content": "i"})"));
  json last = event(ChatChunkEvent(f, 0, false, "", {}, "length"));
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
}

}  // namespace
}  // namespace epserve::http
