// Built-in filters, tests, attribute access, methods and globals of the
// Hugging Face chat-template environment. Names are resolved when a template
// is parsed, so an unknown filter or test is a parse error.
#pragma once

#include <initializer_list>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/chat_template/value.h"

namespace epserve::jinja {

class Interpreter;

using FilterFn = absl::StatusOr<Value> (*)(Interpreter& interp, const Value& input,
                                           const CallArgs& args);
using TestFn = absl::StatusOr<bool> (*)(Interpreter& interp, const Value& input,
                                        const CallArgs& args);

// Null when the name is not a supported filter / test.
FilterFn FindFilter(std::string_view name);
TestFn FindTest(std::string_view name);

// Jinja's environment.getattr(obj, name) in the immutable sandbox: methods of
// str / dict / list bind to their receiver, dict keys are found by `.`, a
// missing attribute is Undefined. Fails only for attributes of Undefined and
// for Python methods this engine does not implement.
absl::StatusOr<Value> GetAttr(const Value& obj, absl::string_view name);
// Jinja's environment.getitem(obj, key): subscript, falling back to the
// attribute of a string key; out-of-range and missing keys are Undefined.
absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
// obj[start:stop:step] for strings and sequences; null parts are omitted.
absl::StatusOr<Value> GetSlice(const Value& obj, const Value* start, const Value* stop,
                               const Value* step);

// The globals: range, dict, namespace, raise_exception, strftime_now, and
// lipsum / cycler / joiner refused when called. Null when `name` is none.
const Value* FindGlobal(std::string_view name);

// Binds Python-style arguments of `function` to `names` (in order); the
// first `num_required` must be given. Missing optional ones are left empty.
absl::StatusOr<std::vector<std::optional<Value>>> BindArgs(
    absl::string_view function, const CallArgs& args,
    std::initializer_list<absl::string_view> names, size_t num_required);

}  // namespace epserve::jinja
