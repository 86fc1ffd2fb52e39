// Real chat templates (fixtures/templates, from the models' tokenizer_config.json)
// rendered over the conversation corpus, byte for byte against Python's jinja2
// in transformers' environment (fixtures/reference_expected.json).
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/chat_template/jinja.h"
#include "gtest/gtest.h"
#include "tests/chat_template/test_util.h"

namespace epserve::jinja {
namespace {

using testing::ReadFixture;
using testing::ReadJsonFixture;
using testing::TestName;

struct Case {
  std::string model;
  std::string conversation;
  nlohmann::ordered_json expected;
};

const nlohmann::ordered_json& Expected() {
  static const auto* expected =
      new nlohmann::ordered_json(ReadJsonFixture("reference_expected.json"));
  return *expected;
}

std::vector<Case> LoadCases() {
  std::vector<Case> cases;
  if (!Expected().contains("cases")) return cases;
  for (const auto& c : Expected()["cases"]) {
    cases.push_back({c["model"].get<std::string>(), c["conversation"].get<std::string>(), c});
  }
  return cases;
}

const Template& ModelTemplate(const std::string& model) {
  static auto* templates = new std::map<std::string, Template>();
  auto it = templates->find(model);
  if (it == templates->end()) {
    absl::StatusOr<Template> tmpl = Template::Parse(ReadFixture("templates/" + model + ".jinja"));
    EXPECT_TRUE(tmpl.ok()) << model << ": " << tmpl.status();
    if (!tmpl.ok()) tmpl = Template::Parse("");
    it = templates->emplace(model, *std::move(tmpl)).first;
  }
  return it->second;
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.model << " x " << c.conversation; }

class ReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(ReferenceTest, MatchesPythonJinja2) {
  const Case& c = GetParam();
  // transformers' variables for the conversation, then the model's tokens.
  nlohmann::ordered_json context = Expected()["conversations"][c.conversation];
  for (const auto& [key, token] : Expected()["models"][c.model].items()) context[key] = token;

  absl::StatusOr<std::string> out = ModelTemplate(c.model).Render(context);
  if (c.expected.contains("output")) {
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, c.expected["output"].get<std::string>());
    return;
  }
  const std::string python_error =
      c.expected["error_type"].get<std::string>() + ": " + c.expected["error"].get<std::string>();
  ASSERT_FALSE(out.ok()) << "Python fails (" << python_error << "), we rendered:\n" << *out;
  if (c.expected["error_type"] == "TemplateError") {
    EXPECT_TRUE(IsTemplateException(out.status())) << out.status();
    EXPECT_EQ(absl::StrCat(out.status().message()), c.expected["error"].get<std::string>());
  } else {
    EXPECT_FALSE(IsTemplateException(out.status())) << out.status();
  }
}

INSTANTIATE_TEST_SUITE_P(RealTemplates, ReferenceTest, ::testing::ValuesIn(LoadCases()),
                         [](const ::testing::TestParamInfo<Case>& param_info) {
                           return TestName(param_info.param.model + "__" +
                                           param_info.param.conversation);
                         });

TEST(ReferenceFixtures, EveryModelTemplateParses) {
  ASSERT_TRUE(Expected().contains("models"));
  EXPECT_GE(Expected()["models"].size(), 8u);
  for (const auto& [model, tokens] : Expected()["models"].items()) {
    EXPECT_TRUE(Template::Parse(ReadFixture("templates/" + model + ".jinja")).ok()) << model;
  }
  EXPECT_GE(LoadCases().size(), 200u);
}

}  // namespace
}  // namespace epserve::jinja
