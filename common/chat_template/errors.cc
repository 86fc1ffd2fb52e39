#include "common/chat_template/errors.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/chat_template/value.h"

namespace epserve::jinja {

absl::Status RuntimeError(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::Status UndefinedError(const Value& undefined) {
  return absl::InvalidArgumentError(undefined.UndefinedMessage());
}

absl::Status UnsupportedError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("unsupported by this Jinja engine: ", what));
}

absl::Status LimitError(absl::string_view what) { return absl::ResourceExhaustedError(what); }

absl::Status RaisedError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kRaisedPayload, absl::Cord("1"));
  return status;
}

absl::Status WithLine(absl::Status status, int line) {
  if (status.ok() || status.GetPayload(kRaisedPayload).has_value() ||
      status.GetPayload(kLinePayload).has_value()) {
    return status;
  }
  absl::Status annotated(status.code(), absl::StrCat(status.message(), " (line ", line, ")"));
  annotated.SetPayload(kLinePayload, absl::Cord("1"));
  return annotated;
}

}  // namespace epserve::jinja
