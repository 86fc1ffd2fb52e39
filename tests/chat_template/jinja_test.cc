// Small templates (fixtures/snippets.txt) against the outputs Python's jinja2
// produced for them (fixtures/snippets_expected.json), plus the engine's API:
// parse errors naming features and lines, raise_exception, thread safety.
#include "common/chat_template/jinja.h"

#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/chat_template/test_util.h"

namespace epserve::jinja {
namespace {

using ::testing::HasSubstr;
using testing::ReadJsonFixture;
using testing::TestName;

std::string Message(const absl::Status& status) { return absl::StrCat(status.message()); }

struct Snippet {
  std::string name;
  std::string source;
  nlohmann::ordered_json context;
  nlohmann::ordered_json expected;  // {"output"} or {"error_type", "error", "phase"}
  std::string refused;              // why the engine refuses what Python renders
};

std::vector<Snippet> LoadSnippets() {
  std::vector<Snippet> snippets;
  const nlohmann::ordered_json file = ReadJsonFixture("snippets_expected.json");
  if (!file.contains("snippets")) return snippets;
  for (const auto& s : file["snippets"]) {
    Snippet snippet;
    snippet.name = s["name"].get<std::string>();
    snippet.source = s["template"].get<std::string>();
    snippet.context = s["context"];
    snippet.expected = s;
    if (s.contains("refused")) snippet.refused = s["refused"].get<std::string>();
    snippets.push_back(std::move(snippet));
  }
  return snippets;
}

void PrintTo(const Snippet& s, std::ostream* os) { *os << s.name; }

class SnippetTest : public ::testing::TestWithParam<Snippet> {};

TEST_P(SnippetTest, MatchesPythonJinja2) {
  const Snippet& s = GetParam();
  SCOPED_TRACE("template: " + s.source);
  absl::StatusOr<Template> tmpl = Template::Parse(s.source);

  if (!s.refused.empty()) {
    absl::StatusOr<std::string> out = tmpl.ok() ? tmpl->Render(s.context) : tmpl.status();
    EXPECT_FALSE(out.ok()) << "expected a refusal (" << s.refused << "), rendered: " << *out;
    return;
  }
  if (s.expected.contains("output")) {
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    absl::StatusOr<std::string> out = tmpl->Render(s.context);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, s.expected["output"].get<std::string>());
    return;
  }
  const std::string python_error =
      s.expected["error_type"].get<std::string>() + ": " + s.expected["error"].get<std::string>();
  if (s.expected["phase"] == "parse") {
    EXPECT_FALSE(tmpl.ok()) << "Python fails to compile it (" << python_error << ")";
    return;
  }
  // What Python only finds when rendering ({% include %} has no loader) may
  // be refused earlier; raise_exception must run.
  if (!tmpl.ok() && s.expected["error_type"] != "TemplateError") return;
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  absl::StatusOr<std::string> out = tmpl->Render(s.context);
  ASSERT_FALSE(out.ok()) << "Python fails (" << python_error << "), we rendered: " << *out;
  if (s.expected["error_type"] == "TemplateError") {
    EXPECT_TRUE(IsTemplateException(out.status())) << out.status();
    EXPECT_EQ(Message(out.status()), s.expected["error"].get<std::string>());
  } else {
    EXPECT_FALSE(IsTemplateException(out.status())) << out.status();
  }
}

INSTANTIATE_TEST_SUITE_P(Snippets, SnippetTest, ::testing::ValuesIn(LoadSnippets()),
                         [](const ::testing::TestParamInfo<Snippet>& param_info) {
                           return TestName(param_info.param.name);
                         });

TEST(SnippetFixtures, Present) { EXPECT_GT(LoadSnippets().size(), 100u); }

std::string Render(std::string_view source, const nlohmann::ordered_json& context = {}) {
  absl::StatusOr<Template> tmpl = Template::Parse(source);
  if (!tmpl.ok()) return "parse error: " + Message(tmpl.status());
  absl::StatusOr<std::string> out =
      tmpl->Render(context.is_null() ? nlohmann::ordered_json::object() : context);
  if (!out.ok()) return "render error: " + Message(out.status());
  return *out;
}

// The parse error message ("" when the template parses).
std::string ParseError(std::string_view source) {
  absl::StatusOr<Template> tmpl = Template::Parse(source);
  return tmpl.ok() ? "" : Message(tmpl.status());
}

TEST(ParseErrors, UnsupportedTagsNameFeatureAndLine) {
  EXPECT_EQ(ParseError("a\nb\n{% include 'x.jinja' %}"),
            "unsupported Jinja feature 'include' (line 3)");
  EXPECT_EQ(ParseError("{% extends 'base' %}"), "unsupported Jinja feature 'extends' (line 1)");
  EXPECT_EQ(ParseError("\n{% block body %}{% endblock %}"),
            "unsupported Jinja feature 'block' (line 2)");
  EXPECT_EQ(ParseError("{% import 'm' as m %}"), "unsupported Jinja feature 'import' (line 1)");
  EXPECT_EQ(ParseError("{% from 'm' import x %}"), "unsupported Jinja feature 'from' (line 1)");
  EXPECT_THAT(ParseError("\n\n\n{% frobnicate %}"), HasSubstr("frobnicate' (line 4)"));
  EXPECT_THAT(ParseError("{% for x in y recursive %}{% endfor %}"), HasSubstr("recursive"));
  EXPECT_THAT(ParseError("{% macro m() %}{{ varargs }}{% endmacro %}"), HasSubstr("varargs"));
}

TEST(ParseErrors, UnknownFilterAndTest) {
  EXPECT_EQ(ParseError("{{ x }}\n{{ x | frobnicate }}"),
            "unsupported Jinja feature 'filter frobnicate' (line 2)");
  EXPECT_EQ(ParseError("{{ x is frobnicated }}"),
            "unsupported Jinja feature 'test frobnicated' (line 1)");
  EXPECT_THAT(ParseError("{{ x | urlize }}"), HasSubstr("'filter urlize'"));
}

TEST(ParseErrors, SyntaxErrorsNameTheLine) {
  EXPECT_EQ(ParseError("ok\n{% if x %}\nnever closed"),
            "template syntax error: unexpected end of template: {% if %} is never closed with "
            "{% endif %} (line 2)");
  EXPECT_THAT(ParseError("{% for x in y %}{% if x %}{% endfor %}"),
              HasSubstr("unexpected 'endfor'"));
  EXPECT_THAT(ParseError("{% for x in y %}"), HasSubstr("endfor"));
  EXPECT_THAT(ParseError("\n{{ 'abc }}"),
              AllOf(HasSubstr("unterminated string"), HasSubstr("(line 2)")));
  EXPECT_THAT(ParseError("{{ 1 +"), HasSubstr("expected '}}'"));
  EXPECT_THAT(ParseError("{# never closed"), HasSubstr("comment"));
  EXPECT_THAT(ParseError("{% raw %}never closed"), HasSubstr("endraw"));
  EXPECT_THAT(ParseError("{% endfor %}"), HasSubstr("unexpected 'endfor'"));
  EXPECT_THAT(ParseError("{{ (1 }}"), HasSubstr("(line 1)"));
  EXPECT_THAT(ParseError("{{ ] }}"), HasSubstr("unexpected ']'"));
  EXPECT_THAT(ParseError("{% continue %}"), HasSubstr("outside a for loop"));
  EXPECT_NE(ParseError("{{ x ! y }}"), "");
  EXPECT_NE(ParseError("{% set 1 = 2 %}"), "");
  EXPECT_NE(ParseError("{{ f(a=1, 2) }}"), "");
}

TEST(RenderErrors, NameTheLine) {
  absl::StatusOr<Template> tmpl =
      Template::Parse("line 1\n{% if true %}\n{{ 'a' + 1 }}\n{% endif %}");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  absl::StatusOr<std::string> out = tmpl->Render(nlohmann::ordered_json::object());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(out.status()), HasSubstr("can only concatenate str"));
  EXPECT_THAT(Message(out.status()), HasSubstr("(line 3)"));
  EXPECT_FALSE(IsTemplateException(out.status()));

  tmpl = Template::Parse("\n\n{{ messages[0].role }}");
  ASSERT_TRUE(tmpl.ok());
  out = tmpl->Render({{"messages", nlohmann::ordered_json::array()}});
  ASSERT_FALSE(out.ok());
  EXPECT_THAT(Message(out.status()), HasSubstr("no element 0"));
  EXPECT_THAT(Message(out.status()), HasSubstr("(line 3)"));
}

TEST(RenderErrors, RaiseExceptionCarriesExactlyTheMessage) {
  absl::StatusOr<Template> tmpl = Template::Parse(
      "\n{% if messages | length > 1 %}{{ raise_exception('Too many: ' ~ (messages | length)) }}{% "
      "endif %}");
  ASSERT_TRUE(tmpl.ok());
  absl::StatusOr<std::string> out = tmpl->Render({{"messages", {1, 2, 3}}});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "Too many: 3");
  EXPECT_TRUE(IsTemplateException(out.status()));
  EXPECT_FALSE(IsTemplateException(absl::OkStatus()));
  EXPECT_FALSE(IsTemplateException(absl::InvalidArgumentError("Too many: 3")));
}

TEST(Render, ContextMustBeAnObject) {
  absl::StatusOr<Template> tmpl = Template::Parse("x");
  ASSERT_TRUE(tmpl.ok());
  EXPECT_FALSE(tmpl->Render(nlohmann::ordered_json::array()).ok());
  EXPECT_EQ(*tmpl->Render(nlohmann::ordered_json::object()), "x");
}

TEST(Render, ContextKeyOrderIsPreserved) {
  nlohmann::ordered_json tool;
  tool["name"] = "f";
  tool["description"] = "d";
  tool["parameters"] = {{"type", "object"}};
  EXPECT_EQ(Render("{{ tool | tojson }}", {{"tool", tool}}),
            R"({"name": "f", "description": "d", "parameters": {"type": "object"}})");
}

TEST(Render, IntegersBeyondInt64AreRefused) {
  nlohmann::ordered_json context;
  context["n"] = std::numeric_limits<uint64_t>::max();
  EXPECT_THAT(Render("{{ n }}", context), HasSubstr("error"));
  context["n"] = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(Render("{{ n }}", context), "9223372036854775807");
  EXPECT_THAT(Render("{{ n + 1 }}", context), HasSubstr("64-bit"));
}

TEST(Render, InvalidUtf8PassesThroughUnchanged) {
  const std::string bytes = "ok \xff\xfe bad \xc3 end \xe2\x82";
  nlohmann::ordered_json context;
  context["s"] = bytes;  // nlohmann stores the bytes as given
  EXPECT_EQ(Render("{{ s }}", context), bytes);
  EXPECT_EQ(Render("{{ s ~ '!' }}", context), bytes + "!");
  EXPECT_EQ(Render("{{ s | trim }}", context), bytes);
  EXPECT_EQ(Render("{{ s | replace('ok', 'OK') }}", context), "OK" + bytes.substr(2));
  EXPECT_EQ(Render("{{ s[::-1][::-1] }}", context), bytes);
  EXPECT_EQ(Render("{% for c in s %}{{ c }}{% endfor %}", context), bytes);
  // Stripping stops at a stray continuation byte; whitespace around it goes.
  EXPECT_EQ(Render("[{{ s | trim }}]", {{"s", "  \xe3\x80\x80x\x80 \xe3\x80\x80"}}), "[x\x80]");
  EXPECT_EQ(Render("[{{ s.rstrip() }}]", {{"s", "\x80\x80 "}}), "[\x80\x80]");
  // In the template text too.
  EXPECT_EQ(Render("a\xff{{ 'b\xfe' }}c"),
            "a\xff"
            "b\xfe"
            "c");
}

TEST(Render, StrftimeNowUsesTheLocalClock) {
  const std::string out = Render("{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%d %b %Y') }}");
  char today[64];
  char today_long[64];
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::strftime(today, sizeof(today), "%Y-%m-%d", &local);
  std::strftime(today_long, sizeof(today_long), "%d %b %Y", &local);
  // A render straddling midnight may see the next day; allow either.
  EXPECT_THAT(
      out, ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}\\|[0-9]{2} [A-Z][a-z]{2} [0-9]{4}"));
  EXPECT_TRUE(absl::StartsWith(out, today) || out.size() == std::string(today).size() * 2 + 2)
      << out << " vs " << today << " / " << today_long;
}

TEST(Template, CopiesShareTheParsedTree) {
  absl::StatusOr<Template> tmpl = Template::Parse("{{ a }}-{{ b | default('B') }}");
  ASSERT_TRUE(tmpl.ok());
  Template copy = *tmpl;
  Template moved = std::move(*tmpl);
  EXPECT_EQ(*copy.Render({{"a", 1}}), "1-B");
  EXPECT_EQ(*moved.Render({{"a", 2}, {"b", "x"}}), "2-x");
}

TEST(Template, RendersConcurrently) {
  absl::StatusOr<Template> tmpl = Template::Parse(
      "{% set ns = namespace(total=0) %}{% for m in messages %}{% set ns.total = ns.total + m %}"
      "{{ m }},{% endfor %}={{ ns.total }}");
  ASSERT_TRUE(tmpl.ok());
  std::vector<std::thread> threads;
  threads.reserve(8);
  std::vector<std::string> results(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        absl::StatusOr<std::string> out = tmpl->Render({{"messages", {t, t + 1, t + 2}}});
        results[t] = out.ok() ? *out : Message(out.status());
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(results[t], std::to_string(t) + "," + std::to_string(t + 1) + "," +
                              std::to_string(t + 2) + ",=" + std::to_string(3 * t + 3));
  }
}

}  // namespace
}  // namespace epserve::jinja
