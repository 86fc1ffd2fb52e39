// Error statuses of the Jinja engine.
//
// Every error is an InvalidArgument status except the resource limits
// (ResourceExhausted). Messages name the line ("... (line 12)"); the
// evaluator adds it to errors raised below it. An error raised by the
// template itself through raise_exception("msg") carries exactly "msg" and a
// payload that IsTemplateException() (jinja.h) detects.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace epserve::jinja {

class Value;

// Payload URLs marking a status as raised by raise_exception() or as already
// naming its line.
inline constexpr absl::string_view kRaisedPayload = "epserve.jinja/raise_exception";
inline constexpr absl::string_view kLinePayload = "epserve.jinja/line";

// A runtime error of the kind Python raises (TypeError, ValueError, ...).
absl::Status RuntimeError(absl::string_view message);
// Using an undefined value in a way Jinja refuses (UndefinedError).
absl::Status UndefinedError(const Value& undefined);
// A construct or value this engine does not implement, found at render time.
absl::Status UnsupportedError(absl::string_view what);
// A render limit (output size, loop iterations, call depth) was reached.
absl::Status LimitError(absl::string_view what);
// raise_exception(message) called by the template.
absl::Status RaisedError(absl::string_view message);

// Appends " (line N)" to the message unless the status already names a line
// or was raised by the template.
absl::Status WithLine(absl::Status status, int line);

}  // namespace epserve::jinja
