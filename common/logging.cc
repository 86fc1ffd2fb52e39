#include "common/logging.h"

#include <string>

#include "spdlog/sinks/stdout_color_sinks.h"

namespace epserve {

bool InitLogging(absl::string_view role, absl::string_view level) {
  auto logger = spdlog::stderr_color_mt(std::string(role));
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ [%n] %v");
  spdlog::set_default_logger(logger);
  spdlog::level::level_enum parsed = spdlog::level::from_str(std::string(level));
  // from_str answers `off` for unknown names.
  bool known = parsed != spdlog::level::off || level == "off";
  spdlog::set_level(known ? parsed : spdlog::level::info);
  spdlog::flush_on(spdlog::level::info);
  return known;
}

void SetLogRole(absl::string_view role) {
  spdlog::set_default_logger(spdlog::default_logger()->clone(std::string(role)));
}

}  // namespace epserve
