// A Jinja2 engine for Hugging Face chat templates.
//
// It renders `tokenizer_config.json` chat templates byte for byte as
// transformers does: jinja2.sandbox.ImmutableSandboxedEnvironment with
// trim_blocks=True, lstrip_blocks=True, the loopcontrols extension
// ({% break %}, {% continue %}) and {% generation %} (rendered unchanged);
// the `tojson` filter is Python's json.dumps (ensure_ascii=False, no key
// sorting, no HTML escaping); globals raise_exception(msg) and
// strftime_now(format) besides Jinja's range, dict and namespace.
//
// What a template prints follows Python: str() of values (True, None,
// ['a', 1], {'k': 'v'}, 0.1), Python int / float arithmetic, truthiness,
// comparisons and string methods. Undefined is Jinja's default Undefined:
// it prints as "", is false, iterates as empty, and fails when its attributes
// are read or it is used in arithmetic.
//
// Anything the engine does not implement is refused, never rendered
// differently: unsupported tags ({% include %}, {% extends %}, {% block %},
// {% import %}, ...), unknown filters and tests fail Parse(); unsupported
// Python methods, printf-style `%` formatting, case mapping of non-ASCII
// letters (upper/lower/title/capitalize, case-insensitive sort) and printing
// objects whose Python str() is an address (macros, generators) fail Render().
//
// Example:
//   ASSIGN_OR_RETURN(epserve::jinja::Template t, Template::Parse(config_template));
//   nlohmann::ordered_json ctx = {{"messages", messages},
//                                 {"add_generation_prompt", true},
//                                 {"bos_token", "<s>"}, {"eos_token", "</s>"}};
//   ASSIGN_OR_RETURN(std::string prompt, t.Render(ctx));
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace epserve::jinja {

namespace ast {
struct Program;
}

// Limits of one Render(). Exceeding one fails with ResourceExhausted.
struct RenderOptions {
  // Size of the rendered text and of any string or list built on the way.
  size_t max_output_bytes = 32u << 20;
  // Total iterations of all for loops (and items visited by loop filters).
  int64_t max_loop_iterations = 10'000'000;
  // Nesting of macro and caller() calls.
  int max_call_depth = 64;
};

class Template {
 public:
  // Parses once. An unsupported construct ({% include %}, {% extends %},
  // {% block %}, {% import %}, an unknown filter, test or tag) is an error
  // naming the feature and the line: "unsupported Jinja feature 'include'
  // (line 3)". Syntax errors name the line too.
  static absl::StatusOr<Template> Parse(std::string_view source);

  // Renders with the given variables: a JSON object such as {"messages": [...],
  // "tools": [...], "add_generation_prompt": true, "bos_token": "<s>",
  // "eos_token": "</s>", "enable_thinking": false}.
  //
  // The context is an ordered_json so that object keys keep the order the
  // client sent (as Python dicts do): `tool|tojson` and `for k, v in d.items()`
  // print keys in that order. (nlohmann::json would sort them.) To render as
  // transformers does, pass what apply_chat_template passes: "messages",
  // "tools" (null when there are none), "documents" (null),
  // "add_generation_prompt", the tokenizer's special tokens that are set
  // ("bos_token", "eos_token", ...) and the extra template kwargs
  // ("enable_thinking", ...); templates test `tools is defined` and
  // `tools is not none`.
  //
  // raise_exception("msg") in the template becomes an InvalidArgument status
  // whose message is exactly "msg" (IsTemplateException() is true for it).
  // Other errors are InvalidArgument naming the line ("... (line 12)"), or
  // ResourceExhausted for a limit in `options`.
  //
  // Thread-safe: any number of threads may render one Template at once.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context,
                                     const RenderOptions& options = {}) const;

 private:
  explicit Template(std::shared_ptr<const ast::Program> program);
  std::shared_ptr<const ast::Program> program_;
};

// True when `status` comes from raise_exception() in the template: the
// request (e.g. roles not alternating) is what the template rejects.
bool IsTemplateException(const absl::Status& status);

}  // namespace epserve::jinja
