#include "kernels/device.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace epserve::kernels {

std::string DeviceSpec::ToString() const {
  return type == DeviceType::kCpu ? "cpu" : absl::StrCat("cuda:", ordinal);
}

absl::StatusOr<DeviceSpec> ParseDevice(absl::string_view text) {
  if (text == "cpu") return DeviceSpec{DeviceType::kCpu, 0};
  if (text == "cuda") return DeviceSpec{DeviceType::kCuda, 0};
  if (text.substr(0, 5) == "cuda:") {
    int ordinal = -1;
    if (absl::SimpleAtoi(text.substr(5), &ordinal) && ordinal >= 0 && ordinal < 1024) {
      return DeviceSpec{DeviceType::kCuda, ordinal};
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("bad device '", text, "': expected cpu, cuda or cuda:K"));
}

}  // namespace epserve::kernels
