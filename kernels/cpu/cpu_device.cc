#include "kernels/cpu/cpu_device.h"

#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"

namespace epserve::kernels::cpu {
namespace {

// Reads "Key:   123 kB" from /proc/meminfo; 0 when absent.
uint64_t MemInfoBytes(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, key + ":")) continue;
    std::string rest(absl::StripAsciiWhitespace(line.substr(key.size() + 1)));
    uint64_t kb = 0;
    if (absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &kb)) return kb * 1024;
  }
  return 0;
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name")) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "cpu";
}

}  // namespace

absl::StatusOr<DeviceProperties> QueryCpuDevice() {
  DeviceProperties p;
  p.spec = DeviceSpec{DeviceType::kCpu, 0};
  p.name = CpuModelName();
  p.total_memory_bytes = MemInfoBytes("MemTotal");
  p.free_memory_bytes = MemInfoBytes("MemAvailable");
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  p.compute_units = cores > 0 ? static_cast<uint32_t>(cores) : 1;
  return p;
}

}  // namespace epserve::kernels::cpu
