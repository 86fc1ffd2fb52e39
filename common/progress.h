// Progress of a long, countable job (loading weights) as log lines: at most
// one every `interval`, naming the bytes and items done of the total, the
// rate and the time left; and a closing line when the job took longer than
// one interval. Silent for jobs shorter than that (the tiny model).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace epserve {

class ProgressLog {
 public:
  using Clock = std::chrono::steady_clock;
  ProgressLog(std::string what, std::string unit, uint64_t total_bytes, uint64_t total_items,
              Clock::duration interval = std::chrono::seconds(2));

  // Counts one more item of `bytes`; logs when the interval has passed.
  void Add(uint64_t bytes, Clock::time_point now = Clock::now());
  // The closing line (only when an interval passed since the start).
  void Finish(Clock::time_point now = Clock::now());

  // "loading weights: 3.20 of 15.10 GiB (120 of 531 tensors), 1.60 GiB/s, ~7 s left"
  std::string Line(Clock::time_point now) const;
  uint64_t bytes() const { return bytes_; }
  uint64_t items() const { return items_; }

 private:
  std::string what_;
  std::string unit_;  // what an item is: "tensors"
  uint64_t total_bytes_;
  uint64_t total_items_;
  Clock::duration interval_;
  Clock::time_point start_;
  Clock::time_point last_log_;
  uint64_t bytes_ = 0;
  uint64_t items_ = 0;
  bool logged_ = false;
};

}  // namespace epserve
