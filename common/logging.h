// Logging through spdlog (Debian's Abseil has no absl/log).
//   LOG_INFO("worker {} registered as rank {}", id, rank);
// Levels: trace, debug, info, warn, error. Output goes to stderr, one line per
// message, prefixed with time, level and the process role.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "spdlog/spdlog.h"

#define LOG_TRACE(...) SPDLOG_TRACE(__VA_ARGS__)
#define LOG_DEBUG(...) SPDLOG_DEBUG(__VA_ARGS__)
#define LOG_INFO(...) SPDLOG_INFO(__VA_ARGS__)
#define LOG_WARN(...) SPDLOG_WARN(__VA_ARGS__)
#define LOG_ERROR(...) SPDLOG_ERROR(__VA_ARGS__)

// absl::string_view (a distinct type in Debian's Abseil) and absl::Status
// can be logged directly.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename Ctx>
  auto format(absl::string_view s, Ctx& ctx) const {
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(s.data(), s.size()), ctx);
  }
};

template <>
struct fmt::formatter<absl::Status> : fmt::formatter<fmt::string_view> {
  template <typename Ctx>
  auto format(const absl::Status& s, Ctx& ctx) const {
    std::string text = s.ToString();
    return fmt::formatter<fmt::string_view>::format(fmt::string_view(text), ctx);
  }
};

namespace epserve {

// Configures the default logger: `role` appears in every line ("router",
// "worker-1"); `level` is one of trace|debug|info|warn|error. Returns false
// for an unknown level (the level is then left at info).
bool InitLogging(absl::string_view role, absl::string_view level);

// Changes the role shown in later lines (a worker becomes "worker-3" once it
// has its rank).
void SetLogRole(absl::string_view role);

}  // namespace epserve
