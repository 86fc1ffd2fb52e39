#include "tools/bench_gpu/report.h"

#include <cmath>
#include <ctime>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace epserve::bench_gpu {

std::string Report::Json() const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Measurement& m : measurements_) {
    nlohmann::ordered_json j;
    j["name"] = m.name;
    j["config"] = m.config;
    j["batch"] = m.batch ? nlohmann::ordered_json(*m.batch) : nlohmann::ordered_json(nullptr);
    // JSON has no NaN / inf.
    j["value"] =
        std::isfinite(m.value) ? nlohmann::ordered_json(m.value) : nlohmann::ordered_json(nullptr);
    j["unit"] = m.unit;
    j["ratio"] = m.ratio && std::isfinite(*m.ratio) ? nlohmann::ordered_json(*m.ratio)
                                                    : nlohmann::ordered_json(nullptr);
    list.push_back(std::move(j));
  }
  nlohmann::ordered_json out;
  out["device"] = device_;
  out["date"] = date_;
  out["measurements"] = std::move(list);
  return out.dump(2);
}

absl::Status Report::Flush() const {
  if (json_path_.empty()) return absl::OkStatus();
  std::ofstream f(json_path_, std::ios::trunc);
  f << Json() << "\n";
  f.close();
  if (!f) return absl::UnavailableError(absl::StrCat("--json: cannot write ", json_path_));
  return absl::OkStatus();
}

std::string UtcNow() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace epserve::bench_gpu
