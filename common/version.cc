#include "common/version.h"

#include "absl/strings/str_cat.h"
#include "common/git_describe.h"

namespace epserve {

std::string VersionLine(absl::string_view program) {
  return absl::StrCat(program, " ", kVersion, " (", EPSERVE_GIT_DESCRIBE, ", ", kBuildType, ", ",
                      kBackends, ")");
}

}  // namespace epserve
