// Status conventions: every fallible function returns absl::Status or
// absl::StatusOr<T>; callers propagate with the macros below.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#define EPSERVE_CONCAT_INNER_(a, b) a##b
#define EPSERVE_CONCAT_(a, b) EPSERVE_CONCAT_INNER_(a, b)

// RETURN_IF_ERROR(expr): returns the status of `expr` from the enclosing
// function when it is not OK.
#define RETURN_IF_ERROR(expr)                                  \
  do {                                                         \
    ::absl::Status epserve_status_ = ::epserve::ToStatus(expr); \
    if (!epserve_status_.ok()) return epserve_status_;         \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the StatusOr `expr`; on error returns
// its status, otherwise moves the value into `lhs` (which may declare a
// variable: ASSIGN_OR_RETURN(auto x, F())).
// NOLINTBEGIN(bugprone-macro-parentheses): `lhs` may be a declaration.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(EPSERVE_CONCAT_(epserve_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)

namespace epserve {

inline const absl::Status& ToStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& ToStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// Prefixes the message of a non-OK status with `context` ("loading x: ...").
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace epserve
