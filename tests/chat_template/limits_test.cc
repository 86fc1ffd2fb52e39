// Render limits and hostile templates: every one ends in a clear error, never
// a crash or an unbounded render.
#include <string>

#include "absl/strings/str_cat.h"
#include "common/chat_template/jinja.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace epserve::jinja {
namespace {

using ::testing::HasSubstr;

absl::Status RenderStatus(const std::string& source, const RenderOptions& options = {}) {
  absl::StatusOr<Template> tmpl = Template::Parse(source);
  if (!tmpl.ok()) return tmpl.status();
  return tmpl->Render(nlohmann::ordered_json::object(), options).status();
}

TEST(Limits, LoopIterations) {
  RenderOptions options;
  options.max_loop_iterations = 1000;
  EXPECT_TRUE(RenderStatus("{% for i in range(999) %}{% endfor %}", options).ok());
  absl::Status status = RenderStatus(
      "{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}", options);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(absl::StrCat(status.message()), HasSubstr("loop iterations"));
  // The default limit stops 10^10 iterations quickly.
  status = RenderStatus(
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
}

TEST(Limits, OutputSize) {
  RenderOptions options;
  options.max_output_bytes = 1000;
  EXPECT_TRUE(RenderStatus("{% for i in range(100) %}0123456789{% endfor %}", options).ok());
  absl::Status status = RenderStatus("{% for i in range(101) %}0123456789{% endfor %}", options);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  // Values built on the way count too: string repetition and doubling.
  EXPECT_EQ(RenderStatus("{% set s = 'x' * 100000 %}", options).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RenderStatus("{% set s = 'x' * 9223372036854775807 %}").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RenderStatus("{% set ns = namespace(s='xx') %}{% for i in range(64) %}"
                         "{% set ns.s = ns.s ~ ns.s %}{% endfor %}")
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RenderStatus("{% set l = [1] * 100000000000 %}").code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(Limits, MacroRecursion) {
  absl::Status status = RenderStatus("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(absl::StrCat(status.message()), HasSubstr("nested deeper"));
  // Bounded recursion is fine.
  EXPECT_TRUE(RenderStatus("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{% endif %}{% endmacro %}"
                           "{{ f(30) }}")
                  .ok());
}

TEST(Limits, DeeplyNestedTemplatesAreRejectedAtParse) {
  std::string expr = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  absl::Status status = RenderStatus(expr);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(absl::StrCat(status.message()), HasSubstr("nesting"));

  std::string blocks;
  for (int i = 0; i < 1000; ++i) blocks += "{% if true %}";
  for (int i = 0; i < 1000; ++i) blocks += "{% endif %}";
  status = RenderStatus(blocks);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(absl::StrCat(status.message()), HasSubstr("nesting"));

  std::string nots = "{{ ";
  for (int i = 0; i < 5000; ++i) nots += "not ";
  nots += "1 }}";
  EXPECT_FALSE(RenderStatus(nots).ok());

  std::string lists = "{{ " + std::string(5000, '[') + std::string(5000, ']') + " }}";
  EXPECT_FALSE(RenderStatus(lists).ok());

  // Moderate nesting still works.
  EXPECT_TRUE(RenderStatus("{{ " + std::string(50, '(') + "1" + std::string(50, ')') + " }}").ok());
}

TEST(Limits, DeeplyNestedContextIsRejected) {
  nlohmann::ordered_json deep = nlohmann::ordered_json::array();
  for (int i = 0; i < 2000; ++i) deep = nlohmann::ordered_json::array({deep});
  absl::StatusOr<Template> tmpl = Template::Parse("{{ x | length }}");
  ASSERT_TRUE(tmpl.ok());
  absl::StatusOr<std::string> out = tmpl->Render({{"x", deep}});
  EXPECT_FALSE(out.ok());
}

TEST(Limits, RangeIsCappedLikeTheSandbox) {
  absl::Status status = RenderStatus("{{ range(100001) | length }}");
  EXPECT_THAT(absl::StrCat(status.message()), HasSubstr("MAX_RANGE"));
  EXPECT_TRUE(RenderStatus("{{ range(100000) | length }}").ok());
  EXPECT_TRUE(
      RenderStatus(
          "{{ range(-9223372036854775807, 9223372036854775807, 9223372036854775807) | list }}")
          .ok());
}

}  // namespace
}  // namespace epserve::jinja
