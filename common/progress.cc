#include "common/progress.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/logging.h"

namespace epserve {

ProgressLog::ProgressLog(std::string what, std::string unit, uint64_t total_bytes,
                         uint64_t total_items, Clock::duration interval)
    : what_(std::move(what)),
      unit_(std::move(unit)),
      total_bytes_(total_bytes),
      total_items_(total_items),
      interval_(interval),
      start_(Clock::now()),
      last_log_(start_) {}

void ProgressLog::Add(uint64_t bytes, Clock::time_point now) {
  bytes_ += bytes;
  ++items_;
  if (now - last_log_ < interval_) return;
  last_log_ = now;
  logged_ = true;
  LOG_INFO("{}", Line(now));
}

void ProgressLog::Finish(Clock::time_point now) {
  if (!logged_ && now - start_ < interval_) return;
  const double s = std::chrono::duration<double>(now - start_).count();
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  LOG_INFO("{}", absl::StrFormat("%s: done, %.2f GiB (%u %s) in %.1f s, %.2f GiB/s", what_,
                                 static_cast<double>(bytes_) / kGiB, items_, unit_, s,
                                 s > 0 ? static_cast<double>(bytes_) / kGiB / s : 0.0));
}

std::string ProgressLog::Line(Clock::time_point now) const {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  const double s = std::max(1e-9, std::chrono::duration<double>(now - start_).count());
  const double rate = static_cast<double>(bytes_) / s;
  std::string line = absl::StrFormat(
      "%s: %.2f of %.2f GiB (%u of %u %s), %.2f GiB/s", what_, static_cast<double>(bytes_) / kGiB,
      static_cast<double>(total_bytes_) / kGiB, items_, total_items_, unit_, rate / kGiB);
  if (rate > 0 && total_bytes_ > bytes_) {
    absl::StrAppendFormat(&line, ", ~%.0f s left",
                          std::ceil(static_cast<double>(total_bytes_ - bytes_) / rate));
  }
  return line;
}

}  // namespace epserve
